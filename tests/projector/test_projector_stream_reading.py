"""The projector reading a real stream: flow control and lost subscriptions.

Reading pauses when the writer is behind (and a pause takes what the server had already sent),
survives a consumer deleted under it, a pause or a gap while a resubscription is still under way,
and the server going away and coming back, on a shared connection and on its own: losing and
repeating nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from netledger.common.natsserver import EmbeddedNats
from netledger.journal.stream import Connection, connect
from netledger.projector.compare import dump
from netledger.projector.runner import Projector, project_until
from tests.projector.stream_helpers import publish_event, rows


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
        # owned: the connection's parser and message processing are journal.fastread's
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
    from netledger.journal import fastread
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
    """On its own connection stored messages skip nats-py's callback (``journal.fastread``):
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
