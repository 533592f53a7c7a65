"""Review hrev10: audit of histories that contain reverts (real nats-server, real SQLite)."""

from __future__ import annotations

import datetime
from pathlib import Path

from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.replay import audit
from netledger.revert_cli import revert
from netledger.service.client import Client
from netledger.service.service import CommandService


async def test_audit_of_a_revert_of_a_revert(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    nets = await c.create_networks(label="f", cidr="10.7.0.0/24", num_networks=1, mode="flat")
    a = await c.allocate_fixed_ip("i-1", network_id=str(nets[0]["id"]), host="h1", command_id="a1")
    r1 = await revert(conn, c, command_id="a1")
    r2 = await revert(conn, c, command_id="revert-a1")
    assert r2["revert_command_id"] == "revert-revert-a1"
    db = tmp_path / "p.db"
    await project_until(conn, db)
    for kind, value in (("address", a["address"]), ("instance", "i-1"), ("host", "h1")):
        idx = [audit.present(x) for x in audit.from_index(db, kind, value)]
        log = [audit.present(x) for x in await audit.from_log(conn, kind, value)]
        assert idx == log, kind
        got = [
            (
                p["type"],
                p["command_id"],
                p.get("reverts", {}).get("command_id"),
                p.get("reverted_by", {}).get("command_id"),
            )
            for p in idx
            if p["type"].startswith("FixedIp")
        ]
        assert got == [
            ("FixedIpAllocated", "a1", None, "revert-a1"),
            ("FixedIpDeallocated", "revert-a1", "a1", "revert-revert-a1"),
            ("FixedIpAllocated", "revert-revert-a1", "revert-a1", None),
        ], (kind, got)
    del r1


async def test_audit_until_before_the_revert_still_says_reverted(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    """h136: the incident's window (--until before the revert) showed the reverted change as
    standing: the marker was looked for only through compensations inside the window."""
    c = Client(conn)
    nets = await c.create_networks(label="f", cidr="10.7.0.0/24", num_networks=1, mode="flat")
    a = await c.allocate_fixed_ip("i-1", network_id=str(nets[0]["id"]), host="h1", command_id="a1")
    await revert(conn, c, command_id="a1")
    db = tmp_path / "p.db"
    await project_until(conn, db)
    rows = audit.from_index(db, "instance", "i-1")
    alloc, undo = rows[0]["time"], rows[-1]["time"]
    assert [r["command_id"] for r in rows] == ["a1", "revert-a1"]
    assert alloc < undo  # the revert was decided after the allocation answered
    until = datetime.datetime.fromtimestamp((alloc + undo) / 2, datetime.UTC)
    for kind, value in (("address", a["address"]), ("instance", "i-1"), ("host", "h1")):
        idx = [audit.present(x) for x in audit.from_index(db, kind, value, until=until)]
        log = [audit.present(x) for x in await audit.from_log(conn, kind, value, until=until)]
        assert idx == log, kind
        got = [(p["command_id"], p.get("reverted_by", {}).get("command_id")) for p in idx]
        assert ("a1", "revert-a1") in got and all(cid == "a1" for cid, _ in got), (kind, got)
