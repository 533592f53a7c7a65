"""The projector's handle on its writer processes, from the event loop (:mod:`.writer_proc`:
the processes themselves, and what they say)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netledger.journal.forked import exited

from .errors import ProjectorStopped
from .frames import LENGTH, data_frame, frame
from .store import RawTuple
from .writer_proc import start_writer

#: How long the writer may take to open (and migrate) the database and answer.
START_TIMEOUT = 120.0
#: How long a stop may take: the batch being written commits first.
STOP_TIMEOUT = 60.0


class _Acks(asyncio.Protocol):
    def __init__(self, owner: WriterProcess) -> None:
        self.owner = owner
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (n,) = LENGTH.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                return
            msg = pickle.loads(memoryview(self.buf)[4 : 4 + n])
            del self.buf[: 4 + n]
            self.owner._received(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._ended()


class WriterProcess:
    """The projector's handle on its forked writer (used from the event loop).

    ``on_applied(last_seq, events, rejected, busy_seconds)`` is called for every commit,
    ``on_failed(exc)`` once if the writer fails or dies (not when it was asked to stop), and
    ``on_building()`` when it starts building the indexes a long catch-up deferred.
    """

    def __init__(
        self,
        on_applied: Callable[[int, int, int, float], None],
        on_failed: Callable[[BaseException], None],
        on_building: Callable[[], None] | None = None,
    ) -> None:
        self.on_applied = on_applied
        self.on_failed = on_failed
        self.on_building = on_building
        self.pid = 0
        self.forked = False
        self._out: asyncio.WriteTransport | None = None
        self._in: asyncio.BaseTransport | None = None
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[tuple[int, int]] = loop.create_future()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._stopping = False
        self._reaped = False
        self._acks: _Acks | None = None
        self._ack_fd = -1

    async def start(
        self,
        db_path: Path,
        check: tuple[str, str, int],
        batch_size: int,
        max_batch: int | None = None,
    ) -> tuple[int, int]:
        """Fork the writer and wait until it opened the database: ``(last_seq, highest_seq)``.
        Raises what the writer raised (e.g. :class:`~.errors.StreamMismatch`). ``max_batch``:
        how large a transaction may grow while the committing process is behind."""
        loop = asyncio.get_running_loop()
        self.pid, cmd, ack, self.forked = start_writer(db_path, check, batch_size, max_batch)
        try:
            self._out, _ = await loop.connect_write_pipe(
                asyncio.Protocol, os.fdopen(cmd, "wb", buffering=0)
            )
            acks = self._acks = _Acks(self)
            self._in, _ = await loop.connect_read_pipe(
                lambda: acks, os.fdopen(ack, "rb", buffering=0)
            )
            self._ack_fd = ack
            return await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except BaseException:
            await self.stop()
            raise

    def send(self, msgs: list[RawTuple]) -> None:
        """Send messages (:func:`raw_message`) to be applied in order."""
        if self._out is not None and not self._stopping:
            self._out.write(data_frame(msgs))

    def poll(self) -> None:
        """Handle the acknowledgements waiting in the pipe now (without the event loop)."""
        if self._acks is None or self._ack_fd < 0:
            return
        try:
            data = os.read(self._ack_fd, 1 << 16)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # closed: the event loop's reader reports the end
        if data:
            self._acks.data_received(data)

    @property
    def alive(self) -> bool:
        return not self._closed.done()

    def _received(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "applied":
            self.on_applied(msg[1], msg[2], msg[3], msg[4])
        elif kind == "ready":
            if not self._ready.done():
                self._ready.set_result((msg[1], msg[2]))
        elif kind == "failed":
            exc = msg[1]
            if not self._ready.done():
                self._ready.set_exception(exc)
            elif not self._stopping:
                self.on_failed(exc)
        elif kind == "building":
            if self.on_building is not None:
                self.on_building()
        elif kind == "closed" and not self._closed.done():
            self._closed.set_result(None)

    def _ended(self) -> None:
        died = ProjectorStopped("the projector's writer process exited unexpectedly")
        if not self._ready.done():
            self._ready.set_exception(died)
            self._ready.exception()  # retrieved: start() reports it
        elif self._ready.exception() is not None:
            pass  # it failed as it started and said why (start() reports that), then exited
        elif not self._closed.done() and not self._stopping:
            self.on_failed(died)
        if not self._closed.done():
            self._closed.set_result(None)

    async def stop(self) -> None:
        """Ask the writer to stop (the batch being written commits), wait, and reap it."""
        self._stopping = True
        if self._out is not None and not self._out.is_closing():
            self._out.write(frame(None))
            self._out.close()
        hung = False
        if self.pid and not self._closed.done() and self._in is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._closed), STOP_TIMEOUT)
            except TimeoutError:
                hung = True
        if self._in is not None:
            self._ack_fd = -1
            self._in.close()
        await self._reap(kill=hung)

    async def _reap(self, kill: bool) -> None:
        """Wait for the writer to exit (killed at once with ``kill``, else after
        ``STOP_TIMEOUT``) and collect it."""
        if not self.pid or self._reaped:
            return
        deadline = 0.0 if kill else time.monotonic() + STOP_TIMEOUT
        while not exited(self.pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = float("inf")
            await asyncio.sleep(0.005)
        self._reaped = True
