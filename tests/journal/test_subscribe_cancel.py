"""A cancellation that lands while a subscription is being made leaves nothing behind.

nats-py's ``kv.watch`` subscribes (an ordered push consumer, its subscription on the
connection, two tasks of its own), then asks for the consumer's info before it returns the
watcher: a cancellation there (the command service closed during its start) lost the watcher,
and its subscription went on — messages delivered to a callback that waits for a setup that
never comes, the server's consumer kept alive by that interest, nats-py's heartbeat and flow
control tasks pending — with nothing left to stop it. Landed deterministically: the caller is
cancelled at the first pass of the loop after the subscription is on the connection (the
consumer's info is a round trip away).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from netledger.events.ids import network_subject
from netledger.journal.cancel_safe import made_or_undone
from netledger.journal.follow import Follower
from netledger.journal.liveness import LIVE_STREAM, HeartbeatBook
from netledger.journal.stream import Connection, ensure_stream
from netledger.service.service import CommandService, Unavailable


def _js_subs(conn: Connection) -> set[int]:
    """The connection's subscriptions of JetStream consumers (nats-py's ``_jsi`` state)."""
    return {sid for sid, s in conn.nc._subs.items() if getattr(s, "_jsi", None) is not None}


async def _when(cond: Callable[[], bool], then: Callable[[], Any], task: asyncio.Task[Any]) -> bool:
    """Call ``then`` at the first pass of the loop where ``cond`` holds (False: ``task`` ended
    first)."""
    while not cond():
        if task.done():
            return False
        await asyncio.sleep(0)
    then()
    return True


async def _bound_consumers(conn: Connection) -> list[str]:
    """The live bucket's consumers someone still listens to, once the server has taken in the
    unsubscribes sent (it updates a consumer's interest on its own, a moment after the UNSUB:
    asked for up to 10 s). A consumer without interest goes by itself after its inactivity
    threshold; one with interest never does."""
    for _ in range(200):
        bound = [c.name for c in await conn.js.consumers_info(LIVE_STREAM) if c.push_bound]
        if not bound:
            break
        await asyncio.sleep(0.05)
    return bound


def _nats_tasks(before: set[asyncio.Task[Any]]) -> list[str]:
    """nats-py's tasks of a JetStream subscription started since ``before``, still running."""
    names = ("activity_check", "check_flow_control_response", "_wait_for_msgs")
    return [
        t.get_coro().__qualname__  # type: ignore[union-attr]
        for t in asyncio.all_tasks() - before
        if not t.done()
        and not t.cancelling()
        and any(n in t.get_coro().__qualname__ for n in names)  # type: ignore[union-attr]
    ]


async def test_a_heartbeat_watch_cancelled_as_it_subscribes_leaves_no_subscription(
    conn: Connection,
) -> None:
    book = HeartbeatBook(conn)
    subs, tasks = _js_subs(conn), asyncio.all_tasks()
    starting = asyncio.create_task(book.start())
    assert await _when(lambda: _js_subs(conn) != subs, starting.cancel, starting)
    with pytest.raises(asyncio.CancelledError):
        await starting
    await book.close()
    assert _js_subs(conn) == subs, "the watch's subscription left on the connection"
    assert await _bound_consumers(conn) == []
    await asyncio.sleep(0)  # (a task cancelled ends at its next step)
    assert _nats_tasks(tasks) == []


async def test_a_service_closed_as_its_heartbeat_watch_subscribes_leaves_no_subscription(
    conn: Connection,
) -> None:
    """The command service's contract (close() during start(): nothing it made keeps
    running), for a close that lands in the heartbeat watch's creation."""
    svc = CommandService(conn, reap_interval=None)
    subs = set(conn.nc._subs)
    js_subs = _js_subs(conn)
    closing: list[asyncio.Task[None]] = []
    starting = asyncio.create_task(svc.start())

    def watch_made() -> bool:
        # the follower's consumer is made before the book: the second one is the watch's
        return svc.heartbeats is not None and len(_js_subs(conn) - js_subs) >= 2

    def close() -> None:
        closing.append(asyncio.create_task(svc.close()))

    assert await _when(watch_made, close, starting)
    with pytest.raises(Unavailable, match="closed while it started"):
        await starting
    await closing[0]
    assert set(conn.nc._subs) == subs, "a subscription left on the connection"
    assert await _bound_consumers(conn) == []


# --- made_or_undone on its own (plain futures) ------------------------------------------------


async def test_a_cancelled_caller_gets_what_was_made_undone_then_its_cancellation() -> None:
    made: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    undone: list[str] = []

    async def undo(thing: str) -> None:
        undone.append(thing)

    caller = asyncio.create_task(made_or_undone(made, undo))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0)
    assert undone == [] and not caller.done()  # the making is waited for
    made.set_result("watch")
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert undone == ["watch"]


async def test_a_making_that_fails_is_the_callers_failure_and_nothing_is_undone() -> None:
    async def make() -> str:
        raise ValueError("no bucket")

    async def undo(thing: str) -> None:
        raise AssertionError("nothing was made")

    with pytest.raises(ValueError, match="no bucket"):
        await made_or_undone(make(), undo)


async def test_a_second_cancellation_gives_up_the_undoing() -> None:
    made: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def undo(thing: str) -> None:
        raise AssertionError("given up")

    caller = asyncio.create_task(made_or_undone(made, undo))
    await asyncio.sleep(0)
    caller.cancel()
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert made.cancelled()


# --- a resubscription that failed -----------------------------------------------------------


async def test_a_share_narrowed_again_after_its_resubscription_failed_is_read(
    conn: Connection,
) -> None:
    """A share that shrinks (a host leaves a network) while the new consumer cannot be made —
    NATS away beyond ``retrying``'s 30 s, or an error that is not transient; here the stream is
    missing — fails with no subscription left (the old one is dropped first). The executor's
    view tries again with the same subjects and nothing to backfill, and ``set_subjects``
    took that for "nothing changed": the follower stayed without a subscription for good."""
    a, b = network_subject("a"), network_subject("b")
    follower = Follower(conn, lambda *x: None, subject=[a, b])
    await follower.start()
    try:
        await conn.js.delete_stream(conn.stream)
        with pytest.raises(NotFoundError):
            await follower.set_subjects([a], {})
        await ensure_stream(conn)
        await follower.set_subjects([a], {})  # the view's retry: same subjects, no backfill
        ack = await conn.js.publish(a, b"not an event")
        await follower.wait_for(ack.seq, timeout=30)  # (only a failure waits)
    finally:
        await follower.stop()
