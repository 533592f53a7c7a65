"""The projector's writer as two child processes: project, and commit, beside the reader.

(The parent's handle on them is :mod:`.writer_handle`; what crosses the pipes, :mod:`.frames`.)

Why processes: reading with nats-py costs the event loop a full core at the rate of the log
(JETSTREAM_NOTES.md), and decoding, projecting and binding rows are Python too; in one process
they take turns on the GIL. A child forked from the projector (copy-on-write: it starts in
milliseconds, with every module loaded) has its own GIL. The reader sends it the raw messages;
nothing crosses back but small acknowledgements.

The child (the *projecting* process) decodes and projects batches; a grandchild (the
*committing* process, forked by it first thing) owns the database connection and writes them.
Until Dec 2026 these were two threads of one process: measured on 100,000 events, the writer
process then used 20.5 us of CPU in ~23 us of wall an event — one core, the GIL — while the
reader had half of the other core free; as two processes, projecting takes ~11 us an event and
committing runs beside it. A batch is projected on top of the one being committed
(:class:`~.store.Batch` ``base``), so it sees what the database will hold once that commits; it
is handed over only once the previous commit is acknowledged, so commits stay in order and each
carries its checkpoint (exactly once). Then the committed batch's rows go into the projecting
process's row cache (:mod:`.rowcache`), the new batch is diffed against it into a
:class:`~.store.Plan` (rows to insert, columns to update, keys to delete: plain data) and the
plan is sent. The projecting process reads the database only for rows it never saw (a read
connection, query only): a row a batch in flight changes is in that batch's overlay.

Frames are a 4-byte little-endian length and a pickle. Parent -> child: a list of messages
``(seq, subject, data, stream time, pending)`` (:func:`raw_message`: the reader takes them out
of the reply subject, the writer has no parsing left to do), or ``None`` (stop: what was sent before it
is projected and committed — frames are read in order, and the parent sends at most its queue
size beyond the last commit — then the writer closes). Child -> parent: ``("ready", last_seq, highest_seq)``,
``("applied", last_seq, events, rejected, busy seconds)`` per commit, ``("failed",
exception)``, ``("building",)`` as it starts building the deferred indexes, and ``("closed",
last_seq)`` last — the committing process says them, the
projecting one passes them on. Child -> grandchild: ``(plan, busy seconds)`` (as msgpack:
:func:`~.frames.plan_frame`), ``END_BULK`` or ``None`` (close: build what was deferred). Memory is bounded by the parent: it sends at most its queue size of
messages beyond the last acknowledged commit. Both children die with their parent
(``PR_SET_PDEATHSIG``); a projecting process that fails ends the committing one's pipe, and
every commit already made is whole.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from netledger.journal.forked import close_inherited, die_with_parent, fork, widen_pipe

from .errors import ProjectorStopped
from .frames import FrameReader, decode_plan_frame, frame, plan_frame, readable
from .rowcache import RowCache
from .store import Batch, Plan, RawTuple, Writer, project_into

PIPE_SIZE = 1 << 20
#: A batch keeps tens of thousands of small objects alive while it is projected: collecting the
#: youngest generation every 700 allocations (the default) walks them over and over.
GC_THRESHOLD = 20_000
#: Told the committing process when the reader's last deferred message is in (:mod:`.bulk`).
END_BULK = "end bulk"
#: Signals the writer leaves to its parent (a Ctrl-C or SIGTERM to the process group).
_PARENTS_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Messages projected between two looks at the pipe (keeps a stop or new data noticed soon).
_SLICE = 256


# --- the children ------------------------------------------------------------------------------


class _Out:
    """Frames to the parent."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, obj: Any) -> None:
        try:
            data = frame(obj)
        except Exception:  # an exception that does not pickle: send what it said
            data = frame(("failed", RuntimeError(f"{obj[1].__class__.__name__}: {obj[1]}")))
        self.send_frame(data)

    def send_frame(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]


