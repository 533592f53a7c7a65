"""Review of the projector's reading path (hrev3): scenarios that lost, doubled or stalled.

Each test fails on the code it was written against; the docstring says what it shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.journal import stream as jstream
from netledger.journal.stream import connect, ensure_stream
from netledger.projector import runner
from netledger.projector.runner import Projector, project_until

#: how long a JetStream request waits for its answer while NATS is away (the connection's
#: default, 10 s, was most of each such test): no answer comes however long it waits
AWAY_TIMEOUT_S = 1.0


async def subscribe_with_nats_away(
    p: Projector, nats_server: EmbeddedNats, subscribe: Callable[[int], Awaitable[None]], seq: int
) -> None:
    """``subscribe(seq)`` with the server stopped, started again once it returned or raised."""
    conn = p.conn
    await asyncio.to_thread(nats_server.stop)
    p.conn = dataclasses.replace(conn, js=conn.nc.jetstream(timeout=AWAY_TIMEOUT_S))
    try:
        await subscribe(seq)
    finally:
        p.conn = conn
        await asyncio.to_thread(nats_server.start)


@pytest.mark.parametrize("owns", [False, True], ids=["shared", "owned"])
async def test_a_resubscription_that_fails_while_nats_is_away_does_not_stall_silently(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owns: bool
) -> None:
    """A back-pressure pause drops the consumer and subscribes again from a task
    (``_restart_reading``'s ``again``). If NATS does not answer that subscribe within
    ``retrying``'s window (30 s; shortened here to 1 s), ``Unavailable`` ends the task and
    nobody sees it: no subscription, no failure reported (``wait_failed`` / ``done`` never
    return), so ``projector run`` (a daemon) follows nothing for good once NATS is back."""
    from netledger.projector.bench import publish, synthetic

    monkeypatch.setattr(runner, "retrying", functools.partial(jstream.retrying, wait=1.0))
    conn = await connect(nats_server.url, name="stall-test")
    try:
        await ensure_stream(conn)
        end = await publish(conn, synthetic(3000, seed=3))
        p = Projector(
            conn, tmp_path / "p.db", batch_size=16, queue_size=64, heartbeat=0.5,
            owns_connection=owns,
        )  # fmt: skip
        subscribe = p._subscribe
        calls = 0

        async def subscribe_while_nats_is_away(start_seq: int) -> None:
            nonlocal calls
            calls += 1
            if calls != 2:  # the first resubscription (a pause): NATS is away meanwhile
                await subscribe(start_seq)
                return
            await subscribe_with_nats_away(p, nats_server, subscribe, start_seq)

        p._subscribe = subscribe_while_nats_is_away  # type: ignore[method-assign]
        await p.start()
        try:
            failed = asyncio.create_task(p.wait_failed())
            caught_up = asyncio.create_task(p.wait_for(end, None))
            await asyncio.wait({failed, caught_up}, timeout=15)
            failed.cancel()
            caught_up.cancel()
            assert calls >= 2, "no pause happened"
            # Either it read on once NATS was back, or it said it stopped: not silence.
            assert p.last_seq == end or p.failure is not None, (
                f"stalled at {p.last_seq} of {end}: no subscription, no failure reported"
                f" (resubscribe task: {p._resub})"
            )
        finally:
            await p.close()
    finally:
        await conn.close()


async def test_a_caught_up_projector_does_not_read_the_log_from_1_after_a_server_restart(
    nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A projector that starts caught up (its checkpoint is the log's end) has had no message
    delivered on its subscription: nats-py's ordered consumer then remembers stream seq 0.
    A server restart loses the consumer (memory storage); missed heartbeats make nats-py
    recreate it from ``_sseq + 1`` = 1, and the whole log is pushed again to be dropped as
    redeliveries — a cost that grows with the log's age at every NATS restart (DESIGN.md: no
    reader starts at sequence 1 in normal operation), unbounded in nats-py's queue on a
    shared connection."""
    from netledger.projector.bench import publish, synthetic
    from tests.projector.stream_helpers import publish_event
    from tests.projector.test_projector_unit import alloc, net

    conn = await connect(nats_server.url, name="writer")
    own = None
    try:
        await ensure_stream(conn)
        await publish_event(conn, net("9", cidr="10.9.0.0/24"))
        end = await publish(conn, synthetic(5000, seed=4))
        assert await project_until(conn, tmp_path / "p.db") == end
        own = await connect(nats_server.url, name="reader")
        p = Projector(own, tmp_path / "p.db", heartbeat=0.3, linger=0)
        await p.start()  # caught up: nothing is delivered on its subscription
        try:
            await asyncio.sleep(0.5)
            before = own.nc.stats["in_msgs"]
            await asyncio.to_thread(nats_server.stop)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(nats_server.start)
            seq = 0
            for _ in range(100):  # the client reconnects on its own; publish once it has
                try:
                    seq = await publish_event(conn, alloc("10.9.0.7", "i7"), 7)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            await p.wait_for(seq, 30)
            await asyncio.sleep(1.0)  # heartbeats settle
            delivered = own.nc.stats["in_msgs"] - before
        finally:
            await p.close()
        # the event appended, heartbeats, a few control messages: not the whole log again
        assert delivered < 500, f"{delivered} messages delivered for 1 new event (log: {end})"
    finally:
        if own is not None:
            await own.close()
        await conn.close()


async def test_resuming_after_a_full_disk_while_nats_is_away_does_not_stall_silently(
    nats_server: EmbeddedNats, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once space is back, ``_wait_for_space`` reopens and calls ``_follow``; if NATS does not
    answer its subscribe within ``retrying``'s window (30 s; 1 s here), ``_follow`` closes the
    projector (cancelling the very task it runs in) and raises into a task nobody awaits: no
    failure is reported (``wait_failed``, what ``projector run`` waits on, never returns) and
    nothing is read any more — the daemon answers with a frozen projection for good."""
    import sqlite3

    from netledger.projector.bench import publish, synthetic

    monkeypatch.setattr(runner, "retrying", functools.partial(jstream.retrying, wait=1.0))
    conn = await connect(nats_server.url, name="space-test")
    try:
        await ensure_stream(conn)
        end = await publish(conn, synthetic(500, seed=5))
        p = Projector(conn, tmp_path / "p.db", batch_size=16, heartbeat=0.5)
        p.resume_check = 0.05
        p.resume_free = 1  # space is "back" at once
        subscribe = p._subscribe
        calls = 0

        async def subscribe_while_nats_is_away(start_seq: int) -> None:
            nonlocal calls
            calls += 1
            if calls != 2:  # the resumption after the full disk: NATS is away meanwhile
                await subscribe(start_seq)
                return
            await subscribe_with_nats_away(p, nats_server, subscribe, start_seq)

        p._subscribe = subscribe_while_nats_is_away  # type: ignore[method-assign]
        await p.start()
        try:
            await p.wait_for(1, 30)
            w = p._writer
            assert w is not None
            # the writer says what a full disk makes it say (test_storage_projector.py does so)
            w._received(("failed", sqlite3.OperationalError("database or disk is full")))
            assert p.disk_full_pauses == 1
            failed = asyncio.create_task(p.wait_failed())
            caught_up = asyncio.create_task(p.wait_for(end, None))
            await asyncio.wait({failed, caught_up}, timeout=15)
            failed.cancel()
            caught_up.cancel()
            assert calls >= 2, "it never resumed"
            assert p.last_seq == end or p.failure is not None, (
                f"stalled at {p.last_seq} of {end}: not reading, no failure reported"
                f" (paused={p.paused!r}, resume task: {p._resume})"
            )
        finally:
            await p.close()
    finally:
        await conn.close()
