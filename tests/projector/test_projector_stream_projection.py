"""The projector against a real nats-server and real SQLite files: what it projects.

A stream with every kind of change projected into every table; following it and resuming from the
checkpoint; malformed messages recorded and skipped; two projectors on one stream, and one owning
its connection, ending identical; projecting up to a sequence or a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from netledger.events.codec import Envelope, encode
from netledger.events.host_events import HostAnnounced, HostLinkCreated, HostNatApplied
from netledger.events.types import FixedIpAllocated
from netledger.journal.stream import Connection, connect, last_seq
from netledger.projector.compare import dump
from netledger.projector.runner import Projector, project_until
from netledger.projector.schema import schema_version
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.projector.stream_helpers import publish_event, rows


async def build_world(conn: Connection) -> dict[str, Any]:
    """Drive the command service through every kind of change; return what it answered."""
    c = Client(conn)
    out: dict[str, Any] = {}
    await c.request(
        "network.create",
        {
            "label": "vl",
            "cidr": "10.0.0.0/22",
            "num_networks": 4,
            "network_size": 256,
            "mode": "vlan",
            "vlan_start": 100,
        },
    )
    await c.request(
        "network.create",
        {
            "label": "flat",
            "cidr": "10.9.0.0/24",
            "mode": "flat_dhcp",
            "network_host": "net1",
            "bridge": "brflat",
        },
    )
    # vlan: the first allocation for a project assigns it the lowest free network
    out["a1"] = await c.request(
        "fixed_ip.allocate", {"instance": "i1", "project": "p1", "host": "c1"}
    )
    out["a2"] = await c.request(
        "fixed_ip.allocate", {"instance": "i2", "project": "p1", "host": "c2"}
    )
    out["b1"] = await c.request(
        "fixed_ip.allocate", {"instance": "j1", "project": "p2", "host": "c1"}
    )
    out["f1"] = await c.request(
        "fixed_ip.allocate", {"instance": "k1", "network_id": "5", "host": "c3"}
    )
    out["gone"] = await c.request("fixed_ip.allocate", {"instance": "gone", "project": "p1"})
    # lease/release: i2 leased then deallocated -> reserved until released
    await c.request("fixed_ip.lease", {"address": out["a2"]["address"], "mac": out["a2"]["mac"]})
    await c.request("fixed_ip.lease", {"address": out["a1"]["address"], "mac": out["a1"]["mac"]})
    await c.request("fixed_ip.deallocate", {"instance": "i2"})
    await c.request("fixed_ip.deallocate", {"instance": "gone"})  # never leased: freed at once
    # i1's lease released (still allocated), k1 leased
    await c.request("fixed_ip.release", {"address": out["a1"]["address"], "mac": out["a1"]["mac"]})
    await c.request("fixed_ip.lease", {"address": out["f1"]["address"], "mac": out["f1"]["mac"]})
    # floating IPs
    await c.request(
        "floating_ip.pool_create",
        {"pool": "pub", "cidr": "203.0.113.0/28", "public_interface": "eth0"},
    )
    out["fl1"] = await c.request("floating_ip.allocate", {"project": "p1"})
    out["fl2"] = await c.request("floating_ip.allocate", {"project": "p2"})
    out["fl3"] = await c.request("floating_ip.allocate", {"project": "p1"})
    await c.request(
        "floating_ip.associate",
        {"address": out["fl1"]["address"], "project": "p1", "fixed_address": out["a1"]["address"]},
    )
    await c.request(
        "floating_ip.associate",
        {"address": out["fl2"]["address"], "project": "p2", "fixed_address": out["b1"]["address"]},
    )
    await c.request("floating_ip.disassociate", {"address": out["fl2"]["address"], "project": "p2"})
    await c.request("floating_ip.deallocate", {"address": out["fl3"]["address"], "project": "p1"})
    # an unused vlan network deleted
    await c.request("network.delete", {"network_id": "4"})
    # what an executor would append
    await publish_event(
        conn,
        HostAnnounced(
            host="c1",
            vtep_address="192.0.2.11",
            physical_interface="eth1",
            public_interface=None,
            network_host=False,
        ),
    )
    await publish_event(
        conn,
        HostLinkCreated(
            host="c1", name="br100", kind="bridge", network_id="1", drift=False, detail={}
        ),
        1,
    )
    await publish_event(
        conn,
        HostNatApplied(
            host="net1",
            drift=False,
            snat_ranges=["10.9.0.0/24"],
            floating={out["fl1"]["address"]: out["a1"]["address"]},
        ),
    )
    return out


async def test_projects_a_real_stream_into_every_table(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    w = await build_world(conn)
    db = tmp_path / "p.db"
    end = await last_seq(conn)
    assert await project_until(conn, db) == end

    nets = rows(
        db,
        "SELECT network_id, cidr, mode, vlan, bridge, project, deleted, network_host"
        " FROM networks ORDER BY network_id",
    )
    assert nets == [
        ("1", "10.0.0.0/24", "vlan", 100, "br100", "p1", 0, None),
        ("2", "10.0.1.0/24", "vlan", 101, "br101", "p2", 0, None),
        ("3", "10.0.2.0/24", "vlan", 102, "br102", None, 0, None),
        ("4", "10.0.3.0/24", "vlan", 103, "br103", None, 1, None),
        ("5", "10.9.0.0/24", "flat_dhcp", None, "brflat", None, 0, "net1"),
    ]
    fixed = rows(
        db,
        "SELECT network_id, address, instance, mac, host, project, allocated, leased"
        " FROM fixed_ips ORDER BY network_id, address",
    )
    a1, a2, b1, f1 = w["a1"], w["a2"], w["b1"], w["f1"]
    assert fixed == sorted([
        ("1", a1["address"], "i1", a1["mac"], "c1", "p1", 1, 0),
        ("1", a2["address"], "i2", a2["mac"], "c2", "p1", 0, 1),  # reserved: lease outstanding
        ("2", b1["address"], "j1", b1["mac"], "c1", "p2", 1, 0),
        ("5", f1["address"], "k1", f1["mac"], "c3", None, 1, 1),
    ])  # fmt: skip
    assert w["gone"]["address"] not in {r[1] for r in fixed}
    assert rows(db, "SELECT pool, cidr, public_interface FROM floating_pools") == [
        ("pub", "203.0.113.0/28", "eth0")]  # fmt: skip
    assert rows(db, "SELECT address, pool, project, fixed_address, network_id, instance"
                    " FROM floating_ips ORDER BY address") == [
        (w["fl1"]["address"], "pub", "p1", a1["address"], "1", "i1"),
        (w["fl2"]["address"], "pub", "p2", None, None, None),
    ]  # fmt: skip
    assert rows(db, "SELECT project, network_id FROM projects ORDER BY project") == [
        ("p1", "1"), ("p2", "2")]  # fmt: skip
    assert rows(db, "SELECT project, fixed_ips, floating_ips FROM project_usage ORDER BY 1") == [
        ("p1", 2, 1), ("p2", 1, 1)]  # fmt: skip
    assert rows(db, "SELECT host, vtep_address, nat_seq IS NOT NULL FROM hosts ORDER BY host") == [
        ("c1", "192.0.2.11", 0), ("net1", None, 1)]  # fmt: skip
    assert rows(db, "SELECT host, name, kind, network_id FROM host_links") == [
        ("c1", "br100", "bridge", "1")]  # fmt: skip
    assert rows(db, "SELECT host, floating_address, fixed_address FROM host_nat") == [
        ("net1", w["fl1"]["address"], a1["address"])]  # fmt: skip
    # the events index: one row per message, nothing rejected, checkpoint at the end
    assert rows(db, "SELECT count(*), min(seq), max(seq) FROM events") == [(end, 1, end)]
    assert rows(db, "SELECT count(*) FROM rejected_events") == [(0,)]
    assert rows(db, "SELECT last_seq, highest_seq, schema_version FROM projection_state") == [
        (end, end, schema_version())]  # fmt: skip
    # audit: everything that happened to i2's address, in order
    assert [r[0] for r in rows(db, "SELECT type FROM events WHERE address = ? ORDER BY seq",
                               a2["address"])] == [
        "FixedIpAllocated", "FixedIpLeased", "FixedIpDeallocated"]  # fmt: skip
    assert rows(db, "SELECT DISTINCT project FROM events WHERE instance = 'i2'") == [("p1",)]
    assert rows(db, "SELECT count(*) FROM events WHERE type = 'NetworkAssociated'") == [(2,)]


async def test_follows_and_survives_restart_from_checkpoint(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    await c.request("network.create", {"label": "n", "cidr": "10.0.0.0/24", "mode": "flat"})
    db = tmp_path / "p.db"
    async with Projector(conn, db, batch_size=3) as p:
        for i in range(5):
            await c.request("fixed_ip.allocate", {"instance": f"i{i}", "network_id": "1"})
        assert await p.catch_up(10) == await last_seq(conn)
    assert rows(db, "SELECT count(*) FROM fixed_ips") == [(5,)]
    for i in range(5, 8):
        await c.request("fixed_ip.allocate", {"instance": f"i{i}", "network_id": "1"})
    async with Projector(conn, db) as p:
        start = p.last_seq
        assert start == 6
        await p.catch_up(10)
        assert p.events == 3  # only the new ones: nothing applied twice
    assert rows(db, "SELECT count(*), max(seq) FROM events") == [(9, 9)]


async def test_malformed_messages_are_recorded_and_skipped(
    conn: Connection, tmp_path: Path
) -> None:
    good = FixedIpAllocated(
        network_id="1", address="10.0.0.3", instance="i", mac="m", host=None, project=None
    )
    js = conn.js
    await js.publish("netledger.evt.network.1", b"\xc1\x00garbage", stream=conn.stream)
    await js.publish(
        "netledger.evt.network.1",
        msgpack.packb({"type": "NoSuchEvent", "version": 1, "data": {}}),
        stream=conn.stream,
    )
    await js.publish(
        "netledger.evt.network.1",
        msgpack.packb({"type": "FixedIpAllocated", "version": 99, "data": {}}),
        stream=conn.stream,
    )
    await publish_event(conn, good)  # decodes, but network 1 does not exist
    await js.publish(
        "netledger.evt.registry", encode(Envelope(good, "x", "x", 1.0)), stream=conn.stream
    )  # wrong subject for its type
    from tests.projector.test_projector_unit import net

    await publish_event(conn, net("1"))
    await publish_event(conn, good, 2)  # now fine
    db = tmp_path / "p.db"
    assert await project_until(conn, db) == 7
    rejected = rows(db, "SELECT seq, type, reason FROM rejected_events ORDER BY seq")
    assert [r[0] for r in rejected] == [1, 2, 3, 4, 5]
    assert "not msgpack" in rejected[0][2]
    assert "unknown event type 'NoSuchEvent'" in rejected[1][2]
    assert "newer than this reader" in rejected[2][2]
    assert rejected[3][1:] == ("FixedIpAllocated", "unknown network 1")
    assert "belongs on netledger.evt.network.1" in rejected[4][2]
    assert rows(db, "SELECT seq, type FROM events ORDER BY seq") == [
        (6, "NetworkCreated"), (7, "FixedIpAllocated")]  # fmt: skip
    assert rows(db, "SELECT instance FROM fixed_ips") == [("i",)]
    assert rows(db, "SELECT raw FROM rejected_events WHERE seq = 1") == [(b"\xc1\x00garbage",)]


async def test_an_int_beyond_64_bits_is_recorded_and_skipped(
    conn: Connection, tmp_path: Path
) -> None:
    """msgpack reads unsigned 64-bit ints; one above 2**63 - 1 in a column failed SQLite's
    bind in the committing process — the projector stopped, and stopped again at the same
    message on every restart (found by review). Now decode refuses it like any malformed
    message, in a daemon projector as in a catch-up."""
    from netledger.events.host_events import HostReconciled

    host = HostAnnounced(host="c1", vtep_address="192.0.2.1", physical_interface="eth1",
                         public_interface=None, network_host=False)  # fmt: skip
    await publish_event(conn, host)
    bad = await publish_event(
        conn,
        HostReconciled(host="c1", applied_seq=1, changes=2**64 - 1, drift_repairs=0,
                       duration_ms=1.0),
        1,
    )  # fmt: skip
    last = await publish_event(conn, HostAnnounced(**{**host.__dict__, "host": "c2"}), 2)
    db = tmp_path / "p.db"
    assert await project_until(conn, db, to_seq=last) == last
    assert rows(db, "SELECT seq, reason FROM rejected_events") == [
        (bad, "HostReconciled: changes holds an int beyond 64 bits")]  # fmt: skip
    assert rows(db, "SELECT host FROM hosts ORDER BY host") == [("c1",), ("c2",)]
    p = Projector(conn, tmp_path / "daemon.db")
    await p.start()
    try:
        await p.catch_up(timeout=10)
        assert p.last_seq == last and p.failure is None
    finally:
        await p.close()


async def test_two_projectors_on_one_stream_end_identical(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    a = Projector(conn, tmp_path / "a.db", batch_size=1)
    await a.start()
    world = asyncio.create_task(build_world(conn))
    await asyncio.sleep(0.05)
    b = Projector(conn, tmp_path / "b.db", batch_size=1000)  # joins late, larger batches
    await b.start()
    await world
    await a.catch_up(20)
    await b.catch_up(20)
    await a.close()
    await b.close()
    assert dump(tmp_path / "a.db") == dump(tmp_path / "b.db")
    assert dump(tmp_path / "a.db")["fixed_ips"]


async def test_a_projector_owning_its_connection_skips_stored_headers(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    """``owns_connection`` (``projector run``): nats-py parses only status headers on that
    connection; the projection is the one a shared connection gives, following through idle
    heartbeats, and a shared connection keeps parsing every header."""
    own = await connect(nats_url, name="own")
    try:
        p = Projector(own, tmp_path / "own.db", batch_size=7, heartbeat=0.2, owns_connection=True)
        await p.start()
        assert "_process_headers" in vars(own.nc)  # journal.catchup's filter, on this one
        assert "_process_msg" in vars(own.nc) and p._fast  # journal.fastread, on this one
        assert "parse" in vars(own.nc._ps)
        await build_world(conn)
        await asyncio.sleep(0.7)  # idle heartbeats (status messages) arrive and are acted on
        subject = await build_world_more(conn)
        await p.catch_up(20)
        await p.close()
        assert "_process_headers" not in vars(conn.nc)  # the shared connection: untouched
        assert "_process_msg" not in vars(conn.nc)
        assert await project_until(conn, tmp_path / "shared.db") == p.last_seq
        assert dump(tmp_path / "own.db") == dump(tmp_path / "shared.db")
        assert dump(tmp_path / "own.db")["fixed_ips"]
        # a direct get on the shared connection still sees its reply's headers
        msg = await conn.js.get_last_msg(conn.stream, subject, direct=True)
        assert msg.headers and msg.headers.get("Nats-Subject") == subject
    finally:
        await own.close()


async def build_world_more(conn: Connection) -> str:
    """Ten more allocations; the subject they went to."""
    from tests.projector.test_projector_unit import alloc

    for i in range(200, 210):
        ev = alloc(f"10.0.0.{i}", f"late{i}")
        await publish_event(conn, ev, i)
    return str(ev.subject())


async def test_project_until_a_sequence_or_a_time(conn: Connection, tmp_path: Path) -> None:
    from tests.projector.test_projector_unit import alloc, net

    await publish_event(conn, net("1"))
    for i in range(3, 13):
        await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
    seen: list[int] = []
    assert (
        await project_until(
            conn, tmp_path / "a.db", to_seq=4, progress=lambda s, *_: seen.append(s)
        )
        == 4
    )
    assert seen and seen[-1] == 4
    assert rows(tmp_path / "a.db", "SELECT count(*) FROM fixed_ips") == [(3,)]
    # continue the same file to the end
    assert await project_until(conn, tmp_path / "a.db") == 11
    # by time: stop before the first message stored after message 6
    t6 = await _stored_time(conn, 6)
    t7 = await _stored_time(conn, 7)
    # Stored times have microsecond resolution here: cut half-way between the two messages.
    if t7 - t6 > 2e-6:
        assert await project_until(conn, tmp_path / "b.db", at=(t6 + t7) / 2) == 6
        rows_b = rows(tmp_path / "b.db", "SELECT max(seq), max(stream_time) FROM events")
        assert rows_b[0][0] == 6 and rows_b[0][1] <= (t6 + t7) / 2
    assert await project_until(conn, tmp_path / "c.db", to_seq=1000) == 11  # capped at the end


async def _stored_time(conn: Connection, seq: int) -> float:
    msg = await conn.js.get_msg(conn.stream, seq)
    assert msg.time is not None
    return msg.time.timestamp()


async def test_run_once_shows_its_progress_and_says_where_it_ended(
    conn: Connection,
    nats_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``projector run --once``: a bar of the sequence reached while it catches up (when a
    person watches: stderr a terminal), which names the building of the deferred indexes
    (the last part of a long catch-up), and the last sequence in its result."""
    from netledger.projector import bulk
    from netledger.projector.cli import catch_up_once
    from tests.projector.test_projector_unit import alloc, net

    monkeypatch.setattr(bulk, "BULK_MIN", 5)  # this short log is a long way behind (forked)

    await publish_event(conn, net("1"))
    for i in range(3, 13):
        await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
    end = await last_seq(conn)
    path = tmp_path / "p.db"
    for show in (True, False):
        own = await connect(nats_url, name="own")  # --once owns its connection
        try:
            out = await catch_up_once(own, path, batch_size=4, show_progress=show)
        finally:
            await own.close()
        assert out == {"db": str(path), "last_seq": end}
        err = capsys.readouterr().err
        if show:
            assert "projector → p.db" in err and f"{end}/{end}" in err
        else:
            assert err == ""
    assert dump(path)["fixed_ips"] and len(dump(path)["events"]) == end
    # what the bar was told, in order: the sequences reached, the building of the deferred
    # indexes while that lasts, and its own description again at the end
    told: list[tuple[int, str | None]] = []

    @contextlib.contextmanager
    def recording(description: str, total: int | None, enabled: bool | None = None) -> Any:
        yield lambda done, description=None: told.append((done, description))

    monkeypatch.setattr("netledger.common.progress.progress_bar", recording)
    own = await connect(nats_url, name="own")
    try:
        await catch_up_once(own, tmp_path / "again.db", batch_size=4)
    finally:
        await own.close()
    phases = [d for _, d in told if d is not None]
    assert phases == ["projector → again.db: building indexes", "projector → again.db"]
    assert told[-1] == (end, "projector → again.db")
    assert [n for n, d in told if d is None] == sorted(n for n, d in told if d is None)


