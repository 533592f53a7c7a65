"""The thin JetStream layer: connecting, the stream definition, waiting out a server between
leaders, the stream's last sequence, the last message of many subjects at once. Appending is
:mod:`.append`, following :mod:`.follow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import re
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import nats
from nats import errors as natserrors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from netledger.events.errors import (
    LogDiverged,
    LogNotCreated,
    LogRegression,
    Unavailable,
)
from netledger.events.ids import ALL_EVENTS, STREAM
from netledger.journal import natsclient
from netledger.journal.jsrefused import RefusalAwareJetStream

if TYPE_CHECKING:
    pass

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
#: Consumers the log holds at once. Each host's executor follows the log with one (and opens
#: one more for a while when it reads a network's history), so do the command service and the
#: projector: a 1,000-host cloud needs more than 1,000. A stream without a limit of its own
#: (``max_consumers`` -1) gets nats-server's default since 2.12 — 1,000 on 2.15 (found by
#: bench/fleet.py: the 1,001st host's follower was refused, err_code 10026) — so the log says
#: its own. An operator's own limit (``nats stream edit --max-consumers``) is kept.
MAX_CONSUMERS = 100_000
#: Longest wait for one step of a shutdown (drain, close, unsubscribe).
CLOSE_TIMEOUT_S = 10.0
#: Subjects per batched direct get (:func:`last_messages`): nats-server answers at most 1,024
#: subjects in one ``multi_last`` request.
MULTI_LAST_CHUNK = 900


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
        max_consumers=MAX_CONSUMERS,
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
    #: called at the reconnect itself, before any event is set (and so before a reader's
    #: consumer, recreated after it, delivers anything): a reader notes there the newest
    #: message it read from the log it was on
    reconnect_hooks: list[Callable[[], None]] = field(default_factory=list, compare=False)
    #: subjects the server refused to let these credentials publish to (lower case, as NATS
    #: reports them), and the tasks waiting for a reply on each: a refusal cancels them, so a
    #: request that was never delivered fails at once instead of waiting out its timeout
    refused: set[str] = field(default_factory=set, compare=False)
    waiting: dict[str, set[asyncio.Task[Any]]] = field(default_factory=dict, compare=False)

    def reconnect_event(self) -> asyncio.Event:
        ev = asyncio.Event()
        self.reconnected.append(ev)
        return ev

    async def wait_interval_or_reconnect(self, ev: asyncio.Event, interval: float) -> bool:
        """Wait ``interval`` seconds or until a reconnect; True if it was a reconnect."""
        try:
            await asyncio.wait_for(ev.wait(), interval)
        except TimeoutError:
            pass
        fired = ev.is_set()
        ev.clear()
        return fired

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
#: (lower-cased, as nats-py reports it) JetStream's consumer-deletion API
_CONSUMER_DELETE = "$js.api.consumer.delete."


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
    #: why the first connect has not succeeded yet (nats-py retries it and says only "timeout");
    #: None once connected (later errors are not kept)
    first_failure: list[BaseException] | None = []
    #: set when the server refuses the credentials during the first connect: retrying them for
    #: the whole bound only makes a user (and every test of a wrong password) wait
    refused_login = asyncio.Event()
    refusal_error: list[BaseException] = []

    async def _err(e: Exception) -> None:
        if first_failure is not None and not (first_failure and isinstance(e, TimeoutError)):
            first_failure[:] = [e]
            if _is_refused_login(e):
                refusal_error[:] = [e]
                refused_login.set()
        m = _REFUSED.search(str(e))
        if m:
            refused.add(m.group(1))
            waiters = waiting.pop(m.group(1), set())
            for task in waiters:
                task.cancel()
            if m.group(1).startswith(_CONSUMER_DELETE):
                # Expected: readers' credentials may not delete consumers (ops/auth.py), and a
                # one-off read tries it once (follow.py _delete_soon; the server drops the
                # consumer once nobody listens). A warning at every executor start under
                # per-role auth looked like a broken deployment (found walking docs/deploy.md).
                log.info("NATS refused a consumer deletion (these credentials may not): %s", e)
            elif waiters:
                # Each waiter now raises Forbidden naming the subject, which its caller reports
                # (a CLI command: its error): a warning too put two messages on a user's stderr
                # for one failure.
                log.debug("NATS refused (reported to the request): %s", e)
            else:
                log.warning("NATS refused: %s", e)
            return
        log.debug("nats error: %s", e)

    async def _disc() -> None:
        log.info("disconnected from NATS")

    listeners: list[asyncio.Event] = []
    hooks: list[Callable[[], None]] = []

    async def _reconn() -> None:
        log.info("reconnected to NATS")
        for hook in list(hooks):
            try:
                hook()
            except Exception:  # a reader's note must not stop the others hearing of it
                log.exception("reconnect hook failed")
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
    bound = connect_timeout * 2 + 1
    servers = split_servers(url)
    # nats-py retries a failed first connect forever when reconnects are endless: bound it,
    # and stop at once when the server refused the credentials — the one server: with several,
    # another may take them (a cluster part-way through a change of credentials) and nats-py
    # goes on to it, so only the bound stops it.
    connecting = asyncio.ensure_future(
        natsclient.connect(
            servers=servers,
            name=name,
            connect_timeout=connect_timeout,
            max_reconnect_attempts=-1 if allow_reconnect else 0,
            allow_reconnect=allow_reconnect,
            reconnect_time_wait=0.5,
            error_cb=_err,
            disconnected_cb=_disc,
            reconnected_cb=_reconn,
            **kwargs,
        )
    )
    refusal = asyncio.ensure_future(
        refused_login.wait() if len(servers) == 1 else asyncio.sleep(bound + 1)
    )
    try:
        await asyncio.wait({connecting, refusal}, timeout=bound, return_when=FIRST_COMPLETED)
    except BaseException:  # cancelled while connecting: the connect goes with it
        connecting.cancel()
        raise
    finally:
        refusal.cancel()
    connected = connecting.done() and connecting.exception() is None
    if not connected and (refusal_error or not connecting.done()):
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        seen = refusal_error or first_failure or []
        raise Unavailable(_connect_failure(url, TimeoutError(), seen, bound)) from None
    try:
        nc = connecting.result()
    except Exception as exc:
        raise Unavailable(_connect_failure(url, exc, first_failure or [], bound)) from None
    first_failure = None
    return Connection(
        nc=nc,
        js=RefusalAwareJetStream(nc, refused, waiting, timeout=10.0),
        stream=stream,
        reconnected=listeners,
        reconnect_hooks=hooks,
        refused=refused,
        waiting=waiting,
    )


def _is_refused_login(e: BaseException) -> bool:
    """The server refused the credentials (nats-py raises its handshake's ``-ERR`` as a plain
    error: ``nats: 'Authorization Violation'``, or ``'Authentication Timeout'`` …)."""
    if isinstance(e, natserrors.AuthorizationError):
        return True
    text = str(e).lower()
    return "authorization violation" in text or "user authentication" in text


def _connect_failure(
    url: str | Iterable[str], exc: BaseException, seen: list[BaseException], waited: float
) -> str:
    """Why the first connect failed, in words: nats-py retries a refused connection until our
    bound and then raises a bare timeout, so the cause is the last error it reported."""
    where = url if isinstance(url, str) else ",".join(url)
    cause = seen[-1] if seen and isinstance(exc, TimeoutError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return (
            f"cannot connect to NATS at {where}: connection refused (tried for {waited:g} s)"
            " - is a nats-server (or `netledger serve`) running there?"
        )
    if _is_refused_login(cause):
        return (
            f"cannot connect to NATS at {where}: the server refused the credentials ({cause}) -"
            " check --creds, --user / --password (env NETLEDGER_CREDS, NETLEDGER_USER,"
            " NETLEDGER_PASSWORD)"
        )
    if isinstance(cause, TimeoutError):
        return f"cannot connect to NATS at {where}: no answer in {waited:g} s"
    if isinstance(cause, ConnectionResetError):
        # A server refusing the credentials writes its -ERR and closes at once: the client
        # may see only the reset (the error lost with the connection).
        return (
            f"cannot connect to NATS at {where}: the server closed the connection while"
            " connecting - are credentials (--creds, --user/--password) needed, or wrong?"
        )
    return f"cannot connect to NATS at {where}: {str(cause) or cause.__class__.__name__}"


def _server_default(max_consumers: int | None) -> bool:
    """A stream with no consumer limit of its own: the server's default holds (MAX_CONSUMERS)."""
    return max_consumers is None or max_consumers <= 0


