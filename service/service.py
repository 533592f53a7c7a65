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
import functools
import gc
import logging
import os
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from nats.aio.msg import Msg

from netledger.events import revert as _revert  # noqa: F401  (registers the revert commands)
from netledger.events.codec import SYSTEM, Envelope, decode
from netledger.events.commands import (
    MAX_REQUEST_BYTES,
    FixedIpAllocate,
    FixedIpDeallocate,
    FixedIpLease,
    FloatingPoolCreate,
    NetworkCreate,
    NetworkDelete,
    NetworkDisassociate,
    Request,
    parse_command,
)
from netledger.events.decide import Decision, Pending, decide
from netledger.events.errors import (
    CommandIdReused,
    ConflictRetriesExhausted,
    DecodeError,
    Forbidden,
    LogRegression,
    LogUnavailable,
    NetledgerError,
    RequestTooLarge,
    ValidationError,
)
from netledger.events.host_events import HostEvent
from netledger.events.ids import (
    ADMIN_COMMAND_PREFIX,
    COMMAND_PREFIX,
    HOST_COMMAND_NAMES,
    HOST_COMMANDS,
    PROJECT_COMMANDS,
    parse_command_subject,
)
from netledger.events.placement import backfill, companions, unchecked
from netledger.events.reaper import DEFAULT_RELEASE_TIMEOUT, MAX_REAP, FixedIpReap, overdue
from netledger.events.reclaim import FixedIpReclaimSweep, Heartbeats
from netledger.events.snapshot import SeenEvents, seen_events
from netledger.events.state import State
from netledger.journal.append import (
    Appender,
    DuplicateBatch,
    MaybeApplied,
    Outgoing,
    WrongLastSequence,
    build_messages,
)
from netledger.journal.catchup import Reader
from netledger.journal.follow import Follower
from netledger.journal.liveness import HeartbeatBook
from netledger.journal.loghealth import LogHealth
from netledger.journal.stream import CLOSE_TIMEOUT_S, MSG_ID, Connection, last_seq
from netledger.service.answers import _backfill_id, reply_error, reply_ok, result_from_events
from netledger.service.reclaim_run import reclaim_forever, sweep
from netledger.service.snapshotter import SnapshotPolicy, Snapshotter

log = logging.getLogger("netledger.service")

