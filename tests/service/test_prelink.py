"""A host's first address in a network: the join published before the allocation, which lands
only right after it (service/prelink.py), instead of an atomic batch of both."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.events.codec import Envelope, encode
from netledger.events.errors import LogUnavailable
from netledger.events.placement_events import NetworkHostJoined
from netledger.events.types import FixedIpAllocated
from netledger.executor.view import HostView
from netledger.journal.stream import Connection, last_seq
from netledger.ops.status import service_stats
from netledger.service import lane_append
from netledger.service import lanes as lanes_module
from netledger.service.client import Client
from netledger.service.prelink import REASON, join_id, prelinkable
from netledger.service.service import CommandService
from tests.service.test_service import check_allocations, read_all
from tests.service.test_write_path_rare_rounds import allocate, two_replicas


async def batch_ids(conn: Connection, seqs: list[int]) -> set[str]:
    out = set()
    for seq in seqs:
        m = await conn.js.get_msg(conn.stream, seq)
        out.add((m.headers or {}).get("Nats-Batch-Id", ""))
    return out


def joins_before(events: list[tuple[int, str, Any]]) -> None:
    """Every host's first allocation in a network has a join for that host and network right
    before it in the stream (pre-linked) or right after it (the atomic batch a decision falls
    back to) — what an executor reading only its share needs. (Only allocations here: nothing
    is deallocated, so a host's first is its only join point.)"""
    by_seq = {seq: env for seq, _, env in events}

    def join_at(seq: int, key: tuple[str, str]) -> bool:
        env = by_seq.get(seq)
        ev = env.event if env is not None else None
        return isinstance(ev, NetworkHostJoined) and (ev.host, ev.network_id) == key

    held: set[tuple[str, str]] = set()
    for seq, _, env in events:
        ev = env.event if env is not None else None
        if not isinstance(ev, FixedIpAllocated) or ev.host is None:
            continue
        key = (ev.host, ev.network_id)
        if key not in held:
            assert join_at(seq - 1, key) or join_at(seq + 1, key), (
                f"{key}'s first allocation (seq {seq}) without its join next to it"
            )
        held.add(key)


def stopped(pid: int) -> bool:
    """Whether the process is stopped (state ``T`` in /proc/PID/stat)."""
    return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] == "T"


async def publish_orphan(
    c: Client, nid: str, host: str, command_id: str, msg_id: str | None = None
) -> None:
    """What a refused allocation leaves: its join alone, with the command's id (and the
    message id ``msg_id``: by default one no attempt of this code gives)."""
    join = NetworkHostJoined(network_id=nid, host=host, reason=REASON)
    orphan = Envelope(join, msg_id or f"{command_id}:1:orphan", command_id, time.time(), c.actor)
    await c.conn.js.publish(
        orphan.event.subject(), encode(orphan), headers={"Nats-Msg-Id": orphan.event_id}
    )


async def test_a_first_allocation_is_prelinked(conn: Connection, service: CommandService) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    a = await c.allocate_fixed_ip("i1", network_id=net["id"], host="h1", command_id="a-1")
    b = await c.allocate_fixed_ip("i2", network_id=net["id"], host="h1", command_id="a-2")
    events = await read_all(conn)
    tail = [(seq, env) for seq, _, env in events if env.command_id in ("a-1", "a-2")]
    assert [env.event.TYPE for _, env in tail] == [
        "NetworkHostJoined",
        "FixedIpAllocated",
        "FixedIpAllocated",
    ]
    join = tail[0][1].event
    assert (join.host, join.network_id, join.reason) == ("h1", net["id"], REASON)
    assert tail[0][0] + 1 == tail[1][0]
    assert await batch_ids(conn, [s for s, _ in tail]) == {""}, "no atomic batch"
    assert service.stats.prelinked == 1 and service.stats.batches == 0
    stats = service_stats(service)
    assert (stats["prelinked"], stats["prelink_broken"], stats["batches"]) == (1, 0, 0)
    assert [e.address for _, e in ((0, tail[1][1].event), (0, tail[2][1].event))] == [
        a["address"],
        b["address"],
    ]
    # A retry is answered from the allocation; the join is not kept among its events.
    assert [type(e) for e in map(_decoded, service.seen["a-1"])] == [FixedIpAllocated]
    assert await c.allocate_fixed_ip("i1", network_id=net["id"], host="h1", command_id="a-1") == a


