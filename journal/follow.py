"""Following the log: an ordered push consumer over the whole stream or a share of it
(:class:`Follower`), and one-off reads of some subjects (:func:`iter_subject`,
:func:`read_subjects`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import heapq
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from netledger.events.codec import Envelope
from netledger.events.errors import (
    DecodeError,
    LogRegression,
    Unavailable,
)
from netledger.events.ids import ALL_EVENTS, REGISTRY_SUBJECT
from netledger.events.wire_fast import decode_fast

if TYPE_CHECKING:
    pass

from netledger.journal.stream import (
    CLOSE_TIMEOUT_S,
    FOLLOW_HEARTBEAT_S,
    Connection,
    check_regression,
    check_same_message,
    last_seq,
    retrying,
    seed_ordered,
)

log = logging.getLogger("netledger.stream")  # one logger for the log layer


Handler = Callable[[int, str, "Envelope | None", "DecodeError | None", Msg], None]

_V1_ACK_TOKENS = 9

#: headers the server keeps on each message of an atomic batch; the last one also has the commit
BATCH_ID = "Nats-Batch-Id"
BATCH_COMMIT = "Nats-Batch-Commit"


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
        heartbeat: float = FOLLOW_HEARTBEAT_S,
    ) -> None:
        self.conn = conn
        self.handler = handler
        self.start_seq = max(1, start_seq)
        self.subjects = [subject] if isinstance(subject, str) else sorted(set(subject))
        #: the consumer's idle heartbeat: two missed, nats-py makes the consumer again (a
        #: server restart, a failover); each costs the server a message a period when idle
        self.heartbeat = heartbeat
        self.applied_seq = start_seq - 1
        self.highest_seen = start_seq - 1
        #: everything of the share up to here has been handled (>= applied_seq)
        self.position = start_seq - 1
        #: messages handled since start (what this reader paid for)
        self.handled = 0
        #: messages left for this reader when the last one was delivered (its lag). Not a
        #: sign of what is still to come: the server may deliver an atomic batch's first
        #: message with 0 pending, before it counts the rest of the batch
        self.pending: int | None = None
        #: the last message handled is one of an atomic batch, not its last (the commit): more
        #: of that batch is stored and on its way (see :meth:`batch_read`)
        self.in_batch = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = 0
        self._sub: Any = None
        self._gen = 0  # messages of an earlier subscription are dropped
        self.failure: BaseException | None = None
        #: (seq, subject, data) of the newest message delivered live: :meth:`watch` checks
        #: that the log still holds it there
        self.last_msg: tuple[int, str, bytes] | None = None

    @property
    def subject(self) -> str:
        return self.subjects[0] if len(self.subjects) == 1 else ",".join(self.subjects)

    @property
    def filtered(self) -> bool:
        return self.subjects != [ALL_EVENTS]

    @property
    def subscribed(self) -> bool:
        """Reading live (False before :meth:`start`, after :meth:`stop`, and after a
        :meth:`set_subjects` that failed once it had dropped the old subscription)."""
        return self._sub is not None

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
                idle_heartbeat=self.heartbeat,
            ),
            "subscribing to the stream",
        )
        seed_ordered(self._sub, start_seq)  # recreated from here, not from seq 1

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
        subject added late is complete; subjects dropped are simply no longer read.

        The backfill is read whole before any of it is handed: a read that fails hands nothing.
        A call whose new consumer is then refused fails *after* handing it, with no
        subscription left: a retry must start each subject after what was handed, or hands it
        again (the executor's view starts from its fold: executor/share.py ``additions``)."""
        subjects = sorted(set(subjects))
        if subjects == self.subjects and not backfill and self._sub is not None:
            # (Without a subscription — the last call failed after it dropped the old one —
            # the same subjects are subscribed to again: the caller's retry.)
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
            env = decode_fast(data)
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
        self.last_msg = (seq, msg.subject, msg.data)
        self.applied_seq = seq
        if seq > self.position:
            self.position = seq
        if seq > self.highest_seen:
            self.highest_seen = seq
        self.pending = pending
        h = msg.headers
        self.in_batch = h is not None and BATCH_ID in h and BATCH_COMMIT not in h
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

    async def batch_read(self, timeout: float | None = 30.0) -> None:
        """Wait until the last message handled is not inside an atomic batch: the batch was
        committed whole before its first message was delivered, so the rest follows. Meant for
        a follower of the whole log (one of a share may never get the batch's commit)."""
        while self.in_batch:
            await self.wait_for(self.applied_seq + 1, timeout)

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
            sub, gen = self._sub, self._gen
            if sub is not None:
                try:
                    info = await sub.consumer_info()
                    delivered = int(info.delivered.stream_seq or 0)
                    # Only the consumer still in use may say so: one that set_subjects replaced
                    # meanwhile knew nothing of the subjects added (the new one reads them).
                    if gen == self._gen and info.num_pending == 0 and self.applied_seq >= delivered:
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

    async def check_last_message(self, last: tuple[int, str, bytes] | None = None) -> None:
        """:class:`LogDiverged` if the log no longer holds, at its sequence, the newest message
        delivered here (or ``last``: one delivered earlier) — a log restored from an older
        backup and written past it since."""
        if last is None:
            last = self.last_msg
        if last is not None:
            await check_same_message(self.conn, *last)

    async def watch(self, interval: float = 5.0) -> None:
        """Check for regression every ``interval`` seconds and at once after a reconnect — then
        also that the newest message read is still the log's (a store swapped for an older
        copy while this reader was away, and written past where it was) —; on either, fail
        every waiter and raise (the owner stops loudly instead of stalling on, or folding past,
        a log that went back). The reconnect's check comes before the ordered consumer,
        gone with the server, is recreated (two missed heartbeats)."""
        poke = self.conn.reconnect_event()
        #: the newest message read before a reconnect, until the log is seen to hold it: noted
        #: at the reconnect itself (this task may wake later, in a question to a server that
        #: was away, after the recreated consumer delivered the other log's messages), and
        #: kept while NATS does not answer
        at_reconnect: list[tuple[int, str, bytes] | None] = []

        def note() -> None:
            if not at_reconnect:
                at_reconnect.append(self.last_msg)

        self.conn.reconnect_hooks.append(note)
        try:
            await self._watching(poke, interval, at_reconnect)
        finally:
            with contextlib.suppress(ValueError):
                self.conn.reconnect_hooks.remove(note)

    async def _watching(
        self,
        poke: asyncio.Event,
        interval: float,
        at_reconnect: list[tuple[int, str, bytes] | None],
    ) -> None:
        unchecked: tuple[int, str, bytes] | None = None
        while True:
            if await self.conn.wait_interval_or_reconnect(poke, interval):
                if unchecked is None:
                    unchecked = at_reconnect[0] if at_reconnect else self.last_msg
                at_reconnect.clear()
                # A share's position may be past its newest message (what a catch-up saw of
                # the whole stream). The log this reader came back to may be another one (a
                # restored backup) that agrees with it up to the message checked, but not
                # after it: claim only what was read until a catch-up on this log says more
                # (a snapshot at the old position would skip the new log's messages between).
                self.position = min(self.position, self.applied_seq)
            try:
                await self.check_regression()
                if unchecked is not None:
                    await self.check_last_message(unchecked)
                    unchecked = None
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


