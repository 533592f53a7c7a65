"""Appending to the log: one message, a pipelined chain, or one atomic batch, each with its
optimistic-concurrency check (DESIGN.md, "The log").

* every message carries ``Nats-Msg-Id`` (the event id, derived from the command id) so a retry
  inside the duplicate window is not stored twice;
* the first message on each subject carries ``Nats-Expected-Last-Subject-Sequence`` (optimistic
  concurrency: the writer decided on that subject as of that sequence);
* a decision of several events is one **atomic batch** (all or nothing, the OCC checks on the
  batch), so multi-aggregate decisions and group commits never land half.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import nats
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError

from netledger.events.codec import Envelope, encode
from netledger.events.errors import (
    LogStorageFull,
    LogUnavailable,
)
from netledger.journal import natsclient
from netledger.journal.buckets import APPEND_EVENTS, Buckets
from netledger.journal.loghealth import (
    ERR_BATCH_DUPLICATE,
    ERR_WRONG_LAST_SEQ,
    NO_ANSWER,
    NO_STREAM,
    log_error,
)

if TYPE_CHECKING:
    from netledger.journal.loghealth import LogHealth

from netledger.journal.stream import (
    CHAIN_BROKEN,
    EXPECTED_LAST_MSG_ID,
    EXPECTED_STREAM,
    EXPECTED_SUBJECT_SEQ,
    EXPECTED_SUBJECT_SEQ_SUBJECT,
    MAX_BATCH,
    MSG_ID,
    Connection,
)

log = logging.getLogger("netledger.stream")  # one logger for the log layer

#: why :meth:`Appender.append` sent an append again with the same ids (``Appender.resends``,
#: ``netledger_append_resends_total{reason}``): its publish got no answer (it may have landed:
#: the re-send is told apart by the duplicate window), or no stream took it — a 503 without a
#: named cause (an election), or no responders (the server restarting, no stream leader)
RESEND_REASONS = ("no_answer", "unavailable")

#: What a pipelined chain's link adds to its message id (``<id>~<8 hex>``): no command id holds
#: it (events/ids.py ``check_id``: letters, digits, ``-`` and ``_``).
CHAIN_TAG = "~"


def is_msg_id_of(stored: str | None, msg_id: str) -> bool:
    """Whether a stored message's id is ``msg_id``, or a chain link's id of it."""
    return stored is not None and (stored == msg_id or stored.startswith(msg_id + CHAIN_TAG))


class WrongLastSequence(Exception):
    """Another writer appended to ``subject`` first (JetStream err 10071)."""

    def __init__(self, description: str) -> None:
        super().__init__(description)
        m = re.search(r"wrong last sequence: (\d+)", description or "")
        self.actual = int(m.group(1)) if m else None


class MaybeApplied(Exception):
    """The append may or may not have landed (lost ack, duplicate batch): catch up and look."""


class DuplicateBatch(MaybeApplied):
    """An atomic batch refused whole because one of its message ids was stored before, inside
    the duplicate window (JetStream err 10201): nothing of it was stored now."""


class PrelinkBroken(MaybeApplied):
    """A pre-linked message (:meth:`Appender.append_prelinked`) refused because another
    message landed between its placements and it (JetStream err 10070): it was not stored;
    its placements may have been."""


@dataclass(frozen=True)
class Outgoing:
    subject: str
    data: bytes
    msg_id: str


def build_messages(envelopes: list[Envelope]) -> list[Outgoing]:
    return [Outgoing(env.event.subject(), encode(env), env.event_id) for env in envelopes]


class Appender:
    """Appends decisions with optimistic concurrency, one message or one atomic batch.

    With a ``budget`` (seconds) an append that the log refuses or does not acknowledge ends
    within it with :class:`LogUnavailable` / :class:`LogStorageFull` (a command answers fast
    and says why); without one, failures without an answer are retried ``attempts`` times
    (then :class:`MaybeApplied`). A refusal that names a cause is never retried. ``health``
    (journal/loghealth.py) hears of every failure and of the first success after one.
    ``appended`` counts the events of every append stored now (``netledger_append_batch_events``),
    ``resends`` the attempts sent again, by reason (:data:`RESEND_REASONS`).
    """

    def __init__(
        self,
        conn: Connection,
        publish_timeout: float = 5.0,
        attempts: int = 8,
        *,
        budget: float | None = None,
        health: LogHealth | None = None,
    ) -> None:
        self.conn = conn
        self.publish_timeout = publish_timeout
        self.attempts = attempts
        self.budget = budget
        self.health = health
        #: events per append stored now (not a duplicate): one message — alone, a chain's link,
        #: a pre-linked decision's own (its placements are not waited for: not counted) — or
        #: one atomic batch
        self.appended = Buckets(APPEND_EVENTS)
        #: attempts :meth:`append` sent again (the same ids), by reason: logged one by one, and
        #: counted here for the metrics (a steady trickle of them is a log in trouble that
        #: commands still get through)
        self.resends = dict.fromkeys(RESEND_REASONS, 0)
        #: asked after a single message is queued: true when nothing else is about to be
        #: published in this pass of the loop (the command service: one lane at work), so the
        #: message is written at once instead of at the pass's end — one pass of the event
        #: loop less between a request and its publish (issue 15). None: at the pass's end.
        self.eager: Callable[[], bool] | None = None

    def budget_or(self, default: float) -> float:
        return self.budget if self.budget is not None else default

    def can_chain(self) -> bool:
        """Whether :meth:`append_chain` is safe on the server this connection is on: only when
        it is not part of a cluster.

        A clustered nats-server (2.15.1, and its source as of Dec 2026) does not check
        ``Nats-Expected-Last-Msg-Id`` before proposing a message to the stream's replicas, only
        when each replica applies it; a mismatch there is a *critical write error* on every
        replica and the stream takes no more writes until its servers restart
        (tests/service/test_cluster.py shows it: one broken link, one dead log). Expected last
        (subject) sequences are checked before the proposal and stay safe. Asked of the server
        info of the current connection, so a reconnect to a clustered server turns chains off
        at once."""
        info = getattr(self.conn.nc, "_server_info", None) or {}
        return not info.get("cluster")

    async def append(
        self,
        messages: list[Outgoing],
        expected: dict[str, int],
        guard: tuple[str, int] | None = None,
        *,
        deadline: float | None = None,
        signed: bool = False,
        in_doubt: bool = False,
    ) -> int:
        """Append ``messages``; return the stream sequence of the last one.

        ``deadline`` (the loop's clock) ends the budget earlier: what is left of a budget
        another append of the same answer began (a chain's one-by-one rest).

        ``signed``: an append acknowledged as a duplicate (its message id stored before, inside
        the duplicate window: nothing stored now) returns that sequence negated, as
        :meth:`append_chain` tells. Comparing the sequence with the check cannot tell it: the
        message stored before may sit on *another* subject (a retry decided on a replica that
        had not read its first attempt, on another network), past this subject's last
        sequence (review hrev13).

        ``in_doubt``: an earlier attempt of the same messages got no answer (a chain's link,
        Appender.append_chain ``doubt``): it may have landed, so a failure here says
        ``outcome: unknown`` whatever this append met (review hrev13).

        ``expected`` maps each subject written to the last subject sequence the decision was
        based on; a subject missing from it is appended without a check (placements). Raises
        :class:`WrongLastSequence` on a conflict, :class:`MaybeApplied` when a retry cannot
        tell whether an earlier attempt landed, :class:`LogUnavailable` (or its
        :class:`LogStorageFull`) when the log cannot take it.
        """
        try:
            seq = await self._append(messages, expected, guard, deadline, in_doubt)
        except LogUnavailable as err:
            self._failed(err)
            raise
        self._succeeded()
        if seq > 0:
            self.appended.observe(len(messages))
        return seq if signed else abs(seq)

    async def _append(
        self,
        messages: list[Outgoing],
        expected: dict[str, int],
        guard: tuple[str, int] | None,
        deadline: float | None = None,
        in_doubt: bool = False,
    ) -> int:
        if not messages:
            raise ValueError("nothing to append")
        if len(messages) > MAX_BATCH:
            raise ValueError(f"a decision may hold at most {MAX_BATCH} events")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = None if self.budget is None else t0 + self.budget
        if end is not None and deadline is not None:
            end = max(t0 + 0.05, min(end, deadline))
        retried = False
        #: an attempt got no answer: it may have landed, whatever a later one is told (review
        #: hrev11: a retry meeting no responders, a leader election, said ``not_applied``);
        #: also when the caller's earlier attempt of them did (a chain's link)
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            timeout = self.publish_timeout
            if end is not None:
                timeout = max(0.05, min(timeout, end - loop.time()))
            try:
                if len(messages) == 1 and guard is None:
                    return await self._publish_one(messages[0], expected, timeout)
                return await self._publish_batch(messages, expected, guard, timeout)
            except BadRequestError as exc:
                if exc.err_code == ERR_WRONG_LAST_SEQ:
                    if retried and await self._landed(messages):
                        raise MaybeApplied(str(exc)) from None
                    raise WrongLastSequence(exc.description or "") from None
                if exc.err_code == ERR_BATCH_DUPLICATE:
                    raise DuplicateBatch(exc.description or "") from None
                raise _doubted(_mapped(exc), in_doubt) from None
            except APIError as exc:
                err = _doubted(_mapped(exc), in_doubt)
                # A 503 without a named cause may be a leader election: worth the budget left.
                if (
                    isinstance(err, LogStorageFull)
                    or exc.code != 503
                    or end is None
                    or loop.time() + delay >= end
                ):
                    raise err from None
                last: BaseException = exc
                reason = "unavailable"
            except (*NO_ANSWER, *NO_STREAM) as exc:
                last = exc
                reason = "no_answer" if isinstance(exc, NO_ANSWER) else "unavailable"
                in_doubt = in_doubt or isinstance(exc, NO_ANSWER)
                if end is None and attempt >= self.attempts:
                    raise MaybeApplied("no acknowledgement after retries") from None
                if end is not None and loop.time() + delay >= end:
                    err = await self._no_answer(exc, loop.time() - t0)
                    raise _doubted(err, in_doubt) from None
            log.info(
                "append attempt %d failed (%s); retrying with the same ids",
                attempt,
                last.__class__.__name__,
            )
            retried = True
            await asyncio.sleep(delay)
            self.resends[reason] += 1  # counted as it goes (a cancel while waiting sends nothing)
            delay = min(delay * 2, 1.0)

    async def append_chain(
        self,
        messages: list[Outgoing],
        first_check: dict[str, int],
        *,
        doubt: set[str] | None = None,
    ) -> tuple[list[int], LogUnavailable | None]:
        """Publish single-message decisions pipelined; return the sequences of the prefix that
        certainly landed (possibly empty), and the log's trouble that stopped the rest, if
        that is what stopped it (then the caller answers the rest with it instead of trying
        them one by one with a budget each; nothing landed and trouble: raised).

        The first message carries ``first_check`` (the subject OCC its decision was based on);
        message k > 0 carries ``Nats-Expected-Last-Msg-Id`` = message k-1's id, so the server
        stores it only if the *stream's* last message is our message k-1: k-1 landed and
        nothing came between them, so k's decision (made on top of 0..k-1) still holds. Only
        the publishes are pipelined; every check stays on the server. Anything after the landed
        prefix (a refusal, another writer in between, a reply not received) is left to the
        caller's sequential path, which checks again and detects an earlier landing (lost ack).

        ``doubt`` gets the message ids of the links after the landed prefix whose publish got
        no answer: they may have landed, and the caller's later attempt of them must not say
        ``not_applied`` when it fails (``append(in_doubt=)``, review hrev13).
        """
        nc = self.conn.nc
        if len(messages) > 1 and not self.can_chain():
            messages = messages[:1]  # never a broken link on a clustered stream (can_chain)
        # Half the answer budget: the one-by-one rest after it (a lost ack checked, a
        # reconnect waited for) gets what is left of the same budget (append(deadline=)).
        timeout = self.publish_timeout
        if self.budget is not None:
            timeout = max(0.05, min(timeout, self.budget / 2))
        await nc.ready_for_requests()
        # Every link but the last stored under an id of this chain alone: the next link's check
        # ("the stream's last message is the one before me") must not be met by another
        # replica's copy of the same command, whose id is the command's — a chain whose head was
        # refused (the command stored by that replica) landed its next link on the copy, on a
        # decision the log never took: one address for two instances (found by review). The
        # last keeps the command's id (the duplicate window still catches its copy).
        tag = f"{CHAIN_TAG}{os.urandom(4).hex()}"
        ids = [m.msg_id + tag for m in messages[:-1]] + [messages[-1].msg_id]
        # All published at once, in order (one write), then their acks awaited in order.
        started: list[natsclient.Started | BaseException] = []
        prev: str | None = None
        for i, m in enumerate(messages):
            if i == 0:
                expected = first_check.get(m.subject)
                headers = self._headers(
                    m, None if expected is None else str(expected), msg_id=ids[i]
                )
            else:
                assert prev is not None
                headers = self._headers(m, None, prev, msg_id=ids[i])
            prev = ids[i]
            try:
                started.append(nc.start_request_nowait(m.subject, m.data, headers))
            except Exception as exc:  # closed, or the reconnect buffer full: not sent
                started += [exc] * (len(messages) - i)
                break
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        results: list[int | BaseException] = []
        for st in started:
            if isinstance(st, BaseException):
                results.append(st)
                continue
            try:
                results.append(await self._acked(st, max(0.0, end - loop.time())))
            except asyncio.CancelledError:
                for other in started:
                    if not isinstance(other, BaseException):
                        nc.forget(other)
                raise
            except Exception as exc:
                results.append(exc)
        last_ok = -1
        for i, r in enumerate(results):
            if not isinstance(r, BaseException) and r < 0:
                break  # a duplicate: stored before, not now; what follows proves nothing of it
            if not isinstance(r, BaseException) and r > 0:
                last_ok = i
        if doubt is not None:
            for m, r in zip(messages[last_ok + 1 :], results[last_ok + 1 :], strict=True):
                if isinstance(r, NO_ANSWER):
                    doubt.add(m.msg_id)
        err: LogUnavailable | None = None
        if last_ok + 1 < len(results):
            err = self._chain_error(results[last_ok + 1])
            if err is not None:
                self._failed(err)
        if last_ok < 0:
            if err is not None:
                raise err
            return [], None
        # Message last_ok landed right after last_ok-1, which landed right after ..., down to
        # the first: the prefix is contiguous in the stream even where a reply was lost.
        top = results[last_ok]
        assert not isinstance(top, BaseException)
        self._succeeded()
        self.appended.observe(1, last_ok + 1)
        return [top - (last_ok - i) for i in range(last_ok + 1)], err

    async def append_prelinked(
        self,
        placements: list[Outgoing],
        message: Outgoing,
        check: dict[str, int],
        *,
        signed: bool = False,
    ) -> int:
        """Publish ``placements`` (unchecked subjects) and then ``message`` (its subject's OCC
        check from ``check``) pipelined, ``message`` stored only if the stream's last message
        is the last placement (``Nats-Expected-Last-Msg-Id``, each placement after the first
        chained the same way): whenever ``message`` lands, every placement sits right before
        it. Return ``message``'s sequence (its absolute value when acknowledged as a duplicate,
        or negated with ``signed``, as :meth:`append` says why).

        What an atomic batch of the same events promises, without its cost on a single
        server's file store (~4-5 ms of staging per batch, bench/README.md §1, against two
        pipelined publish-acks): the message never lands without its placements. The reverse
        may happen — placements stored, the message refused (a conflict, another writer in
        between): they are harmless (events/placement.py says why); the caller's ids say
        whether a retry's placements are their duplicates (service/prelink.py). Raises :class:`WrongLastSequence`
        on a conflict, :class:`PrelinkBroken` when another message came in between (nothing
        of ``message`` stored), :class:`LogUnavailable` when the log refused with a cause or,
        with a budget, did not answer within it, and :class:`MaybeApplied` when ``message``
        got no answer (no budget) or an answer without a cause. Single server only
        (:meth:`can_chain`)."""
        nc = self.conn.nc
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        timeout = self.publish_timeout
        if self.budget is not None:
            timeout = max(0.05, min(timeout, self.budget))
        await nc.ready_for_requests()
        started: list[natsclient.Started] = []
        prev: str | None = None
        try:
            for m in [*placements, message]:
                expected = check.get(m.subject) if m is message else None
                headers = self._headers(m, None if expected is None else str(expected), prev)
                prev = m.msg_id
                started.append(nc.start_request_nowait(m.subject, m.data, headers))
        except Exception as exc:  # closed, or the reconnect buffer full: not (all) sent
            for st in started:
                nc.forget(st)
            raise await self._in_doubt(exc, loop.time() - t0) from None
        # Only the message's answer tells what landed; the placements' are not waited for.
        for st in started[:-1]:
            nc.forget(st)
        try:
            seq = await self._acked(started[-1], timeout)
        except BadRequestError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQ:
                raise WrongLastSequence(exc.description or "") from None
            if exc.err_code in CHAIN_BROKEN:
                raise PrelinkBroken(exc.description or "") from None
            raise self._failed(_mapped(exc)) from None
        except APIError as exc:
            err = self._chain_error(exc)
            if err is not None:
                raise self._failed(err) from None
            raise MaybeApplied(f"no decisive answer: {exc}") from None
        except (*NO_ANSWER, *NO_STREAM) as exc:
            raise await self._in_doubt(exc, loop.time() - t0) from None
        self._succeeded()
        if seq > 0:
            self.appended.observe(1)
        return seq if signed else abs(seq)

    async def _in_doubt(self, exc: BaseException, waited: float) -> Exception:
        """A pre-linked append without an answer: with a budget, the log's trouble as an
        append that ran out of it says (the health told: later commands are refused at once;
        a retry with the same command id is answered from the log if it landed) — not a
        catch-up of the log that is not answering (found by review: ~32 s and the health never
        told); without one, in doubt (the caller catches up)."""
        if self.budget is None:
            return MaybeApplied(f"no answer: {exc.__class__.__name__}")
        return self._failed(await self._no_answer(exc, waited))

    def _failed(self, err: LogUnavailable) -> LogUnavailable:
        """Tell the log's health of a failed append; ``err`` back, to raise."""
        if self.health is not None:
            self.health.append_failed(err)
        return err

    def _succeeded(self) -> None:
        """Tell the log's health of the first append that landed after failures."""
        if self.health is not None and self.health.failing is not None:
            self.health.append_ok()

    def _chain_error(self, first: object) -> LogUnavailable | None:
        """Why the first link not landed did not land, when the log refused it with a cause
        (storage full, ...): the rest is answered with that, as a single append would be.
        None for what only concerns the decision (wrong last sequence, a broken chain: another
        writer came in between), may pass at once (a 503 without a cause, no responders
        during an election) or left it unknown (no answer: it may have landed): the
        one-by-one rest deals with those, within what is left of the budget."""
        if isinstance(first, BadRequestError) and first.err_code == ERR_WRONG_LAST_SEQ:
            return None
        if isinstance(first, APIError):
            mapped = _mapped(first)
            if isinstance(mapped, LogStorageFull) or first.code != 503:
                if first.err_code in CHAIN_BROKEN:
                    return None
                return mapped
            return None
        return None  # no answer (it may have landed): the one-by-one rest finds out

    async def _no_answer(self, exc: BaseException, waited: float) -> LogUnavailable:
        """The error for an append that got no answer within the budget: the health's
        diagnosis (free space, a latched store) when it has one, else what was seen."""
        err = log_error(exc, waited)
        assert err is not None
        diagnose = self.health.diagnose if self.health is not None else None
        if diagnose is not None:
            try:
                cause = await asyncio.wait_for(diagnose(), 1.0)
            except Exception as e:  # a diagnosis must not hide the failure itself
                log.debug("diagnosing an append without answer failed: %s", e)
                cause = None
            if cause is not None:
                # The cause names the store's trouble; what became of *this* append is still
                # only what its (missing) answer says: it may have landed (review hrev11: the
                # diagnosis's own "not_applied", for refusals before trying, was kept).
                cause.details["outcome"] = err.details.get("outcome")
                return cause
        return err

    async def _landed(self, messages: list[Outgoing]) -> bool:
        """Lost-ack check: is our last message the subject's last message?"""
        last = messages[-1]
        try:
            m = await self.conn.js.get_last_msg(self.conn.stream, last.subject, direct=True)
        except Exception:
            return False
        return bool(m.headers and is_msg_id_of(m.headers.get(MSG_ID), last.msg_id))

    def _headers(
        self,
        m: Outgoing,
        expected: str | None,
        last_msg_id: str | None = None,
        *,
        msg_id: str | None = None,
        **more: str,
    ) -> bytes:
        """The header block of an append (with the stream check ``js.publish(stream=)``
        adds); ``msg_id``: another id than the message's (a chain's link)."""
        headers = {MSG_ID: msg_id or m.msg_id}
        if expected is not None:
            headers[EXPECTED_SUBJECT_SEQ] = expected
        if last_msg_id is not None:
            headers[EXPECTED_LAST_MSG_ID] = last_msg_id
        headers.update(more)
        headers[EXPECTED_STREAM] = self.conn.stream
        return natsclient.header_block(headers)

    async def _acked(self, started: natsclient.Started, timeout: float) -> int:
        """The stream sequence from a publish's ack (as ``js.publish`` reports it: a refusal
        as its ``APIError``, nothing listening as ``NoStreamResponseError``, no answer as
        ``nats.errors.TimeoutError``); a duplicate (stored before) as its sequence negated."""
        try:
            data, _ = await self.conn.nc.wait_reply(started, timeout)
        except nats.errors.NoRespondersError:
            raise NoStreamResponseError from None
        return _ack_seq(data)

    async def _publish_one(self, m: Outgoing, expected: dict[str, int], timeout: float) -> int:
        nc = self.conn.nc
        exp = expected.get(m.subject)
        headers = self._headers(m, None if exp is None else str(exp))
        at_once = self.eager is not None and self.eager()
        started = await nc.start_request(m.subject, m.data, headers, at_once=at_once)
        return await self._acked(started, timeout)

    async def _publish_batch(
        self,
        messages: list[Outgoing],
        expected: dict[str, int],
        guard: tuple[str, int] | None,
        timeout: float,
    ) -> int:
        """``guard`` = (subject, seq): the commit also checks a subject the batch does not
        write (``Nats-Expected-Last-Subject-Sequence-Subject``); it rides on the last message,
        whose own subject must have come earlier in the batch."""
        nc = self.conn.nc
        batch_id = uuid.uuid4().hex
        seen: set[str] = set()
        n = len(messages)
        for i, m in enumerate(messages, 1):
            headers = {MSG_ID: m.msg_id, "Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(i)}
            if m.subject not in seen:
                seen.add(m.subject)
                if m.subject in expected:
                    headers[EXPECTED_SUBJECT_SEQ] = str(expected[m.subject])
            if i == n:
                if guard is not None:
                    if EXPECTED_SUBJECT_SEQ in headers:
                        raise ValueError("a guard rides on a message whose subject came before")
                    headers[EXPECTED_SUBJECT_SEQ] = str(guard[1])
                    headers[EXPECTED_SUBJECT_SEQ_SUBJECT] = guard[0]
                headers["Nats-Batch-Commit"] = "1"
                headers[EXPECTED_STREAM] = self.conn.stream
                started = await nc.start_request(
                    m.subject, m.data, natsclient.header_block(headers)
                )
                return await self._acked(started, timeout)
            # Plain publishes: the commit's ack reports any error of the whole batch; waiting
            # for a reply to the first message would only add a round trip.
            nc.publish_nowait(m.subject, m.data, hdr=natsclient.header_block(headers))
        raise AssertionError("unreachable")


#: nats-server's ack of a stored publish as it writes it (server/stream.go: the stream, the
#: sequence, ``"duplicate": true`` when the message id was stored before): read without json
#: (~0.7 against ~3.6 us an ack on every append's way to its answer, issue 15); anything
#: else — an error, a domain, a batch's ack — is json's to read
_PLAIN_ACK = re.compile(rb'\{"stream":"[^"\\]*","seq":(\d+)(,"duplicate": ?true)?\}')


def _ack_seq(data: bytes) -> int:
    """The stored sequence from a JetStream publish ack, negated for a duplicate (what
    ``js.publish`` builds a ``PubAck`` from; errors raised as its ``APIError``)."""
    plain = _PLAIN_ACK.fullmatch(data)
    if plain is not None:
        seq = int(plain[1])
        return -seq if plain[2] else seq
    resp = json.loads(data)
    if "error" in resp:
        raise APIError.from_error(resp["error"])
    seq = int(resp["seq"])
    return -seq if resp.get("duplicate") else seq


def _doubted(err: LogUnavailable, in_doubt: bool) -> LogUnavailable:
    """``err``, its outcome ``unknown`` when an earlier attempt of the same append got no
    answer (it may have landed)."""
    if in_doubt:
        err.details["outcome"] = "unknown"
    return err


def _mapped(exc: APIError) -> LogUnavailable:
    err = log_error(exc)
    assert err is not None
    return err