QUEUE_GROUP = "netledger-command"
#: Seconds an append may take before the command is answered ``log_unavailable`` (the
#: client's own deadline is far longer: a stuck log must not look like a missing service)
APPEND_BUDGET_S = 3.0
MAX_CONFLICT_RETRIES = 64
#: Commands whose first answer a retry gets (older retries are decided again: an allocation
#: then still finds the instance's address by its natural key).
SEEN_COMMANDS = 20_000
#: Events behind from which the start's catch-up is read by a child process (below, forking
#: and connecting it cost more than it saves).
CHILD_CATCH_UP = 8_000
AUTO = -1
#: The garbage collector's thresholds while the start folds the log (see _catch_up).
CATCH_UP_GC = (50_000, 50, 100)


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
    for ``_fold`` to skip it."""

    def __init__(
        self,
        conn: Connection,
        handler: Any,
        folded: Callable[[str], int],
        start_seq: int = 1,
    ) -> None:
        super().__init__(conn, handler, start_seq=start_seq)
        self._folded = folded

    def _handle(self, seq: int, subject: str, data: bytes, msg: Any) -> bool:
        if seq <= self._folded(subject):
            self.handled += 1
            return True
        return super()._handle(seq, subject, data, msg)


@dataclass
class Rejected:
    seq: int
    subject: str
    reason: str


@dataclass
class _Job:
    req: Request
    fut: asyncio.Future[dict[str, Any]]
    queued: float = field(default_factory=time.monotonic)
    #: called with the future as soon as it is settled (a request from the read loop is
    #: answered right there, not one pass of the event loop later by a done-callback)
    on_done: Callable[[asyncio.Future[dict[str, Any]]], None] | None = None

    def resolve(self, result: dict[str, Any]) -> None:
        self.fut.set_result(result)
        self._settled()

    def fail(self, exc: BaseException) -> None:
        self.fut.set_exception(exc)
        self._settled()

    def _settled(self) -> None:
        if self.on_done is not None:
            try:
                self.on_done(self.fut)
            except Exception:  # answering one job must not stop the lane answering the rest
                log.exception("answering command %s failed", self.req.command_id)


class _LaneQueue:
    """A lane's waiting jobs: what the lane uses of ``asyncio.Queue`` (unbounded, one reader),
    without its loop checks and bookkeeping on every put and get."""

    __slots__ = ("_jobs", "_waiter")

    def __init__(self) -> None:
        self._jobs: deque[_Job] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, job: _Job) -> None:
        self._jobs.append(job)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def empty(self) -> bool:
        return not self._jobs

    def get_nowait(self) -> _Job:
        return self._jobs.popleft()

    async def get(self) -> _Job:
        while not self._jobs:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._jobs.popleft()


@dataclass
class Stats:
    commands: dict[str, int] = field(default_factory=dict)
    conflicts: int = 0
    batches: int = 0
    batched_events: int = 0
    #: single-event appends that went pipelined (Appender.append_chain) and landed
    pipelined: int = 0

    def count(self, name: str, outcome: str) -> None:
        key = f"{name}:{outcome}"
        self.commands[key] = self.commands.get(key, 0) + 1


__all__ = ["CommandService", "reply_error", "reply_ok", "result_from_events"]


def _internal(exc: BaseException) -> bytes:
    return reply_error(NetledgerError(f"internal error: {exc.__class__.__name__}: {exc}"))


class CommandService:
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
        #: set when the service had to stop on its own (e.g. the log went back)
        self.failed: asyncio.Future[NetledgerError] | None = None
        self.watch_interval = 5.0
        #: from this many events on, a group of allocations is one atomic batch
        self.batch_threshold = 24
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
        self.follower: Follower = _Follower(conn, self._on_event, self.state_seq_of)
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
            )
        self.appender = Appender(conn, budget=append_budget, health=self.health)
        self.stats = Stats()
        self._lanes: dict[str, _LaneQueue] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        #: lanes deciding or waiting for their acks now
        self._busy_lanes = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        self._closing = False
        self.ready_seconds = 0.0
        #: the fold of the start alone (no snapshot load, no connect): events, seconds
        self.fold_report = FoldReport(0, 0.0, 0)
        #: from this many events behind on, the start's catch-up reads through a child process
        #: (None: never; AUTO: from CHILD_CATCH_UP on when this process may use two cores)
        if child_catch_up == AUTO:
            child_catch_up = CHILD_CATCH_UP if len(os.sched_getaffinity(0)) > 1 else None
        self.child_catch_up = child_catch_up

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.failed = asyncio.get_running_loop().create_future()
        t0 = time.monotonic()
        reader = await self._early_reader()
        try:
            snap = await self.snapshotter.load() if self.snapshotter is not None else None
            if snap is not None:
                # The fold up to snap.seq is in the snapshot: read only the tail.
                self.state, self.seen = snap.state, snap.seen
            await self._catch_up(snap.seq + 1 if snap is not None else 1, reader)
        finally:
            if reader is not None:
                await reader.close()
        self.ready_seconds = round(time.monotonic() - t0, 3)
        # The fold is hundreds of thousands of long-lived objects in no reference cycle: keep
        # the cyclic GC from walking them all again at every full collection.
        gc.freeze()
        try:
            book = HeartbeatBook(self.conn)
            await book.start()
            self.heartbeats = book
        except Exception as exc:  # reclaiming then relies on reports in the log alone
            log.warning("cannot watch host heartbeats (%s): reclaims use reports only", exc)
        await self._backfill_joins()
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
        fold = self.fold_report
        log.info(
            "command service ready at seq %d in %.2fs (%s); fold: %d events in %.2fs"
            " (%.0f events/s, %s)",
            self.follower.applied_seq,
            self.ready_seconds,
            f"snapshot at seq {snap.seq} + {self.follower.applied_seq - snap.seq} events"
            if snap is not None
            else "folded from the start of the log",
            fold.events,
            fold.seconds,
            fold.events / fold.seconds if fold.seconds > 0 else 0.0,
            f"{fold.by_child:,} read by a child process" if fold.by_child else "read in-process",
        )

    async def close(self) -> None:
        self._closing = True
        await self._unsubscribe()
        if self.snapshotter is not None:
            await self.snapshotter.close()
        if self.heartbeats is not None:
            await self.heartbeats.close()
        pending = [t for t in (self._reaper, self._reclaimer, self._watchdog) if t is not None]
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
        """A catch-up reader forked before the snapshot is loaded (it connects meanwhile, and
        the fork does not copy the loaded state), when the log is long enough to need one."""
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
            if self.child_catch_up is not None and target - start_seq + 1 >= self.child_catch_up:
                if reader is None:
                    reader = Reader.fork(self.conn)
                if reader is not None:
                    reached, by_child = await reader.read(start_seq, target, self._fold_raw)
                    start_seq = reached + 1
            self.follower = _Follower(
                self.conn, self._on_event, self.state_seq_of, start_seq=start_seq
            )
            await self.follower.start()
            await self.follower.catch_up(timeout=None)
        finally:
            gc.set_threshold(*threshold)
        self.fold_report = FoldReport(
            self.follower.applied_seq - first + 1, round(time.monotonic() - t0, 3), by_child
        )

    def state_seq_of(self, subject: str) -> int:
        """The last sequence of ``subject`` in the fold (the state may be replaced: a snapshot)."""
        return self.state.subject_seq.get(subject, 0)

    def _fold_raw(self, seq: int, subject: str, data: bytes) -> None:
        """One stored message as the catch-up reader delivers it (undecoded)."""
        try:
            env: Envelope | None = decode(data)
            err: DecodeError | None = None
        except DecodeError as exc:
            env, err = None, exc
        self._take(seq, subject, env, err, data)

    def _on_event(
        self, seq: int, subject: str, env: Envelope | None, err: DecodeError | None, msg: Msg
    ) -> None:
        self._take(seq, subject, env, err, msg.data)

    def _take(
        self, seq: int, subject: str, env: Envelope | None, err: DecodeError | None, data: bytes
    ) -> None:
        if env is None:
            self.rejected.append(Rejected(seq, subject, err.message if err else "undecodable"))
            self.rejected_total += 1
            return
        if not env.event.accepts_subject(subject):
            self.rejected.append(Rejected(seq, subject, f"{env.type} does not belong on {subject}"))
            self.rejected_total += 1
            return
        self._fold(seq, subject, env, data)

    def _fold(self, seq: int, subject: str, env: Envelope, data: bytes) -> None:
        """Fold one stored event in (once: the follower delivers again what this replica
        folded from its own publish acks, and is skipped then)."""
        if seq <= self.state.seq_of(subject):
            return
        if env.command_id and not isinstance(env.event, HostEvent):
            # Host events carry an executor's pass id, never a client's command: not kept.
            evs = self.seen.get(env.command_id)
            if evs is None:
                self.seen[env.command_id] = evs = []
                if len(self.seen) > SEEN_COMMANDS:
                    self.seen.popitem(last=False)
            evs.append(data)  # as stored: decoded only if a retry asks
        self.state.apply(seq, subject, env)
        if self.snapshotter is not None:
            self.snapshotter.since += 1

    def _fold_appended(
        self, messages: list[Outgoing], envelopes: list[Envelope], last: int
    ) -> None:
        """Fold what this replica just appended, from the ack: the answer does not wait for
        the follower to read it back. An atomic batch is stored contiguously, so its k-th
        message is at ``last - n + k``. Only subjects appended *with* the OCC check: there no
        other writer's event can sit between ours and what we decided on, so folding ours
        ahead of the follower keeps every subject in order; the unchecked ones (placements)
        are left to the follower."""
        first = last - len(messages) + 1
        for i, (m, env) in enumerate(zip(messages, envelopes, strict=True)):
            if not unchecked(m.subject):
                self._fold(first + i, m.subject, env, m.data)
        # The log has been seen up to ``last`` (acknowledged), even before the follower reads
        # it: a store restored from an older copy must be caught as a regression from there.
        if last > self.follower.highest_seen:
            self.follower.highest_seen = last

    def _settled_seq(self) -> int | None:
        """The sequence the fold is exactly the log's prefix up to; None while it holds own
        appends (folded from their acks) the reader has not reached yet."""
        applied = self.follower.applied_seq
        return applied if self.state.last_seq <= applied else None

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

    # --- requests -----------------------------------------------------------------------

    def _on_request(self, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        """A request, in the read loop (journal/natsclient.py ``subscribe_direct``): checked
        and parsed here; a command for a lane is queued at once and answered when its future
        is (no task of its own); the rest (reads, the reclaim sweep) get a task."""
        subj = subject.decode()
        route = parse_command_subject(subj)
        name = route.name if route is not None else subj
        to = reply.decode()
        try:
            if route is None:  # only served subjects arrive; say so rather than guess
                raise Forbidden(f"{subj} is not a command subject")
            req = self._parse(
                name, data, privileged=route.privileged, project=route.project, host=route.host
            )
            if not self._reads(req):
                self._submit_nowait(req, functools.partial(self._answer, name, to))
                return
        except NetledgerError as err:
            self.stats.count(name, err.code)
            self._respond(name, to, reply_error(err))
            return
        except Exception as exc:  # never leave a client without an answer
            log.exception("command %s failed", name)
            self._respond(name, to, _internal(exc))
            return
        task = asyncio.create_task(self._serve(name, req, to))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer(self, name: str, to: str, fut: asyncio.Future[dict[str, Any]]) -> None:
        if fut.cancelled():
            return  # shutting down: no answer (the client retries with the same id)
        err = fut.exception()
        if err is None:
            self.stats.count(name, "ok")
            data = reply_ok(fut.result())
        elif isinstance(err, NetledgerError):
            self.stats.count(name, err.code)
            data = reply_error(err)
        else:
            log.error("command %s failed", name, exc_info=err)
            data = _internal(err)
        self._respond(name, to, data)

    def _respond(self, name: str, to: str, data: bytes) -> None:
        if to:
            try:
                self.conn.nc.publish_nowait(to, data)
            except Exception:
                log.info("could not reply to %s", name)

    async def _serve(self, name: str, req: Request, to: str) -> None:
        try:
            result = await self._run(name, req)
            data = reply_ok(result)
        except NetledgerError as err:
            data = reply_error(err)
        except Exception as exc:  # never leave a client without an answer
            log.exception("command %s failed", name)
            data = _internal(exc)
        self._respond(name, to, data)

    async def handle(
        self,
        name: str,
        raw: bytes,
        *,
        privileged: bool = True,
        project: str | None = None,
        host: str | None = None,
    ) -> dict[str, Any]:
        """Answer one request. ``privileged`` says it came on the admin subject, which NATS
        permissions reserve for admins: only there may a request act with the admin role.
        ``project`` says it came on that project's subject (credentials may be bound to it):
        there it must act as a member of exactly that project. ``host`` says it came on that
        host's subject (its executor's credentials): there only a DHCP lease or release of an
        address whose DHCP that host serves is accepted."""
        try:
            req = self._parse(name, raw, privileged=privileged, project=project, host=host)
        except NetledgerError as err:
            self.stats.count(name, err.code)
            raise
        return await self._run(name, req)

    def _parse(
        self,
        name: str,
        raw: bytes,
        *,
        privileged: bool,
        project: str | None,
        host: str | None,
    ) -> Request:
        """The request, checked against the subject it came on (see :meth:`handle`)."""
        if len(raw) > MAX_REQUEST_BYTES:
            raise RequestTooLarge(f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}")
        try:
            payload = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception:
            raise ValidationError("request is not a msgpack map") from None
        req = parse_command(name, payload)
        if host is not None:
            self._check_host_route(host, name, req)
        elif req.actor.role in ("admin", "system") and not privileged:
            raise Forbidden(
                f"a request acting as {req.actor.role} must be sent on"
                f" {ADMIN_COMMAND_PREFIX}.{name}, which only admins may publish to",
                command=name,
            )
        if project is not None and (req.actor.role != "member" or req.actor.project != project):
            raise Forbidden(
                f"a request on the subject of project {project or '?'} must act as a member"
                f" of that project, not as {req.actor.role}"
                + (f" of project {req.actor.project}" if req.actor.project else ""),
                command=name,
            )
        if not req.command_id:
            req = Request(req.command, uuid.uuid4().hex, req.actor)
        return req

    @staticmethod
    def _reads(req: Request) -> bool:
        """Answered without a lane: reads, and the reclaim sweep (which runs its own)."""
        return bool(req.command.READ_ONLY) or isinstance(req.command, FixedIpReclaimSweep)

    async def _run(self, name: str, req: Request) -> dict[str, Any]:
        try:
            if req.command.READ_ONLY:
                result = decide(self.state, req).result
            elif isinstance(req.command, FixedIpReclaimSweep):
                decide(self.state, req)  # authorisation (admin only); appends nothing
                result = await sweep(self, req.command)
            else:
                result = await self._submit(req)
            self.stats.count(name, "ok")
            return result
        except NetledgerError as err:
            self.stats.count(name, err.code)
            raise

    def _check_host_route(self, host: str, name: str, req: Request) -> None:
        if name not in HOST_COMMAND_NAMES or not isinstance(req.command, FixedIpLease):
            raise Forbidden(
                f"a host's subject takes only {' and '.join(HOST_COMMAND_NAMES)}, not {name}",
                command=name,
                host=host,
            )
        if req.actor.role != "system":
            raise Forbidden(
                f"a request on the subject of host {host} acts as the system (the host's DHCP"
                f" lease script), not as {req.actor.role}",
                command=name,
                host=host,
            )
        found = self.state.find_fixed(req.command.address)
        if found is not None and host not in self.state.dhcp_hosts(*found):
            raise Forbidden(
                f"host {host} does not serve DHCP for {req.command.address}",
                command=name,
                host=host,
                address=req.command.address,
            )

    async def _submit(self, req: Request) -> dict[str, Any]:
        return await self._submit_nowait(req)

    def _submit_nowait(
        self,
        req: Request,
        on_done: Callable[[asyncio.Future[dict[str, Any]]], None] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue ``req`` in its lane; the future of its answer (``on_done`` is called with it
        as soon as it is settled)."""
        if self.health.refusing is not None and req.command_id not in self.seen:
            # The log cannot take writes: answer at once with why (a retry of a command
            # already applied still gets its answer, from the fold).
            self.health.check()
        lane = self._lane_for(req)
        q = self._lanes.get(lane)
        if q is None:
            q = self._lanes[lane] = _LaneQueue()
            self._workers[lane] = asyncio.create_task(self._run_lane(lane, q))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        q.put_nowait(_Job(req, fut, on_done=on_done))
        return fut

    def _lane_for(self, req: Request) -> str:
        """The in-process queue a request waits in (the log's OCC keeps replicas safe; lanes
        only order and group work inside one replica). A command type may name its own lane
        with a ``lane(state) -> str`` method."""
        cmd, st = req.command, self.state
        own = getattr(cmd, "lane", None)
        if callable(own):
            return str(own(st))
        if isinstance(
            cmd, NetworkCreate | NetworkDelete | NetworkDisassociate | FloatingPoolCreate
        ):
            return "registry"
        if isinstance(cmd, FixedIpAllocate):
            nid = cmd.network_id or st.project_networks.get(cmd.project or "")
            return f"network:{nid}" if nid else "registry"
        if isinstance(cmd, FixedIpDeallocate):
            held = sorted(st.instance_ips.get(cmd.instance, ()))
            return f"network:{held[0][0]}" if held else "registry"
        if isinstance(cmd, FixedIpReap):
            return f"network:{cmd.network_id}"
        if isinstance(cmd, FixedIpLease):
            found = st.find_fixed(cmd.address)
            return f"network:{found[0].network_id}" if found else "registry"
        return "floating"

    # --- lanes: decide, append, retry ---------------------------------------------------

    async def _run_lane(self, lane: str, q: _LaneQueue) -> None:
        carry: _Job | None = None
        while True:
            job = carry or await q.get()
            carry = None
            jobs = [job]
            if isinstance(job.req.command, FixedIpAllocate):
                while len(jobs) < self.max_batch and not q.empty():
                    nxt = q.get_nowait()
                    if not isinstance(nxt.req.command, FixedIpAllocate):
                        carry = nxt
                        break
                    jobs.append(nxt)
            self._busy_lanes += 1
            try:
                await self._decide_and_append(jobs)
            except LogUnavailable as err:
                # The log's trouble (its health logged it once): every waiting job hears why.
                for j in jobs:
                    if not j.fut.done():
                        j.fail(err)
            except Exception as exc:
                log.exception("lane %s failed", lane)
                for j in jobs:
                    if not j.fut.done():
                        j.fail(
                            exc
                            if isinstance(exc, NetledgerError)
                            else NetledgerError(f"internal error: {exc}")
                        )
            finally:
                self._busy_lanes -= 1

    def _already_applied(self, req: Request) -> dict[str, Any] | None:
        events = self.seen.get(req.command_id)
        if events is None:
            return None
        return result_from_events(self.state, req, seen_events(events))

    async def _decide_and_append(self, jobs: list[_Job]) -> None:
        # After a batch refused as a duplicate, each decision goes alone: the one retry whose
        # first attempt was stored fails (or is answered from the log) by itself, instead of
        # the whole round being refused again, MAX_CONFLICT_RETRIES times.
        alone = False
        for attempt in range(MAX_CONFLICT_RETRIES):
            pending = Pending()
            joined: set[tuple[str, str]] = set()
            envelopes: list[Envelope] = []
            decided: list[tuple[_Job, Decision]] = []
            now = time.time()
            for job in jobs:
                if job.fut.done():
                    continue
                prior = self._already_applied(job.req)
                if prior is not None:
                    job.resolve(prior)
                    continue
                trouble = self._log_trouble(job)
                if trouble is not None:
                    job.fail(trouble)
                    continue
                try:
                    d = decide(self.state, job.req, pending)
                except NetledgerError as err:
                    job.fail(err)
                    continue
                # What executors read instead of the whole log (a host's first instance in a
                # network, a floating IP's mapping on its network), in the same atomic batch
                # (events/placement.py).
                extra = companions(self.state, d.events, joined)
                if extra:
                    d = Decision([*d.events, *extra], d.result)
                pending.note(d.events)
                if len(envelopes) + len(d.events) > 1000:
                    break  # the rest waits for the next round
                for i, ev in enumerate(d.events):
                    envelopes.append(
                        Envelope(
                            ev, f"{job.req.command_id}:{i}", job.req.command_id, now, job.req.actor
                        )
                    )
                decided.append((job, d))
            if not envelopes:
                for job, d in decided:
                    job.resolve(d.result)
                if all(j.fut.done() for j in jobs):
                    return
                continue
            try:
                if alone:
                    await self._append_each(envelopes, decided)
                elif len(envelopes) >= self.batch_threshold or any(
                    len(d.events) > 1 for _, d in decided
                ):
                    await self._append_batch(envelopes, decided)
                else:
                    await self._append_one_by_one(envelopes, decided)
            except DuplicateBatch:
                alone = True
                await self.follower.catch_up()
                continue
            except WrongLastSequence as exc:
                self.stats.conflicts += 1
                if exc.actual is None:
                    await self.follower.catch_up()
                else:
                    await self.follower.wait_for(exc.actual)
                await asyncio.sleep(0.001 * min(attempt, 20))
                continue
            except MaybeApplied:
                await self.follower.catch_up()
                continue
            if all(j.fut.done() for j in jobs):
                return
        exhausted = ConflictRetriesExhausted("too many concurrent changes; try again")
        for j in jobs:
            if not j.fut.done():
                j.fail(exhausted)

    async def _recall(self, req: Request, seq: int) -> bool:
        """Put the events ``req`` stored from ``seq`` on (message ids ``<command id>:0``,
        ``:1``, ...: one decision, contiguous) back in ``seen``, read from the log; False if
        none was found there."""
        events: list[bytes] = []
        while True:
            try:
                m = await self.conn.js.get_msg(self.conn.stream, seq + len(events), direct=True)
            except Exception:  # past the end, or the log away: what was read, if anything
                break
            if not m.headers or m.headers.get(MSG_ID) != f"{req.command_id}:{len(events)}":
                break
            events.append(m.data or b"")
        if events:
            self.seen[req.command_id] = events
        return bool(events)

    @staticmethod
    def _reused(req: Request) -> CommandIdReused:
        return CommandIdReused(
            f"command {req.command_id} stored its events before (inside the log's duplicate"
            " window), and its answer is no longer kept: look the result up, or send a new"
            " command id",
            command_id=req.command_id,
        )

    def _log_trouble(self, job: _Job) -> LogUnavailable | None:
        """Why ``job`` is answered without trying to append: the log refuses writes now, or
        appends are failing and it has waited long enough that another try would take it past
        its answer budget (a command answers within about 1.5 budgets, never the client's
        deadline)."""
        h = self.health
        if h.refusing is None and h.failing is None:
            return None
        err = h.refusing
        if err is None and time.monotonic() - job.queued > self.appender.budget_or(0) / 2:
            err = h.failing
        if err is None:
            return None
        if h.refusing is not None:
            h.refused += 1
        return type(err)(err.message, **err.details)

    async def _append_batch(
        self, envelopes: list[Envelope], decided: list[tuple[_Job, Decision]]
    ) -> None:
        """All decisions as one atomic batch, the OCC check on every subject they touch."""
        subjects = {env.event.subject() for env in envelopes}
        expected = {s: self.state.seq_of(s) for s in subjects if not unchecked(s)}
        messages = build_messages(envelopes)
        seq = await self.appender.append(messages, expected)
        if expected and seq <= max(expected.values()):
            # Acknowledged as a duplicate: the commit message's id was stored before, inside
            # the duplicate window (a retry no longer in ``seen``), and nothing was stored now.
            # One decision's answer is what its first attempt stored (contiguous, ending at
            # ``seq``); of several, each goes alone (_append_each) to find out which.
            if len(decided) != 1:
                raise DuplicateBatch(f"batch acknowledged as stored before, at {seq}")
            job = decided[0][0]
            if await self._recall(job.req, seq - len(messages) + 1):
                raise MaybeApplied(f"{job.req.command_id} was stored before, at {seq}")
            job.fail(self._reused(job.req))
            return
        self.stats.batches += 1
        self.stats.batched_events += len(envelopes)
        self._fold_appended(messages, envelopes, seq)
        for job, d in decided:
            if not job.fut.done():
                job.resolve(d.result)

    async def _append_each(
        self, envelopes: list[Envelope], decided: list[tuple[_Job, Decision]]
    ) -> None:
        """Each decision appended by itself, in order (after a duplicate batch). A one-event
        decision whose message id was stored before is acknowledged as a duplicate and answered
        from the log (:meth:`_append_one_by_one`); a larger one is refused whole again, and
        that command alone is told (:class:`CommandIdReused`)."""
        i = 0
        for job, d in decided:
            envs = envelopes[i : i + len(d.events)]
            i += len(d.events)
            if job.fut.done():
                continue
            if len(envs) == 1:
                await self._append_one_by_one(envs, [(job, d)])
                continue
            try:
                await self._append_batch(envs, [(job, d)])
            except DuplicateBatch:
                job.fail(self._reused(job.req))

    async def _append_one_by_one(
        self, envelopes: list[Envelope], decided: list[tuple[_Job, Decision]]
    ) -> None:
        """Single-event decisions appended in turn, each with its OCC check.

        JetStream's atomic batch costs ~10 ms on the server whatever its size, while a single
        publish-ack costs well under 1 ms: below ``batch_threshold`` events, one by one is
        faster. Several of them go pipelined (``Appender.append_chain``: every one after the
        first only lands if the stream's last message is the one before it), the landed prefix
        answered at once; from the first not known to have landed on, one by one as before.
        Decisions that landed before a conflict keep their answer; the rest are decided again.
        """
        landed: list[tuple[_Job, Decision]] = []
        messages = build_messages(envelopes)
        # What the decisions were based on, read before the first await: the follower may
        # fold other replicas' events while an append waits, and those the decisions never saw.
        expected = {m.subject: self.state.seq_of(m.subject) for m in messages}
        pairs = iter(zip(messages, envelopes, strict=True))
        loop = asyncio.get_running_loop()
        budget = self.appender.budget
        #: after a chain that stopped early, the first message not known to have landed goes
        #: alone, within what is left of the chain's budget (one budget per answer)
        rest_by: float | None = None
        after_chain = False
        items: list[tuple[_Job, Decision, Outgoing | None, Envelope | None]] = []
        for job, d in decided:
            if d.events:
                m, e = next(pairs)
                items.append((job, d, m, e))
            else:
                items.append((job, d, None, None))
        try:
            i = 0
            while i < len(items):
                job, d, omsg, oenv = items[i]
                if omsg is None or oenv is None:
                    landed.append((job, d))
                    i += 1
                    continue
                msg, env = omsg, oenv
                check = {} if unchecked(msg.subject) else {msg.subject: expected[msg.subject]}
                # A chain's links after the first carry no check on their own subject (only
                # that the link before is the stream's last message): it may only hold
                # decisions on the first link's subject, which that one's check covers. The
                # next subject starts a chain of its own, with its own check.
                run = []
                for it in items[i:]:
                    if it[2] is None:
                        continue
                    if it[2].subject != msg.subject:
                        break
                    run.append(it)
                if self.pipeline and len(run) > 1 and not after_chain and self.appender.can_chain():
                    # Pipelined: each publish after the first only lands if the stream's last
                    # message is the one before it (Appender.append_chain). The landed prefix
                    # is folded and answered; the rest goes on one by one from there — or,
                    # when the log's own trouble stopped it, is answered with that trouble
                    # (raised after the prefix is answered: one budget for the whole group).
                    chain = [m for _, _, m, _ in run if m is not None]
                    started = loop.time()
                    seqs, trouble = await self.appender.append_chain(chain, check)
                    self.stats.pipelined += len(seqs)
                    for (_, _, pm, pe), seq in zip(run, seqs, strict=False):
                        assert pm is not None and pe is not None
                        expected[pm.subject] = seq
                        self._fold_appended([pm], [pe], seq)
                    if seqs:
                        done = run[len(seqs) - 1][0]
                        while True:
                            j, jd, _, _ = items[i]
                            landed.append((j, jd))
                            i += 1
                            if j is done:
                                break
                    if trouble is not None:
                        raise trouble
                    if len(seqs) == len(chain):
                        continue
                    after_chain = True
                    rest_by = None if budget is None else started + budget
                    if seqs:
                        continue
                last = await self.appender.append([msg], check, deadline=rest_by)
                after_chain, rest_by = False, None
                if check and last <= check[msg.subject]:
                    # Acknowledged as a duplicate: an earlier attempt of this command (no
                    # longer in ``seen``) stored this message id inside the duplicate window,
                    # and nothing was stored now. Its answer is what that one stored.
                    if await self._recall(job.req, last):
                        raise MaybeApplied(f"{msg.msg_id} was stored before, at {last}")
                    job.fail(self._reused(job.req))
                    i += 1
                    continue
                expected[msg.subject] = last
                self._fold_appended([msg], [env], last)
                landed.append((job, d))
                i += 1
        finally:
            for job, d in landed:
                if not job.fut.done():
                    job.resolve(d.result)
            if landed and self._busy_lanes <= 1:
                # The only lane at work: no other answer of this pass to share a write with,
                # so this one goes now, not after the other callbacks of the pass (the
                # follower's delivery of the same event, often read in the same packet).
                try:
                    self.conn.nc.write_now()
                except Exception:  # left pending: the pass's own write (or the reconnect) sends it
                    log.debug("writing the answers at once failed", exc_info=True)
