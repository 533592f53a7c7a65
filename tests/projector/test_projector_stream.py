"""The projector against a real nats-server and real SQLite files."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import pytest
from nats.js.errors import NotFoundError

from netledger.common.natsserver import EmbeddedNats
from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.host_events import HostAnnounced, HostLinkCreated, HostNatApplied
from netledger.events.types import FixedIpAllocated
from netledger.journal.stream import Connection, connect, last_seq
from netledger.projector.compare import dump
from netledger.projector.errors import ProjectionAhead, StreamMismatch
from netledger.projector.runner import Projector, project_until
from netledger.projector.schema import schema_version
from netledger.service.client import Client
from netledger.service.service import CommandService


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


async def publish_event(conn: Connection, ev: Any, n: int = 0) -> int:
    env = Envelope(ev, f"direct-{ev.TYPE}-{n}:0", f"direct-{ev.TYPE}-{n}", 1.0 * n, SYSTEM)
    ack = await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)
    return int(ack.seq)


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
        assert "_process_msg" in vars(own.nc) and p._fast  # projector.fastread, on this one
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


async def test_refuses_a_stream_it_was_not_built_from(
    nats_server: EmbeddedNats, conn: Connection, tmp_path: Path
) -> None:
    from tests.projector.test_projector_unit import net

    await publish_event(conn, net("1"))
    await publish_event(conn, net("2", "10.0.1.0/24"))
    db = tmp_path / "p.db"
    assert await project_until(conn, db) == 2
    # the projection claims more than the stream has
    sqlite3.connect(db).execute("UPDATE projection_state SET last_seq = 50").connection.commit()
    with pytest.raises(ProjectionAhead):
        await project_until(conn, db)
    # a stream recreated under the same name
    sqlite3.connect(db).execute("UPDATE projection_state SET last_seq = 2").connection.commit()
    sqlite3.connect(db).execute(
        "UPDATE projection_state SET stream_created = '2001-01-01T00:00:00+00:00'"
    ).connection.commit()
    with pytest.raises(StreamMismatch) as exc:
        await project_until(conn, db)
    assert exc.value.code == "projection_stream_mismatch"


@pytest.mark.parametrize("owns", [False, True], ids=["shared", "owned"])
async def test_reconnects_when_the_server_comes_back(
    nats_server: EmbeddedNats, tmp_path: Path, owns: bool
) -> None:
    from netledger.journal.stream import ensure_stream
    from tests.projector.test_projector_unit import alloc, net

    conn = await connect(nats_server.url, name="reconnect-test")
    try:
        await ensure_stream(conn)
        await publish_event(conn, net("1"))
        # owned: the connection's parser and message processing are projector.fastread's
        p = Projector(conn, tmp_path / "p.db", heartbeat=0.5, owns_connection=owns)
        await p.start()
        assert p._fast == owns
        await p.wait_for(1, 10)
        await asyncio.to_thread(nats_server.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(nats_server.start)
        for i in range(3, 6):
            for _ in range(100):  # the client reconnects on its own; publish once it has
                try:
                    await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
        await p.wait_for(4, 30)
        await p.close()
        assert rows(tmp_path / "p.db", "SELECT count(*) FROM fixed_ips") == [(3,)]
    finally:
        await conn.close()


async def test_reading_pauses_when_the_writer_is_behind(conn: Connection, tmp_path: Path) -> None:
    from netledger.projector.bench import publish, synthetic

    end = await publish(conn, synthetic(3000, seed=5))
    # A tiny queue: the reader must stop and resume many times, losing and repeating nothing.
    p = Projector(conn, tmp_path / "small.db", batch_size=16, queue_size=64, to_seq=end)
    await p.start()
    assert await p.done() == end
    await p.close()
    assert p.pauses > 5
    assert await project_until(conn, tmp_path / "big.db") == end
    assert dump(tmp_path / "small.db") == dump(tmp_path / "big.db")
    assert rows(tmp_path / "small.db", "SELECT count(*) FROM rejected_events") == [(0,)]


async def test_a_pause_takes_what_was_already_sent(
    conn: Connection, nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause drops the consumer; what the server had sent before it heard of that is taken
    (``fastread.linger``, up to the queue size) instead of dropped and sent again: in a
    100,000-event catch-up the server delivered ~1.7 messages an event before, ~1.03 after.
    The same catch-up with and without it, on one stream: fewer deliveries, the same rows."""
    from netledger.projector import fastread
    from netledger.projector.bench import publish, synthetic

    end = await publish(conn, synthetic(8000, seed=8))

    async def catch_up(name: str) -> tuple[int, int]:
        own = await connect(nats_url, name=name)
        try:
            p = Projector(
                own, tmp_path / f"{name}.db", batch_size=50, queue_size=2000, to_seq=end,
                owns_connection=True,
            )  # fmt: skip
            before = own.nc.stats["in_msgs"]
            await p.start()
            assert p._fast
            assert await asyncio.wait_for(p.done(), 60) == end
            delivered = own.nc.stats["in_msgs"] - before
            await p.close()
            return delivered, p.pauses
        finally:
            await own.close()

    taken, pauses = await catch_up("lingering")
    with monkeypatch.context() as m:
        m.setattr(fastread, "linger", lambda nc, sub: None)
        dropped, _ = await catch_up("dropping")
    assert pauses > 1
    assert taken < dropped, (taken, dropped, end)
    assert await project_until(conn, tmp_path / "shared.db") == end
    for name in ("lingering", "dropping"):
        assert dump(tmp_path / f"{name}.db") == dump(tmp_path / "shared.db")