async def test_a_retry_of_a_landed_first_allocation_appends_nothing(
    conn: Connection, nats_url: str
) -> None:
    """Replica b stores a host's first allocation pre-linked; the client's retry of the same
    command id reaches replica a before a's follower has read the allocation. The retry gets
    b's answer and appends nothing: its join is the server's duplicate of b's (one id for the
    same join of the same command), its allocation refused by the subject's check — as the
    atomic batch appended nothing. (Found by review: the join's id named the attempt, and the
    retry left an orphan join in the log.)"""
    async with two_replicas(nats_url) as (a, b):
        [net] = await Client(conn).create_networks(
            label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9"
        )
        nid = str(net["id"])
        top = await last_seq(conn)
        for s in (a, b):
            await s.follower.wait_for(top)
        loop = asyncio.get_running_loop()
        real_on_msg = a.follower._on_msg
        held = asyncio.Event()
        queue: list[Any] = []

        def release() -> None:
            while queue:
                real_on_msg(queue.pop(0))

        def on_msg(msg: Any) -> None:
            # a's follower lags: from b's allocation on, it reads 0.3 s late (in order)
            if queue or ((msg.headers or {}).get("Nats-Msg-Id") == "b-1:0" and not held.is_set()):
                if not queue:
                    held.set()
                    loop.call_later(0.3, release)
                queue.append(msg)
                return
            real_on_msg(msg)

        a.follower._on_msg = on_msg  # type: ignore[method-assign]
        first = await b._submit(allocate("i1", nid, "b-1"))
        assert b.stats.prelinked == 1
        await asyncio.wait_for(held.wait(), 5)
        before = await last_seq(conn)
        again = await a._submit(allocate("i1", nid, "b-1"))  # the client's retry
        assert again == first
        after = [(seq, env.event.TYPE, env.command_id) for seq, _, env in await read_all(conn)]
        assert [x for x in after if x[0] > before] == [], "the retry appended"


async def test_a_retry_links_to_its_orphan_when_it_is_still_the_last_message(
    conn: Connection, service: CommandService
) -> None:
    """A command whose allocation never landed left its join (the same id a retry gives the
    same join): the retry's join is that one's duplicate and, the orphan being the stream's
    last message, the allocation lands right after it — one join for the pair, not two."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    nid = str(net["id"])
    join = NetworkHostJoined(network_id=nid, host="h1", reason=REASON)
    await publish_orphan(c, nid, "h1", "a-1", join_id("a-1:1", join))
    a = await c.allocate_fixed_ip("i1", network_id=nid, host="h1", command_id="a-1")
    events = await read_all(conn)
    mine = [(seq, env) for seq, _, env in events if env.command_id == "a-1"]
    assert [env.event.TYPE for _, env in mine] == ["NetworkHostJoined", "FixedIpAllocated"]
    assert mine[0][0] + 1 == mine[1][0] and mine[1][1].event.address == a["address"]
    assert service.stats.prelinked == 1


async def test_a_retry_after_its_orphan_with_others_since_goes_as_a_batch(
    conn: Connection, service: CommandService
) -> None:
    """The same, but another message landed after the orphan: the retry's join is still its
    duplicate (nothing appended for it), so the link is broken — the allocation is refused
    whole and the decision goes as an atomic batch of its own join and allocation."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    nid = str(net["id"])
    join = NetworkHostJoined(network_id=nid, host="h1", reason=REASON)
    await publish_orphan(c, nid, "h1", "a-1", join_id("a-1:1", join))
    await c.allocate_fixed_ip("i0", network_id=nid, host="h0", command_id="z-1")
    a = await c.allocate_fixed_ip("i1", network_id=nid, host="h1", command_id="a-1")
    events = await read_all(conn)
    mine = [(seq, env) for seq, _, env in events if env.command_id == "a-1"]
    assert [env.event.TYPE for _, env in mine] == [
        "NetworkHostJoined",  # the orphan
        "FixedIpAllocated",  # the batch: the allocation, then its join
        "NetworkHostJoined",
    ]
    assert mine[1][0] + 1 == mine[2][0] and mine[1][1].event.address == a["address"]
    assert service.stats.prelink_broken == 1
    joins_before(events)