async def ensure_stream(conn: Connection, replicas: int = 1) -> None:
    """Create the stream, or update it to the current definition (:class:`LogNotCreated`
    when the server refuses it). An existing stream keeps its replica count: a different
    ``replicas`` is only warned about (a stream's replicas change with ``nats stream edit``).
    An update changes only what netledger needs (subjects, atomic batches, direct gets, the
    duplicate window, a consumer limit where the stream has none of its own): limits an
    operator set (``nats stream edit --max-bytes``, ``--max-age``, ``--max-consumers``, a
    description, placement) stay as they are."""
    cfg = stream_config(conn.stream, replicas)
    try:
        info = await conn.js.stream_info(conn.stream)
    except NotFoundError:
        await _refused_as_log_not_created(conn.js.add_stream(cfg), conn.stream, replicas)
        return
    cur = info.config
    if cur.num_replicas and cur.num_replicas != replicas:
        log.warning(
            "stream %s has %d replica(s), not the %d asked for: it keeps them (change them with"
            " `nats stream edit %s --replicas N`)",
            conn.stream,
            cur.num_replicas,
            replicas,
            conn.stream,
        )
    if (
        cur.subjects != cfg.subjects
        or not cur.allow_atomic
        or not cur.allow_direct
        or cur.duplicate_window != cfg.duplicate_window
        or _server_default(cur.max_consumers)
    ):
        # Everything else as the server has it: writing our whole definition reset an
        # operator's limits at every start of an upgraded service (found by review).
        new = dataclasses.replace(
            cur,
            subjects=cfg.subjects,
            allow_atomic=True,
            allow_direct=True,
            duplicate_window=cfg.duplicate_window,
            max_consumers=(
                cfg.max_consumers if _server_default(cur.max_consumers) else cur.max_consumers
            ),
            num_replicas=cur.num_replicas or replicas,
        )
        await _refused_as_log_not_created(conn.js.update_stream(new), conn.stream, replicas)


