"""The thin JetStream layer: connecting, the stream definition, appending, following.

The append protocol (DESIGN.md, "The log"):

* every message carries ``Nats-Msg-Id`` (the event id, derived from the command id) so a retry
  inside the duplicate window is not stored twice;
* the first message on each subject carries ``Nats-Expected-Last-Subject-Sequence`` (optimistic
  concurrency: the writer decided on that subject as of that sequence);
* a decision of several events is one **atomic batch** (all or nothing, the OCC checks on the
  batch), so multi-aggregate decisions and group commits never land half.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import heapq
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, BadRequestError, NoStreamResponseError, NotFoundError

from netledger.events.codec import Envelope, decode, encode
from netledger.events.errors import (
    DecodeError,
    LogRegression,
    LogStorageFull,
    LogUnavailable,
    Unavailable,
)
from netledger.events.ids import ALL_EVENTS, REGISTRY_SUBJECT, STREAM
from netledger.journal import natsclient
from netledger.journal.loghealth import (
    ERR_BATCH_DUPLICATE,
    ERR_WRONG_LAST_SEQ,
    NO_ANSWER,
    NO_STREAM,
    log_error,
)

if TYPE_CHECKING:
    from netledger.journal.loghealth import LogHealth

log = logging.getLogger("netledger.stream")
T = TypeVar("T")

EXPECTED_SUBJECT_SEQ = "Nats-Expected-Last-Subject-Sequence"
EXPECTED_SUBJECT_SEQ_SUBJECT = "Nats-Expected-Last-Subject-Sequence-Subject"
MSG_ID = "Nats-Msg-Id"
EXPECTED_STREAM = "Nats-Expected-Stream"
EXPECTED_LAST_MSG_ID = "Nats-Expected-Last-Msg-Id"
#: a chained message refused because the stream's last message is not its predecessor
ERR_WRONG_LAST_MSG_ID = 10070
CHAIN_BROKEN = (ERR_WRONG_LAST_MSG_ID,)
MAX_BATCH = 1000
DUPLICATE_WINDOW_S = 120.0
FOLLOW_HEARTBEAT_S = 1.0
#: Longest wait for one step of a shutdown (drain, close, unsubscribe).
CLOSE_TIMEOUT_S = 10.0


def stream_config(name: str = STREAM, replicas: int = 1) -> StreamConfig:
    return StreamConfig(
        name=name,
        subjects=[ALL_EVENTS],
        storage=StorageType.FILE,
        num_replicas=replicas,
        discard=DiscardPolicy.OLD,
        duplicate_window=DUPLICATE_WINDOW_S,
        deny_delete=True,
        deny_purge=True,
        allow_direct=True,
        allow_atomic=True,
        description="netledger event log",
    )


@dataclass(frozen=True)
class Connection:
    nc: natsclient.NetledgerNats
    js: JetStreamContext
    stream: str = STREAM
    #: set (then cleared by whoever waits) every time the client reconnects: readers check at
    #: once that the log did not go back while they were away (a restored store)
    reconnected: list[asyncio.Event] = field(default_factory=list, compare=False)
    #: subjects the server refused to let these credentials publish to (lower case, as NATS
    #: reports them), and the tasks waiting for a reply on each: a refusal cancels them, so a
    #: request that was never delivered fails at once instead of waiting out its timeout
    refused: set[str] = field(default_factory=set, compare=False)
    waiting: dict[str, set[asyncio.Task[Any]]] = field(default_factory=dict, compare=False)

    def reconnect_event(self) -> asyncio.Event:
        ev = asyncio.Event()
        self.reconnected.append(ev)
        return ev

    async def wait_interval_or_reconnect(self, ev: asyncio.Event, interval: float) -> None:
        try:
            await asyncio.wait_for(ev.wait(), interval)
        except TimeoutError:
            pass
        ev.clear()

    async def close(self) -> None:
        """Drain (deliver what is in flight), then close — each bounded: a shutdown must end
        even when the server or the socket no longer answers."""
        if self.nc.is_closed:
            return
        try:
            await asyncio.wait_for(self.nc.drain(), CLOSE_TIMEOUT_S)
        except Exception:  # best effort on shutdown (includes the timeout)
            log.info("NATS drain did not finish; closing")
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.close(), CLOSE_TIMEOUT_S)
            except Exception:
                log.warning("NATS connection did not close within %.0fs", CLOSE_TIMEOUT_S)


#: nats-py's (lower-cased) report of a publish the server's permissions refused
_REFUSED = re.compile(r'permissions violation for publish to "([^"]+)"')


def split_servers(url: str | Iterable[str]) -> list[str]:
    urls = [url] if isinstance(url, str) else list(url)
    out: list[str] = []
    for u in urls:
        for part in u.split(","):
            part = part.strip()
            if part:
                out.append(part if "://" in part else f"nats://{part}")
    return out


async def connect(
    url: str | Iterable[str],
    *,
    stream: str = STREAM,
    name: str = "netledger",
    creds: str | None = None,
    user: str | None = None,
    password: str | None = None,
    tls: Any = None,
    connect_timeout: float = 2.0,
    allow_reconnect: bool = True,
    inbox_prefix: str | None = None,
) -> Connection:
    """Connect to NATS (one URL, a comma-separated list, or a list) with endless reconnects."""

    refused: set[str] = set()
    waiting: dict[str, set[asyncio.Task[Any]]] = {}

    async def _err(e: Exception) -> None:
        m = _REFUSED.search(str(e))
        if m:
            log.warning("NATS refused: %s", e)
            refused.add(m.group(1))
            for task in waiting.pop(m.group(1), ()):
                task.cancel()
            return
        log.debug("nats error: %s", e)

    async def _disc() -> None:
        log.info("disconnected from NATS")

    listeners: list[asyncio.Event] = []

    async def _reconn() -> None:
        log.info("reconnected to NATS")
        for ev in listeners:
            ev.set()

    kwargs: dict[str, Any] = {}
    if creds:
        kwargs["user_credentials"] = creds
    if user:
        kwargs["user"] = user
        kwargs["password"] = password
    if tls is not None:
        kwargs["tls"] = tls
    if inbox_prefix:
        # Replies (and consumer deliveries) arrive below this prefix: with per-user inboxes
        # (auth init) a user may subscribe only below its own.
        kwargs["inbox_prefix"] = inbox_prefix
    try:
        # nats-py retries a failed first connect forever when reconnects are endless: bound it.
        nc = await asyncio.wait_for(
            natsclient.connect(
                servers=split_servers(url),
                name=name,
                connect_timeout=connect_timeout,
                max_reconnect_attempts=-1 if allow_reconnect else 0,
                allow_reconnect=allow_reconnect,
                reconnect_time_wait=0.5,
                error_cb=_err,
                disconnected_cb=_disc,
                reconnected_cb=_reconn,
                **kwargs,
            ),
            connect_timeout * 2 + 1,
        )
    except Exception as exc:
        raise Unavailable(
            f"cannot connect to NATS at {url}: {str(exc) or exc.__class__.__name__}"
        ) from None
    return Connection(
        nc=nc,
        js=nc.jetstream(timeout=10.0),
        stream=stream,
        reconnected=listeners,
        refused=refused,
        waiting=waiting,
    )


async def ensure_stream(conn: Connection, replicas: int = 1) -> None:
    """Create the stream, or update it to the current definition."""
    cfg = stream_config(conn.stream, replicas)
    try:
        info = await conn.js.stream_info(conn.stream)
    except NotFoundError:
        await conn.js.add_stream(cfg)
        return
    cur = info.config
    if (
        cur.subjects != cfg.subjects
        or not cur.allow_atomic
        or not cur.allow_direct
        or cur.duplicate_window != cfg.duplicate_window
    ):
        cfg.num_replicas = cur.num_replicas or replicas
        await conn.js.update_stream(cfg)


#: Errors of a cluster between leaders or a server restarting: worth waiting out.
TRANSIENT = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


async def retrying(fn: Callable[[], Awaitable[T]], what: str, wait: float = 30.0) -> T:
    """``await fn()``, retrying transient errors (failover, restart) for up to ``wait``
    seconds, then reporting :class:`Unavailable`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = 0.1
    while True:
        try:
            return await fn()
        except TRANSIENT as exc:
            if loop.time() + delay > deadline:
                raise Unavailable(
                    f"{what}: no answer for {wait:.0f}s ({exc.__class__.__name__})"
                ) from None
            log.info("%s failed (%s); retrying", what, exc.__class__.__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


async def last_seq(conn: Connection, wait: float = 30.0) -> int:
    """The stream's last sequence (transient errors retried for up to ``wait`` seconds)."""
    info = await retrying(
        lambda: conn.js.stream_info(conn.stream), f"stream info of {conn.stream}", wait
    )
    return int(info.state.last_seq)


# --- appending ---------------------------------------------------------------------------


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
    ) -> int:
        """Append ``messages``; return the stream sequence of the last one.

        ``deadline`` (the loop's clock) ends the budget earlier: what is left of a budget
        another append of the same answer began (a chain's one-by-one rest).

        ``expected`` maps each subject written to the last subject sequence the decision was
        based on; a subject missing from it is appended without a check (placements). Raises
        :class:`WrongLastSequence` on a conflict, :class:`MaybeApplied` when a retry cannot
        tell whether an earlier attempt landed, :class:`LogUnavailable` (or its
        :class:`LogStorageFull`) when the log cannot take it.
        """
        try:
            seq = await self._append(messages, expected, guard, deadline)
        except LogUnavailable as err:
            if self.health is not None:
                self.health.append_failed(err)
            raise
        if self.health is not None and self.health.failing is not None:
            self.health.append_ok()
        return seq

    async def _append(
        self,
        messages: list[Outgoing],
        expected: dict[str, int],
        guard: tuple[str, int] | None,
        deadline: float | None = None,
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
                raise _mapped(exc) from None
            except APIError as exc:
                err = _mapped(exc)
                # A 503 without a named cause may be a leader election: worth the budget left.
                if (
                    isinstance(err, LogStorageFull)
                    or exc.code != 503
                    or end is None
                    or loop.time() + delay >= end
                ):
                    raise err from None
                last: BaseException = exc
            except (*NO_ANSWER, *NO_STREAM) as exc:
                last = exc
                if end is None and attempt >= self.attempts:
                    raise MaybeApplied("no acknowledgement after retries") from None
                if end is not None and loop.time() + delay >= end:
                    raise await self._no_answer(exc, loop.time() - t0) from None
            log.info(
                "append attempt %d failed (%s); retrying with the same ids",
                attempt,
                last.__class__.__name__,
            )
            retried = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def append_chain(
        self, messages: list[Outgoing], first_check: dict[str, int]
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
        # All published at once, in order (one write), then their acks awaited in order.
        started: list[natsclient.Started | BaseException] = []
        prev: str | None = None
        for i, m in enumerate(messages):
            if i == 0:
                expected = first_check.get(m.subject)
                headers = self._headers(m, None if expected is None else str(expected))
            else:
                assert prev is not None
                headers = self._headers(m, None, prev)
            prev = m.msg_id
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
            if not isinstance(r, BaseException) and r > 0:
                last_ok = i
        err: LogUnavailable | None = None
        if last_ok + 1 < len(results):
            err = self._chain_error(results[last_ok + 1])
            if err is not None and self.health is not None:
                self.health.append_failed(err)
        if last_ok < 0:
            if err is not None:
                raise err
            return [], None
        # Message last_ok landed right after last_ok-1, which landed right after ..., down to
        # the first: the prefix is contiguous in the stream even where a reply was lost.
        top = results[last_ok]
        assert not isinstance(top, BaseException)
        if self.health is not None and self.health.failing is not None:
            self.health.append_ok()
        return [top - (last_ok - i) for i in range(last_ok + 1)], err

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
                cause.details.setdefault("outcome", err.details.get("outcome"))
                return cause
        return err

    async def _landed(self, messages: list[Outgoing]) -> bool:
        """Lost-ack check: is our last message the subject's last message?"""
        last = messages[-1]
        try:
            m = await self.conn.js.get_last_msg(self.conn.stream, last.subject, direct=True)
        except Exception:
            return False
        return bool(m.headers and m.headers.get(MSG_ID) == last.msg_id)

    def _headers(
        self, m: Outgoing, expected: str | None, last_msg_id: str | None = None, **more: str
    ) -> bytes:
        """The header block of an append (with the stream check ``js.publish(stream=)``
        adds)."""
        headers = {MSG_ID: m.msg_id}
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
        return abs(await self._acked(await nc.start_request(m.subject, m.data, headers), timeout))

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
                return abs(await self._acked(started, timeout))
            # Plain publishes: the commit's ack reports any error of the whole batch; waiting
            # for a reply to the first message would only add a round trip.
            nc.publish_nowait(m.subject, m.data, hdr=natsclient.header_block(headers))
        raise AssertionError("unreachable")


def _ack_seq(data: bytes) -> int:
    """The stored sequence from a JetStream publish ack, negated for a duplicate (what
    ``js.publish`` builds a ``PubAck`` from; errors raised as its ``APIError``)."""
    resp = json.loads(data)
    if "error" in resp:
        raise APIError.from_error(resp["error"])
    seq = int(resp["seq"])
    return -seq if resp.get("duplicate") else seq


def _mapped(exc: APIError) -> LogUnavailable:
    err = log_error(exc)
    assert err is not None
    return err


# --- following -----------------------------------------------------------------------------


def check_regression(stream_last_seq: int, seen_seq: int) -> None:
    """Raise :class:`LogRegression` when the stream ends before a sequence already seen."""
    if stream_last_seq < seen_seq:
        raise LogRegression(
            f"the stream's last sequence {stream_last_seq} is lower than {seen_seq}, which this"
            " reader has already seen: the store lost data or was restored from an older copy;"
            " stopping instead of deciding on a log that went back",
            stream_last_seq=stream_last_seq,
            seen_seq=seen_seq,
        )


Handler = Callable[[int, str, "Envelope | None", "DecodeError | None", Msg], None]

_V1_ACK_TOKENS = 9


def seq_and_pending(msg: Msg) -> tuple[int, int]:
    """(stream sequence, messages left for the consumer) of a delivered message, read from its
    ack subject — without building nats-py's Metadata (a datetime per message) on the hot path."""
    reply = msg.reply or ""
    if reply.startswith("$JS.ACK."):
        tokens = reply.split(".")
        if len(tokens) == _V1_ACK_TOKENS:
            return int(tokens[5]), int(tokens[8])
    tokens = Msg.Metadata._get_metadata_fields(reply)
    return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.NumPending])