async def test_the_projector_says_when_it_builds_the_deferred_indexes(
    conn: Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from netledger.projector import bulk
    from tests.projector.test_projector_unit import alloc, net

    await publish_event(conn, net("1"))
    for i in range(3, 13):
        await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
    said: list[str] = []
    monkeypatch.setattr(bulk, "BULK_MIN", 5)
    await project_until(conn, tmp_path / "far.db", on_building=lambda: said.append("far"))
    monkeypatch.setattr(bulk, "BULK_MIN", 1000)  # nothing deferred: nothing to say
    await project_until(conn, tmp_path / "near.db", on_building=lambda: said.append("near"))
    assert said == ["far"]
    assert dump(tmp_path / "far.db") == dump(tmp_path / "near.db")


async def test_run_into_a_file_that_is_no_projection_is_a_clear_error(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    import subprocess

    from tests.fault_helpers import NETLEDGER

    garbage = tmp_path / "notes.db"
    garbage.write_text("not a database\n" * 100)
    (tmp_path / "file").write_text("")
    for db, says in (
        (garbage, f"error [projection_not_found]: {garbage} is not a netledger projection"),
        (
            tmp_path / "file" / "p.db",
            f"error [projector_error]: cannot create the folder of the projection {tmp_path}",
        ),
    ):
        p = await asyncio.to_thread(
            subprocess.run,
            [NETLEDGER, "--nats", nats_url, "projector", "run", "--once", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.startswith(says), p.stderr
    assert garbage.read_text() == "not a database\n" * 100  # untouched
