"""Review hrev13: the command service's write path under concurrency (two replicas on one
stream, interleavings forced by wrapping methods, never by timing)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from netledger.events.codec import Envelope
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_service import read_all
from tests.service.test_write_path_rare_rounds import allocate, allocate_for_project, two_replicas


@contextlib.contextmanager
def held_follower(svc: CommandService, *, until_append: bool = False) -> Iterator[list[Any]]:
    """``svc``'s follower delivers nothing while inside (the messages kept, in order); on
    leaving, what was kept is delivered. A replica that has not read the log yet.
    ``until_append``: delivered as soon as ``svc``'s first append inside has its answer (the
    reader goes on, as it would, once the lane has appended on its stale view)."""
    real = svc.follower._on_msg
    kept: list[Any] = []
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            svc.follower._on_msg = real  # type: ignore[method-assign]
            for m in kept:
                real(m)

    def hold(msg: Any) -> None:
        if released:
            real(msg)
        else:
            kept.append(msg)

    real_append = svc.appender.append

    async def append(*args: Any, **kw: Any) -> int:
        try:
            return await real_append(*args, **kw)
        finally:
            release()

    svc.follower._on_msg = hold  # type: ignore[method-assign]
    if until_append:
        svc.appender.append = append  # type: ignore[method-assign]
    try:
        yield kept
    finally:
        svc.appender.append = real_append  # type: ignore[method-assign]
        release()


async def live_holders(conn: Connection) -> dict[str, list[str]]:
    """address -> the instances holding it, per the log."""
    holder: dict[tuple[str, str], str] = {}
    for _, _, env in await read_all(conn):
        if not isinstance(env, Envelope):
            continue
        ev = env.event
        if isinstance(ev, FixedIpAllocated):
            holder[(ev.network_id, ev.instance)] = ev.address
        elif isinstance(ev, FixedIpDeallocated):
            holder.pop((ev.network_id, ev.instance), None)
    out: dict[str, list[str]] = {}
    for (_, inst), addr in holder.items():
        out.setdefault(addr, []).append(inst)
    return out


async def test_chain_head_refused_next_link_lands_on_another_replicas_copy(
    conn: Connection, nats_url: str
) -> None:
    """A retry (command c) reaches replica a, which has not read b's first answer to it yet,
    and is decided in one round with a new command d: a chain [c:0, d:0]. The head is refused
    (its subject check is stale), but d:0's ``Nats-Expected-Last-Msg-Id`` is ``c:0`` — the id
    of *b's* message, the stream's last — so d:0 lands, decided on a's version of c, and the
    chain's "contiguous prefix" has a fold a's c:0 at b's sequence. Fixed: every link but the
    last is stored under an id of its chain alone (``Appender.append_chain``)."""
    async with two_replicas(nats_url) as (a, b):
        a.pipeline = True
        c = Client(conn)
        [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
        nid = net["id"]
        await b._submit(allocate("i0", nid, "c0"))  # h1 joined: no placements later
        top = await last_seq(conn)
        await a.follower.wait_for(top)
        await b.follower.wait_for(top)

        # (released once a appends one by one after its chain: its catch-up must read)
        with held_follower(a, until_append=True):
            await b._submit(allocate("iz", nid, "cz"))
            first = await b._submit(allocate("ix", nid, "cx"))
            # the client's retry of cx (its reply lost) reaches a, with another command
            futs = [
                a._submit_nowait(allocate("ix", nid, "cx")),
                a._submit_nowait(allocate("iy", nid, "cy")),
            ]
            res = await asyncio.gather(*futs, return_exceptions=True)
        await a.follower.wait_for(await last_seq(conn))

        held = await live_holders(conn)
        twice = {k: v for k, v in held.items() if len(v) > 1}
        assert not twice, f"an address held by two instances: {twice}"
        assert res[0] == first, (res[0], first)
        # a's state agrees with the log
        n = a.state.networks[nid]
        in_state = {inst: n.fixed[k].address for inst, k in n.by_instance.items()}
        in_log = {inst: addr for addr, insts in held.items() for inst in insts}
        assert in_state == in_log


def deallocate(instance: str, network_id: str, command_id: str) -> Any:
    from netledger.events.commands import parse_command

    return parse_command(
        "fixed_ip.deallocate",
        {
            "command_id": command_id,
            "actor": {"role": "admin"},
            "args": {"instance": instance, "network_id": network_id},
        },
    )


async def test_duplicate_ack_from_another_subject_taken_for_a_landing(
    conn: Connection, nats_url: str
) -> None:
    """A retry (command cx) reaches replica a, which has not read b's first answer to it: on
    a's stale view the least used flat network is another one than b chose, whose subject did
    not move, so the subject check passes and the server acknowledges it as the duplicate of
    b's message (same ``Nats-Msg-Id``) — at b's sequence on *another* subject. The lane tells a
    duplicate by ``seq <= check``, which a sequence of another subject passes: it folds its
    own event (not in the log) at b's sequence and answers it."""
    async with two_replicas(nats_url) as (a, b):
        c = Client(conn)
        [n1] = await c.create_networks(label="a", cidr="10.8.0.0/24", mode="flat", bridge="bra")
        [n2] = await c.create_networks(label="b", cidr="10.9.0.0/24", mode="flat", bridge="brb")
        await b._submit(allocate("i1", n1["id"], "c1"))
        await b._submit(allocate("i2", n2["id"], "c2"))
        await b._submit(allocate("i3", n2["id"], "c3"))
        top = await last_seq(conn)
        await a.follower.wait_for(top)
        await b.follower.wait_for(top)

        with held_follower(a, until_append=True):
            # on b: n2 empties, so the project's instance goes to n2 (n1 holds one)
            await b._submit(deallocate("i2", n2["id"], "d2"))
            await b._submit(deallocate("i3", n2["id"], "d3"))
            first = await b._submit(allocate_for_project("ix", "p1", "cx"))
            assert first["network_id"] == n2["id"]
            # the client's retry (its reply lost) reaches a: on a's view n1 is the least used
            again = await a._submit(allocate_for_project("ix", "p1", "cx"))
        await a.follower.wait_for(await last_seq(conn))

        assert again == first
        # a's fold is the log's: ix holds no address on n1
        assert "ix" not in a.state.networks[n1["id"]].by_instance
        # and n1 still takes a's appends
        await a._submit(allocate("i4", n1["id"], "c4"))