class Follower:
    """Follows the stream with an ordered push consumer (the fastest read path in nats-py).

    ``handler(seq, subject, envelope, error, msg)`` is called for every message in order; a
    message that cannot be decoded comes with ``envelope=None`` and the error, and is skipped.
    ``wait_for(seq)`` resolves once the message with that stream sequence has been handled.

    A follower may read a *share* of the log: ``subjects`` (one or several filter subjects,
    wildcards allowed). :meth:`set_subjects` changes the share while it runs — new subjects are
    first read from where the caller says up to the point already reached (so nothing of them
    is missed), then one consumer goes on with the whole share — and ``position`` is the stream
    sequence up to which everything of the share has been handled (also when the last
    messages of the stream are not in it).
    """

    def __init__(
        self,
        conn: Connection,
        handler: Handler,
        start_seq: int = 1,
        subject: str | list[str] = ALL_EVENTS,
    ) -> None:
        self.conn = conn
        self.handler = handler
        self.start_seq = max(1, start_seq)
        self.subjects = [subject] if isinstance(subject, str) else sorted(set(subject))
        self.applied_seq = start_seq - 1
        self.highest_seen = start_seq - 1
        #: everything of the share up to here has been handled (>= applied_seq)
        self.position = start_seq - 1
        #: messages handled since start (what this reader paid for)
        self.handled = 0
        #: messages left for this reader when the last one was delivered (its lag)
        self.pending: int | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = 0
        self._sub: Any = None
        self._gen = 0  # messages of an earlier subscription are dropped
        self.failure: BaseException | None = None

    @property
    def subject(self) -> str:
        return self.subjects[0] if len(self.subjects) == 1 else ",".join(self.subjects)

    @property
    def filtered(self) -> bool:
        return self.subjects != [ALL_EVENTS]

    async def start(self) -> None:
        if len(self.subjects) > 1:
            # The server serves one subject from its index, but a consumer filtering several
            # scans every message in between (measured on a 1 M log: 82 messages of one network
            # in 0.04 s; 6,500 of a dozen subjects together in 2.8 s). So the history of a
            # share is read subject by subject — the registry first: every other aggregate
            # refers to what it declares — and one consumer follows them all from the end.
            upto = await last_seq(self.conn)
            order = sorted(self.subjects, key=lambda x: (x != REGISTRY_SUBJECT, x))
            for subject in order:
                async for seq, subj, data, msg in iter_subject(
                    self.conn, subject, self.applied_seq + 1, upto
                ):
                    self._handle(seq, subj, data, msg)
            self.applied_seq = self.position = max(self.applied_seq, upto)
            self.highest_seen = max(self.highest_seen, upto)
        await self._subscribe(self.applied_seq + 1)

    async def _subscribe(self, start_seq: int) -> None:
        from nats.js.api import ConsumerConfig

        kwargs: dict[str, Any] = {"deliver_policy": DeliverPolicy.ALL}
        if start_seq > 1:
            kwargs = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": start_seq}
        if len(self.subjects) > 1:
            kwargs["filter_subjects"] = list(self.subjects)
        self._gen += 1
        gen = self._gen

        async def on_msg(msg: Msg) -> None:
            if gen == self._gen:
                self._on_msg(msg)

        self._sub = await retrying(
            lambda: self.conn.js.subscribe(
                self.subjects[0] if len(self.subjects) == 1 else "",
                cb=on_msg,
                ordered_consumer=True,
                stream=self.conn.stream,
                config=ConsumerConfig(**kwargs),
                pending_msgs_limit=-1,
                pending_bytes_limit=256 * 1024 * 1024,
                # nats-py recreates an ordered consumer after two missed heartbeats; its default
                # (5 s) left readers stalled 10-20 s after a server restart or failover.
                idle_heartbeat=FOLLOW_HEARTBEAT_S,
            ),
            "subscribing to the stream",
        )

    async def _unsubscribe(self) -> None:
        self._gen += 1
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await asyncio.wait_for(sub.unsubscribe(), CLOSE_TIMEOUT_S)
            except Exception:  # connection gone, or no answer: the reader is stopped anyway
                pass

    async def set_subjects(self, subjects: list[str], backfill: dict[str, int]) -> None:
        """Follow ``subjects`` from now on. Each subject in ``backfill`` is first read from the
        given sequence up to what this follower has reached (handled in stream order), so a
        subject added late is complete; subjects dropped are simply no longer read."""
        subjects = sorted(set(subjects))
        if subjects == self.subjects and not backfill:
            return
        await self._unsubscribe()  # the point reached stays fixed while we fill in
        upto = self.applied_seq
        if backfill and upto > 0:
            wild = [s for s in subjects if s.endswith(".>")]
            for seq, subject, data, msg in await read_subjects(self.conn, backfill, upto, wild):
                self._handle(seq, subject, data, msg)
        self.subjects = subjects
        await self._subscribe(upto + 1)

    def _handle(self, seq: int, subject: str, data: bytes, msg: Any) -> bool:
        env: Envelope | None = None
        err: DecodeError | None = None
        try:
            env = decode(data)
        except DecodeError as exc:
            err = exc
        try:
            self.handler(seq, subject, env, err, msg)
        except Exception as exc:  # a handler bug must not kill the consumer silently
            log.exception("handler failed at seq %d", seq)
            self.failure = exc
            self._fail_waiters(exc)
            return False
        self.handled += 1
        return True

    def _on_msg(self, msg: Msg) -> None:
        seq, pending = seq_and_pending(msg)
        if seq <= self.applied_seq:
            return
        if not self._handle(seq, msg.subject, msg.data, msg):
            return
        self.applied_seq = seq
        if seq > self.position:
            self.position = seq
        if seq > self.highest_seen:
            self.highest_seen = seq
        self.pending = pending
        w = self._waiters
        while w and w[0][0] <= seq:
            fut = heapq.heappop(w)[2]
            if not fut.done():
                fut.set_result(None)

    def _fail_waiters(self, exc: BaseException) -> None:
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(exc)
        self._waiters.clear()

    async def wait_for(self, seq: int, timeout: float | None = 30.0) -> None:
        if self.failure is not None:
            raise self.failure
        if seq <= self.applied_seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._counter += 1
        heapq.heappush(self._waiters, (seq, self._counter, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            raise Unavailable(
                f"log reader did not reach sequence {seq} (at {self.applied_seq})"
            ) from None
        finally:
            # A waiter that gave up (timeout, cancel) must not get an exception set later by
            # stop(): nobody would retrieve it ("Future exception was never retrieved").
            if not fut.done():
                fut.cancel()

    async def catch_up(self, timeout: float | None = 60.0) -> int:
        """Wait until everything in the stream right now has been handled; return that seq.

        A follower of a share is caught up when its consumer has nothing left to deliver and
        it has handled what was delivered: the last message of the stream may not be its."""
        target = await self.check_regression()
        if not self.filtered:
            await self.wait_for(target, timeout)
        else:
            await self._drained(target, timeout)
        self.position = max(self.position, target)
        return target

    async def _drained(self, target: int, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        delay = 0.002
        while self.applied_seq < target:
            if self.failure is not None:
                raise self.failure
            sub = self._sub
            if sub is not None:
                try:
                    info = await sub.consumer_info()
                    delivered = int(info.delivered.stream_seq or 0)
                    if info.num_pending == 0 and self.applied_seq >= delivered:
                        return
                except Exception as exc:  # recreated under us, reconnecting: ask again
                    log.debug("consumer info: %s", exc)
            if deadline is not None and loop.time() > deadline:
                raise Unavailable(
                    f"log reader did not reach sequence {target} (at {self.applied_seq})"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def check_regression(self) -> int:
        """The stream's last sequence; :class:`LogRegression` if it is below one already seen."""
        # Note what was seen *before* asking: messages handled while the request is in flight
        # would otherwise look like the stream going back.
        seen = self.highest_seen
        target = await last_seq(self.conn)
        check_regression(target, seen)
        return target

    async def watch(self, interval: float = 5.0) -> None:
        """Check for regression every ``interval`` seconds; on regression fail every waiter
        and raise (the owner stops loudly instead of stalling on a log that went back)."""
        poke = self.conn.reconnect_event()
        while True:
            await self.conn.wait_interval_or_reconnect(poke, interval)
            try:
                await self.check_regression()
            except LogRegression as exc:
                self.failure = exc
                self._fail_waiters(exc)
                await self.stop()
                raise
            except Exception as exc:  # NATS away: the reconnect logic deals with it
                log.debug("regression check skipped: %s", exc)

    async def stop(self) -> None:
        await self._unsubscribe()
        self._fail_waiters(Unavailable("reader stopped"))


async def iter_subject(
    conn: Connection, subject: str, start: int, upto: int
) -> AsyncIterator[tuple[int, str, bytes, Any]]:
    """The messages of one subject (a filter: wildcards allowed) from ``start`` through
    ``upto``, in order, as they arrive (a one-off ordered consumer).

    Delivered by callback into a buffer, not with ``next_msg``: nats-py's ``next_msg`` builds a
    uuid, a task and a ``wait_for`` per message (~30 us each: 21,000 messages of an executor's
    share took 0.65 s in it), where a callback costs an append."""
    if start > upto:
        return
    from nats.js.api import ConsumerConfig

    buf: collections.deque[Msg] = collections.deque()
    arrived = asyncio.Event()

    async def on_msg(msg: Msg) -> None:
        buf.append(msg)
        arrived.set()

    sub = await retrying(
        functools.partial(
            conn.js.subscribe,
            subject,
            cb=on_msg,
            ordered_consumer=True,
            stream=conn.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start)
            ),
            pending_msgs_limit=-1,
            pending_bytes_limit=256 * 1024 * 1024,
            idle_heartbeat=FOLLOW_HEARTBEAT_S,
        ),
        f"reading {subject}",
    )
    name: str | None = None
    try:
        # Messages the server pushed before this question are no longer "pending": the total
        # is what was delivered plus what is left.
        info = await sub.consumer_info()
        name = info.name
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        left = int(info.num_pending or 0) + int(delivered or 0)
        while left > 0:
            if not buf:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), 30.0)
                except TimeoutError:
                    raise nats.errors.TimeoutError from None
                continue
            msg = buf.popleft()
            left -= 1
            seq, _pending = seq_and_pending(msg)
            if seq > upto:
                break
            yield seq, msg.subject, msg.data, msg
    finally:
        try:
            await asyncio.wait_for(sub.unsubscribe(), CLOSE_TIMEOUT_S)
            if name is not None:
                # Gone now rather than when the server notices nobody listens: a share of
                # hundreds of subjects is read with as many consumers, one after the other.
                await asyncio.wait_for(conn.js.delete_consumer(conn.stream, name), CLOSE_TIMEOUT_S)
        except Exception:
            pass