def _decoded(raw: bytes) -> Any:
    from netledger.events.codec import decode

    return decode(raw).event


async def test_a_retry_after_an_orphan_join_is_decided_again(
    conn: Connection, service: CommandService
) -> None:
    """What a refused allocation leaves: its join alone, with the command's id. The command's
    retry is not answered from it; it is decided and gets a join of its own right before."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    await publish_orphan(c, str(net["id"]), "h1", "a-1")
    await service.follower.catch_up()
    assert "a-1" not in service.seen

    a = await c.allocate_fixed_ip("i1", network_id=net["id"], host="h1", command_id="a-1")

    events = await read_all(conn)
    mine = [(seq, env) for seq, _, env in events if env.command_id == "a-1"]
    assert [env.event.TYPE for _, env in mine] == [
        "NetworkHostJoined",
        "NetworkHostJoined",
        "FixedIpAllocated",
    ]
    assert mine[0][1].event_id == "a-1:1:orphan" and mine[1][0] + 1 == mine[2][0]
    assert mine[2][1].event.address == a["address"]
    joins_before(events)


async def test_a_broken_link_falls_back_to_the_atomic_batch(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The join's id deduplicated (stored before: forced here), so the allocation's link to it
    breaks; the decision goes again as an atomic batch, and is answered once."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    # Stored before and not the stream's last message (were it the last, the link would hold:
    # the allocation would still land right after a message of that id).
    await conn.js.publish("netledger.evt.placement.elsewhere", b"x", headers={"Nats-Msg-Id": "j"})
    await conn.js.publish("netledger.evt.placement.elsewhere", b"y", headers={"Nats-Msg-Id": "k"})
    real = lane_append.prelinked_envelopes

    def reusing(envs: list[Envelope]) -> tuple[Envelope, list[Envelope]]:
        primary, placements = real(envs)
        return primary, [dataclasses.replace(p, event_id="j") for p in placements]

    monkeypatch.setattr(lane_append, "prelinked_envelopes", reusing)

    a = await c.allocate_fixed_ip("i1", network_id=net["id"], host="h1", command_id="a-1")

    events = await read_all(conn)
    mine = [(seq, env) for seq, _, env in events if env is not None and env.command_id == "a-1"]
    assert [env.event.TYPE for _, env in mine] == ["FixedIpAllocated", "NetworkHostJoined"]
    assert mine[0][1].event.address == a["address"]
    assert "" not in await batch_ids(conn, [s for s, _ in mine]), "one atomic batch"
    assert service.stats.prelinked == 0 and service.stats.batches == 1
    assert service_stats(service)["prelink_broken"] == 1


def test_only_one_checked_event_and_joins_are_prelinked() -> None:
    alloc = FixedIpAllocated(
        network_id="n1",
        address="10.0.0.5",
        instance="i",
        mac="fa:16:3e:00:00:01",
        host="h1",
        project="p1",
    )
    join = NetworkHostJoined(network_id="n1", host="h1")
    assert prelinkable([alloc, join])
    assert not prelinkable([alloc])
    assert not prelinkable([join, alloc])
    assert not prelinkable([alloc, join, alloc])


async def test_two_replicas_many_first_allocations(conn: Connection, nats_url: str) -> None:
    """Two replicas deciding first allocations of 40 hosts on 2 networks at once (their
    conflicts leave orphan joins): every answer is what the log holds, no address twice, and
    every host's first allocation has its join right before it."""
    async with two_replicas(nats_url) as svcs:
        nets = await Client(conn).create_networks(
            label="p", cidr="10.9.0.0/22", num_networks=2, network_size=512, mode="flat"
        )
        jobs: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()
        for k in range(160):
            jobs.put_nowait((f"i-{k}", str(nets[k % 2]["id"]), f"h{k % 40}"))
        results: dict[str, dict[str, Any]] = {}

        async def worker() -> None:
            cl = await Client.connect(nats_url)
            try:
                while not jobs.empty():
                    inst, nid, host = jobs.get_nowait()
                    results[inst] = await cl.allocate_fixed_ip(
                        inst, network_id=nid, host=host, command_id=f"cmd-{inst}"
                    )
            finally:
                await cl.close()

        await asyncio.gather(*(worker() for _ in range(12)))
        events = await read_all(conn)
        check_allocations(events, results, nets)
        joins_before(events)
        assert sum(s.stats.prelinked for s in svcs) > 0
        # The executor's side: a share view of each host builds what a whole-log view builds.
        for h in ("h0", "h1", "h37"):
            shared, whole = HostView(conn, h, share=True), HostView(conn, h, share=False)
            try:
                await shared.start()
                await whole.start()
                held = {
                    nid
                    for nid, n in whole.state.networks.items()
                    if any(ip.host == h for ip in n.fixed.values())
                }
                assert held and shared.networks == held
                for nid in held:
                    mine = {a for a, ip in whole.state.networks[nid].fixed.items() if ip.host == h}
                    assert mine and mine == {
                        a for a, ip in shared.state.networks[nid].fixed.items() if ip.host == h
                    }
            finally:
                await shared.close()
                await whole.close()


