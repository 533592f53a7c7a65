"""Catching up with a long stretch of the log on two cores: a child reads, this process folds.

Why: reading with nats-py costs a full core at the rate of the log (JETSTREAM_NOTES.md), and
decoding and folding are Python too; in one process they take turns on the GIL, so a reader
that folds as it reads runs at well under half the raw read. A child forked from the reader
(copy-on-write: it starts in milliseconds, every module loaded) has its own GIL on the second
core: it opens its own NATS connection (the same servers and credentials), reads the stretch
with an ordered push consumer and sends the raw messages through a pipe; this process only
decodes and folds them, while the child reads the next ones. The projector does the same the
other way round (projector/writer_proc.py).

It is a start-up path only, never a dependency: :func:`read_in_child` hands every message
through ``upto`` to ``fold`` in stream order, once, and returns the last sequence it handed
over. When the child cannot start, connect or read, dies, or goes quiet, it returns what it
reached (possibly nothing) and the caller's ordinary :class:`~.stream.Follower` goes on from
there: order, no gap and no double fold hold because the child reads with an ordered consumer,
hands over consecutive sequences only (it stops at a gap) and only sequences above the last one
handed over are taken.

Frames are a 4-byte little-endian length and a pickle: ``("msgs", [(seq, subject, data),
...])``, then ``("end", last_seq)`` or ``("failed", text)``. Memory stays bounded: the child
blocks on a full pipe, and while it blocks its event loop reads nothing more from NATS.

The child may be asked (:meth:`Reader.ask`) before the caller folds (:meth:`Reader.read`):
the service asks it for the tail once its snapshot's body is fetched, and it reads while the
snapshot is decoded (service/tail_prefetch.py). What it reads meanwhile is what the pipe
holds (``PIPE_SIZE``: ~3,500 of the history bench's tail messages, ~300 bytes each as sent;
then it blocks, and goes on as the fold takes frames), and that is enough: the child reads
faster than the parent folds (its CPU ~50 ms for 10,000 messages, the fold's ~55-65), so a
fold that starts on a full pipe never waits for a frame again (the parent asleep 0.4 ms over
a 10,000-event fold, median of 15 starts; 10.5 ms when the child was asked at the fold).
Buffering more in the child would only move more of its reading into the decode, which it
slows (the decode took 6-20 ms longer with the child reading beside it, medians of 21 starts).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import logging
import os
import pickle
import signal
import struct
import time
from collections.abc import Callable
from typing import Any

from netledger.events.ids import ALL_EVENTS
from netledger.journal.fastread import reply_numbers
from netledger.journal.forked import (
    close_inherited,
    connect_options,
    die_with_parent,
    exited,
    fork,
    widen_pipe,
)
from netledger.journal.stream import FOLLOW_HEARTBEAT_S, Connection, seed_ordered

log = logging.getLogger("netledger.catchup")

_LEN = struct.Struct("<I")
#: Messages per frame: big enough that the per-frame costs vanish, small enough that the pipe
#: holds several.
CHUNK = 512
#: ... but the first frames are smaller (this many, then twice as many each until CHUNK): the
#: fold waits for the first one, and 512 messages were 5-10 ms of a 10,000-event tail's catch-up
#: (~0.1 s) during which the parent only waited.
FIRST_CHUNK = 32
PIPE_SIZE = 1 << 20
#: Seconds without a frame from the child before it is given up on (it connects, creates a
#: consumer and then streams: a healthy child sends a frame every few milliseconds).
QUIET_S = 20.0

#: fold(seq, subject, data): one stored message, in stream order
Fold = Callable[[int, str, bytes], None]


def frame(obj: Any) -> bytes:
    """``obj`` as a frame: its length, then its pickle — written without pickle's memo (fast
    mode: what is sent holds no object twice, and no cycle). The memo cost a dict entry for
    each str, bytes and tuple of every message, and the unpickler a memo entry for each too:
    10,000 messages of the history bench pickle in 1.2 ms instead of 2.4 and unpickle in 1.26
    instead of 1.42 (CPU, medians of 30); the child's CPU for a 10,000-event tail 53.7 -> 51.1
    ms (medians of 10 starts, interleaved)."""
    buf = io.BytesIO()
    buf.write(b"\0\0\0\0")
    p = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    p.fast = True
    p.dump(obj)
    n = buf.tell() - 4
    buf.seek(0)
    buf.write(_LEN.pack(n))
    return buf.getvalue()


def seq_and_pending(reply: str) -> tuple[int, int]:
    """(stream sequence, messages left) from a JetStream message's reply subject, either layout
    (:func:`~.fastread.reply_numbers`, nats-py's indexes)."""
    seq, _, _, pending = reply_numbers(reply)
    return seq, pending


# --- the child ---------------------------------------------------------------------------------


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _wait_for_range(cmd: int) -> tuple[int, int] | None:
    """The stretch the parent asks for (``("read", start, upto)``), or None when it closes the
    pipe instead. Blocks: there is nothing else to do (the connection only needs its loop for
    pings, minutes apart)."""
    buf = b""
    while True:
        part = os.read(cmd, 4096)
        if not part:
            return None
        buf += part
        if len(buf) >= 4 and len(buf) >= 4 + _LEN.unpack_from(buf)[0]:
            _, start, upto = pickle.loads(buf[4:])
            return int(start), int(upto)


async def _serve(fd: int, cmd: int, opts: dict[str, Any], stream: str) -> int:
    """Connect, wait for the stretch to read, read it."""
    import nats

    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def gone() -> None:  # no reconnects: the connection is closed for good
        if not lost.done():
            lost.set_result(None)

    nc = await asyncio.wait_for(
        nats.connect(**opts, closed_cb=gone), opts["connect_timeout"] * 2 + 1
    )
    wanted = _wait_for_range(cmd)
    if wanted is None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.close(), 2.0)
        return 0
    return await _read(fd, nc, stream, *wanted, lost=lost)