#: A backfill of more than this many subjects of one kind reads the kind's wildcard once (and
#: keeps what it wants) — but only when the kind's wildcard is followed from now on (a host
#: switching to every network: executor/share.py), i.e. when most of the kind is wanted.
#: Otherwise one subject at a time: a consumer filtering N subjects from far back makes the
#: server scan every message in between (1 M log, 5,000 network subjects: 200 subjects' 13,399
#: events in 2.3 s of server CPU, one consumer per subject 0.44 s; 1,000 subjects 11.5 s vs
#: 2.3 s), and the wildcard delivers every network's events (330,792) to the client.
MANY_SUBJECTS = 32


async def read_subjects(
    conn: Connection, starts: dict[str, int], upto: int, wildcards: Iterable[str] = ()
) -> list[tuple[int, str, bytes, Any]]:
    """The messages of each subject from its start sequence through ``upto``, in stream order:
    one consumer per subject (each deleted once read), or — for a kind whose wildcard
    (``prefix.>``) is in ``wildcards`` and that has many subjects here — the wildcard once."""
    out: list[tuple[int, str, bytes, Any]] = []
    wild = set(wildcards)
    kinds: dict[str, dict[str, int]] = {}
    for subject, start in starts.items():
        kinds.setdefault(subject.rsplit(".", 1)[0], {})[subject] = start
    for prefix, group in sorted(kinds.items()):
        if len(group) <= MANY_SUBJECTS or f"{prefix}.>" not in wild:
            for subject, start in sorted(group.items()):
                out += [m async for m in iter_subject(conn, subject, start, upto)]
            continue
        async for m in iter_subject(conn, f"{prefix}.>", min(group.values()), upto):
            first = group.get(m[1])
            if first is not None and m[0] >= first:
                out.append(m)
    out.sort(key=lambda m: m[0])
    return out


AsyncFn = Callable[[], Awaitable[None]]