async def _refused_as_log_not_created(call: Awaitable[Any], stream: str, replicas: int) -> None:
    try:
        await call
    except nats.js.errors.APIError as exc:
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            raise
        why = exc.description or str(exc)
        raise LogNotCreated(
            f"the NATS server refused to create the log's stream {stream} ({replicas}"
            f" replica(s)): {why} (JetStream error {exc.err_code})",
            reason=why,
        ) from None


#: Errors of a cluster between leaders or a server restarting: worth waiting out.
TRANSIENT = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)


def seed_ordered(sub: Any, start_seq: int) -> None:
    """Tell nats-py's ordered consumer ``sub`` (a push subscription from ``js.subscribe``) that
    it starts at stream sequence ``start_seq``. It believes it delivered seq 0 until its first
    message: recreated before that (a server restart, missed heartbeats under a caught-up
    reader), it started again at seq 1 and the whole log came again — dropped as redeliveries,
    a cost that grew with the log's age at every NATS restart (found by review: 5,008 messages
    for 1 new event on a 5,001-event log), for every executor at once. nats-py 2.16's
    ``_jsi._sseq``; left alone when nats-py no longer looks so."""
    jsi = getattr(getattr(sub, "_sub", None), "_jsi", None)
    if jsi is not None and isinstance(getattr(jsi, "_sseq", None), int):
        jsi._sseq = max(jsi._sseq, start_seq - 1)


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


async def message_at(conn: Connection, seq: int) -> Any | None:
    """The stream's message ``seq`` (nats-py's stored message: subject, data, time), None if
    the stream holds none there; transient errors retried."""
    try:
        return await retrying(
            lambda: conn.js.get_msg(conn.stream, seq), f"message {seq} of the log"
        )
    except NotFoundError:
        return None


def stamp_time(text: str | None) -> float:
    """A ``Nats-Time-Stamp`` (RFC 3339, nanoseconds) as Unix time (0: none)."""
    if not text:
        return 0.0
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        when = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    return when.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)


async def direct_batch(conn: Connection, req: dict[str, Any], timeout: float) -> list[Msg]:
    """The messages one batched direct get (``req``: ``batch`` and where to start, or
    ``multi_last``) answers, in order, up to the server's end-of-batch status (204; 404:
    nothing there)."""
    nc = conn.nc
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    got: list[Msg] = []
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{conn.stream}", json.dumps(req).encode(), reply=inbox)
        while True:
            m = await sub.next_msg(timeout=timeout)
            if (m.headers or {}).get("Status"):
                return got
            got.append(m)
    finally:
        await sub.unsubscribe()


async def last_messages(
    conn: Connection, subjects: list[str], up_to_seq: int
) -> dict[str, tuple[int, float, bytes]]:
    """subject -> (seq, stored time as Unix time, data) of its last message at or before
    ``up_to_seq``, for those of ``subjects`` that have one: batched direct gets
    (``multi_last``), :data:`MULTI_LAST_CHUNK` subjects a request."""
    out: dict[str, tuple[int, float, bytes]] = {}
    for i in range(0, len(subjects), MULTI_LAST_CHUNK):
        part = subjects[i : i + MULTI_LAST_CHUNK]
        req = {"multi_last": part, "up_to_seq": up_to_seq, "batch": len(part)}
        for m in await direct_batch(conn, req, 5.0):
            hdrs = m.headers or {}
            out[hdrs["Nats-Subject"]] = (
                int(hdrs["Nats-Sequence"]),
                stamp_time(hdrs.get("Nats-Time-Stamp")),
                m.data,
            )
    return out


async def check_same_message(conn: Connection, seq: int, subject: str, data: bytes) -> None:
    """Raise :class:`LogDiverged` unless the stream's message ``seq`` is still (``subject``,
    ``data``), the message a reader handled there: a log restored from an older backup and
    written past it has the same name, creation time and a last sequence as high."""
    msg = await message_at(conn, seq)
    got = None if msg is None else (msg.subject or "", msg.data or b"")
    if got != (subject, data):
        raise LogDiverged(
            f"stream {conn.stream}: the message at seq {seq}, already read here, is"
            f" {'gone' if got is None else 'another one now'}: the log was restored from an"
            " older backup (or replaced) under this reader; restart it to read the log as it is",
            seq=seq,
        )


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