async def _read(
    fd: int, nc: Any, stream: str, start: int, upto: int, lost: asyncio.Future[None] | None = None
) -> int:
    from nats.js.api import ConsumerConfig, DeliverPolicy

    from netledger.journal import fastread

    _skip_stored_headers(nc)
    js = nc.jetstream()
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    chunk: list[tuple[int, str, bytes]] = []
    last = start - 1
    limit = FIRST_CHUNK

    def stored(seq: int, subject: str, data: bytes, _ts: int, pending: int) -> None:
        nonlocal chunk, last, limit
        if done.done():
            return
        if seq <= last:
            return  # an ordered consumer reset may deliver again what was sent
        if seq > upto or seq != last + 1:
            # Past the end, or a gap (this log has none: nothing is deleted, and a message
            # nats-py dropped must not go unnoticed): what was sent stands, the caller's
            # follower reads from there.
            _write_all(fd, frame(("msgs", chunk)))
            chunk = []
            done.set_result(last)
            return
        chunk.append((seq, subject, data))
        last = seq
        # The end: ``upto`` reached, or nothing more stored (no message at ``upto``).
        end = seq >= upto or pending == 0
        if end or len(chunk) >= limit:
            # Blocking on a full pipe blocks this whole loop: nothing more is read from NATS
            # until the fold has taken what was sent (memory stays flat).
            _write_all(fd, frame(("msgs", chunk)))
            chunk = []
            limit = min(2 * limit, CHUNK)
            if end:
                done.set_result(seq)

    async def on_msg(msg: Any) -> None:  # nats-py's path (a release fastread does not know)
        seq, pending = seq_and_pending(msg.reply)
        stored(seq, msg.subject, msg.data, 0, pending)

    # Stored messages handed from the parser straight to ``stored`` (journal/fastread.py):
    # the child's CPU a message ~30% lower (200 k events: 2.8-3.2 -> 2.0-2.2 s), and the
    # child is what bounds a long catch-up once the fold is cheap.
    if fastread.install(nc):
        fastread.register(nc, on_msg, stored)
    sub = await js.subscribe(
        ALL_EVENTS,
        cb=on_msg,
        ordered_consumer=True,
        stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
        idle_heartbeat=FOLLOW_HEARTBEAT_S,
    )
    seed_ordered(sub, start)  # recreated from here, not from seq 1
    if lost is not None:
        # A connection gone (a NATS restart: no reconnects here) delivers nothing more:
        # say so at once rather than leave the parent waiting QUIET_S for a silent child.
        await asyncio.wait((done, lost), return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            done.set_result(last)
            _write_all(fd, frame(("msgs", chunk)))
            chunk = []
            raise ConnectionError("the connection to NATS is gone")
    reached = await done
    # Everything is handed over: the parent may now stop this process at any moment (the
    # server forgets an ephemeral consumer whose connection is gone).
    _write_all(fd, frame(("end", reached)))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(sub.unsubscribe(), 2.0)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(nc.close(), 2.0)
    return reached


#: The header block of a stored message: no inline status after the version (a status
#: message — heartbeat, flow control — has ``NATS/1.0 100 ...``).
_PLAIN_HEADERS = b"NATS/1.0\r\n"


def _skip_stored_headers(nc: Any) -> None:
    """Parse only the headers of status messages (heartbeats, flow control: what the ordered
    consumer acts on). Every stored message carries headers (``Nats-Msg-Id``, the batch's),
    which nothing here reads, and parsing them is a quarter of nats-py's work per message.
    Only in this child, on its own connection; left alone if nats-py no longer looks so."""
    parse = getattr(nc, "_process_headers", None)
    if not inspect.iscoroutinefunction(parse):
        return

    async def headers(raw: Any) -> Any:
        if raw and raw[:10] == _PLAIN_HEADERS:
            return None
        return await parse(raw)

    nc._process_headers = headers


def _child(fd: int, cmd: int, opts: dict[str, Any], stream: str, parent: int) -> int:
    """The forked reader (pragma: runs in the child; tests drive it through the parent)."""
    die_with_parent(parent)
    # The parent owns our life (it stops us by closing the pipe or killing us); its asyncio
    # wakeup fd must not hear about our signals.
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    close_inherited(keep=(fd, cmd))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(fd, cmd, opts, stream))
        return 0
    except BaseException as exc:
        with contextlib.suppress(Exception):
            _write_all(fd, frame(("failed", f"{exc.__class__.__name__}: {exc}")))
        return 1


