"""The service's lanes: an in-process queue per network, per host retired, and one each for
the registry, the floating IPs and reverts (:meth:`Lanes._lane_for`; kept while it has work:
an idle one ends, :meth:`Lanes._end_idle_lanes`), whose worker decides what waits in it with
the pure deciders and appends it with optimistic concurrency — one message, a pipelined chain,
or one atomic batch (group commit) — and decides again on a conflict. The log's OCC keeps replicas safe; lanes only order and group work inside
one replica. A mixin of :class:`~netledger.service.service.CommandService`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from netledger.events.codec import Envelope, decode
from netledger.events.commands import (
    FixedIpAllocate,
    FixedIpDeallocate,
    FixedIpLease,
    FloatingPoolCreate,
    NetworkCreate,
    NetworkDelete,
    NetworkDisassociate,
    Request,
)
from netledger.events.decide import Decision, Pending, decide
from netledger.events.errors import (
    CommandIdReused,
    ConflictRetriesExhausted,
    DecodeError,
    LogUnavailable,
    NetledgerError,
)
from netledger.events.placement import companions, unchecked
from netledger.events.reaper import FixedIpReap
from netledger.events.snapshot import SeenEvents, seen_events
from netledger.events.state import State
from netledger.journal.append import (
    Appender,
    DuplicateBatch,
    MaybeApplied,
    Outgoing,
    PrelinkBroken,
    WrongLastSequence,
    build_messages,
    is_msg_id_of,
)
from netledger.journal.follow import Follower
from netledger.journal.loghealth import LogHealth
from netledger.journal.stream import MSG_ID, Connection
from netledger.service.answers import result_from_events
from netledger.service.prelink import prelinkable, prelinked_envelopes
from netledger.service.stats import Stats

log = logging.getLogger("netledger.service")

MAX_CONFLICT_RETRIES = 64


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
    needs (:meth:`Lanes._end_idle_lanes`): whether it took a job lately, whether its worker is
    deciding one, and :meth:`end`."""

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