def commit_main(
    plan_fd: int, done_fd: int, db_path: str, check: list[Any], parent: int
) -> int:  # pragma: no cover - runs in the forked grandchild (tests drive it through the parent)
    """The committing process: open, check and prepare the database, say ``ready``, then write
    each plan that arrives in one transaction with its checkpoint and say ``applied``; at
    ``None`` build what was deferred, close and say ``closed``. At end of file (the projecting
    process failed or died) it just exits: every commit is whole, the next writer goes on."""
    die_with_parent(parent)
    close_inherited(keep=(plan_fd, done_fd))
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    out = _Out(done_fd)
    try:
        writer = Writer(db_path)
        writer.check_stream(str(check[0]), str(check[1]), int(check[2]))
        writer.prepare(int(check[2]))
    except BaseException as exc:
        out.send(("failed", exc))
        return 1
    out.send(("ready", writer.last_seq, writer.highest_seq, writer.bulk_until))
    plans = FrameReader(plan_fd, decode_plan_frame)
    extra = 0.0  # time spent between plans (building the deferred indexes)
    try:
        while True:
            ok, item = plans.next()
            if not ok:
                if plans.eof:
                    return 1
                plans.fill()
                continue
            if item is None:
                break
            if item == END_BULK:
                t0 = time.perf_counter()
                if writer.bulk_until is not None:
                    out.send(("building",))
                    writer.end_bulk()
                extra += time.perf_counter() - t0
                continue
            plan, busy = item
            t0 = time.perf_counter()
            applied = writer.commit_plan(plan)
            busy += time.perf_counter() - t0 + extra
            extra = 0.0
            out.send(("applied", applied.last_seq, applied.events, applied.rejected, busy))
        if writer.bulk_until is not None:
            out.send(("building",))
        writer.close()
    except BaseException as exc:
        out.send(("failed", exc))
        return 1
    out.send(("closed", writer.last_seq))
    return 0