def _fork(opts: dict[str, Any], stream: str) -> tuple[int, int, int]:
    """Fork the reader: ``(pid, fd its frames come on, fd to send it the range on)``."""
    r, w = os.pipe()
    cmd_r, cmd_w = os.pipe()
    widen_pipe(w, PIPE_SIZE)
    parent = os.getpid()
    pid = fork(lambda: _child(w, cmd_r, opts, stream, parent), close=(r, cmd_w))
    os.close(w)
    os.close(cmd_r)
    return pid, r, cmd_w


# --- the parent's side -------------------------------------------------------------------------


class _Frames(asyncio.Protocol):
    """Frames from the child, each folded as it arrives (on the event loop)."""

    def __init__(self, fold: Fold, start: int, upto: int) -> None:
        self.fold = fold
        self.upto = upto
        self.reached = start - 1
        self.buf = bytearray()
        self.ended = asyncio.get_running_loop().create_future()
        self.heard = time.monotonic()
        self.failure: str | None = None
        self.events = 0

    def data_received(self, data: bytes) -> None:
        self.heard = time.monotonic()
        if self.ended.done():
            return
        self.buf += data
        buf = self.buf
        at = 0
        try:
            while len(buf) - at >= 4:
                (n,) = _LEN.unpack_from(buf, at)
                if len(buf) - at - 4 < n:
                    break
                kind, body = pickle.loads(memoryview(buf)[at + 4 : at + 4 + n])
                at += 4 + n
                if kind == "msgs":
                    self._fold(body)
                elif kind == "failed":
                    self._end(str(body))
                else:
                    self._end(None)
                if self.ended.done():
                    break
        finally:
            del buf[:at]

    def _fold(self, msgs: list[tuple[int, str, bytes]]) -> None:
        fold, reached, upto = self.fold, self.reached, self.upto
        n = 0
        try:
            for seq, subject, data in msgs:
                if seq <= reached or seq > upto:
                    continue
                fold(seq, subject, data)
                reached = seq
                n += 1
        except Exception as exc:  # the caller's follower folds it again, and reports it
            log.debug("fold failed at seq %d: %s", reached + 1, exc)
            self._end(f"the fold failed at seq {reached + 1}")
        finally:
            self.reached = reached
            self.events += n
        if reached >= upto:
            # Everything asked for is folded: the child's "end" frame adds nothing (a child
            # stopped before sending it held the start for QUIET_S; found by review).
            self._end(None)

    def _end(self, failure: str | None) -> None:
        if not self.ended.done():
            self.failure = failure
            self.ended.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self._end("the reader process exited before the end")


async def read_in_child(conn: Connection, start: int, upto: int, fold: Fold) -> tuple[int, int]:
    """Hand ``fold`` every message from ``start`` through ``upto`` read by a forked child, in
    order; ``(last sequence handed over, messages handed over)``. Never raises: when the
    child stops short (or ``fold`` raises) it returns what was folded and logs why; the
    caller's follower reads (and folds, with its own error handling) the rest."""
    if start > upto:
        return start - 1, 0
    reader = Reader.fork(conn)
    if reader is None:
        return start - 1, 0
    try:
        return await reader.read(start, upto, fold)
    finally:
        await reader.close()


