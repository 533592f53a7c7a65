"""The service's lanes: an in-process queue per network, per host retired, and one each for
the registry, the floating IPs and reverts (:meth:`Lanes._lane_for`; kept while it has work:
an idle one ends, :meth:`Lanes._end_idle_lanes`), whose worker decides what waits in it with
the pure deciders and appends it with optimistic concurrency — one message, a pipelined chain,
or one atomic batch (group commit: :mod:`netledger.service.lane_append`) — and decides again
on a conflict. The log's OCC keeps replicas safe; lanes only order and group work inside
one replica. A mixin of :class:`~netledger.service.service.CommandService`; the queue a lane
reads is :mod:`netledger.service.lane_queue`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
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
    ConflictError,
    ConflictRetriesExhausted,
    DecodeError,
    LogUnavailable,
    NetledgerError,
    NotFound,
)
from netledger.events.placement import companions
from netledger.events.reaper import FixedIpReap
from netledger.events.revert_events import ChangeReverted
from netledger.events.snapshot import seen_events
from netledger.journal.append import (
    DuplicateBatch,
    MaybeApplied,
    PrelinkBroken,
    WrongLastSequence,
)
from netledger.journal.follow import Follower
from netledger.journal.loghealth import LATCHED, STORAGE_LOW, LogHealth
from netledger.service.answers import result_from_events
from netledger.service.lane_append import LaneAppends
from netledger.service.lane_queue import Job, LaneQueue
from netledger.service.prelink import prelinkable
from netledger.service.recreated import learn_recreated

log = logging.getLogger("netledger.service")

MAX_CONFLICT_RETRIES = 64
#: How long a refusal waits for this replica to fold the log's end before it is answered on
#: what the replica holds (the log away, or far behind): a round's wait; one put off as the log
#: refuses writes waits at most this long from its request.
REFUSAL_CATCH_UP_S = 5.0


class Lanes(LaneAppends):
    """Queueing, deciding and appending (what :class:`CommandService` sets up; the
    attributes the appends use are declared on :class:`LaneAppends`)."""

    health: LogHealth
    follower: Follower
    max_batch: int
    batch_threshold: int
    _lanes: dict[str, LaneQueue]
    #: when a refusal's wait for the log's end last gave up (time.monotonic): a command queued
    #: before it has seen the log not answer, and is refused without waiting again
    _log_unread_at: float = -math.inf
    _workers: dict[str, asyncio.Task[None]]
    _tasks: set[asyncio.Task[None]]

    async def _submit(self, req: Request) -> dict[str, Any]:
        return await self._submit_nowait(req)

    def _submit_nowait(
        self,
        req: Request,
        on_done: Callable[[asyncio.Future[dict[str, Any]]], None] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue ``req`` in its lane; the future of its answer (``on_done`` is called with it
        as soon as it is settled)."""
        if (
            self.health.refusing is not None
            and req.command_id not in self.seen
            and not self._log_readable()
        ):
            # The log cannot take writes, nor be relied on to be read (its nats-server
            # restarting, its stream failing): answer at once with why (a retry of a command
            # already applied still gets its answer, from the fold). Readable, the refusal
            # waits in its lane for the log's end to be folded first (_decide_and_append).
            self.health.check()
        lane = self._lane_for(req)
        q = self._lanes.get(lane)
        if q is None:
            self._end_idle_lanes()
            q = self._lanes[lane] = LaneQueue()
            self._workers[lane] = asyncio.create_task(self._run_lane(lane, q))
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        q.put_nowait(Job(req, fut, on_done=on_done))
        self._queued += 1
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
            self._queued -= len(jobs)  # (a carried job counts as queued until it is taken)
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
        stored = seen_events(events)
        if req.command.own_command_id() is not None and not any(
            isinstance(e, ChangeReverted) for e in stored
        ):
            # A revert's id holds no revert: a client's command stored under it before such
            # ids were refused (events/commands.py). Answered as a retry of that command, the
            # revert was told its answer, nothing reverted (review h112).
            raise CommandIdReused(
                f"command id {req.command_id} holds another command of a client (stored before"
                " ids starting with 'revert-' were refused), not a revert: this revert cannot"
                " go under it; revert with --to-seq (within --scope) instead",
                command_id=req.command_id,
            )
        forgotten = req.command_id in self.recalled
        return result_from_events(self.state, req, stored, self.seen, forgotten)

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
        #: a refusal waits for the fold of the whole log, once a round (see below)
        recheck = confirmed = False
        #: the jobs whose refusal is put off to that check
        put_off: set[int] = set()
        #: the jobs looked up in the log as maybe retries of commands long forgotten
        looked: set[int] = set()
        #: when the oldest job put off as the log refuses writes was queued (None: none is)
        refused_since: float | None = None
        #: when the newest job put off to that check was queued (for any refusal)
        newest_put_off = -math.inf
        for attempt in range(MAX_CONFLICT_RETRIES + 1):
            if attempt == MAX_CONFLICT_RETRIES and not recheck:
                break  # (one attempt more only for a refusal put off on the last one)
            if retry is not None:
                self.stats.retries[retry] += 1
                retry = None
            if recheck:
                recheck, confirmed = False, True
                self.stats.retries["refusal"] += 1
                # Bounded as a whole: the catch-up first asks the stream's last sequence,
                # which retries for up to 30 s (with the stream's quorum lost, the answer
                # came past the client's timeout, review h107). A command put off as the log
                # refuses writes is owed the log's trouble within that bound of its request,
                # however many rounds its lane ran before it (one command a round but for
                # allocations: the n-th of a lane waited n bounds, review h126).
                bound = REFUSAL_CATCH_UP_S
                if refused_since is not None:
                    bound = min(bound, refused_since + REFUSAL_CATCH_UP_S - time.monotonic())
                    if refused_since <= self._log_unread_at:
                        # An earlier round gave up on the log's end after this one was queued
                        # (commands asked together, decided one a round): not waited for
                        # again — else a sliver of its bound left (the next command queued a
                        # moment after the first) was a second wait and a second warning.
                        bound = 0.0
                if newest_put_off <= self._log_unread_at:
                    # Every refusal put off here was queued before an earlier round's wait for
                    # the log's end gave up: they have seen the log not answer, and are refused
                    # on what this replica holds without waiting again (with the log away, the
                    # n-th "not found" of a lane deciding one command a round waited n bounds;
                    # a healthy lane never gave up, so its refusals are all checked).
                    bound = 0.0
                try:
                    if bound <= 0:
                        raise TimeoutError(f"waited {REFUSAL_CATCH_UP_S:.0f}s in its lane")
                    await asyncio.wait_for(self.follower.catch_up(None), bound)
                except Exception as exc:  # the log away: refused on what this replica holds
                    if bound > 0:
                        self._log_unread_at = time.monotonic()
                    log.log(
                        logging.DEBUG if bound <= 0 else logging.WARNING,
                        "refusal not checked against the log's end (%s: %s)",
                        exc.__class__.__name__,
                        exc,
                    )
            if self.state.recreated:  # (a hand-made log: service/recreated.py)
                await learn_recreated(self.conn, self.state)
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
            # (before the round decides: an await among its decisions would let the follower
            # fold past what they saw)
            await self._recall_old(jobs, looked)
            pending = Pending()
            joined: set[tuple[str, str]] = set()
            envelopes: list[Envelope] = []
            decided: list[tuple[Job, Decision]] = []
            #: refusals on the log's end that may hang on a decision of this round (the same
            #: MAC asked twice): told once that decision landed, else decided again (h114)
            held: list[tuple[Job, NetledgerError]] = []
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
                # (a put-off refusal is decided first: a refusal appends nothing, costs no
                # budget, and is told as itself, not as the log's trouble — review h112)
                late = id(job) in put_off
                if (
                    not late
                    and not confirmed
                    and self.health.refusing is not None
                    and self._log_readable()
                ):
                    # Refused only once this replica has folded the log's end (put off as a
                    # refusal is): it may be the retry of a command whose first attempt landed
                    # — its answer lost (review h120: the log filling under it; another
                    # replica stored it) — not read here yet. Found in the fold, it is told
                    # that attempt's answer, not ``not_applied`` (which the client could only
                    # make ``unknown``). A request does not say it is a retry: each refused
                    # command is looked up, one read of the log's last sequence a round.
                    recheck = True
                    put_off.add(id(job))
                    newest_put_off = max(newest_put_off, job.queued)
                    if refused_since is None or job.queued < refused_since:
                        refused_since = job.queued
                    continue
                trouble = None if late else self._log_trouble(job)
                if trouble is not None:
                    job.fail(trouble)
                    continue
                try:
                    d = decide(self.state, job.req, pending)
                except (NotFound, ConflictError) as err:
                    if confirmed and envelopes:
                        # Refused on the log's end and what this round decided before it: a
                        # refusal that hung on one of those must not outlive its append's
                        # failure (told MAC in use while the holder's allocation never
                        # landed, review h114).
                        held.append((job, err))
                        put_off.add(id(job))  # (decided first when it comes again: late)
                    elif confirmed:
                        job.fail(err)
                    else:
                        # A refusal is judged on the log as it stands, not on this replica's
                        # fold so far: another replica may have just appended what the command
                        # names — a client's network created there, its next request here (an
                        # append needs no such wait: the log's OCC refuses a stale one).
                        # Decided again, once, after catching up — put off on the round's
                        # last attempt too, with one attempt more for it (it was told
                        # ConflictRetriesExhausted there, review h107).
                        recheck = True
                        put_off.add(id(job))
                        newest_put_off = max(newest_put_off, job.queued)
                    continue
                except NetledgerError as err:
                    job.fail(err)
                    continue
                trouble = self._log_trouble(job) if late else None
                if trouble is not None:
                    job.fail(trouble)  # a refusal no more, and no time left to append it
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
                # What the log said of a re-created network's subject may be what a stream
                # replica behind answered (a direct get): asked again, not decided on for good.
                self.state.learned.clear()
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
            except LogUnavailable as err:
                if not recheck and not held:
                    raise  # (every waiting job hears why: _run_lane)
                # A refusal put off in this round appends nothing: it is decided again (after
                # the check against the log's end, bounded by REFUSAL_CATCH_UP_S) and told its
                # refusal — not the log's trouble, which it was told with the rest ("try
                # again", review h112). A refusal that hung on a decision of this round which
                # did not land is decided without it there (a held one too: h114).
                waiting = {id(j) for j, _ in held} | (put_off if recheck else set())
                for j in jobs:
                    if not j.fut.done() and id(j) not in waiting:
                        j.fail(err)
                continue
            for job, refusal in held:
                if not job.fut.done():
                    job.fail(refusal)  # what it hung on landed: a refusal on the log's end
            if all(j.fut.done() for j in jobs):
                return
        exhausted = ConflictRetriesExhausted("too many concurrent changes; try again")
        for j in jobs:
            if not j.fut.done():
                j.fail(exhausted)

    def _log_readable(self) -> bool:
        """Whether the log, refusing writes, can still be read: the store below its reserve or
        latched in a write error, its nats-server up (not being restarted, nor given up on:
        a read there may wait out REFUSAL_CATCH_UP_S, and the log's trouble is answered at
        once, review h125)."""
        return self.health.state in (STORAGE_LOW, LATCHED) and self.conn.nc.is_connected

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
