"""The projector's writer as a child process: decode, project and commit beside the reader.

Why a process: reading with nats-py costs the event loop a full core at the rate of the log
(JETSTREAM_NOTES.md), and decoding and projecting are Python too; in one process they take turns
on the GIL, and a writer thread's ``executemany`` waits for the GIL after every row. A child
forked from the projector (copy-on-write: it starts in milliseconds, with every module loaded)
has its own GIL on the second core. The reader sends it the raw messages; nothing crosses back
but small acknowledgements.

Inside the child, two threads overlap the two halves of the work: the main thread decodes and
projects a batch (Python) while a committer thread writes the previous one (SQLite, which runs
without the GIL). The batch being projected reads through the one being written
(:class:`~.store.Batch` ``base``), so it sees what the database will hold once that commits; it
is handed to the committer only once the previous commit is done, so commits stay in order and
each one carries its checkpoint (exactly once, as with one thread). Then, and only in the main
thread, the committed batch's rows go into the writer's row cache (:mod:`.rowcache`), before
the committer diffs the next batch against it.

Frames are a 4-byte little-endian length and a pickle. Parent -> child: a list of messages
``(seq, subject, data, stream time, pending)`` (:func:`raw_message`: the reader takes them out
of the reply subject, the writer has no parsing left to do), or ``None`` (stop: finish the batch being
written, drop the rest). Child -> parent: ``("ready", last_seq, highest_seq)``, ``("applied",
last_seq, events, rejected, busy seconds)`` per commit, ``("failed", exception)``, and
``("closed", last_seq)`` last. Memory is bounded by the parent: it sends at most its queue size
of messages beyond the last acknowledged commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import pickle
import queue
import select
import signal
import sqlite3
import struct
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg

from netledger.journal.forked import close_inherited, die_with_parent, fork, widen_pipe

from .errors import ProjectorStopped
from .store import Batch, RawTuple, Writer

_LEN = struct.Struct("<I")
_V1_TOKENS = 9
PIPE_SIZE = 1 << 20
#: A batch keeps tens of thousands of small objects alive while it is projected: collecting the
#: youngest generation every 700 allocations (the default) walks them over and over.
GC_THRESHOLD = 20_000
SWITCH_INTERVAL = 0.0005
_modf = math.modf
#: Messages projected between two looks at the pipe (keeps a stop or new data noticed soon).
_SLICE = 256


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


class FrameReader:
    """Frames out of a pipe (blocking reads; ``poll`` says whether bytes are waiting)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        self.eof = False

    def next(self) -> tuple[bool, Any]:
        """``(True, frame)`` if a whole frame is buffered, else ``(False, None)``."""
        if len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf)
            if len(self.buf) >= 4 + n:
                obj = pickle.loads(memoryview(self.buf)[4 : 4 + n])
                del self.buf[: 4 + n]
                return True, obj
        return False, None

    def fill(self) -> None:
        """Read what the pipe holds (blocks until at least one byte, or end of file)."""
        data = os.read(self.fd, 1 << 20)
        if not data:
            self.eof = True
        self.buf += data

    def waiting(self, timeout: float | None = 0) -> bool:
        r, _, _ = select.select([self.fd], [], [], timeout)
        return bool(r)


def ack_numbers(reply: str) -> tuple[int, int, int]:
    """(stream sequence, timestamp ns, pending) from a JetStream message's reply subject, as
    nats-py's ``Msg.metadata`` reads them (both reply layouts), without building it."""
    tokens = Msg.Metadata._get_metadata_fields(reply)
    if len(tokens) == _V1_TOKENS:
        return int(tokens[5]), int(tokens[7]), int(tokens[8])
    ack = Msg.Ack
    return int(tokens[ack.StreamSeq]), int(tokens[ack.Timestamp]), int(tokens[ack.NumPending])


def stream_time(ts_ns: int) -> float:
    """The stored time as the projection has always recorded it: nats-py's metadata timestamp
    (a datetime, so rounded to the microsecond) as epoch seconds.

    That is ``datetime.fromtimestamp(ts_ns / 1e9, UTC).timestamp()`` (a test checks it), done
    as ``datetime`` does it — the float's fraction rounded half to even to microseconds, then
    exact microseconds / 10**6 — in half the time: it runs for every message."""
    frac, whole = _modf(ts_ns / 1_000_000_000.0)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        us -= 1_000_000
        whole += 1.0
    elif us < 0:
        us += 1_000_000
        whole -= 1.0
    return (int(whole) * 1_000_000 + us) / 1_000_000


