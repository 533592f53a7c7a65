"""The command service: request/reply on ``netledger.cmd.<name>`` in a queue group.

Each replica holds :class:`State`, folded from the whole stream by a :class:`Follower` and kept
current. A request goes to a *lane* (one per network / pool / the registry) whose worker decides
with the pure deciders and appends with optimistic concurrency. Allocations waiting in the same
lane are decided together and appended as one atomic batch (group commit): contention raises
throughput instead of serialising it. On a conflict the lane catches up and decides again.
Several replicas are safe together: the log, not a lock, decides who wins.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg

from netledger.events import revert as _revert  # noqa: F401  (registers the revert commands)
from netledger.events.codec import SYSTEM, Envelope, decode
from netledger.events.commands import (
    Request,
)
from netledger.events.errors import (
    DecodeError,
    LogRegression,
    LogUnavailable,
    NetledgerError,
    Unavailable,
)
from netledger.events.fold_ahead import fold_ahead, reach
from netledger.events.host_events import HostEvent
from netledger.events.ids import (
    ADMIN_COMMAND_PREFIX,
    COMMAND_PREFIX,
    HOST_COMMANDS,
    PROJECT_COMMANDS,
)
from netledger.events.placement import backfill, unchecked
from netledger.events.placement_events import LegacyAnnouncementIndexed, NetworkHostJoined
from netledger.events.prune import prune
from netledger.events.reaper import DEFAULT_RELEASE_TIMEOUT, MAX_REAP, FixedIpReap, overdue
from netledger.events.reclaim import Heartbeats
from netledger.events.snapshot import SeenEvents
from netledger.events.state import State, plan_fold_wire
from netledger.events.wire_fast import prepare_wire_of, wire_of
from netledger.journal.append import (
    Appender,
    MaybeApplied,
    Outgoing,
    WrongLastSequence,
    build_messages,
)
from netledger.journal.catchup import Reader
from netledger.journal.follow import Follower
from netledger.journal.liveness import HeartbeatBook
from netledger.journal.loghealth import LogHealth
from netledger.journal.stream import (
    CLOSE_TIMEOUT_S,
    DUPLICATE_WINDOW_S,
    Connection,
    last_seq,
    retrying,
)
from netledger.service.answers import _backfill_id, reply_error, reply_ok, result_from_events
from netledger.service.lane_queue import LaneQueue
from netledger.service.lanes import Lanes
from netledger.service.legacy_pointers import (
    COMMAND_ID,
    RETIRE_COMMAND_ID,
    index_forever,
    pointers_wanted,
    write_pointers,
)
from netledger.service.old_retry import envelope_time
from netledger.service.reclaim_run import reclaim_forever
from netledger.service.requests import Requests
from netledger.service.snapshotter import SnapshotPolicy, Snapshotter
from netledger.service.stats import Stats
from netledger.service.tail_prefetch import TailPrefetch

log = logging.getLogger("netledger.service")

QUEUE_GROUP = "netledger-command"
#: Seconds an append may take before the command is answered ``log_unavailable`` (the
#: client's own deadline is far longer: a stuck log must not look like a missing service)
APPEND_BUDGET_S = 3.0
MAX_CONFLICT_RETRIES = 64
#: Commands whose first answer a retry gets (older retries are decided again: an allocation
#: then still finds the instance's address by its natural key; one whose decision comes out
#: otherwise inside the log's duplicate window is answered from the log, or refused when what
#: it gave holds no more: service/answers.py, ``forgotten``; past that window, a floating IP
#: allocation or a network create is found in the log by its id's time: service/old_retry.py).
SEEN_COMMANDS = 20_000
#: Events behind from which the start's catch-up is read by a child process (below, forking
#: and connecting it cost more than it saves).
CHILD_CATCH_UP = 8_000
#: Events to fold at a start from which ``on_catch_up`` is told (a few seconds of folding)
CATCH_UP_NOTICE = 100_000
AUTO = -1
#: The garbage collector's thresholds while the start folds the log (see _catch_up).
CATCH_UP_GC = (50_000, 50, 100)
#: Events never kept in ``seen`` (_fold)
_NOT_SEEN = (HostEvent, NetworkHostJoined, LegacyAnnouncementIndexed)
#: Command ids never kept in ``seen``: the service's own pointer writers' (service/
#: legacy_pointers.py), each writing every message under one id — a cloud's 5,000 old deletions
#: were one entry of 5,000 retirements, in every snapshot (review hrev83) — and no client
#: retries them (a client's command under one of these ids is decided again on a retry, as one
#: no longer in ``seen``). A deletion's own NetworkRetired carries the deletion's id: kept.
_NOT_SEEN_IDS = frozenset({COMMAND_ID, RETIRE_COMMAND_ID})


#: the key of ``recalled`` in a snapshot's ``extra`` (a list of command ids)
RECALLED = "recalled"


def recalled_of(extra: dict[str, Any], seen: OrderedDict[str, SeenEvents]) -> set[str]:
    """``recalled`` as a snapshot kept it (none from a snapshot written before it was kept;
    only ids still in ``seen``: nothing else is ever in it)."""
    ids = extra.get(RECALLED)
    if not isinstance(ids, list):
        return set()
    return {c for c in ids if isinstance(c, str) and c in seen}


def _prepare_fold_raw() -> None:
    """What :meth:`CommandService._fold_raw` builds at its first message (its decoder, the
    fold's plans: 5-10 ms), built while the catch-up child creates its consumer instead."""
    prepare_wire_of()
    plan_fold_wire()


@dataclass(frozen=True)
class FoldReport:
    """What the start's fold took, apart from loading a snapshot and connecting."""

    events: int
    seconds: float
    #: of ``events``, read by the catch-up child process
    by_child: int


class _Follower(Follower):
    """The service's follower: a message at or before its subject's last sequence in the fold
    is one this replica folded from its own publish ack (``_fold_appended``; an OCC-checked
    subject, so nothing of another writer sits before it unseen), and is not decoded again only
    for ``_fold`` to skip it. Reaching it (or a message after it), the fold takes what folding
    it ahead held back (events/fold_ahead.py): in the log's order."""

    def __init__(
        self,
        conn: Connection,
        handler: Any,
        state: Callable[[], State],
        start_seq: int = 1,
    ) -> None:
        super().__init__(conn, handler, start_seq=start_seq)
        self._state = state

    def _handle(self, seq: int, subject: str, data: bytes, msg: Any) -> bool:
        state = self._state()
        if seq <= state.subject_seq.get(subject, 0):
            if state.held:
                reach(state, seq)
            self.handled += 1
            handled = True
        else:
            if state.held:
                reach(state, seq - 1)
            handled = super()._handle(seq, subject, data, msg)
        if handled and state.prunable and state.prunable[0][0] <= seq:
            # Read up to here in the log's order, nothing of it again: a deleted network's
            # entry goes (one folded ahead stays until read back here: events/prune.py).
            prune(state, seq)
        return handled


@dataclass
class Rejected:
    seq: int
    subject: str
    reason: str


__all__ = ["CommandService", "reply_error", "reply_ok", "result_from_events"]


class CommandService(Lanes, Requests):
    def __init__(
        self,
        conn: Connection,
        *,
        queue: str = QUEUE_GROUP,
        max_batch: int = 500,
        release_timeout: float = DEFAULT_RELEASE_TIMEOUT,
        reap_interval: float | None = 30.0,
        reclaim_grace: float | None = None,
        reclaim_interval: float = 30.0,
        snapshots: SnapshotPolicy | None = None,
        health: LogHealth | None = None,
        append_budget: float = APPEND_BUDGET_S,
        child_catch_up: int | None = AUTO,
    ) -> None:
        self.conn = conn
        #: whether the log takes writes (shared with serve's storage watcher, which keeps the
        #: verdict current: a command reads it, never asks the server)
        self.health = health if health is not None else LogHealth()
        self.release_timeout = release_timeout
        self.reap_interval = reap_interval
        self._reaper: asyncio.Task[None] | None = None
        #: periodic reclaim of addresses whose instance is gone (None: off; events/reclaim.py)
        self.reclaim_grace = reclaim_grace
        self.reclaim_interval = reclaim_interval
        self._reclaimer: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        #: set when the follower folded an announcement stored on its host's subject only, or
        #: a deletion: the indexer points the executors at it, retires it
        #: (service/legacy_pointers.py)
        self._index_wanted = asyncio.Event()
        self._indexer: asyncio.Task[None] | None = None
        #: set when the service had to stop on its own (e.g. the log went back)
        self.failed: asyncio.Future[NetledgerError] | None = None
        self.watch_interval = 5.0
        #: from this many events on, a group of allocations is one atomic batch (below it a
        #: pipelined chain: faster at 16 in flight even with fsync always, measured);
        #: NETLEDGER_BATCH_THRESHOLD sets it (for measuring)
        self.batch_threshold = int(os.environ.get("NETLEDGER_BATCH_THRESHOLD", "24"))
        #: single-event decisions of one round published pipelined (chained by last msg id);
        #: NETLEDGER_PIPELINE=0 turns it off (one by one, as before it existed).
        self.pipeline = os.environ.get("NETLEDGER_PIPELINE", "1") != "0"
        self.queue = queue
        self.max_batch = max_batch
        self.state = State()
        #: malformed messages skipped since start: the newest kept, all counted (memory stays
        #: flat however many a broken writer sends)
        self.rejected: deque[Rejected] = deque(maxlen=1000)
        self.rejected_total = 0
        #: recent command ids -> their events (a retry gets the first answer): domain commands
        #: only, bounded; values read from a snapshot stay packed until asked for
        self.seen: OrderedDict[str, SeenEvents] = OrderedDict()
        #: those of ``seen`` put back from the log after they had left it (lane_append.py
        #: ``_recall``): out of the log's order there, what undid them may have left it
        self.recalled: set[str] = set()
        #: the newest command ``seen`` let go (its events): how old a command id must be to
        #: be looked up in the log when a request names it (service/old_retry.py)
        self.forgotten_last: SeenEvents | None = None
        #: whether ``seen`` was filled from the log's start (not from a snapshot): then it
        #: never let go of a command it does not say it let go of
        self._seen_whole = True
        #: the stream's duplicate window (seconds), read at the start
        self.duplicate_window = DUPLICATE_WINDOW_S
        self.follower: Follower = _Follower(conn, self._on_event, lambda: self.state)
        #: hosts' latest heartbeats (liveness bucket): the newest evidence reclaiming may use
        self.heartbeats: HeartbeatBook | None = None
        #: snapshots of the fold (service/snapshotter.py): None = neither loaded nor written
        self.snapshotter: Snapshotter | None = None
        if snapshots is not None:
            self.snapshotter = Snapshotter(
                conn,
                snapshots,
                state=lambda: self.state,
                seen=lambda: self.seen,
                applied_seq=self._settled_seq,
                last_read=lambda: self.follower.last_msg,
                extra=self._snapshot_extra,
            )
        self.appender = Appender(conn, budget=append_budget, health=self.health)
        self.appender.eager = self._publish_now
        self.stats = Stats()
        self._lanes: dict[str, LaneQueue] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        #: lanes deciding or waiting for their acks now
        self._busy_lanes = 0
        #: jobs queued in a lane and not taken by its worker yet (every lane's)
        self._queued = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        self._closing = False
        #: the start under way (:meth:`start`), which :meth:`close` cancels
        self._starting: asyncio.Task[None] | None = None
        self.ready_seconds = 0.0
        #: the fold of the start alone (no snapshot load, no connect): events, seconds
        self.fold_report = FoldReport(0, 0.0, 0)
        #: from this many events behind on, the start's catch-up reads through a child process
        #: (None: never; AUTO: from CHILD_CATCH_UP on when this process may use two cores)
        if child_catch_up == AUTO:
            child_catch_up = CHILD_CATCH_UP if len(os.sched_getaffinity(0)) > 1 else None
        self.child_catch_up = child_catch_up
        #: on_catch_up(first seq, last seq, snapshot seq or None): told once, before a start
        #: folds at least CATCH_UP_NOTICE events (serve says so: the start takes seconds)
        self.on_catch_up: Callable[[int, int, int | None], None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Fold the log (from a snapshot if any) and serve. Raises :class:`Unavailable` when
        :meth:`close` is called meanwhile: the start is then cancelled, and nothing it made
        keeps running."""
        if self._closing:
            raise Unavailable("the command service is closed")
        # Its own task, so that close() can stop it: a close during a long catch-up waited
        # for nothing, and the start went on to create the follower, the subscriptions and the
        # tasks after it — left running (found by review). (Cancelling the caller of start
        # would cancel whatever it was doing besides, serve's whole run.)
        starting = asyncio.create_task(self._start(), name="netledger-service-start")
        self._starting = starting
        try:
            await starting  # (the caller cancelled: cancels it, and waits for it to end)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if (
                self._closing
                and starting.cancelled()
                and task is not None
                and not task.cancelling()
            ):
                raise Unavailable("the command service was closed while it started") from None
            raise
        finally:
            self._starting = None
        if self._closing:
            # Closed as the start ended, or the cancellation did not take (the start ran on
            # to its end: seen in ~1 of 25 runs of the test, where it was lost not found;
            # Python 3.11's asyncio.wait_for, in nats-py too, drops one that lands as what it
            # waits for completes): close() closes what the start made all the same.
            raise Unavailable("the command service was closed while it started")

    async def _start(self) -> None:
        self.failed = asyncio.get_running_loop().create_future()
        t0 = time.monotonic()
        early = TailPrefetch(self.conn, await self._early_reader(), self.child_catch_up or 0)
        try:
            # The reader is asked for the tail once the snapshot's body is fetched, and reads
            # it while the body is checked and decoded (service/tail_prefetch.py).
            snap = (
                await self.snapshotter.load(on_candidate=early.candidate)
                if self.snapshotter is not None
                else None
            )
            if snap is not None:
                # The fold up to snap.seq is in the snapshot: read only the tail.
                self.state, self.seen = snap.state, snap.seen
                self._seen_whole = False
                self.recalled = recalled_of(snap.extra, self.seen)
                for cid in _NOT_SEEN_IDS:  # kept by a netledger before review hrev83
                    self.seen.pop(cid, None)
                # Loaded with the cyclic GC off, its objects all sit in the youngest
                # generation: the tail's first collections walked every one of them (a third
                # of the fold of a 10,000-event tail after the snapshot of a 1 M-event log,
                # 0.33 -> 0.20 s; more objects in an older fold). Frozen, as after the fold.
                gc.freeze()
            start = snap.seq + 1 if snap is not None else 1
            await self._catch_up(start, await early.reader_for(start))
        finally:
            await early.drop()
        self.ready_seconds = round(time.monotonic() - t0, 3)
        await self._read_duplicate_window()
        # Known before it starts: a close meanwhile closes it too.
        book = self.heartbeats = HeartbeatBook(self.conn)
        try:
            await book.start()
        except Exception as exc:  # reclaiming then relies on reports in the log alone
            log.warning("cannot watch host heartbeats (%s): reclaims use reports only", exc)
            self.heartbeats = None
            await book.close()
        await self._backfill_joins()
        await self._write_pointers()
        if self.snapshotter is not None:
            self.snapshotter.start()
        for subject in (
            f"{COMMAND_PREFIX}.>",
            f"{ADMIN_COMMAND_PREFIX}.>",
            PROJECT_COMMANDS,
            HOST_COMMANDS,
        ):
            self._subs.append(
                await self.conn.nc.subscribe_direct(subject, self._on_request, queue=self.queue)
            )
        if self.reap_interval:
            self._reaper = asyncio.create_task(self._reap_forever(self.reap_interval))
        if self.reclaim_grace:
            self._reclaimer = asyncio.create_task(
                reclaim_forever(self, self.reclaim_grace, self.reclaim_interval)
            )
        self._watchdog = asyncio.create_task(self._watch_log())
        self._indexer = asyncio.create_task(index_forever(self, self._index_wanted))
        fold = self.fold_report
        log.info(
            "command service ready at seq %d in %.2fs (%s); fold: %d events in %.3fs"
            " (%.0f events/s, %s)",
            self.follower.applied_seq,
            self.ready_seconds,
            f"snapshot at seq {snap.seq} loaded in {self._snapshot_seconds():.2f}s"
            f" + {self.follower.applied_seq - snap.seq} events"
            if snap is not None
            else "folded from the start of the log",
            fold.events,
            fold.seconds,
            fold.events / fold.seconds if fold.seconds > 0 else 0.0,
            f"{fold.by_child:,} read by a child process" if fold.by_child else "read in-process",
        )

    def _snapshot_extra(self) -> dict[str, Any]:
        """What a snapshot keeps beside the fold and ``seen``: which of ``seen`` were put back
        from the log (``recalled``: out of the log's order, a retry's first answer is refused
        once it holds no more; lost at a start from a snapshot, it was told as still held)."""
        return {RECALLED: sorted(self.recalled)}

    async def _read_duplicate_window(self) -> None:
        """The stream's duplicate window, which tells how old a retry must be to be looked up
        in the log (service/old_retry.py). Unread, netledger's own (ensure_stream sets it)."""
        try:
            info = await retrying(
                lambda: self.conn.js.stream_info(self.conn.stream), "the log's settings", 5.0
            )
        except Exception as exc:
            log.warning("the log's duplicate window not read (%s): taken as netledger's", exc)
            return
        if info.config.duplicate_window:
            self.duplicate_window = float(info.config.duplicate_window)

    async def close(self) -> None:
        self._closing = True
        starting = self._starting
        if starting is not None and not starting.done():
            # Stopped where it is (its own finally stops the catch-up child); what it made
            # so far is on self, and closed below.
            starting.cancel()
            await asyncio.wait([starting])
        await self._unsubscribe()
        if self.snapshotter is not None:
            await self.snapshotter.close()  # (kept: its stats are read after a close)
        # The watchers and tasks it closes it lets go of: a closed service holds none of them
        # (a close during the start may land before or after the start made each).
        heartbeats, self.heartbeats = self.heartbeats, None
        if heartbeats is not None:
            await heartbeats.close()
        tasks = (self._reaper, self._reclaimer, self._watchdog, self._indexer)
        self._reaper = self._reclaimer = self._watchdog = self._indexer = None
        pending = [t for t in tasks if t is not None]
        pending += [*self._tasks, *self._workers.values()]
        for t in pending:
            t.cancel()
        # Bounded: a task that does not end on cancellation must not hold the shutdown.
        done, stuck = await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S) if pending else ((), ())
        for t in done:
            if not t.cancelled():
                t.exception()  # retrieved: a lane that failed has already answered its jobs
        for t in stuck:
            log.warning("task %s did not stop within %.0fs", t.get_name(), CLOSE_TIMEOUT_S)
        await self.follower.stop()

    async def _unsubscribe(self) -> None:
        subs, self._subs = self._subs, []
        for s in subs:
            try:
                await asyncio.wait_for(s.unsubscribe(), CLOSE_TIMEOUT_S)
            except Exception:  # connection already gone, or no answer
                pass

    async def __aenter__(self) -> CommandService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- the fold -----------------------------------------------------------------------

    async def _early_reader(self) -> Reader | None:
        """A catch-up reader forked before the snapshot is loaded (it connects meanwhile, is
        asked for the tail while the snapshot is decoded, and the fork does not copy the loaded
        state), when the log is long enough to need one."""
        if self.child_catch_up is None:
            return None
        try:
            if await last_seq(self.conn, wait=5.0) < self.child_catch_up:
                return None
        except Exception:  # the catch-up below asks again, and says what is wrong
            return None
        return Reader.fork(self.conn)

    async def _catch_up(self, start_seq: int, reader: Reader | None = None) -> None:
        """Fold the log from ``start_seq`` to its end, then follow it. A long stretch is read
        by a child process on the other core while this one folds (journal/catchup.py: the
        ``reader`` forked early, or one forked now); the follower reads whatever it did not
        (all of a short tail, the rest after a failure)."""
        t0 = time.monotonic()
        by_child = 0
        first = start_seq
        # Nearly everything the fold allocates lives on: collecting the youngest generation
        # every 700 allocations (the default) walks the growing state again and again (measured:
        # ~12% of the fold of 136 k events).
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], CATCH_UP_GC[0]), *CATCH_UP_GC[1:])
        try:
            target = await last_seq(self.conn)
            if self.on_catch_up is not None and target - start_seq + 1 >= CATCH_UP_NOTICE:
                self.on_catch_up(start_seq, target, start_seq - 1 if start_seq > 1 else None)
            if self.child_catch_up is not None and target - start_seq + 1 >= self.child_catch_up:
                if reader is None:
                    reader = Reader.fork(self.conn)
                if reader is not None:
                    # (asked already when a snapshot was loaded: only up to the stream's end
                    # then; the follower reads what came since)
                    reached, by_child = await reader.read(
                        start_seq, target, self._fold_raw, prepare=_prepare_fold_raw
                    )
                    start_seq = reached + 1
            self.follower = _Follower(
                self.conn, self._on_event, lambda: self.state, start_seq=start_seq
            )
            await self.follower.start()
            await self.follower.catch_up(timeout=None)
            prune(self.state, self.follower.applied_seq)  # (what the catch-up child read)
        finally:
            # The fold is hundreds of thousands of long-lived objects in no reference cycle:
            # frozen, so that the cyclic GC never walks them all again at a full collection —
            # and before the usual threshold is back, else the first allocations after it ran
            # a young collection over every object the catch-up made (7-11 ms of a start from
            # a snapshot plus a 10,000-event tail, helper h94).
            gc.freeze()
            gc.set_threshold(*threshold)
        self.fold_report = FoldReport(
            self.follower.applied_seq - first + 1, round(time.monotonic() - t0, 3), by_child
        )

    def _snapshot_seconds(self) -> float:
        s = self.snapshotter
        return (s.stats.loaded_seconds or 0.0) if s is not None else 0.0

    def _fold_raw(self, seq: int, subject: str, data: bytes) -> None:
        """One stored message as the catch-up reader delivers it (undecoded): :meth:`_fold`
        of its :func:`decode_fast` envelope, without building one when it takes the fast
        path (:func:`wire_of`, :meth:`State.fold_wire`)."""
        state = self.state
        if seq <= state.subject_seq.get(subject, 0):
            return
        w = wire_of(data)
        if w is None:  # decode_fast is decode here: its envelope, or why not
            try:
                env = decode(data)
            except DecodeError as exc:
                self._fold(seq, subject, None, data, exc.message)
                return
            self._fold(seq, subject, env, data)
            return
        refused = state.fold_wire(seq, subject, w)
        if refused is not None:
            self._refuse(seq, subject, refused)
            return
        command_id = w.command_id
        if command_id and not issubclass(w.EVENT, _NOT_SEEN) and command_id not in _NOT_SEEN_IDS:
            self._remember(command_id, data)
        if self.snapshotter is not None:
            self.snapshotter.since += 1

    def _on_event(
        self, seq: int, subject: str, env: Envelope | None, err: DecodeError | None, msg: Msg
    ) -> None:
        self._take(seq, subject, env, err, msg.data)

    def _take(
        self, seq: int, subject: str, env: Envelope | None, err: DecodeError | None, data: bytes
    ) -> None:
        self._fold(seq, subject, env, data, err.message if err else "undecodable")
        if pointers_wanted(self.state):
            self._index_wanted.set()

    def _fold(
        self,
        seq: int,
        subject: str,
        env: Envelope | None,
        data: bytes,
        why: str = "undecodable",
        ahead: bool = False,
    ) -> bool:
        """Fold one stored message in (once: the follower delivers again what this replica
        folded from its own publish acks, and is skipped then; ``ahead``: one of those, folded
        before messages of other writers stored before it: events/fold_ahead.py). One the fold
        does not take (undecodable: ``why``; on a foreign subject; values it cannot fold) is
        recorded and skipped — never fatal, and the same at every start; its subject's sequence
        moves past it all the same, as the next append there must expect it
        (``State.fold_message``). False when it is refused."""
        state = self.state
        if seq <= state.subject_seq.get(subject, 0):
            return True
        if ahead and env is not None:
            refused = fold_ahead(state, seq, subject, env)
        else:
            refused = state.fold_message(seq, subject, env, why)
        if refused is not None or env is None:
            self._refuse(seq, subject, refused or why)
            return False
        command_id = env.command_id
        if command_id and not isinstance(env.event, _NOT_SEEN) and command_id not in _NOT_SEEN_IDS:
            # Host events carry an executor's pass id, never a client's command: not kept.
            # Nor joins: one published before its allocation may stand alone (the allocation
            # refused: service/prelink.py), and a retry must not be answered from it. Nor the
            # pointer writers' messages (_NOT_SEEN_IDS).
            self._remember(command_id, data)
        if self.snapshotter is not None:
            self.snapshotter.since += 1
        return True

    def _refuse(self, seq: int, subject: str, reason: str) -> None:
        self.rejected.append(Rejected(seq, subject, reason))
        self.rejected_total += 1
        log.warning("message %d on %s recorded and skipped: %s", seq, subject, reason)

    def _remember(self, command_id: str, data: bytes) -> None:
        """Keep a command's message as stored (decoded only if a retry asks)."""
        seen = self.seen
        evs = seen.get(command_id)
        if evs is not None:
            seen[command_id] = (*evs, data)  # (a command's few events: SeenEvents says why)
        else:
            seen[command_id] = (data,)
            if len(seen) > SEEN_COMMANDS:
                cid, raws = seen.popitem(last=False)
                if cid in self.recalled:  # (put back out of the log's order: no horizon)
                    self.recalled.discard(cid)
                else:
                    self.forgotten_last = raws

    def _forgotten_horizon(self) -> float | None:
        """The time before which a command may be forgotten (service/old_retry.py): that of
        the newest command ``seen`` let go; after a start from a snapshot, before any went,
        that of its oldest in the log's order (what came before it may have gone; one put
        back from the log, ``recalled``, is older than what went after it: review h140; none
        such, +inf); None when it never held more than it holds now. Decoded only when asked:
        for an id older than the duplicate window."""
        raws = self.forgotten_last
        if raws is None:
            if self._seen_whole or not self.seen:
                return None
            recalled = self.recalled
            oldest = next((r for c, r in self.seen.items() if c not in recalled), None)
            return math.inf if oldest is None else envelope_time(oldest)
        return envelope_time(raws)

    def _fold_appended(
        self, messages: list[Outgoing], envelopes: list[Envelope], last: int
    ) -> None:
        """Fold what this replica just appended, from the ack: the answer does not wait for
        the follower to read it back. An atomic batch is stored contiguously, so its k-th
        message is at ``last - n + k``. Only subjects appended *with* the OCC check: there no
        other writer's event can sit between ours and what we decided on, so folding ours
        ahead of the follower keeps every subject in order; the unchecked ones (placements)
        are left to the follower. What the fold shares across subjects waits for the follower
        to reach ours (events/fold_ahead.py) — unless it holds every message before it."""
        first = last - len(messages) + 1
        # When the follower has read everything before ``first`` (so nothing is held), the
        # batch's first message is folded whole at once, as the log's order would fold it.
        applied = self.follower.applied_seq
        for i, (m, env) in enumerate(zip(messages, envelopes, strict=True)):
            seq = first + i
            if unchecked(m.subject) or seq <= applied:
                # A placement; or read by the follower before its ack, folded (the subject's
                # entry may be forgotten since, a deletion read past: events/prune.py).
                continue
            if not self._fold(seq, m.subject, env, m.data, ahead=seq > applied + 1):
                # Decided here and stored, yet the fold refuses it: a decider bug (the client
                # has its answer; the state does not hold the event).
                log.error(
                    "event %d (%s) of this replica's own decision refused by the fold: a"
                    " bug to report",
                    seq,
                    env.type,
                )
        # The log has been seen up to ``last`` (acknowledged), even before the follower reads
        # it: a store restored from an older copy must be caught as a regression from there.
        if last > self.follower.highest_seen:
            self.follower.highest_seen = last

    def _settled_seq(self) -> int | None:
        """The sequence the fold is exactly the log's fold up to; None while it holds own
        appends (folded from their acks) the reader has not reached yet. Reached, they hold
        nothing back (events/fold_ahead.py): every part of the fold took the log's order."""
        applied = self.follower.applied_seq
        state = self.state
        return applied if state.last_seq <= applied and not state.held else None

    async def _watch_log(self) -> None:
        try:
            await self.follower.watch(self.watch_interval)
        except LogRegression as exc:
            log.critical("%s", exc.message)
            await self._unsubscribe()
            if self.failed is not None and not self.failed.done():
                self.failed.set_result(exc)

    async def _backfill_joins(self) -> None:
        """Record the joins a stream from before placements lacks (events/placement.py), so
        that executors reading only their share find every network they have instances in."""
        missing = backfill(self.state)
        if not missing:
            return
        log.info("recording %d placements / floating mappings missing from the log", len(missing))
        now = time.time()
        for i in range(0, len(missing), 500):
            chunk = missing[i : i + 500]
            envs = [Envelope(ev, _backfill_id(ev), "backfill", now, SYSTEM) for ev in chunk]
            expected = {
                s: self.state.seq_of(s) for s in {e.subject() for e in chunk} if not unchecked(s)
            }
            try:
                seq = await self.appender.append(build_messages(envs), expected)
            except WrongLastSequence:
                seq = 0  # the log moved under us: the next start backfills what is missing
            except MaybeApplied:
                seq = 0  # a replica starting with us wrote the same ids: nothing twice
            except LogUnavailable as err:
                log.warning("placements not recorded now (%s): the next start does it", err)
                return
            if seq:
                await self.follower.wait_for(seq)

    async def _write_pointers(self) -> None:
        """Point the executors at the announcements their shares miss, retire the deletions
        they may never read (a stream from before the announcement subjects and retirements:
        service/legacy_pointers.py), before commands are taken."""
        try:
            await write_pointers(self)
        except LogUnavailable as err:
            log.warning("pointers not written now (%s): the indexer tries again", err)
            self._index_wanted.set()

    def heartbeats_now(self) -> Heartbeats:
        """Every host's latest heartbeat as this replica last saw it (may be a bit stale: a
        stale heartbeat can only make an absence look shorter)."""
        return dict(self.heartbeats.heartbeats) if self.heartbeats is not None else {}

    # --- the release reaper -------------------------------------------------------------

    async def reap(self, now: float | None = None) -> list[str]:
        """Free addresses whose DHCP release is overdue (as of ``now``); return them.

        Every replica may run this: the decision is appended with OCC on the network's
        subject, so two reapers (or a reaper and a release) can never both free an address.
        """
        now = time.time() if now is None else now
        freed: list[str] = []
        for network_id in sorted(overdue(self.state, now, self.release_timeout)):
            while True:  # one decision frees at most MAX_REAP addresses
                req = Request(
                    FixedIpReap(network_id=network_id, now=now, timeout=self.release_timeout),
                    f"reap-{network_id}-{uuid.uuid4().hex[:12]}",
                    SYSTEM,
                )
                try:
                    result = await self._submit(req)
                except NetledgerError as err:
                    log.warning("reaping network %s failed: %s", network_id, err)
                    break
                got = result.get("freed", [])
                freed.extend(got)
                if len(got) < MAX_REAP:
                    break
        return freed

    async def _reap_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                freed = await self.reap()
            except Exception:
                log.exception("release reaper failed")
                continue
            if freed:
                log.info("freed %d address(es) whose DHCP release never came", len(freed))