async def test_chain_unanswered_then_no_stream_is_not_called_not_applied(
    nats_server: Any, tmp_path: Any
) -> None:
    """A round of two allocations goes as a chain; both are stored, their acknowledgements
    lost (budget/2 runs out). The first goes on alone within what is left of the budget and
    meets no stream (the server restarting: no responders) until the budget ends. The answer
    took its outcome from the one-by-one attempt alone, ``not_applied``, although the chain's
    attempt of the same message got no answer — and is in the log (review 11's rule, lost at
    the chain's boundary)."""
    from netledger.common.natsserver import EmbeddedNats, free_port
    from netledger.events.errors import LogUnavailable
    from tests.journal.test_append_outcome_review11 import AckDropper

    other = EmbeddedNats(tmp_path / "other", port=free_port())  # JetStream, no netledger stream
    await asyncio.to_thread(other.start)
    relay = AckDropper(nats_server.port)
    port = await relay.start()
    direct = await connect(nats_server.url)
    await ensure_stream(direct)
    conn = await connect(f"nats://127.0.0.1:{port}")
    svc = CommandService(conn, append_budget=4.0)
    try:
        await svc.start()
        svc.pipeline = True
        c = Client(direct)
        [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
        nid = net["id"]
        await c.allocate_fixed_ip("i0", network_id=nid, host="h1")  # h1 joined
        await svc.follower.wait_for(await last_seq(direct))

        real_chain = svc.appender.append_chain

        async def append_chain(*args: Any, **kw: Any) -> Any:
            out = await real_chain(*args, **kw)
            relay.cut(other.port)  # the server goes away: its restart has no stream yet
            # the one-by-one rest starts once connected again (to no stream): its attempts
            # all meet no responders, none goes unanswered
            nc = conn.nc
            while not (nc.is_connected and (nc._server_info or {}).get("port") == other.port):
                await asyncio.sleep(0.01)
            return out

        svc.appender.append_chain = append_chain  # type: ignore[method-assign]
        relay.dropping = True
        futs = [
            svc._submit_nowait(allocate("i1", nid, "k1")),
            svc._submit_nowait(allocate("i2", nid, "k2")),
        ]
        res = await asyncio.gather(*futs, return_exceptions=True)
        in_log = {
            env.command_id
            for _, _, env in await read_all(direct)
            if isinstance(env, Envelope) and isinstance(env.event, FixedIpAllocated)
        }
        assert {"k1", "k2"} <= in_log  # both stored
        for r in res:
            assert isinstance(r, LogUnavailable), r
            assert r.details.get("outcome") == "unknown", (r.code, r.details)
    finally:
        await svc.close()
        await conn.close()
        await direct.close()
        await relay.close()
        await asyncio.to_thread(other.stop)


async def test_only_decisions_on_the_subject_their_request_names_go_chained(
    conn: Connection, service: CommandService
) -> None:
    """A chain's links after the first are stored under ids of the chain alone, so the
    duplicate window no longer catches another replica's copy of their command there; only the
    head's subject check does, which sees a copy on the same subject. An allocation that names
    no network (a flat network picked for it, perhaps another one in the copy) therefore goes
    one by one; allocations on a named network still go chained."""
    c = Client(conn)
    [net] = await c.create_networks(label="f", cidr="10.12.0.0/24", mode="flat", bridge="brf")
    await service._submit(allocate("i0", net["id"], "c0"))  # h1 joined: no placements later
    service.pipeline = True
    chained: list[int] = []
    real = service.appender.append_chain

    async def counting(messages: Any, *args: Any, **kw: Any) -> Any:
        chained.append(len(messages))
        return await real(messages, *args, **kw)

    service.appender.append_chain = counting  # type: ignore[method-assign]
    picked = [
        service._submit_nowait(allocate_for_project(f"p{i}", "p9", f"cp{i}")) for i in range(4)
    ]
    await asyncio.gather(*picked)
    assert chained == [], "allocations whose network the decision picks went chained"
    named = [service._submit_nowait(allocate(f"n{i}", net["id"], f"cn{i}")) for i in range(4)]
    await asyncio.gather(*named)
    assert chained and max(chained) > 1, "allocations on a named network no longer chain"
