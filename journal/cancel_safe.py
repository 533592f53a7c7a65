"""Making a thing that must be undone, safely against a cancellation of its maker.

Some of nats-py's calls make their thing before they return it: ``kv.watch`` puts its
subscription on the connection (its callback, its heartbeat and flow-control tasks, the server's
consumer kept alive by that interest), then asks for the consumer's info — a round trip. A
cancellation there (a command service closed while it starts) returned nothing to stop it
with, and the watch went on for the connection's life. :func:`made_or_undone` lets such a call
run to its end when its caller is cancelled, undoes what it made, then lets the cancellation
go on.

(``js.subscribe`` and ``js.pull_subscribe`` need none of it: their subscription is on the
connection only in their last step, which does not wait. Cancelled before it, in the consumer's
creation, they leave at most a consumer nobody listens to, which the server drops after its
inactivity threshold as it does after any unsubscribe.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from netledger.journal.stream import CLOSE_TIMEOUT_S

log = logging.getLogger("netledger.journal")

T = TypeVar("T")


async def made_or_undone(make: Awaitable[T], undo: Callable[[T], Awaitable[object]]) -> T:
    """``await make`` — and if the caller is cancelled meanwhile, ``make`` runs on to its end
    (up to :data:`CLOSE_TIMEOUT_S`), what it made is undone with ``undo``, and the cancellation
    goes on. A second cancellation while waiting gives up on the undoing."""
    making = asyncio.ensure_future(make)
    try:
        return await asyncio.shield(making)
    except asyncio.CancelledError:
        await _undo(making, undo)
        raise


async def _undo(making: asyncio.Future[T], undo: Callable[[T], Awaitable[object]]) -> None:
    try:
        await asyncio.wait([making], timeout=CLOSE_TIMEOUT_S)
    finally:  # (a second cancellation: what it makes is left to the connection's close)
        if not making.done():
            making.cancel()
    if making.cancelled() or making.exception() is not None:
        return  # nothing made (the exception is retrieved: the caller was cancelled)
    try:
        await asyncio.wait_for(undo(making.result()), CLOSE_TIMEOUT_S)
    except Exception as exc:  # the connection gone: so is what it made
        log.debug("undoing what a cancelled call made: %s", exc)