class _Committer:
    """The projecting process's handle on the committing one: one plan in flight at a time;
    what it says is passed on to the parent as it arrives (``applied`` frames unchanged)."""

    def __init__(self, pid: int, plan_fd: int, done_fd: int, out: _Out) -> None:
        self.pid = pid
        self.plans = _Out(plan_fd)
        self.done = FrameReader(done_fd)
        self.out = out
        self.idle = True
        self.failed = False
        self.closed = False
        #: ``ready``: (last_seq, highest_seq) of the database as opened
        self.opened: tuple[int, int] | None = None
        #: the sequence up to which the secondary indexes are deferred (None: they are not)
        self.bulk_until: int | None = None

    def _handle(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "applied":
            self.idle = True
        elif kind == "ready":
            self.opened = (int(msg[1]), int(msg[2]))
            self.bulk_until = msg[3]
        elif kind == "failed":
            self.failed = True
            self.idle = True
        elif kind == "closed":
            self.closed = True
        self.out.send(msg)

    def take(self, block: bool) -> None:
        """Pass on what the committing process said (with ``block``: wait for something)."""
        while True:
            ok, msg = self.done.next()
            if ok:
                self._handle(msg)
                block = False
                continue
            if self.done.eof:
                if not self.closed:
                    self._died()
                return
            if not block and not self.done.waiting(0):
                return
            self.done.fill()

    def _died(self) -> None:
        """The committing process is gone without a word (killed, crashed): say so, once."""
        if not self.failed:
            self.failed = True
            self.idle = True
            died = ProjectorStopped("the projector's committing process exited unexpectedly")
            self.out.send(("failed", died))

    def _send(self, obj: Any) -> None:
        try:
            self.plans.send(obj)
        except BrokenPipeError:
            self._died()

    def wait_idle(self) -> None:
        while not self.idle:
            self.take(block=True)

    def hand(self, plan: Plan, busy: float) -> None:
        self.idle = False
        try:
            self.plans.send_frame(plan_frame(plan, busy))
        except BrokenPipeError:
            self._died()

    def received(self, seq: int) -> None:
        """Every message up to ``seq`` is here: once that is the last one the indexes were
        deferred for, the committing process builds them now, while this process projects
        the rest (up to the reader's queue of messages) instead of after it."""
        if self.bulk_until is not None and seq >= self.bulk_until:
            self.bulk_until = None
            self._send(END_BULK)

    def finish(self, stop: bool) -> None:
        """Let the plan in flight commit; then with ``stop`` ask for the close and wait for it,
        else just end the pipe. Always collect the process."""
        if stop and not self.failed:
            self.wait_idle()
        if stop and not self.failed:
            self._send(None)
            while not self.closed and not self.failed:
                self.take(block=True)
        with contextlib.suppress(OSError):
            os.close(self.plans.fd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _project_loop(
    committer: _Committer,
    cache: RowCache,
    applied: int,
    reads: sqlite3.Connection,
    frames: FrameReader,
    batch_size: int,
    max_batch: int | None = None,
) -> bool:
    """Project what arrives into batches and hand their plans to the committing process until
    stopped; True when stopped (rather than by a failure or the end of the pipe).

    A batch goes to the committer at ``batch_size`` messages if it is idle; while it is still
    writing the previous one, the batch grows instead of waiting (up to ``max_batch``): a
    committer that is the slower of the two gets fewer, larger transactions. That is the
    tail of a long history: every events row goes into up to eight secondary indexes of a
    million rows (:mod:`.bulk` defers them only for long catch-ups), so each row dirties a
    leaf page of its own, written to the WAL at its commit and to the database at the next
    checkpoint — and the hot pages (the newest rows, the time index, each host's and
    network's newest entries) again at every commit. Measured on the 10,008 events after a
    1,000,003-event history (bench/history.py): committing 2,000 a transaction 0.46 s,
    all of them in one 0.33 s. A projector that keeps up with its log (commits faster than
    it projects) is not affected: its committer is idle when a batch is full. Nor is a long
    catch-up while its indexes are deferred (:mod:`.bulk`): its rows are appended, so larger
    transactions save little, and there committing takes about as long as projecting, so
    batches grew all along: the 1 M-event catch-up then took 28-45 s of wall against 22-24 s
    (same CPU; 108 of its 430 commits above 2,000, 63 reading pauses against 55), perhaps as
    the reader, which resumes at a quarter of its queue in flight, found less buffered."""
    max_batch = max(batch_size, max_batch or batch_size)
    cur = Batch(reads, cache=cache)
    busy = 0.0
    last = applied  # the last sequence projected (a redelivery at or below it is skipped)
    todo: list[RawTuple] = []  # messages received, not yet projected

    def hand_off() -> None:
        nonlocal cur, busy
        committer.wait_idle()
        if committer.failed:
            return
        # The batch it read through is committed now: its rows go into the cache, then this
        # batch's plan is diffed against it, and the next batch reads through this one.
        t0 = time.perf_counter()
        if cur.base is not None:
            cache.merge(cur.base)
            cur.base = None
        plan = cur.plan()
        busy += time.perf_counter() - t0
        committer.hand(plan, busy)
        cur = Batch(reads, base=cur, cache=cache)
        busy = 0.0

    while not committer.failed:
        if todo:
            # A full batch grows while the committer is busy (docstring), up to max_batch.
            grows = not committer.idle and committer.bulk_until is None
            room = (max_batch if grows else batch_size) - len(cur)
            if room <= 0:
                hand_off()  # (waits for the committer if it is not idle)
                continue
            n = min(room, _SLICE)
            t0 = time.perf_counter()
            last = project_into(cur, todo[:n], last)
            busy += time.perf_counter() - t0
            del todo[:n]
            committer.take(block=False)
            if len(cur) >= batch_size and (committer.idle or committer.bulk_until is not None):
                hand_off()
            elif len(cur) >= max_batch:
                hand_off()
            continue
        ok, msgs = frames.next()
        if ok:
            if msgs is None:
                return True  # stop: what is being written commits, the rest is read again later
            todo = msgs
            if msgs:
                committer.received(msgs[-1][0])
            continue
        if frames.eof:
            return False
        if frames.waiting(0):
            frames.fill()
            continue
        # Nothing more to read right now: write what we have as soon as the committer can.
        if len(cur) and committer.idle:
            hand_off()
            continue
        r = readable([frames.fd, committer.done.fd])
        if committer.done.fd in r:
            committer.take(block=False)
        if frames.fd in r:
            frames.fill()
    return False


def child_main(
    cmd_fd: int,
    ack_fd: int,
    db_path: str,
    check: list[Any],
    batch_size: int,
    parent: int,
    max_batch: int | None = None,
) -> int:  # pragma: no cover - runs in the forked child (tests drive it through the parent)
    """The forked writer: start the committing process, then project until stopped."""
    die_with_parent(parent)
    # The parent owns our life: a Ctrl-C or SIGTERM to the group is its to handle (it stops us
    # through the pipe); its asyncio wakeup fd must not hear about our signals either.
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in _PARENTS_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    # A spawned writer starts with them blocked (start_writer), so that one sent during its
    # imports waits: ignored now, dropped.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENTS_SIGNALS)
    # The committing process first, before this one opens the database (SQLite's state must
    # not cross a fork), and before the descriptors are closed below: a library's own (libuv's
    # signal pipe, when uvloop runs the parent) are reopened by its fork handler in each new
    # child by number, which must not be the number of one of these pipes.
    plan_r, plan_w = os.pipe()
    done_r, done_w = os.pipe()
    widen_pipe(plan_w, PIPE_SIZE)
    me = os.getpid()
    pid = fork(
        lambda: commit_main(plan_r, done_w, db_path, check, me),
        close=(plan_w, done_r, cmd_fd, ack_fd),
    )
    os.close(plan_r)
    os.close(done_w)
    # Its sockets and pipes are not ours to keep open (a NATS connection the parent closes must
    # close; another writer's pipe must reach end of file when its parent closes it).
    close_inherited(keep=(cmd_fd, ack_fd, plan_w, done_r))
    gc.set_threshold(GC_THRESHOLD, 20, 20)
    out = _Out(ack_fd)
    committer = _Committer(pid, plan_w, done_r, out)
    stopped = False
    try:
        while committer.opened is None and not committer.failed:
            committer.take(block=True)
        if committer.opened is None:
            return 1
        reads = sqlite3.connect(db_path, check_same_thread=False)
        try:
            reads.execute("PRAGMA query_only=1")
            stopped = _project_loop(
                committer,
                RowCache.starting_from(reads),
                committer.opened[0],
                reads,
                FrameReader(cmd_fd),
                batch_size,
                max_batch,
            )
        finally:
            reads.close()
    except BaseException as exc:
        out.send(("failed", exc))
    finally:
        committer.finish(stop=stopped)
    return 0 if stopped and committer.closed else 1


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
    db_path: Path, check: tuple[str, str, int], batch_size: int, max_batch: int | None = None
) -> tuple[int, int, int, bool]:
    """Start the writer: ``(pid, fd to send frames to it, fd its acknowledgements come on,
    forked)``; its transactions hold ``batch_size`` messages, up to ``max_batch`` while the
    committing process is behind (:func:`_project_loop`). Forked (milliseconds: every module is loaded already) unless this process has
    the database open; then a fresh interpreter (a fifth of a second of imports)."""
    cmd_r, cmd_w = os.pipe()
    ack_r, ack_w = os.pipe()
    # Room for several frames, so that the reader's writes go straight through while its
    # event loop is busy delivering messages (64 KiB by default: less than one frame).
    widen_pipe(cmd_w, PIPE_SIZE)
    parent = os.getpid()
    args = (str(db_path), list(check), batch_size, parent, max_batch)
    forked = not open_here(db_path)
    try:
        if forked:
            pid = fork(lambda: child_main(cmd_r, ack_w, *args), close=(cmd_w, ack_r))
        else:
            for fd in (cmd_r, ack_w):
                os.set_inheritable(fd, True)
            argv = [sys.executable, "-m", __name__, str(cmd_r), str(ack_w), json.dumps(args)]
            pid = os.posix_spawn(
                sys.executable, argv, os.environ, setsigmask=list(_PARENTS_SIGNALS)
            )
    except BaseException:  # no process (EAGAIN, ENOMEM, no interpreter): no pipes either
        for fd in (cmd_w, ack_r):
            os.close(fd)
        raise
    finally:
        os.close(cmd_r)
        os.close(ack_w)
    return pid, cmd_w, ack_r, forked


if __name__ == "__main__":  # pragma: no cover - the spawned writer (see start_writer)
    _cmd, _ack, _args = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    os._exit(child_main(_cmd, _ack, *_args))