#: consumers a one-off read may start (the first and those after losing one) before it gives up
READ_ATTEMPTS = 5
#: a read that receives nothing this long while messages are left takes its consumer for lost
READ_STALL_S = 30.0


class _ConsumerLost(Exception):
    """The one-off consumer of a read is gone (or silent): read on with a new one."""


async def iter_subject(
    conn: Connection, subject: str, start: int, upto: int
) -> AsyncIterator[tuple[int, str, bytes, Any]]:
    """The messages of one subject (a filter: wildcards allowed) from ``start`` through
    ``upto``, in order, as they arrive (a one-off ordered consumer).

    A consumer lost under the read is replaced by one starting after the last message yielded
    (nothing twice, nothing skipped), up to :data:`READ_ATTEMPTS` consumers, then
    :class:`Unavailable`. The server drops an ephemeral consumer nobody listens to after 5 s:
    a loop stalled that long between creating it and subscribing to its messages (125 views on
    one loop in bench/fleet.py, a CPU-starved executor) found it gone — "consumer not found"
    (404) — and the executor's start failed (12 of 1,000 hosts)."""
    nxt = max(1, start)
    lost = 0
    while nxt <= upto:
        try:
            async with contextlib.aclosing(_read_once(conn, subject, nxt, upto)) as msgs:
                async for m in msgs:
                    nxt = m[0] + 1
                    yield m
            return
        except _ConsumerLost as exc:
            if nxt > upto:
                return  # everything asked for was yielded before the loss
            lost += 1
            if lost >= READ_ATTEMPTS:
                raise Unavailable(
                    f"reading {subject}: lost its consumer {lost} times, the last at seq {nxt} "
                    f"({exc})"
                ) from None
            log.warning(
                "reading %s: consumer lost at seq %d (%s); reading on with a new one (%d of %d)",
                subject,
                nxt,
                exc,
                lost + 1,
                READ_ATTEMPTS,
            )
            await asyncio.sleep(min(0.1 * 2 ** (lost - 1), 1.0))