async def test_an_owned_connection_pauses_and_survives_a_lost_consumer(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    """On its own connection stored messages skip nats-py's callback (``projector.fastread``):
    pausing and resuming (new consumers), and the ordered consumer's own reset after its
    consumer vanished (missed heartbeats), lose and repeat nothing."""
    from netledger.projector.bench import publish, synthetic

    end = await publish(conn, synthetic(3000, seed=7))
    own = await connect(nats_url, name="own")
    try:
        p = Projector(
            own, tmp_path / "own.db", batch_size=16, queue_size=64, heartbeat=0.2, to_seq=end,
            owns_connection=True,
        )  # fmt: skip
        await p.start()
        assert p._fast
        await p.wait_for(200, 30)
        deleted = False
        while not deleted and p.last_seq < end:  # between two pauses: the one reading now
            sub = p._sub
            if sub is not None:
                with contextlib.suppress(NotFoundError):
                    deleted = await conn.js.delete_consumer(conn.stream, sub._consumer)
            await asyncio.sleep(0.001)
        assert await asyncio.wait_for(p.done(), 60) == end
        await p.close()
        assert p.pauses > 5 and deleted
    finally:
        await own.close()
    assert await project_until(conn, tmp_path / "shared.db") == end
    assert dump(tmp_path / "own.db") == dump(tmp_path / "shared.db")
    assert rows(tmp_path / "own.db", "SELECT count(*) FROM rejected_events") == [(0,)]


async def test_a_pause_while_resubscribing_is_not_lost(conn: Connection, tmp_path: Path) -> None:
    """The consumer's messages may come before ``js.subscribe`` returns: a pause they cause
    then (the resubscription still running) must still resume reading, not stall for good."""
    from netledger.projector.bench import publish, synthetic

    end = await publish(conn, synthetic(3000, seed=7))
    p = Projector(conn, tmp_path / "small.db", batch_size=16, queue_size=64, to_seq=end)
    subscribe = p._subscribe
    calls = 0

    async def slow_subscribe(start_seq: int) -> None:
        nonlocal calls
        calls += 1
        await subscribe(start_seq)
        if calls == 2:  # the first resubscription: its messages flow before it returns
            while not p._paused and p._reading:
                await asyncio.sleep(0.01)

    p._subscribe = slow_subscribe  # type: ignore[method-assign]
    await p.start()
    try:
        assert await asyncio.wait_for(p.done(), 60) == end
    finally:
        await p.close()
    assert await project_until(conn, tmp_path / "big.db") == end
    assert dump(tmp_path / "small.db") == dump(tmp_path / "big.db")


async def test_a_gap_seen_while_resubscribing_is_read_again(
    conn: Connection, tmp_path: Path
) -> None:
    """A gap seen while a resubscription's subscribe is still awaited (its messages flow
    already) is dropped there: the resubscription must subscribe once more from the first
    sequence not read, or a gap at the stream's last message would stall reading for good."""
    from netledger.projector.bench import publish, synthetic

    end = await publish(conn, synthetic(500, seed=11))
    p = Projector(conn, tmp_path / "gap.db", batch_size=16, to_seq=end)
    subscribe = p._subscribe
    starts: list[int] = []

    async def subscribe_seeing_a_gap(start_seq: int) -> None:
        starts.append(start_seq)
        await subscribe(start_seq)
        if len(starts) == 2:  # the first resubscription: a gap comes before it returns
            p._restart_reading(pause=False)

    p._subscribe = subscribe_seeing_a_gap  # type: ignore[method-assign]
    await p.start()
    try:
        p._restart_reading(pause=False)  # as a gap in the first consumer's messages does
        assert await asyncio.wait_for(p.done(), 60) == end
    finally:
        await p.close()
    assert len(starts) == 3  # the gap seen meanwhile subscribed once more
    assert await project_until(conn, tmp_path / "whole.db") == end
    assert dump(tmp_path / "gap.db") == dump(tmp_path / "whole.db")


async def test_refuses_a_log_restored_from_an_older_backup_and_written_past_it(
    tmp_path: Path,
) -> None:
    """Same stream name, same creation time, as long as before: only the messages differ. The
    projection resuming there would keep rows of events the log no longer has."""
    import shutil

    from netledger.common.natsserver import free_port
    from netledger.journal.stream import ensure_stream
    from netledger.projector.errors import LogDiverged
    from tests.projector.test_projector_unit import net

    server = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port(), sync_interval="default")
    log_dir = server.store_dir / "jetstream" / "$G" / "streams" / "NETLEDGER"
    db = tmp_path / "p.db"
    server.start()
    try:
        conn = await connect(server.url, name="test")
        await ensure_stream(conn)
        await publish_event(conn, net("1"))
        await conn.close()
        server.stop()
        shutil.copytree(log_dir, tmp_path / "backup")  # the backup: one event
        server.start()
        conn = await connect(server.url, name="test")
        await publish_event(conn, net("2", "10.0.1.0/24"), 2)
        await publish_event(conn, net("3", "10.0.2.0/24"), 3)
        assert await project_until(conn, db) == 3
        created = (await conn.js.stream_info(conn.stream)).created
        await conn.close()

        server.stop()
        shutil.rmtree(log_dir)
        shutil.copytree(tmp_path / "backup", log_dir)
        server.start()
        conn = await connect(server.url, name="test")
        try:
            await publish_event(conn, net("4", "10.0.3.0/24"), 4)
            await publish_event(conn, net("5", "10.0.4.0/24"), 5)
            info = await conn.js.stream_info(conn.stream)
            assert info.created == created and info.state.last_seq == 3  # nothing else tells
            with pytest.raises(LogDiverged) as exc:
                await project_until(conn, db)
            assert exc.value.code == "projection_log_diverged"
            assert rows(db, "SELECT last_seq FROM projection_state") == [(3,)]  # untouched
            # a new file projects the log as it is now
            assert await project_until(conn, tmp_path / "new.db") == 3
            assert rows(tmp_path / "new.db", "SELECT network_id FROM networks ORDER BY 1") == [
                ("1",),
                ("4",),
                ("5",),
            ]
            # a projection that is the log's resumes as before (its newest row checked)
            await publish_event(conn, net("6", "10.0.5.0/24"), 6)
            assert await project_until(conn, tmp_path / "new.db") == 4
        finally:
            await conn.close()
    finally:
        server.stop()


