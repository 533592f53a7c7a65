"""Revert against a real nats-server and the real command service: compensations appended as
one atomic batch, conflicts refused with the reason and nothing appended, replay and audit."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from netledger.events.codec import decode
from netledger.events.errors import NetledgerError
from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import project_until
from netledger.replay import audit
from netledger.replay.reader import read_range
from netledger.revert_cli import AlreadyReverted, render, revert
from netledger.service.client import Client
from netledger.service.service import CommandService


async def log(conn: Connection) -> list[tuple[int, str, Any]]:
    out = []
    async for m in read_range(conn, 1):
        out.append((m.seq, m.subject, decode(m.data)))
    return out


def rows(db: Path, sql: str, *args: Any) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute(sql, args)]


async def flat(c: Client) -> str:
    nets = await c.create_networks(label="f", cidr="10.7.0.0/24", num_networks=1, mode="flat")
    return str(nets[0]["id"])


async def test_revert_an_allocation(conn: Connection, service: CommandService) -> None:
    c = Client(conn)
    nid = await flat(c)
    a = await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id="alloc-1")
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-1"
    before = await last_seq(conn)
    stored = {e.type: seq for seq, _, e in await log(conn) if e.command_id == "alloc-1"}

    plan = await revert(conn, c, command_id="alloc-1", dry_run=True)
    assert [e["type"] for e in plan["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    assert await last_seq(conn) == before  # dry run appends nothing

    r = await revert(conn, c, command_id="alloc-1")
    assert r["revert_command_id"] == "revert-alloc-1"
    assert a["address"] not in service.state.networks[nid].fixed
    tail = [x for x in await log(conn) if x[0] > before]
    assert [e.type for _, _, e in tail] == ["FixedIpDeallocated", "ChangeReverted"]
    assert {e.command_id for _, _, e in tail} == {"revert-alloc-1"}
    marker = tail[-1][2].event
    # The allocation is undone; the placement written with it (h1's first instance in the
    # network: right before it, service/prelink.py) is a fact a revert leaves, like a lease.
    assert sorted(stored) == ["FixedIpAllocated", "NetworkHostJoined"]
    assert sorted(stored.values()) == [before - 1, before]
    assert marker.reverted_command_id == "alloc-1"
    assert marker.reverted_seqs == [stored["FixedIpAllocated"]]
    assert marker.skipped_seqs == [stored["NetworkHostJoined"]]
    # ... and the CLI says it is left as a record the compensations write anew, not as a
    # reported fact alone (h136: "reported facts" named FloatingIpUnmapped, NetworkHostJoined)
    assert f"records the compensations write anew): #{before - 1}" in render(r), render(r)
    # The address is free again: the next allocation gets it.
    b = await c.allocate_fixed_ip("i-2", network_id=nid)
    assert b["address"] == a["address"]
    with pytest.raises(AlreadyReverted):
        await revert(conn, c, command_id="alloc-1")


async def test_revert_a_floating_association(conn: Connection, service: CommandService) -> None:
    c = Client(conn)
    nid = await flat(c)
    a = await c.allocate_fixed_ip("i-1", network_id=nid, project="p1")
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    f = await c.request("floating_ip.allocate", {"project": "p1"})
    await c.request(
        "floating_ip.associate",
        {"address": f["address"], "fixed_address": a["address"], "project": "p1"},
        command_id="assoc-1",
    )
    assert service.state.pools["pub"].floating[f["address"]].fixed_address == a["address"]
    r = await revert(conn, c, command_id="assoc-1")
    assert [e["type"] for e in r["events"]] == ["FloatingIpDisassociated", "ChangeReverted"]
    fl = service.state.pools["pub"].floating[f["address"]]
    assert fl.fixed_address is None and fl.project == "p1"
    # And reverting the revert associates it again.
    await revert(conn, c, command_id="revert-assoc-1")
    assert service.state.pools["pub"].floating[f["address"]].fixed_address == a["address"]


async def test_revert_a_network_with_its_allocations_by_seq(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    keep = await flat(c)
    kept = await c.allocate_fixed_ip("i-keep", network_id=keep)
    start = await last_seq(conn)
    nets = await c.create_networks(
        label="v", cidr="10.9.0.0/24", num_networks=1, mode="vlan", vlan_start=200
    )
    nid = str(nets[0]["id"])
    for i in range(3):
        await c.allocate_fixed_ip(f"i-{i}", project="p9", host="h1")
    await c.allocate_fixed_ip("i-other", network_id=keep)  # after N, outside the scope
    assert service.state.networks[nid].project == "p9"
    assert len(service.state.networks[nid].fixed) == 3

    r = await revert(conn, c, to_seq=start, scope=f"network:{nid}")
    types = [e["type"] for e in r["events"]]
    assert types == [
        *["FixedIpDeallocated"] * 3,
        "NetworkDisassociated",
        "NetworkDeleted",
        "ChangeReverted",
    ]
    assert nid not in service.state.networks  # deleted: gone from the fold
    assert "p9" not in service.state.project_networks
    other = service.state.networks[keep]
    assert set(other.fixed) == {kept["address"], "10.7.0.3"}  # untouched

    # Replay of the whole history (change + revert) gives the same state in a projection.
    db = tmp_path / "replay.db"
    await project_until(conn, db)
    assert rows(db, "SELECT * FROM fixed_ips WHERE network_id = ?", nid) == []
    assert rows(db, "SELECT deleted FROM networks WHERE network_id = ?", nid)[0]["deleted"]
    assert len(rows(db, "SELECT * FROM fixed_ips WHERE network_id = ?", keep)) == 2

    # Audit shows the link both ways (index and log give the same answer).
    found = audit.from_index(db, "address", "10.9.0.3")
    found_log = await audit.from_log(conn, "address", "10.9.0.3")
    for got in (found, found_log):
        shown = [audit.present(x) for x in got]
        assert [p["type"] for p in shown] == ["FixedIpAllocated", "FixedIpDeallocated"]
        assert shown[0]["reverted_by"]["command_id"] == r["revert_command_id"]
        assert shown[1]["reverts"]["after_seq"] == start
        assert "reverted by" in audit.line(shown[0]) and "reverts" in audit.line(shown[1])


async def test_a_conflicting_revert_is_refused_and_appends_nothing(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c)
    a = await c.allocate_fixed_ip("i-1", network_id=nid, command_id="alloc-1")
    await c.request("fixed_ip.deallocate", {"instance": "i-1"}, command_id="dealloc-1")
    b = await c.allocate_fixed_ip("i-2", network_id=nid)
    assert b["address"] == a["address"]  # re-allocated to another instance since
    before = await last_seq(conn)
    for target in ("alloc-1", "dealloc-1"):
        with pytest.raises(NetledgerError) as info:
            await revert(conn, c, command_id=target)
        assert info.value.code == "revert_conflict"
        assert "allocated to i-2" in info.value.message
    assert await last_seq(conn) == before
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-2"


async def test_nothing_to_revert(conn: Connection, service: CommandService) -> None:
    c = Client(conn)
    await flat(c)
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, command_id="no-such-command")
    assert info.value.code == "nothing_to_revert"
    assert "no events of command no-such-command" in info.value.message
    end = await last_seq(conn)
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, to_seq=end)
    assert info.value.message == f"nothing to revert: the log holds no events after seq {end}"
    # past the end: a sequence the log does not have, said as replay says it (h136)
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, to_seq=end + 1, dry_run=True)
    assert info.value.code == "seq_beyond_stream", info.value.message
    assert info.value.message == (
        f"the stream ends at seq {end}; there is no seq {end + 1} to revert after"
    )
    assert await last_seq(conn) == end


async def test_revert_found_through_the_projection_index(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    f = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="falloc-1")
    db = tmp_path / "p.db"
    await project_until(conn, db)
    r = await revert(conn, c, command_id="falloc-1", db=db)
    assert [e["type"] for e in r["events"]] == ["FloatingIpDeallocated", "ChangeReverted"]
    assert f["address"] not in service.state.pools["pub"].floating
    await project_until(conn, db)
    with pytest.raises(AlreadyReverted):
        await revert(conn, c, command_id="falloc-1", db=db)
    shown = [audit.present(x) for x in audit.from_index(db, "address", f["address"])]
    assert shown[0]["reverted_by"] == {"command_id": "revert-falloc-1", "seq": shown[1]["seq"] + 1}
    assert shown[1]["reverts"]["command_id"] == "falloc-1"


async def cli(url: str, *argv: str) -> tuple[int, str, str]:
    import asyncio
    import sys

    exe = Path(sys.executable).with_name("netledger")
    p = await asyncio.create_subprocess_exec(
        str(exe),
        "--nats",
        url,
        "--role",
        "admin",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    return p.returncode or 0, out.decode(), err.decode()


async def test_the_cli(conn: Connection, service: CommandService, nats_url: str) -> None:
    import json

    c = Client(conn)
    nid = await flat(c)
    a = await c.allocate_fixed_ip("i-1", network_id=nid, command_id="alloc-1")
    before = await last_seq(conn)
    rc, out, _ = await cli(nats_url, "revert", "--command-id", "alloc-1", "--dry-run", "--json")
    assert rc == 0 and json.loads(out)["appended"] is False
    assert await last_seq(conn) == before
    rc, out, _ = await cli(nats_url, "revert", "--command-id", "alloc-1")
    assert rc == 0 and f"{a['address']} deallocated from i-1" in out
    rc, _, err = await cli(nats_url, "revert", "--command-id", "alloc-1")
    assert rc == 1 and "already_reverted" in err
