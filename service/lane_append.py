"""How a lane appends what it decided: one message at a time or as a pipelined chain
(:meth:`LaneAppends._append_one_by_one`), a decision right after its placements
(:meth:`LaneAppends._append_prelinked`), one atomic batch (:meth:`LaneAppends._append_batch`),
each decision alone after a batch refused as a duplicate (:meth:`LaneAppends._append_each`);
and a decision acknowledged as stored before answered from the log. A mixin of
:class:`~netledger.service.lanes.Lanes`, which picks the way per round and decides again on a
conflict.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import nats.js.errors

from netledger.events.codec import Envelope
from netledger.events.commands import FixedIpAllocate, Request
from netledger.events.decide import Decision
from netledger.events.errors import CommandIdReused, LogUnavailable
from netledger.events.ids import command_time
from netledger.events.placement import unchecked
from netledger.events.snapshot import SeenEvents
from netledger.events.state import State
from netledger.journal.append import (
    Appender,
    DuplicateBatch,
    MaybeApplied,
    Outgoing,
    build_messages,
    is_msg_id_of,
)
from netledger.journal.follow import Follower
from netledger.journal.stream import MSG_ID, Connection
from netledger.service.lane_queue import Job
from netledger.service.old_retry import first_attempt, looked_up_subjects, may_be_forgotten
from netledger.service.prelink import prelinked_envelopes
from netledger.service.stats import Stats

log = logging.getLogger("netledger.service")

#: How long a lookup of a forgotten retry may read the log when appends have no budget
APPEND_LOOKUP_S = 3.0


class LaneAppends:
    """Appending a lane's decided round (what :class:`~netledger.service.lanes.Lanes` calls)."""

    conn: Connection
    state: State
    seen: OrderedDict[str, SeenEvents]
    recalled: set[str]
    follower: Follower
    #: seconds the stream's duplicate window holds a message id (read at the start)
    duplicate_window: float
    appender: Appender
    stats: Stats
    pipeline: bool
    _busy_lanes: int
    _queued: int

    def _fold_appended(self, messages: list[Outgoing], envelopes: list[Envelope], seq: int) -> None:
        raise NotImplementedError  # CommandService's

    def _forgotten_horizon(self) -> float | None:
        raise NotImplementedError  # CommandService's

    async def _recall_old(self, jobs: list[Job], looked: set[int]) -> None:
        """Put back in ``seen`` the first attempt of each job that may be the retry of a
        command older than both what ``seen`` holds and the duplicate window
        (service/old_retry.py ``may_be_forgotten``), found in the log by the time its id
        carries: then answered as a retry (``_already_applied``). Each job is looked up once
        (``looked``: ids of the jobs looked up); one not found is decided as new. Called before
        a round decides (never between its decisions and their appends: what they saw must be
        what their OCC checks say)."""
        now = time.time()
        for job in jobs:
            req = job.req
            subjects = looked_up_subjects(req)
            if subjects is None or job.fut.done() or req.command_id in self.seen:
                continue
            made = command_time(req.command_id)
            if made is None or not may_be_forgotten(
                made, now, self.duplicate_window, self._forgotten_horizon
            ):
                continue
            if id(job) in looked:
                continue
            looked.add(id(job))
            self.stats.old_id_lookups += 1
            timeout = self.appender.budget_or(APPEND_LOOKUP_S)
            try:
                found = await first_attempt(self.conn, req, made, subjects, timeout)
                if found.seq is not None:
                    # Stored by another replica a moment ago, maybe not folded here yet: the
                    # answer is judged on a fold that holds it (else a floating IP it gave,
                    # free in this fold, was told undone), and the fold remembers it in
                    # ``seen`` (put back besides, it was remembered twice). Review h140.
                    await self.follower.wait_for(found.seq, timeout)
                    await self.follower.batch_read(timeout)
            except Exception as exc:  # (TimeoutError, the connection's): nothing decided
                # Decided as new, it might allocate a second floating IP: refused, the client
                # retries under the same id.
                job.fail(
                    LogUnavailable(
                        f"command {req.command_id} may be the retry of one stored long ago,"
                        f" and the log could not be read to tell ({exc.__class__.__name__})",
                        outcome="not_applied",
                        reason="lookup",
                    )
                )
                continue
            self.stats.old_id_scanned += found.scanned
            if found.seq is not None and req.command_id not in self.seen:
                log.info(
                    "command %s found stored at %d (%d messages read): answered as a retry",
                    req.command_id,
                    found.seq,
                    found.scanned,
                )
                try:
                    recalled = await self._recall(req, found.seq, strict=True)
                except Exception as exc:  # the log away mid-read: part of its events at most
                    recalled = False
                    why = exc.__class__.__name__
                else:
                    why = "gone when read again"
                if not recalled:
                    # Found but not read back whole: decided as new it might allocate a second
                    # floating IP, answered from a part it would lack networks (review h140).
                    job.fail(
                        LogUnavailable(
                            f"command {req.command_id} was stored at {found.seq} long ago, and"
                            f" its events could not be read back ({why})",
                            outcome="not_applied",
                            reason="lookup",
                        )
                    )

    async def _recall(self, req: Request, seq: int, strict: bool = False) -> bool:
        """Put the events ``req`` stored from ``seq`` on (message ids ``<command id>:0``,
        ``:1``, ...: one decision, contiguous) back in ``seen``, read from the log; False if
        none was found there. ``strict``: a read that fails other than past the log's end
        raises (nothing put back) instead of keeping what was read before it."""
        events: list[bytes] = []
        while True:
            try:
                m = await self.conn.js.get_msg(self.conn.stream, seq + len(events), direct=True)
            except nats.js.errors.NotFoundError:  # past the end
                break
            except Exception:  # the log away: what was read, if anything
                if strict:
                    raise
                break
            if not m.headers or not is_msg_id_of(
                m.headers.get(MSG_ID), f"{req.command_id}:{len(events)}"
            ):
                break
            events.append(m.data or b"")
        if events:
            self.seen[req.command_id] = tuple(events)
            self.recalled.add(req.command_id)
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

    def _alone(self) -> bool:
        """Whether this lane is the only one at work: no other lane's answer of this pass to
        share a write with (:meth:`_answer_now`)."""
        return self._busy_lanes <= 1

    def _publish_now(self) -> bool:
        """Whether a publish should be written at once (the appender's ``eager``): this lane
        is the only one at work and no job waits in any lane — else the lanes woken in this
        pass publish too, and their publishes share one write at the pass's end (a lane
        running first in a burst of 16 saw itself alone: a write of its own, measured as
        +0.05 loop passes an allocation with 16 clients on 16 networks)."""
        return self._busy_lanes <= 1 and not self._queued

    def _answer_now(self) -> None:
        """The only lane at work: no other answer of this pass to share a write with, so this
        one goes now, not after the other callbacks of the pass (the follower's delivery of
        the same event, often read in the same packet)."""
        if not self._alone():
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