def raw_message(seq: int, subject: str, data: bytes, reply: str) -> RawTuple:
    """What the reader sends the writer for a message: the fields of a :class:`~.store.Raw`,
    with the stored time and the pending count out of the reply subject."""
    head, _, _, ts, pending = reply.rsplit(".", 4)
    if head.count(".") != 4:  # not $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>...
        _, t, p = ack_numbers(reply)
        return (seq, subject, data, stream_time(t), p)
    return (seq, subject, data, stream_time(int(ts)), int(pending))


# --- the child ---------------------------------------------------------------------------------


class _Out:
    """Frames to the parent, from either thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()

    def send(self, obj: Any) -> None:
        try:
            data = frame(obj)
        except Exception:  # an exception that does not pickle: send what it said
            data = frame(("failed", RuntimeError(f"{obj[1].__class__.__name__}: {obj[1]}")))
        with self.lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]


class _Committer(threading.Thread):
    """Writes the batches handed to it, one at a time, in order; acknowledges each."""

    def __init__(self, writer: Writer, out: _Out, wake: int) -> None:
        super().__init__(name="netledger-projector-commit", daemon=True)
        self.writer = writer
        self.out = out
        self.wake = wake  # poked after each batch: the projecting thread may be waiting for it
        self.todo: queue.Queue[tuple[Batch, float] | None] = queue.Queue(maxsize=1)
        self.idle = threading.Event()
        self.idle.set()
        self.failed = False

    def hand(self, batch: Batch, busy: float) -> None:
        """Queue ``batch`` for writing (call once the previous one is committed: ``idle``)."""
        self.idle.clear()
        self.todo.put((batch, busy))

    def run(self) -> None:
        while (item := self.todo.get()) is not None:
            batch, busy = item
            t0 = time.perf_counter()
            try:
                applied = self.writer.commit(batch, merge=False)
            except BaseException as exc:
                self.failed = True
                self.out.send(("failed", exc))
                self._done()
                return
            busy += time.perf_counter() - t0
            self.out.send(("applied", applied.last_seq, applied.events, applied.rejected, busy))
            self._done()

    def _done(self) -> None:
        self.idle.set()
        with contextlib.suppress(BlockingIOError):  # a full pipe is awake enough
            os.write(self.wake, b".")


def _project_loop(
    writer: Writer, reads: sqlite3.Connection, frames: FrameReader, batch_size: int, out: _Out
) -> int:
    """Project what arrives into batches and hand them to the committer until stopped."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    committer = _Committer(writer, out, wake_w)
    committer.start()
    cur = Batch(reads, cache=writer.cache)
    busy = 0.0
    todo: list[RawTuple] = []  # messages received, not yet projected

    def hand_off() -> None:
        nonlocal cur, busy
        committer.idle.wait()
        if committer.failed:
            return
        # The batch it read through is committed now: its rows go into the cache (before the
        # committer diffs the next batch against it), and the next batch reads through the
        # one handed over now instead.
        if cur.base is not None:
            writer.cache.merge(cur.base)
            cur.base = None
        committer.hand(cur, busy)
        cur = Batch(reads, base=cur, cache=writer.cache)
        busy = 0.0

    try:
        while not committer.failed:
            if todo:
                n = min(batch_size - len(cur), _SLICE)
                t0 = time.perf_counter()
                writer.project(todo[:n], cur)
                busy += time.perf_counter() - t0
                del todo[:n]
                if len(cur) >= batch_size:
                    hand_off()
                continue
            ok, msgs = frames.next()
            if ok:
                if msgs is None:
                    break  # stop: what is being written commits, the rest is read again later
                todo = msgs
                continue
            if frames.eof:
                break
            if frames.waiting(0):
                frames.fill()
                continue
            # Nothing more to read right now: write what we have as soon as the committer can.
            if len(cur) and committer.idle.is_set():
                hand_off()
                continue
            r, _, _ = select.select([frames.fd, wake_r], [], [])
            if wake_r in r:
                os.read(wake_r, 4096)
            if frames.fd in r:
                frames.fill()
    finally:
        committer.idle.wait()
        committer.todo.put(None)
        committer.join()
        os.close(wake_r)
        os.close(wake_w)
    return 1 if committer.failed else 0