async def test_a_share_view_past_an_orphan_join(conn: Connection, service: CommandService) -> None:
    """A host's executor reading its share: an orphan join as the log's last message (its
    allocation refused) does not hold its start; the network is followed, nothing of the host
    is there; the host's real first allocation later is read."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="vxlan", vni_start=900)
    nid = str(net["id"])
    await publish_orphan(c, nid, "h9", "x-1")
    view = HostView(conn, "h9", share=True)
    try:
        await asyncio.wait_for(view.start(), 10)
        assert view.state.networks[nid].host_allocated.get("h9", 0) == 0
        a = await c.allocate_fixed_ip("i1", network_id=nid, host="h9")
        await asyncio.wait_for(view.sync(), 10)
        assert nid in view.networks
        assert view.state.networks[nid].fixed[a["address"]].host == "h9"
    finally:
        await view.close()


async def test_a_first_allocation_while_the_log_does_not_answer(
    nats_server: EmbeddedNats,
    conn: Connection,
    service: CommandService,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server stopped (SIGSTOP) as the pre-linked append goes out: the command is answered
    within its budget with the log's trouble, as any append without an answer, and the log's
    health is told (later commands are refused at once) — not after a catch-up of a log that
    does not answer (found by review: ~32 s, a generic error, the health never told)."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    settled: asyncio.Future[BaseException | None] = asyncio.get_running_loop().create_future()
    real_settled = lanes_module.Job._settled

    def note(self: Any) -> None:
        if getattr(self.req.command, "instance", None) == "i1" and not settled.done():
            settled.set_result(self.fut.exception())
        real_settled(self)

    monkeypatch.setattr(lanes_module.Job, "_settled", note)
    real = service.appender.append_prelinked
    assert nats_server.proc is not None
    pid = nats_server.proc.pid

    async def stopping(*a: Any, **k: Any) -> int:
        os.kill(pid, signal.SIGSTOP)
        # A signal takes effect when the process is next scheduled: wait until it has.
        while not stopped(pid):
            await asyncio.sleep(0.001)
        return await real(*a, **k)

    monkeypatch.setattr(service.appender, "append_prelinked", stopping)
    req = asyncio.create_task(
        c.request("fixed_ip.allocate", {"instance": "i1", "network_id": net["id"], "host": "h2"})
    )
    try:
        err = await settled
    finally:
        os.kill(pid, signal.SIGCONT)
        req.cancel()
        await asyncio.gather(req, return_exceptions=True)
    assert isinstance(err, LogUnavailable), repr(err)
    assert service.health.failing is not None
