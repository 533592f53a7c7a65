"""What the service does with its own appends when its follower reads them back (issue 15):
they were folded from the publish ack, so the follower does not decode them again (``_fold``
would only skip them); another replica's events on the same network are decoded and folded as
before, and both replicas end with the same state. Also the lane queue (service.lanes.LaneQueue)
and an answer written at once (NetledgerNats.write_now), on a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netledger.events.codec import Envelope
from netledger.events.commands import Request, parse_command
from netledger.events.types import FixedIpAllocated
from netledger.journal import follow as stream_module
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.service.client import Client
from netledger.service.lanes import LaneQueue
from netledger.service.service import CommandService
from tests.service.test_service import read_all


def record_decodes(
    monkeypatch: pytest.MonkeyPatch, services: dict[int, CommandService] | None = None
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """For each follower (by id), the stream sequences it decoded, and of those the ones its
    service (``services``: follower id -> service) had folded already when the follower read
    them: decoded *again*. An own event the follower delivers before its publish ack arrives
    is rightly decoded and folded by the follower (the ack's fold then skips it)."""
    decoded: dict[int, list[int]] = {}
    again: dict[int, list[int]] = {}
    real_handle = stream_module.Follower._handle
    real_decode = stream_module.decode_fast
    current: list[tuple[int, int, bool]] = []

    def decode(raw: bytes) -> Envelope:
        who, seq, folded = current[-1]
        decoded.setdefault(who, []).append(seq)
        if folded:
            again.setdefault(who, []).append(seq)
        return real_decode(raw)

    def handle(self: Any, seq: int, subject: str, data: bytes, msg: Any) -> bool:
        svc = (services or {}).get(id(self))
        folded = svc is not None and svc.state.seq_of(subject) >= seq
        current.append((id(self), seq, folded))
        try:
            return bool(real_handle(self, seq, subject, data, msg))
        finally:
            current.pop()

    monkeypatch.setattr(stream_module, "decode_fast", decode)
    monkeypatch.setattr(stream_module.Follower, "_handle", handle)
    return decoded, again


def allocate(network_id: str, instance: str) -> Request:
    return parse_command(
        "fixed_ip.allocate",
        {
            "command_id": f"cmd-{instance}",
            "actor": {"role": "admin"},
            "args": {"instance": instance, "network_id": network_id, "host": "h1"},
        },
    )


async def test_own_appends_are_not_decoded_again_others_are(
    conn: Connection, nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conns = [await connect(nats_url, name=f"r{i}") for i in range(2)]
    svcs = [CommandService(c) for c in conns]
    try:
        for c in conns:
            await ensure_stream(c)
        for s in svcs:
            await s.start()
        [net] = await Client(conn).create_networks(label="o", cidr="10.7.0.0/24")
        top = await last_seq(conn)
        for s in svcs:
            await s.follower.wait_for(top)
        a, b = svcs
        decoded, again = record_decodes(monkeypatch, {id(a.follower): a, id(b.follower): b})
        # Each replica allocates through its own lane, one after the other, each deciding
        # on what it has folded (b waits until it has read a's allocation).
        got: dict[str, dict[str, Any]] = {}
        for svc, name in ((a, "from-a"), (b, "from-b"), (a, "again-a"), (b, "again-b")):
            await svc.follower.wait_for(await last_seq(conn))
            got[name] = await svc._submit(allocate(net["id"], name))
        top = await last_seq(conn)
        for s in svcs:
            await s.follower.wait_for(top)
        seq_of = {
            env.command_id.removeprefix("cmd-"): seq
            for seq, _, env in await read_all(conn)
            if isinstance(env, Envelope) and isinstance(env.event, FixedIpAllocated)
        }
        assert set(seq_of) == set(got)
        mine = {id(a.follower): ("from-a", "again-a"), id(b.follower): ("from-b", "again-b")}
        for svc, other in ((a, b), (b, a)):
            f = id(svc.follower)
            for name in mine[f]:
                assert seq_of[name] not in again.get(f, []), f"{name} decoded again by its writer"
            for name in mine[id(other.follower)]:
                assert decoded[f].count(seq_of[name]) == 1, f"{name} not decoded by the other"
        subject = f"netledger.evt.network.{net['id']}"
        for s in svcs:
            n = s.state.networks[net["id"]]
            for name, result in got.items():
                assert n.fixed[n.by_instance[name]].address == result["address"]
            assert s.state.seq_of(subject) == max(seq_of.values())
            assert s.rejected_total == 0
            assert s.follower.applied_seq == top
        assert len({r["address"] for r in got.values()}) == 4
    finally:
        for s in svcs:
            await s.close()
        for c in conns:
            await c.close()


async def test_answers_written_at_once_reach_every_client(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    """One client after another (a single busy lane: answers written at once) and then many
    at once (several lanes: answers share the pass's write): every answer arrives, right."""
    admin = Client(conn)
    nets = await admin.create_networks(label="w", cidr="10.8.0.0/22", num_networks=4)
    one = await Client.connect(nats_url)
    try:
        seq = [await one.allocate_fixed_ip(f"s{i}", network_id=nets[0]["id"]) for i in range(20)]
        many = await asyncio.gather(
            *(one.allocate_fixed_ip(f"m{i}", network_id=nets[i % 4]["id"]) for i in range(40))
        )
    finally:
        await one.close()
    assert len({r["address"] for r in seq}) == 20
    assert len({(r["network_id"], r["address"]) for r in many}) == 40
    assert service._busy_lanes == 0
    assert service.conn.nc._pending_data_size == 0


async def test_write_now_sends_what_is_pending_in_order(conn: Connection) -> None:
    nc = conn.nc
    got: list[bytes] = []

    async def take(msg: Any) -> None:
        got.append(msg.data)

    sub = await nc.subscribe("t.order", cb=take)
    await nc.flush()
    for i in range(5):
        nc.publish_nowait("t.order", b"%d" % i)
    nc.write_now()
    assert nc._pending_data_size == 0 and not nc._pending
    nc.publish_nowait("t.order", b"5")  # after it: the pass's own write
    await nc.flush()
    for _ in range(100):
        if len(got) == 6:
            break
        await asyncio.sleep(0.01)
    await sub.unsubscribe()
    assert got == [b"%d" % i for i in range(6)]


async def test_lane_queue_hands_jobs_over_in_order() -> None:
    q = LaneQueue()
    got: list[Any] = []

    async def reader() -> None:
        while len(got) < 5:
            got.append(await q.get())
            while not q.empty():
                got.append(q.get_nowait())

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)  # the reader waits on the empty queue
    for i in range(3):
        q.put_nowait(i)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    q.put_nowait(3)  # type: ignore[arg-type]
    q.put_nowait(4)  # type: ignore[arg-type]
    await asyncio.wait_for(task, 10)
    assert got == [0, 1, 2, 3, 4]
    assert q.empty()
    with pytest.raises(IndexError):
        q.get_nowait()


async def test_an_answer_whose_write_at_once_fails_still_goes_out(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """write_now raising (a transport closing under it) neither fails the lane nor loses the
    answer: it stays pending and the pass's own write sends it."""
    [net] = await Client(conn).create_networks(label="f", cidr="10.6.0.0/24")
    calls: list[int] = []

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("transport closing")

    monkeypatch.setattr(service.conn.nc, "write_now", broken)
    client = Client(conn)
    got = [await client.allocate_fixed_ip(f"f{i}", network_id=net["id"]) for i in range(3)]
    assert calls, "the answer was never written at once"
    assert len({r["address"] for r in got}) == 3
    assert service.stats.commands["fixed_ip.allocate:ok"] == 3