async def test_reopens_when_its_newest_row_is_a_rejected_event(
    conn: Connection, tmp_path: Path
) -> None:
    """A decodable event the projection rejects keeps no bytes (raw is NULL), and a message that
    cannot be decoded keeps only its first MAX_RAW bytes: neither is a restored log."""
    from netledger.projector.project_tx import MAX_RAW

    orphan = FixedIpAllocated(
        network_id="1", address="10.0.0.3", instance="i", mac="m", host=None, project=None
    )
    await publish_event(conn, orphan)  # decodes, but network 1 does not exist: rejected
    db = tmp_path / "p.db"
    assert await project_until(conn, db) == 1
    assert rows(db, "SELECT seq, raw FROM rejected_events") == [(1, None)]
    assert await project_until(conn, db) == 1  # opened again on the same log

    big = b"\xc1" + b"x" * (MAX_RAW + 10)  # not msgpack, longer than what is kept of it
    await conn.js.publish("netledger.evt.network.1", big, stream=conn.stream)
    assert await project_until(conn, db) == 2
    assert rows(db, "SELECT length(raw) FROM rejected_events WHERE seq = 2") == [(MAX_RAW,)]
    assert await project_until(conn, db) == 2


def test_a_rejected_event_row_is_compared_by_type_and_stored_time() -> None:
    import datetime

    from netledger.projector.anchor import NewestRow, same

    ev = FixedIpAllocated(
        network_id="1", address="10.0.0.3", instance="i", mac="m", host=None, project=None
    )
    data = encode(Envelope(ev, "e", "c", 1.0, SYSTEM))
    subject = ev.subject()
    at = datetime.datetime(2026, 12, 5, 9, 0, 0, 123456, tzinfo=datetime.UTC)
    row = NewestRow(7, subject, None, None, None, "FixedIpAllocated", at.timestamp())
    assert same(row, subject, data, at)
    assert same(row, subject, data, at + datetime.timedelta(microseconds=1))
    assert not same(row, subject, data, at + datetime.timedelta(seconds=2))  # written since
    assert not same(row._replace(type="NetworkCreated"), subject, data, at)
    assert not same(row, "netledger.evt.network.2", data, at)