class Lanes:
    """Queueing, deciding and appending (what :class:`CommandService` sets up)."""

    conn: Connection
    state: State
    seen: OrderedDict[str, SeenEvents]
    health: LogHealth
    appender: Appender
    follower: Follower
    stats: Stats
    max_batch: int
    batch_threshold: int
    pipeline: bool
    _lanes: dict[str, LaneQueue]
    _workers: dict[str, asyncio.Task[None]]
    _busy_lanes: int
    _tasks: set[asyncio.Task[None]]

    def _fold_appended(self, messages: list[Outgoing], envelopes: list[Envelope], seq: int) -> None:
        raise NotImplementedError  # CommandService's

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
            self._end_idle_lanes()
            q = self._lanes[lane] = LaneQueue()
            self._workers[lane] = asyncio.create_task(self._run_lane(lane, q))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        q.put_nowait(Job(req, fut, on_done=on_done))
        return fut

    def _end_idle_lanes(self) -> None:
        """End the lanes that took no job since the last look and hold none (before a lane is
        added: only then does their number grow). Lanes come and go with the networks, pools
        and hosts worked on: one kept per network ever allocated in was a task holding its
        last job, for good (review hrev83). One idle since the look before is ended, not every
        idle one: a lane between two jobs of a client (its answer out, the next request not in
        yet) is idle, and a lane re-made per job in a burst (16 clients on 16 networks) cost
        ~1 us a job more than one kept, ~10 % of the lanes' own work (a micro-benchmark of
        lane churn); ended this way, none is re-made there.

        Race-free in a single-threaded loop: the idle check and taking the lane out of
        ``_lanes`` run without an await between them, so a job arriving next finds no lane and
        makes a new one; the old worker, idle in :meth:`LaneQueue.get` (the only place a worker
        waits holding no job), wakes to None and returns."""
        ended = []
        for name, q in self._lanes.items():
            if not q.used and q.idle():
                ended.append(name)
            q.used = False
        for name in ended:
            self._lanes.pop(name).end()
            worker = self._workers.pop(name)
            # Owned until it has returned (its next step): close() cancels and awaits it.
            self._tasks.add(worker)
            worker.add_done_callback(self._tasks.discard)

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
            # An id the fold does not hold (made up, deleted, or not read yet: another
            # replica's creation) is refused or decided in the shared registry lane — a lane of
            # its own per id a client names was any client's to grow (review hrev83).
            return f"network:{nid}" if nid and nid in st.networks else "registry"
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

    async def _run_lane(self, lane: str, q: LaneQueue) -> None:
        carry: Job | None = None
        while True:
            job = carry or await q.get()
            if job is None:
                return  # ended while idle (_end_idle_lanes): out of _lanes already
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
            q.busy = True
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
                q.busy = False  # a carried job is taken next, with no wait between

    def _already_applied(self, req: Request) -> dict[str, Any] | None:
        """The stored answer of a retry, or None; :class:`CommandIdReused` when the command id
        was another actor's (role, project): a member of one project was told another
        project's allocation, or had its own command answered with it (found by review)."""
        events = self.seen.get(req.command_id)
        if events is None:
            return None
        try:
            first = decode(events[0]).actor
        except (DecodeError, IndexError):
            first = None  # cannot tell: as before
        if first is not None and (first.role, first.project) != (
            req.actor.role,
            req.actor.project,
        ):
            raise CommandIdReused(
                f"command id {req.command_id} is another sender's (a {first.role} of"
                f" {first.project or 'no project'}): send this command with a new command id",
                command_id=req.command_id,
            )
        return result_from_events(self.state, req, seen_events(events))

    async def _decide_and_append(self, jobs: list[Job]) -> None:
        # After a batch refused as a duplicate, each decision goes alone: the one retry whose
        # first attempt was stored fails (or is answered from the log) by itself, instead of
        # the whole round being refused again, MAX_CONFLICT_RETRIES times.
        alone = False
        # Decisions with a placement go pre-linked (_append_prelinked) until an attempt of this
        # round ends in doubt; then as atomic batches, whose retries and budget are the old path.
        prelink = self.pipeline
        #: why this round decides again (counted when it does: not after its last attempt)
        retry: str | None = None
        for attempt in range(MAX_CONFLICT_RETRIES):
            if retry is not None:
                self.stats.retries[retry] += 1
                retry = None
            if (self.follower.in_batch or self.follower.pending) and any(
                not j.fut.done() and j.req.command_id in self.seen for j in jobs
            ):
                # A retry answered from ``seen`` must find all its events: another replica's
                # atomic batch may be folded in part (its messages in two reads) while more of
                # the log is on its way. Rare (a retry, with messages pending). Found by review.
                # The server's pending count does not tell: it may deliver a batch's first
                # message with 0 pending (nats-server 2.15, 1 run in 5), so the batch's own
                # headers do (Follower.in_batch).
                if self.follower.pending:
                    await self.follower.catch_up()
                await self.follower.batch_read()
            pending = Pending()
            joined: set[tuple[str, str]] = set()
            envelopes: list[Envelope] = []
            decided: list[tuple[Job, Decision]] = []
            now = time.time()
            ids: set[str] = set()
            for job in jobs:
                if job.fut.done():
                    continue
                if job.req.command_id in ids:
                    # The same command id twice in one round (a client reusing it): the first
                    # goes, this one is answered next round (from ``seen`` once it landed). Two
                    # links of one chain with one message id: the second is acked as a
                    # duplicate, and what follows it no longer tells what landed.
                    continue
                try:
                    prior = self._already_applied(job.req)
                except CommandIdReused as err:
                    job.fail(err)
                    continue
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
                # network, a floating IP's mapping on its network, a network's deletion on the
                # registry), in the same atomic batch (events/placement.py).
                extra = companions(self.state, d.events, joined, pending)
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
                ids.add(job.req.command_id)
            if not envelopes:
                for job, d in decided:
                    job.resolve(d.result)
                if all(j.fut.done() for j in jobs):
                    return
                continue
            multi = [d for _, d in decided if len(d.events) > 1]
            mixed = (
                prelink
                and bool(multi)
                and len(envelopes) < self.batch_threshold
                and all(prelinkable(d.events) for d in multi)
                and self.appender.can_chain()
            )
            try:
                if alone:
                    await self._append_each(envelopes, decided)
                elif mixed:
                    await self._append_mixed(envelopes, decided)
                elif len(envelopes) >= self.batch_threshold or multi:
                    await self._append_batch(envelopes, decided)
                else:
                    await self._append_one_by_one(envelopes, decided)
            except DuplicateBatch:
                alone = True
                retry = "maybe_applied"
                await self.follower.catch_up()
                continue
            except PrelinkBroken:
                # Another writer came between a decision's placements and it: nothing of the
                # decision landed. Decided again, as an atomic batch (no race to lose).
                self.stats.prelink_broken += 1
                retry = "conflict"
                prelink = False
                await self.follower.catch_up()
                continue
            except WrongLastSequence as exc:
                self.stats.conflicts += 1
                retry = "conflict"
                # A pre-linked decision refused leaves its join alone (harmless, but its
                # host's executor reads the network for nothing): one per round at most.
                prelink = prelink and not mixed
                if exc.actual is None:
                    await self.follower.catch_up()
                else:
                    await self.follower.wait_for(exc.actual)
                await asyncio.sleep(0.001 * min(attempt, 20))
                continue
            except MaybeApplied:
                retry = "maybe_applied"
                prelink = prelink and not mixed
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
            if not m.headers or not is_msg_id_of(
                m.headers.get(MSG_ID), f"{req.command_id}:{len(events)}"
            ):
                break
            events.append(m.data or b"")
        if events:
            self.seen[req.command_id] = events
        return bool(events)

    async def _stored_before(self, job: Job, seq: int) -> None:
        """A decision acknowledged as a duplicate: an earlier attempt of this command (no
        longer in ``seen``) stored it inside the duplicate window, from ``seq`` on, and nothing
        was stored now. Its answer is what that one stored: put back in ``seen`` and
        :class:`MaybeApplied` raised (the round catches up and answers from there), or, not
        found there, the command told its id was used before."""
        if await self._recall(job.req, seq):
            raise MaybeApplied(f"{job.req.command_id} was stored before, at {seq}")
        job.fail(self._reused(job.req))

    @staticmethod
    def _reused(req: Request) -> CommandIdReused:
        return CommandIdReused(
            f"command {req.command_id} stored its events before (inside the log's duplicate"
            " window), and its answer is no longer kept: look the result up, or send a new"
            " command id",
            command_id=req.command_id,
        )

    def _log_trouble(self, job: Job) -> LogUnavailable | None:
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
        self,
        envelopes: list[Envelope],
        decided: list[tuple[Job, Decision]],
        base: dict[str, int] | None = None,
    ) -> None:
        """All decisions as one atomic batch, the OCC check on every subject they touch."""
        subjects = {env.event.subject() for env in envelopes}
        seq_of = self.state.seq_of if base is None else base.__getitem__
        expected = {s: seq_of(s) for s in subjects if not unchecked(s)}
        messages = build_messages(envelopes)
        seq = await self.appender.append(messages, expected, signed=True)
        if seq < 0:
            # Acknowledged as a duplicate: the commit message's id was stored before, inside
            # the duplicate window (a retry no longer in ``seen``, or not read yet: maybe on
            # another subject), and nothing was stored now. One decision's answer is what its
            # first attempt stored (contiguous, ending at ``seq``); of several, each goes alone
            # (_append_each) to find out which.
            seq = -seq
            if len(decided) != 1:
                raise DuplicateBatch(f"batch acknowledged as stored before, at {seq}")
            await self._stored_before(decided[0][0], seq - len(messages) + 1)
            return
        self.stats.batches += 1
        self.stats.batched_events += len(envelopes)
        if base is not None:
            for k, m in enumerate(messages):
                base[m.subject] = seq - len(messages) + 1 + k
        self._fold_appended(messages, envelopes, seq)
        for job, d in decided:
            if not job.fut.done():
                job.resolve(d.result)

    async def _append_each(
        self, envelopes: list[Envelope], decided: list[tuple[Job, Decision]]
    ) -> None:
        """Each decision appended by itself, in order (after a duplicate batch). A one-event
        decision whose message id was stored before is acknowledged as a duplicate and answered
        from the log (:meth:`_append_one_by_one`); a larger one is refused whole again, and
        that command alone is told (:class:`CommandIdReused`)."""
        # What the round decided on, read before the first await: the follower may fold other
        # replicas' events while an append waits, and each append's OCC check must still be
        # against what the decisions saw (advanced only by this round's own appends).
        base = {s: self.state.seq_of(s) for s in {e.event.subject() for e in envelopes}}
        i = 0
        for job, d in decided:
            envs = envelopes[i : i + len(d.events)]
            i += len(d.events)
            if job.fut.done() or not envs:
                continue  # a decision of no events: decided again next round
            if len(envs) == 1:
                await self._append_one_by_one(envs, [(job, d)], base)
                continue
            try:
                await self._append_batch(envs, [(job, d)], base)
            except DuplicateBatch:
                job.fail(self._reused(job.req))

    async def _append_mixed(
        self, envelopes: list[Envelope], decided: list[tuple[Job, Decision]]
    ) -> None:
        """A round of single-event decisions and decisions with placements (a host's first
        address in a network: the allocation and its ``NetworkHostJoined``), in order: runs of
        the first kind one by one (pipelined), each of the second pre-linked
        (:meth:`_append_prelinked`) instead of in an atomic batch."""
        # What the round decided on, read before the first await (as _append_each).
        base = {s: self.state.seq_of(s) for s in {e.event.subject() for e in envelopes}}
        run: list[tuple[Job, Decision]] = []
        run_envs: list[Envelope] = []
        i = 0
        for job, d in decided:
            envs = envelopes[i : i + len(d.events)]
            i += len(d.events)
            if len(envs) <= 1:
                run.append((job, d))
                run_envs += envs
                continue
            if run:
                await self._append_one_by_one(run_envs, run, base)
                run, run_envs = [], []
            if not job.fut.done():
                await self._append_prelinked(job, d, envs, base)
        if run:
            await self._append_one_by_one(run_envs, run, base)

    async def _append_prelinked(
        self, job: Job, d: Decision, envs: list[Envelope], base: dict[str, int]
    ) -> None:
        """One decision whose first event is on a checked subject and the rest placements:
        the placements first, then the event, stored only right after them
        (``Appender.append_prelinked``; service/prelink.py says why that is as safe as the
        atomic batch and why faster)."""
        primary, placements = prelinked_envelopes(envs)
        [msg] = build_messages([primary])
        check = {msg.subject: base[msg.subject]}
        seq = await self.appender.append_prelinked(
            build_messages(placements), msg, check, signed=True
        )
        if seq < 0:
            await self._stored_before(job, -seq)  # acknowledged as a duplicate
            return
        base[msg.subject] = seq
        self.stats.prelinked += 1
        self._fold_appended([msg], [primary], seq)
        job.resolve(d.result)
        self._answer_now()

    def _answer_now(self) -> None:
        """The only lane at work: no other answer of this pass to share a write with, so this
        one goes now, not after the other callbacks of the pass (the follower's delivery of
        the same event, often read in the same packet)."""
        if self._busy_lanes > 1:
            return
        try:
            self.conn.nc.write_now()
        except Exception:  # left pending: the pass's own write (or the reconnect) sends it
            log.debug("writing the answers at once failed", exc_info=True)

    def _subject_named(self, job: Job) -> bool:
        """Whether the subject ``job``'s decision writes is what the request names (a network,
        a project's network, the address's or instance's network) rather than one the decision
        picks (a flat network chosen for an allocation that names none). A chain's links after
        the first are stored under ids of the chain alone (``Appender.append_chain``), so only
        the first link's subject check stands against another replica's copy of a retried
        command: a copy on the same subject, which that check sees. A decision that picks its
        network may have picked another one in the copy; it goes one by one, where the
        duplicate window catches the copy by its id."""
        cmd = job.req.command
        if not isinstance(cmd, FixedIpAllocate) or cmd.network_id is not None:
            return True
        return bool(cmd.project) and cmd.project in self.state.project_networks

    async def _append_one_by_one(
        self,
        envelopes: list[Envelope],
        decided: list[tuple[Job, Decision]],
        base: dict[str, int] | None = None,
    ) -> None:
        """Single-event decisions appended in turn, each with its OCC check.

        JetStream's atomic batch costs ~10 ms on the server whatever its size, while a single
        publish-ack costs well under 1 ms: below ``batch_threshold`` events, one by one is
        faster. Several of them go pipelined (``Appender.append_chain``: every one after the
        first only lands if the stream's last message is the one before it), the landed prefix
        answered at once; from the first not known to have landed on, one by one as before.
        Decisions that landed before a conflict keep their answer; the rest are decided again.
        """
        landed: list[tuple[Job, Decision]] = []
        messages = build_messages(envelopes)
        # What the decisions were based on, read before the first await: the follower may
        # fold other replicas' events while an append waits, and those the decisions never saw.
        seq_of = self.state.seq_of if base is None else base.__getitem__
        expected = {m.subject: seq_of(m.subject) for m in messages}
        pairs = iter(zip(messages, envelopes, strict=True))
        loop = asyncio.get_running_loop()
        budget = self.appender.budget
        #: after a chain that stopped early, the first message not known to have landed goes
        #: alone, within what is left of the chain's budget (one budget per answer)
        rest_by: float | None = None
        after_chain = False
        #: message ids of chain links that got no answer (they may have landed): a later
        #: attempt that fails says outcome unknown, not not_applied (review hrev13)
        unsure: set[str] = set()
        items: list[tuple[Job, Decision, Outgoing | None, Envelope | None]] = []
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
                if (
                    self.pipeline
                    and len(run) > 1
                    and not after_chain
                    and self.appender.can_chain()
                    and all(self._subject_named(it[0]) for it in run)
                ):
                    # Pipelined: each publish after the first only lands if the stream's last
                    # message is the one before it (Appender.append_chain). The landed prefix
                    # is folded and answered; the rest goes on one by one from there — or,
                    # when the log's own trouble stopped it, is answered with that trouble
                    # (raised after the prefix is answered: one budget for the whole group).
                    chain = [m for _, _, m, _ in run if m is not None]
                    started = loop.time()
                    seqs, trouble = await self.appender.append_chain(chain, check, doubt=unsure)
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
                last = await self.appender.append(
                    [msg],
                    check,
                    deadline=rest_by,
                    signed=True,
                    in_doubt=msg.msg_id in unsure,
                )
                after_chain, rest_by = False, None
                if last < 0:
                    # Acknowledged as a duplicate (stored before, perhaps on another subject:
                    # a sequence past this subject's check proves nothing, review hrev13).
                    await self._stored_before(job, -last)
                    i += 1
                    continue
                expected[msg.subject] = last
                self._fold_appended([msg], [env], last)
                landed.append((job, d))
                i += 1
        finally:
            if base is not None:
                base.update(expected)
            for job, d in landed:
                if not job.fut.done():
                    job.resolve(d.result)
            if landed:
                self._answer_now()
