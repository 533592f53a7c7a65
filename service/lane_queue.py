"""A lane's waiting jobs (:class:`LaneQueue`) and what waits there (:class:`Job`): a request
and the future of its answer. The lanes themselves, which take the jobs and decide them, are
:mod:`netledger.service.lanes`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netledger.events.commands import Request

log = logging.getLogger("netledger.service")


@dataclass
class Job:
    req: Request
    fut: asyncio.Future[dict[str, Any]]
    queued: float = field(default_factory=time.monotonic)
    #: called with the future as soon as it is settled (a request from the read loop is
    #: answered right there, not one pass of the event loop later by a done-callback)
    on_done: Callable[[asyncio.Future[dict[str, Any]]], None] | None = None

    def resolve(self, result: dict[str, Any]) -> None:
        # A future already settled (cancelled by its caller — the reaper's, a close — while
        # the lane awaited its append) is left as it is: setting it raised InvalidStateError
        # out of the lane, which then failed every job of its round (review hrev13's note).
        if self.fut.done():
            return
        self.fut.set_result(result)
        self._settled()

    def fail(self, exc: BaseException) -> None:
        if self.fut.done():
            return
        self.fut.set_exception(exc)
        self._settled()

    def _settled(self) -> None:
        if self.on_done is not None:
            try:
                self.on_done(self.fut)
            except Exception:  # answering one job must not stop the lane answering the rest
                log.exception("answering command %s failed", self.req.command_id)


class LaneQueue:
    """A lane's waiting jobs: what the lane uses of ``asyncio.Queue`` (unbounded, one reader),
    without its loop checks and bookkeeping on every put and get; and what ending an idle lane
    needs (:meth:`~netledger.service.lanes.Lanes._end_idle_lanes`): whether it took a job
    lately, whether its worker is deciding one, and :meth:`end`."""

    __slots__ = ("_jobs", "_waiter", "busy", "ended", "used")

    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self._waiter: asyncio.Future[None] | None = None
        #: a job was put since the last look at idle lanes (cleared there)
        self.used = False
        #: the worker holds jobs it took (deciding them or waiting for their acks)
        self.busy = False
        #: no more jobs come (the lane is out of ``_lanes``): the worker's get answers None
        self.ended = False

    def put_nowait(self, job: Job) -> None:
        self._jobs.append(job)
        self.used = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def empty(self) -> bool:
        return not self._jobs

    def idle(self) -> bool:
        """Nothing waiting and nothing held: its worker waits in :meth:`get`."""
        return not self._jobs and not self.busy

    def get_nowait(self) -> Job:
        return self._jobs.popleft()

    async def get(self) -> Job | None:
        """The next job; None once the lane is ended and empty."""
        while not self._jobs:
            if self.ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._jobs.popleft()

    def end(self) -> None:
        """No job comes any more: the worker's wait ends (with None, once what is queued is
        taken)."""
        self.ended = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