async def _read_once(
    conn: Connection, subject: str, start: int, upto: int
) -> AsyncGenerator[tuple[int, str, bytes, Any], None]:
    """:func:`iter_subject` with one consumer; :class:`_ConsumerLost` if it is lost.

    Delivered by callback into a buffer, not with ``next_msg``: nats-py's ``next_msg`` builds a
    uuid, a task and a ``wait_for`` per message (~30 us each: 21,000 messages of an executor's
    share took 0.65 s in it), where a callback costs an append."""
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
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            ),
            pending_msgs_limit=-1,
            pending_bytes_limit=256 * 1024 * 1024,
            idle_heartbeat=FOLLOW_HEARTBEAT_S,
        ),
        f"reading {subject}",
    )
    seed_ordered(sub, start)
    name: str | None = getattr(sub, "_consumer", None)
    try:
        # Messages the server pushed before this question are no longer "pending": the total
        # is what was delivered plus what is left.
        # (retried: a failover between the subscribe and this question ended the reader —
        # an executor's start — with a bare timeout)
        try:
            info = await retrying(sub.consumer_info, f"reading {subject}")
        except NotFoundError as exc:
            raise _ConsumerLost(f"consumer not found ({exc.code})") from None
        # The count is of the messages from where the consumer asked started: nats-py may
        # have recreated it already (missed heartbeats), from after what it had delivered.
        base = int(info.config.opt_start_seq or 1)
        delivered = info.delivered.consumer_seq if info.delivered is not None else 0
        left = int(info.num_pending or 0) + int(delivered or 0)
        last = start - 1
        # ... and what the consumers before it delivered (below ``base``: nats-py starts the
        # new one after the last message it received) is in the buffer or on its way there,
        # counted or not: with nothing left from ``base`` on, the read ended without it
        # (review h102: a share read as empty).
        # Done at ``upto``: what the consumer counts beyond it is not this read's (waiting for
        # it, a consumer lost then stalled the read 30 s and made a needless new one).
        while last < upto and (left > 0 or last < base - 1):
            if not buf:
                arrived.clear()
                try:
                    await asyncio.wait_for(arrived.wait(), READ_STALL_S)
                except TimeoutError:
                    raise _ConsumerLost(f"nothing received for {READ_STALL_S:.0f}s") from None
                continue
            msg = buf.popleft()
            seq, _pending = seq_and_pending(msg)
            if seq <= last:
                continue  # never twice, whatever a consumer recreated under us delivers
            if seq >= base:
                left -= 1
            if seq > upto:
                break
            last = seq
            yield seq, msg.subject, msg.data, msg
    finally:
        try:
            await asyncio.wait_for(sub.unsubscribe(), CLOSE_TIMEOUT_S)
        except Exception:
            pass
        now = getattr(sub, "_consumer", None)
        if now is not None and now != name:
            # nats-py recreated the consumer (missed heartbeats): it goes on by itself
            log.info("reading %s: consumer recreated under the read (%s -> %s)", subject, name, now)
        if now is not None:
            _delete_soon(conn, now)


#: the consumer deletion under way per connection (``id``; a task must be referenced until
#: it ends)
_DELETING: dict[int, asyncio.Task[Any]] = {}


def _delete_soon(conn: Connection, name: str) -> None:
    """Delete a one-off consumer now rather than when the server notices nobody listens (a
    share of hundreds of subjects is read with as many consumers, one after the other) — in
    the background, one at a time per connection (one still under way: this one is left to
    the server), and never once the server refused these credentials a deletion: readers'
    credentials may not delete consumers (ops/auth.py), and each refused request waited out
    its timeout, 10 s per subject read (an executor's start under per-role auth took a
    minute: found by review)."""
    prefix = f"$js.api.consumer.delete.{conn.stream.lower()}."
    key = id(conn)
    if key in _DELETING or any(s.startswith(prefix) for s in conn.refused):
        return  # (the server drops it once nobody listens)

    async def delete() -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.js.delete_consumer(conn.stream, name), CLOSE_TIMEOUT_S)

    task = asyncio.ensure_future(delete())
    _DELETING[key] = task
    task.add_done_callback(lambda _t: _DELETING.pop(key, None))


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