def child_main(
    cmd_fd: int,
    ack_fd: int,
    db_path: str,
    check: list[Any],
    batch_size: int,
    parent: int,
) -> int:  # pragma: no cover - runs in the forked child (tests drive it through the parent)
    """The forked writer: open and check the database, then project and commit until stopped."""
    die_with_parent(parent)
    # The parent owns our life: a Ctrl-C or SIGTERM to the group is its to handle (it stops us
    # through the pipe); its asyncio wakeup fd must not hear about our signals either.
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # Its sockets and pipes are not ours to keep open (a NATS connection the parent closes must
    # close; another writer's pipe must reach end of file when its parent closes it).
    close_inherited(keep=(cmd_fd, ack_fd))
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    # The committer gets the GIL back soon after SQLite is done with a statement (by default
    # the projecting thread keeps it for up to 5 ms each time).
    sys.setswitchinterval(SWITCH_INTERVAL)
    out = _Out(ack_fd)
    try:
        writer = Writer(db_path)
        writer.check_stream(str(check[0]), str(check[1]), int(check[2]))
        writer.prepare(int(check[2]))
    except BaseException as exc:
        out.send(("failed", exc))
        return 1
    out.send(("ready", writer.last_seq, writer.highest_seq))
    reads = sqlite3.connect(db_path, check_same_thread=False)
    try:
        reads.execute("PRAGMA query_only=1")
        code = _project_loop(writer, reads, FrameReader(cmd_fd), batch_size, out)
    except BaseException as exc:
        out.send(("failed", exc))
        code = 1
    finally:
        reads.close()
    if code == 0:
        writer.close()
        out.send(("closed", writer.last_seq))
    return code


def open_here(path: Path) -> bool:
    """Whether this process has ``path`` (or its WAL / shared-memory file) open. SQLite's state
    for an open database must not be carried across ``fork``: then the writer is spawned."""
    wanted = set()
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")):
        with contextlib.suppress(OSError):
            st = p.stat()
            wanted.add((st.st_dev, st.st_ino))
    if not wanted:
        return False
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:
        return True  # cannot tell: take the safe way
    for fd in fds:
        with contextlib.suppress(OSError):
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) in wanted:
                return True
    return False


def start_writer(
    db_path: Path, check: tuple[str, str, int], batch_size: int
) -> tuple[int, int, int, bool]:
    """Start the writer: ``(pid, fd to send frames to it, fd its acknowledgements come on,
    forked)``. Forked (milliseconds: every module is loaded already) unless this process has
    the database open; then a fresh interpreter (a fifth of a second of imports)."""
    cmd_r, cmd_w = os.pipe()
    ack_r, ack_w = os.pipe()
    # Room for several frames, so that the reader's writes go straight through while its
    # event loop is busy delivering messages (64 KiB by default: less than one frame).
    widen_pipe(cmd_w, PIPE_SIZE)
    parent = os.getpid()
    args = (str(db_path), list(check), batch_size, parent)
    forked = not open_here(db_path)
    if forked:
        pid = fork(lambda: child_main(cmd_r, ack_w, *args), close=(cmd_w, ack_r))
    else:
        for fd in (cmd_r, ack_w):
            os.set_inheritable(fd, True)
        argv = [sys.executable, "-m", __name__, str(cmd_r), str(ack_w), json.dumps(args)]
        pid = os.posix_spawn(sys.executable, argv, os.environ)
    os.close(cmd_r)
    os.close(ack_w)
    return pid, cmd_w, ack_r, forked


# --- the parent's side -------------------------------------------------------------------------

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
            (n,) = _LEN.unpack_from(self.buf)
            if len(self.buf) < 4 + n:
                return
            msg = pickle.loads(memoryview(self.buf)[4 : 4 + n])
            del self.buf[: 4 + n]
            self.owner._received(msg)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._ended()


class WriterProcess:
    """The projector's handle on its forked writer (used from the event loop).

    ``on_applied(last_seq, events, rejected, busy_seconds)`` is called for every commit and
    ``on_failed(exc)`` once if the writer fails or dies (not when it was asked to stop).
    """

    def __init__(
        self,
        on_applied: Callable[[int, int, int, float], None],
        on_failed: Callable[[BaseException], None],
    ) -> None:
        self.on_applied = on_applied
        self.on_failed = on_failed
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
        self, db_path: Path, check: tuple[str, str, int], batch_size: int
    ) -> tuple[int, int]:
        """Fork the writer and wait until it opened the database: ``(last_seq, highest_seq)``.
        Raises what the writer raised (e.g. :class:`~.errors.StreamMismatch`)."""
        loop = asyncio.get_running_loop()
        self.pid, cmd, ack, self.forked = start_writer(db_path, check, batch_size)
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
            self._out.write(frame(msgs))

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
        elif kind == "closed" and not self._closed.done():
            self._closed.set_result(None)

    def _ended(self) -> None:
        died = ProjectorStopped("the projector's writer process exited unexpectedly")
        if not self._ready.done():
            self._ready.set_exception(died)
            self._ready.exception()  # retrieved: start() reports it
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
        while not _exited(self.pid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = float("inf")
            await asyncio.sleep(0.005)
        self._reaped = True


def _exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # collected already
        return True
    return done != 0


if __name__ == "__main__":  # pragma: no cover - the spawned writer (see start_writer)
    _cmd, _ack, _args = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    os._exit(child_main(_cmd, _ack, *_args))