class Reader:
    """A catch-up reader process, forked before the caller knows what it will ask for: it
    connects while the caller gets ready (the service loads its snapshot), and the fork copies
    a process that does not hold the loaded state yet. Then :meth:`ask` (at most once: it
    starts reading, and fills the pipe while the caller is still busy), :meth:`read` (once:
    folds what it was asked for), or just :meth:`close`."""

    def __init__(self, pid: int, frames: int, cmd: int) -> None:
        self.pid = pid
        self._frames_fd = frames
        self._cmd_fd = cmd
        self._closed = False
        #: (start, upto) the child was asked for; None until :meth:`ask`
        self.asked: tuple[int, int] | None = None

    @classmethod
    def fork(cls, conn: Connection) -> Reader | None:
        """Start one (None, with a warning, if it cannot be: the caller reads in-process)."""
        try:
            return cls(*_fork(connect_options(conn), conn.stream))
        except Exception as exc:
            log.warning("catch-up reader not started (%s): reading in this process", exc)
            return None

    def ask(self, start: int, upto: int) -> None:
        """Tell the child to read ``start`` through ``upto`` now, before :meth:`read` takes
        it: it reads while this process does something else (the service decodes its
        snapshot) and blocks once the pipe is full — memory stays bounded, and the fold then
        starts on a full pipe, not on an empty one while the child creates its consumer."""
        if self.asked is not None:
            raise RuntimeError(f"the reader was asked for {self.asked} already")
        self.asked = (start, upto)
        try:
            _write_all(self._cmd_fd, frame(("read", start, upto)))
        except OSError:
            pass  # the child has ended (it could not connect): its last frame says why

    async def read(
        self, start: int, upto: int, fold: Fold, prepare: Callable[[], None] | None = None
    ) -> tuple[int, int]:
        """See :func:`read_in_child`. ``prepare`` is called once the child is asked for the
        stretch: what the fold would otherwise do at its first message (build its decoders)
        is done while the child creates its consumer and reads the first frame. A child
        :meth:`ask`-ed already must have been asked from ``start``; it reads only up to what
        it was asked for (the caller's follower reads the rest)."""
        if self.asked is None:
            if start > upto:
                return start - 1, 0
            self.ask(start, upto)
        elif self.asked[0] != start:
            raise ValueError(f"the reader was asked from seq {self.asked[0]}, not {start}")
        else:
            upto = min(upto, self.asked[1])
            if start > upto:  # asked for nothing: no message would end the child's read
                return start - 1, 0
        loop = asyncio.get_running_loop()
        frames = _Frames(fold, start, upto)
        if prepare is not None:
            try:
                prepare()
            except Exception as exc:  # the fold does it at its first message instead
                log.debug("preparing the fold: %s", exc)
        fd, self._frames_fd = self._frames_fd, -1
        transport: asyncio.BaseTransport | None = None
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: frames, os.fdopen(fd, "rb", buffering=0)
            )
            while not frames.ended.done():
                quiet = time.monotonic() - frames.heard
                if quiet > QUIET_S:
                    frames._end(f"no message from the reader process for {QUIET_S:.0f}s")
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(frames.ended), QUIET_S - quiet + 0.1)
        finally:
            if transport is not None:
                transport.close()
            else:
                with contextlib.suppress(OSError):
                    os.close(fd)
            await self.close()
        if frames.reached < upto:
            log.warning(
                "catch-up reader stopped at seq %d of %d (%s): reading the rest in this process",
                frames.reached,
                upto,
                frames.failure or "a gap in the log",
            )
        return frames.reached, frames.events

    async def close(self) -> None:
        """Stop the child and collect it. Once it has sent everything, nothing is left for it
        to do but say goodbye to the server: no need to wait for that (~20 ms)."""
        if self._closed:
            return
        self._closed = True
        for fd in (self._cmd_fd, self._frames_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._cmd_fd = self._frames_fd = -1
        await _reap(self.pid)


async def _reap(pid: int) -> None:
    """Kill the child (it has handed over everything, or failed) and collect it — even when
    cancelled meanwhile (a second cancellation of the start while its ``finally`` drops the
    reader): the wait is then finished here, blocking, and the cancellation goes on. A child
    left uncollected stays a zombie for the life of the service (found by review); a killed
    one is gone within milliseconds, so the blocking wait is short."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    try:
        while not exited(pid):
            await asyncio.sleep(0.002)
    except BaseException:
        _collect(pid)
        raise


def _collect(pid: int) -> None:
    """Wait for the killed child ``pid``, blocking (what :func:`_reap` cannot await)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
