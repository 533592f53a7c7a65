"""``audit``: the history of an address reused by three instances, from the projection's index
and from the log (equal answers), with actors and times, in order."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
from pathlib import Path

from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.replay import audit
from netledger.service.service import CommandService
from tests.replay.test_replay_helpers import build_history, cli_json, invoke


async def test_address_reused_by_three_instances(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    h = await build_history(conn)
    db = tmp_path / "p.db"
    await project_until(conn, db)
    rows = audit.from_index(db, "address", h.x)
    shown = [audit.present(r) for r in rows]
    story = [(p["type"], p["data"].get("instance"), p["actor"]["user"]) for p in shown]
    assert story == [
        ("FixedIpAllocated", "i-1", "alice"),
        ("FloatingIpAssociated", "i-1", "alice"),
        ("FloatingIpDisassociated", "i-1", "bob"),  # with i-1's deallocation
        ("FixedIpDeallocated", "i-1", "bob"),
        ("FixedIpAllocated", "i-2", "bob"),
        ("FixedIpLeased", "i-2", "bob"),
        ("FloatingIpAssociated", "i-2", "bob"),
        ("FloatingIpDisassociated", "i-2", "carol"),  # the floating IP moves to i-9
        ("FixedIpDeallocated", "i-2", "carol"),
        ("FixedIpReleased", "i-2", "carol"),
        ("FixedIpAllocated", "i-3", "carol"),
    ]
    seqs = [p["seq"] for p in shown]
    assert seqs == sorted(seqs)
    times = [p["time"] for p in shown]
    assert times == sorted(times) and all(t.endswith("Z") for t in times)
    assert shown[0]["summary"] == f"{h.x} allocated to i-1 (project p1, host c1, network 1)"
    assert shown[-1]["summary"].startswith(f"{h.x} allocated to i-3 (project p2")
    assert "held until the DHCP release" in shown[8]["summary"]
    assert audit.line(shown[0]).startswith(f"#{seqs[0]:<8} ")
    assert "by alice (admin, project p1)" in audit.line(shown[0])

    # the log gives the same rows the index holds
    assert await audit.from_log(conn, "address", h.x, show_progress=False) == rows

    # the other kinds, and time windows
    assert [r["type"] for r in audit.from_index(db, "instance", "i-3")] == ["FixedIpAllocated"]
    f_rows = audit.from_index(db, "address", h.f)
    assert [r["type"] for r in f_rows][:2] == ["FloatingIpAllocated", "FloatingIpAssociated"]
    c2 = audit.from_index(db, "host", "c2")
    assert {r["instance"] for r in c2 if r["type"] != "NetworkHostJoined"} == {"i-2"}
    assert "NetworkHostJoined" in [r["type"] for r in c2]  # c2's first instance in the network
    assert len(audit.from_index(db, "network", h.network_id)) > len(rows)
    p2 = audit.from_index(db, "project", "p2")
    assert [r["instance"] for r in p2] == ["i-3"]
    cut = h.points[2].at
    early = audit.from_index(db, "address", h.x, until=cut)
    late = audit.from_index(db, "address", h.x, since=cut)
    assert early + late == rows and [r["instance"] for r in early] == ["i-1", "i-1"]
    assert await audit.from_log(conn, "address", h.x, since=cut, show_progress=False) == late
    assert audit.from_index(db, "address", "10.99.0.1") == []


def test_the_index_serves_every_kind(tmp_path: Path) -> None:
    """Each audit query is an index search on the events table, never a scan."""
    from netledger.projector.schema import open_db

    db = open_db(tmp_path / "p.db")
    try:
        for kind in audit.KINDS:
            for since, until in ((None, None), (1.0, 2.0)):
                sql, cols = audit.index_sql(kind, since, until)
                args = ["v", *(t for t in (since, until) if t is not None)] * len(cols)
                plan = " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, args))
                assert "SCAN events" not in plan, (kind, plan)
                for c in cols:
                    assert f"idx_events_{c}" in plan, (kind, plan)
    finally:
        db.conn.close()


def test_phrases_for_events_of_unknown_shape() -> None:
    assert audit.phrase("FixedIpLeased", {"address": "10.0.0.2"}).startswith("FixedIpLeased {")
    assert audit.phrase("HostLinkCreated", {"host": "c1", "name": "br1", "kind": "bridge"}) == (
        "c1: LinkCreated (name br1, kind bridge)"
    )
    assert audit.phrase("Mystery", {"a": 1}) == 'Mystery {"a": 1}'


async def test_cli_audit(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    h = await build_history(conn)
    db = tmp_path / "p.db"
    await project_until(conn, db)
    idx = await cli_json("audit", "address", h.x, "--db", str(db))
    log = await cli_json("--nats", nats_url, "audit", "address", h.x, "--from-log")
    assert idx == log and len(idx) == 11
    assert [x["actor"]["user"] for x in idx][::5] == ["alice", "bob", "carol"]
    text = await asyncio.to_thread(invoke, "audit", "address", h.x, "--db", str(db))
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0] == f"address {h.x}: 11 events (projection at seq {idx[0]['checkpoint']})"
    assert f"{h.x} allocated to i-1" in lines[1] and "by alice" in lines[1]
    assert f"{h.x} allocated to i-3" in lines[-1] and "by carol" in lines[-1]
    naive = await cli_json(
        "audit", "address", h.x, "--db", str(db), "--since", "2026-01-01", code=1
    )
    assert naive["error"]["code"] == "naive_time"
    missing = await cli_json("audit", "host", "c1", "--db", str(tmp_path / "none.db"), code=1)
    assert missing["error"]["code"] == "projection_not_found"
    # a window that ends before it starts (the two swapped) is refused, not "0 events" (h136);
    # --until is the end of the minute it names
    swapped = await cli_json(
        "audit", "network", "1", "--db", str(db),
        "--since", "2026-12-08T00:00Z", "--until", "2026-12-07T00:00Z", code=1,
    )  # fmt: skip
    assert swapped["error"]["code"] == "bad_time"
    assert swapped["error"]["message"] == (
        "--since 2026-12-08T00:00:00.000Z is after --until 2026-12-07T00:00:59.999Z:"
        " no moment is in that window"
    )
    since = (h.points[-1].at + datetime.timedelta(seconds=1)).isoformat()
    assert await cli_json("audit", "instance", "i-3", "--db", str(db), "--since", since) == []
    # an address is checked, not taken as one without history; any notation finds it
    for typo in ("10.0.0.l", "notanip", "010.0.0.3"):
        bad = await cli_json("audit", "address", typo, "--db", str(db), code=1)
        assert bad["error"]["code"] == "invalid_address", typo


def test_an_audited_address_is_read_as_the_log_writes_it() -> None:
    from netledger.replay.cli import _address

    assert _address("2001:DB8::0001", as_json=False) == "2001:db8::1"
    assert _address("10.0.0.3", as_json=False) == "10.0.0.3"
    assert _address("::ffff:10.0.0.3", as_json=False) == "10.0.0.3"  # IPv4-mapped
    assert _address("::FFFF:0a00:0003", as_json=False) == "10.0.0.3"


def test_index_has_rows_for_every_applied_event(tmp_path: Path) -> None:
    # guards the assumption audit builds on: one events row per applied message
    db = tmp_path / "empty.db"
    from netledger.projector.schema import open_db

    open_db(db).conn.close()
    c = sqlite3.connect(db)
    idx = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    c.close()
    assert {f"idx_events_{col}" for cols in audit.KINDS.values() for col in cols} <= idx


def test_every_event_type_is_said_in_words() -> None:
    """No event the log can hold falls back to its payload as JSON, but the executors' own
    (``<host>: <what> (...)``): review h130 found `audit host` printing a NetworkHostJoined
    as ``NetworkHostJoined {"host": ...}``."""
    import netledger.events.host_events
    import netledger.events.placement_events
    import netledger.events.reclaim_events  # noqa: F401
    from netledger.events.types import EVENT_TYPES

    unsaid = [n for n in EVENT_TYPES if n not in audit.PHRASES and not n.startswith("Host")]
    assert unsaid == ["LegacyAnnouncementIndexed"]  # a pointer only the service writes
    assert audit.phrase(
        "NetworkHostJoined", {"host": "c1", "network_id": "1", "reason": "allocated"}
    ) == ("host c1 joined network 1 (reason allocated)")
    mapped = {"network_id": "1", "floating": "203.0.113.1", "fixed": "10.0.0.3", "pool": "pub"}
    assert audit.phrase("FloatingIpMapped", {**mapped, "reason": "associated"}) == (
        "floating 203.0.113.1 NATed to 10.0.0.3 in network 1 (pool pub, reason associated)"
    )
    assert audit.phrase("FloatingIpUnmapped", mapped) == (
        "floating 203.0.113.1 no longer NATed to 10.0.0.3 in network 1 (pool pub)"
    )
    reclaimed = {"address": "10.0.0.3", "instance": "i-1", "mac": "02:16:3e:00:00:01"}
    assert audit.phrase(
        "FixedIpReclaimed",
        {**reclaimed, "host": "c1", "grace": 7200.0, "first_absent_seq": 5, "report_seq": 9},
    ) == (
        "10.0.0.3 reclaimed from i-1: host c1 did not see 02:16:3e:00:00:01 for 7200 s"
        " (reports #5..#9)"
    )
    assert audit.phrase("FixedIpReconfirmed", {**reclaimed, "host": None}) == (
        "10.0.0.3 asked for again by i-1 (02:16:3e:00:00:01)"
    )
    assert audit.phrase(
        "FixedIpReclaimSealed", {"host": "c1", "host_seq": 4, "addresses": ["10.0.0.3"]}
    ) == ("reclaims on host c1 decided as of its #4: 10.0.0.3")
