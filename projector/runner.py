"""Following the stream into SQLite: the :class:`Projector` and bounded catch-up.

Shape of the pipeline::

    ordered push consumer ──callback──▶ chunks of raw messages ──pipe──▶ writer process
    (nats-py, event loop)               (bounded: back-pressure)          (decode, project, commit)

* Reading uses an ordered push consumer, the fastest read path nats-py has (JETSTREAM_NOTES.md:
  ~4x pull ``fetch``). It starts at the checkpoint + 1; nats-py resets it on its own after a
  reconnect or a missed heartbeat, from the last sequence it delivered. The callback only takes
  the sequence, the stored time and the pending count out of the reply subject and appends the
  message to a chunk; everything else happens in the writer (:mod:`.writer_proc`), a forked
  child on the other core.
* Memory stays flat: at most ``queue_size`` messages are in flight (sent, not yet committed).
  Beyond that the projector unsubscribes (dropping what nats-py buffered) and, once the writer
  has committed all but a quarter of them, subscribes again from the first sequence not sent.
  JetStream flow control alone does not bound it: measured, the server pushed a 40,000-message
  stream whole into nats-py's pending queue while the writer was at a fifth of it. nats-py's
  own pending limits stay off on purpose: it drops messages over them after counting them as
  delivered, which its ordered consumer does not notice.
* Writing: one batch of ``batch_size`` messages = one SQLite transaction holding the rows,
  the events index, the rejections and ``projection_state.last_seq`` (see :mod:`.store`); a
  batch grows up to ``max_batch`` while the previous one is still being committed (a resume
  on a long history: fewer, larger transactions, :func:`.writer_proc._project_loop`).
* On a connection it owns (``owns_connection``: ``projector run``), nats-py parses only the
  headers of status messages: the stored messages' own headers (msg id, atomic batch) were about
  a third of the reader's work per message, and nothing here reads them.

:class:`netledger.journal.follow.Follower` is not reused: it decodes on the event loop and calls
a synchronous handler, while here decoding belongs in the writer and reading must be able to
stop and resume (back-pressure).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from netledger.events.errors import LogRegression
from netledger.events.ids import ALL_EVENTS
from netledger.journal import fastread
from netledger.journal.buckets import PROJECTOR_MESSAGES, SECONDS, Buckets
from netledger.journal.catchup import _skip_stored_headers
from netledger.journal.fastread import reply_numbers
from netledger.journal.stream import (
    Connection,
    check_regression,
    check_same_message,
    last_seq,
    retrying,
    seed_ordered,
)

from .anchor import check_log
from .errors import ProjectorStopped
from .frames import ack_numbers, stream_time
from .store import RawTuple
from .writer_handle import WriterProcess

log = logging.getLogger("netledger.projector")

#: progress(last applied seq, target seq or None, events applied, events rejected) per batch.
Progress = Callable[[int, int | None, int, int], None]

DEFAULT_BATCH = 2000
#: Messages in flight between the NATS callback and the last commit (~7 MB of ~300-byte
#: events): reading pauses when there are this many and resumes at a quarter, which must be
#: more than the writer does while a new consumer is created (milliseconds). Each pause costs a
#: consumer and re-reads what nats-py had buffered, so not too small either.
QUEUE_SIZE = 20_000
#: Free bytes the projection's folder needs before a projector stopped by a full disk tries
#: again (a batch of 2,000 events is ~1 MiB of WAL), and how often it looks.
RESUME_FREE = 8 << 20
RESUME_CHECK_S = 2.0

#: Messages per frame sent to the writer (the callback also sends what it has whenever the
#: event loop runs out of messages to deliver).
CHUNK = 256
#: How long the first message of a frame may wait for others before it goes to the writer
#: (seconds). A live log brings its events one at a time: sent at once, each woke the projecting
#: and the committing process and cost a commit of its own — measured beside one client
#: allocating sequentially (a trickle of ~600 events/s, `serve`), the writer's two processes
#: took ~600 us of CPU per event and the service ~100 us more for the pipe, on a 2-core machine
#: whose nats-server and service needed it; lingering 20 ms: ~90 us (5 ms: ~250 us; 50 ms: no
#: better than 20). The projection follows the log up to this much later; a catch-up is not
#: slowed (its frames fill up at once and go).
LINGER = 0.02


def stream_seq(reply: str) -> int:
    """The stream sequence in a JetStream message's reply subject (what the callback looks at
    first; :func:`~.frames.raw_message` takes the rest for the messages it keeps)."""
    head, seq, _, _, _ = reply.rsplit(".", 4)
    if head.count(".") == 4:  # $JS.ACK.<stream>.<consumer>.<delivered>: the usual layout
        return int(seq)
    return ack_numbers(reply)[0]


def disk_full(exc: BaseException) -> bool:
    """Whether the writer failed because the projection's disk is full (SQLITE_FULL, ENOSPC,
    a quota) — a pause until space returns, not a broken projection. The writer's exceptions
    cross a pipe: only their class and message are sure to arrive."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error) and getattr(exc, "sqlite_errorcode", None) == 13:
        return True  # SQLITE_FULL
    text = str(exc).lower()
    return "database or disk is full" in text or "no space left on device" in text


def _epoch(at: datetime.datetime | float | None) -> float | None:
    if at is None or isinstance(at, float | int):
        return at
    if at.tzinfo is None:
        raise ValueError("'at' must be timezone-aware")
    return at.timestamp()


class Projector:
    """Follows the stream from the checkpoint in ``db_path`` and keeps the projection current.

    ``await start()`` opens (and migrates) the database and begins following in the background;
    ``await close()`` stops reading, lets the batch being written commit, and closes the file.
    With ``to_seq`` or ``at`` it stops by itself at that sequence / before the first message
    stored after that time; ``await done()`` waits for that (see :func:`project_until`).
    """

    def __init__(
        self,
        conn: Connection,
        db_path: str | Path,
        *,
        batch_size: int = DEFAULT_BATCH,
        to_seq: int | None = None,
        at: datetime.datetime | float | None = None,
        progress: Progress | None = None,
        heartbeat: float = 2.0,
        queue_size: int | None = None,
        owns_connection: bool = False,
        on_building: Callable[[], None] | None = None,
        linger: float = LINGER,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.conn = conn
        self.db_path = Path(db_path)
        self.batch_size = batch_size
        self.to_seq = to_seq
        self.at = _epoch(at)
        self.progress = progress
        #: called when the writer starts building the indexes a long catch-up deferred (the
        #: last seconds or minutes of it: a progress bar says so instead of sitting at 99 %)
        self.on_building = on_building
        self.heartbeat = heartbeat
        #: ``conn`` serves this projector alone (``projector run``): nats-py may then skip the
        #: headers of stored messages (see :meth:`start`).
        self.owns_connection = owns_connection
        self.queue_size = queue_size or max(QUEUE_SIZE, 4 * batch_size)
        #: reading pauses at this many in flight (what still comes is taken up to queue_size)
        self._pause_at = max(1, self.queue_size // 2)
        #: a transaction grows up to this while the previous one is still being committed
        #: (:func:`.writer_proc._project_loop`): the one committed and the one growing stay
        #: within the pause mark, so that growing does not make the reading pause
        self.max_batch = max(batch_size, self.queue_size // 4)
        self._chunk_size = min(CHUNK, self.queue_size // 4 or 1)
        if linger < 0:
            raise ValueError("linger must not be negative")
        #: seconds a frame's first message may wait for more (:data:`LINGER`)
        self.linger = linger
        self._lingering: asyncio.TimerHandle | None = None
        #: the socket whose reading waits for the lingering frame (:meth:`_hold_reading`)
        self._read_paused: Any = None
        self.read_holds = 0  # how often it did
        self._writer: WriterProcess | None = None
        self._sub: Any = None
        self._resub: asyncio.Task[None] | None = None
        self._again = False  # a gap was seen while _resub subscribed: subscribe once more
        self._stop_reading: asyncio.Task[None] | None = None
        self._chunk: list[RawTuple] = []
        #: after a reconnect: what is read is kept from the writer until the log is seen to
        #: hold the message read before it (_watch_log)
        self._held = False
        self._enqueued = 0  # highest seq handed to the writer (or in the chunk being built)
        self.last_raw: RawTuple | None = None  # the newest message read: the log must still hold it
        self._target: int | None = None  # the last seq to apply, once a limit was reached
        self._first = True  # the first message of a subscription may follow a gap (expired)
        self._paused = False  # reading stopped until the writer catches up
        self.pauses = 0
        self._reading = False  # stop enqueueing once a limit is reached or we are closing
        self._advanced = asyncio.Event()
        self._done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.last_seq = 0
        self.events = 0
        self.rejected = 0
        self.failure: BaseException | None = None
        self.write_seconds = 0.0  # time the writer was busy (decode, project, commit)
        self.watch_interval = 5.0  # how often to check that the log did not go back
        self._watch: asyncio.Task[None] | None = None
        self.batches = 0
        #: each committed batch's messages (events and rejections) and the writer's time on
        #: it (decode, project, commit): ``netledger_projector_batch_*`` (common/metrics.py)
        self.batch_messages = Buckets(PROJECTOR_MESSAGES)
        self.batch_seconds = Buckets(SECONDS)
        #: why the projector is stopped until space returns (None: it is not), since when
        self.paused: str | None = None
        self.paused_since: float | None = None
        self.disk_full_pauses = 0
        self.resume_free = RESUME_FREE
        self.resume_check = RESUME_CHECK_S
        self._resume: asyncio.Task[None] | None = None
        self._check: tuple[str, str, int] | None = None
        self._fast = False  # stored messages come to _on_stored without the callback

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.owns_connection:
            # Every stored message carries headers (its msg id, its atomic batch's) that nothing
            # here reads; parsing them is ~a third of nats-py's work per message. Only status
            # messages (heartbeats, flow control) get parsed: what the ordered consumer acts on.
            # Not on a shared connection: a direct get there needs its reply's headers.
            _skip_stored_headers(self.conn.nc)
            # Stored messages go from nats-py's parser straight to _on_stored (no Msg, no
            # queue, no task hop per message); status messages keep nats-py's path.
            if fastread.install(self.conn.nc):
                self._fast = fastread.register(self.conn.nc, self._on_msg, self._on_stored)
        info = await retrying(lambda: self.conn.js.stream_info(self.conn.stream), "stream info")
        created = info.created.isoformat() if info.created else ""
        self._check = (self.conn.stream, created, int(info.state.last_seq))
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        await self._open()
        if self.to_seq is not None and self.last_seq >= self.to_seq:
            self._finish()
            return
        await self._follow()
        log.info(
            "projector following %s from seq %d into %s",
            self.conn.stream,
            self.last_seq + 1,
            self.db_path,
        )

    async def _open(self) -> None:
        assert self._check is not None
        writer = WriterProcess(self._applied, self._failed, self.on_building)
        last, _ = await writer.start(self.db_path, self._check, self.batch_size, self.max_batch)
        try:
            await check_log(self.conn, self.db_path, last)
        except BaseException:
            await writer.stop()
            raise
        self.last_seq = last
        self._writer = writer
        self._enqueued = self.last_seq
        self._chunk = []

    async def _follow(self) -> None:
        self._reading = True
        try:
            await self._subscribe(self.last_seq + 1)
        except BaseException:
            await self.close()
            raise
        self._watch = asyncio.create_task(self._watch_log(), name="netledger-projector-watch")

    # --- a full disk: stop at the last commit, resume when space returns ----------------------

    def _pause_full(self, exc: BaseException) -> None:
        self.paused = f"the projection's disk is full ({exc})"
        self.paused_since = time.time()
        self.disk_full_pauses += 1
        self._reading = False
        log.warning(
            "projector stopped at seq %d, its last commit (the projection is consistent up to"
            " it): %s; it resumes by itself once %d MiB are free in %s",
            self.last_seq,
            self.paused,
            self.resume_free >> 20,
            self.db_path.parent,
        )
        self._wake()
        self._resume = asyncio.create_task(self._wait_for_space(), name="netledger-projector-space")

    async def _wait_for_space(self) -> None:
        self._release_reading()
        await _cancel(self._resub)
        # A back-pressure pause under way ends with it (only its task cleared the flag): left
        # set, the reading after space returns took nothing, for good (found by review).
        self._paused = self._again = False
        if self._fast:
            fastread.unlinger(self.conn.nc)
        await _cancel(self._watch)
        await self._unsubscribe()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()
        while True:
            await asyncio.sleep(self.resume_check)
            try:
                st = os.statvfs(self.db_path.parent)
            except OSError:
                continue
            if st.f_bavail * st.f_frsize < self.resume_free:
                continue
            try:
                # The stream moved on while we waited: check the projection against it now.
                info = await retrying(
                    lambda: self.conn.js.stream_info(self.conn.stream), "stream info"
                )
                stream, created, _ = self._check or (self.conn.stream, "", 0)
                self._check = (stream, created, int(info.state.last_seq))
                await self._open()
            except Exception as exc:
                if disk_full(exc):
                    continue
                self.paused = None
                self._failed(exc)
                return
            down = time.time() - (self.paused_since or time.time())
            log.warning(
                "projector resumes from seq %d after %.1fs: space is back in %s",
                self.last_seq + 1,
                down,
                self.db_path.parent,
            )
            self.paused = self.paused_since = None
            # _follow closes the projector if it cannot subscribe: not this task's cancel then
            # (close() cancels _resume), and its failure must be heard (wait_failed).
            self._resume = None
            try:
                await self._follow()
            except Exception as exc:
                self._failed(exc)
            return

    async def _subscribe(self, start_seq: int) -> None:
        self._first = True
        self._sub = await retrying(
            lambda: self.conn.js.subscribe(
                ALL_EVENTS,
                cb=self._on_msg,
                ordered_consumer=True,
                idle_heartbeat=self.heartbeat,
                stream=self.conn.stream,
                config=ConsumerConfig(
                    deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(1, start_seq)
                ),
                pending_msgs_limit=-1,
                pending_bytes_limit=0,
            ),
            "subscribing to the stream",
        )
        seed_ordered(self._sub, start_seq)  # recreated from here, not from seq 1

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be gone already
                log.debug("unsubscribe: %s", exc)

    async def close(self) -> None:
        """Stop following. What was already handed to the writer (at most ``queue_size``
        messages beyond the last commit) is committed before it closes; what the reader had
        not handed over (a frame still lingering, :data:`LINGER`) is dropped: read again from
        the checkpoint next time."""
        self._reading = False
        self._release_reading()
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        await _cancel(self._resume)
        # A resubscription in flight first, so that it cannot leave a subscription behind.
        await _cancel(self._resub)
        await _cancel(self._watch)
        if self._stop_reading is not None:
            await self._stop_reading  # an unsubscribe: let it finish rather than cut it short
        await self._unsubscribe()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()
        if self._fast:
            fastread.unregister(self.conn.nc, self._on_msg)
            self._fast = False
        if not self._done.done():
            self._done.set_exception(ProjectorStopped("projector closed", last_seq=self.last_seq))
            self._done.exception()  # retrieved: nobody has to wait on it
        self._wake()

    async def __aenter__(self) -> Projector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- reading -----------------------------------------------------------------------------

    async def _on_msg(self, msg: Msg) -> None:
        """The subscription's callback (on a shared connection: see :mod:`.fastread`)."""
        if not self._reading or self._paused:
            return
        seq, _, ts, pending = reply_numbers(msg.reply)
        self._on_stored(seq, msg.subject, msg.data, ts, pending)

    def _on_stored(self, seq: int, subject: str, data: bytes, ts: int, pending: int) -> None:
        """One stored message: ``ts`` its stored time (ns), ``pending`` the messages after it.
        While paused, what the server had sent before the consumer was dropped still comes
        (:func:`.fastread.linger`): taken in order up to the queue size, not read twice."""
        if not self._reading:
            return
        if seq <= self._enqueued:
            return  # redelivered after an ordered-consumer reset
        if seq != self._enqueued + 1 and (self._paused or not self._first):
            if self._paused:
                return  # after one dropped at the queue's bound: read again on resuming
            # Cannot happen on a deny-delete stream unless messages were dropped: re-read.
            log.error(
                "gap in the stream read: got seq %d after %d; re-reading", seq, self._enqueued
            )
            self._restart_reading(pause=False)
            return
        raw = (seq, subject, data, stream_time(ts), pending)
        if (self.at is not None and raw[3] > self.at) or (
            self.to_seq is not None and seq > self.to_seq
        ):
            self._limit_reached()
            return
        in_flight = self._enqueued - self.last_seq
        if not self._paused and in_flight >= self._pause_at:
            # Do not let the server push the rest of the stream into memory (flow control
            # does not stop it soon enough): stop the consumer, resume from here later.
            self._paused = True
            self.pauses += 1
            self._restart_reading(pause=True)
        if self._paused and in_flight >= self.queue_size:
            return  # the bound: read again from here on resuming
        self._first = False
        self._enqueued = seq
        self.last_raw = raw
        chunk = self._chunk
        chunk.append(raw)
        if self.to_seq is not None and seq >= self.to_seq:
            self._limit_reached()
        elif len(chunk) == 1:
            # Sent once the loop has delivered what it had and the linger is over (or when
            # full, below): a live log's events go to the writer a frame at a time.
            loop = asyncio.get_running_loop()
            if self.linger:
                self._lingering = loop.call_later(self.linger, self._send)
            else:
                loop.call_soon(self._send)
        elif len(chunk) >= self._chunk_size:
            self._send()
        if pending == 0 and self._lingering is not None:
            self._hold_reading()

    def _hold_reading(self) -> None:
        """Caught up with a frame lingering: stop reading the socket until it is sent. On a
        live log's trickle, the reader woke for each event (its socket had one more) — ~170 us
        of CPU an allocation beside one client on a 2-core machine whose nats-server and service
        needed it; now what comes meanwhile waits in the kernel and is read at once when the
        frame goes (an event reaches the writer within two lingers instead of one). Only on a
        connection of its own (the fast path: ``projector run``, serve's projector child)."""
        if self._fast and self._read_paused is None:
            self._read_paused = fastread.pause_reading(self.conn.nc)
            self.read_holds += self._read_paused is not None

    def _release_reading(self) -> None:
        paused, self._read_paused = self._read_paused, None
        if paused is not None:
            fastread.resume_reading(paused)

    def _send(self) -> None:
        self._release_reading()
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        if self._held:
            return  # after a reconnect, until the log is checked (_watching)
        chunk, self._chunk = self._chunk, []
        if chunk and self._writer is not None:
            self._writer.send(chunk)
            # While messages keep coming the loop seldom gets to the writer's pipe: read its
            # acknowledgements here, so that what is in flight is known (and reading does not
            # pause for commits that already happened).
            self._writer.poll()

    def _limit_reached(self) -> None:
        """Nothing after what was enqueued is applied: stop reading, finish once it commits."""
        self._send()
        self._reading = False
        self._target = self._enqueued
        if self._stop_reading is None:  # the server need not push what follows
            self._stop_reading = asyncio.create_task(
                self._unsubscribe(), name="netledger-projector-unsubscribe"
            )
        if self.last_seq >= self._target:
            self._finish()

    def _restart_reading(self, pause: bool) -> None:
        """Drop the subscription (and whatever nats-py buffered for it); subscribe again from
        the first sequence not yet sent — with ``pause``, once the writer has committed all but
        a quarter of what is in flight."""
        self._send()
        if self._resub is not None and not self._resub.done():
            # A gap seen while it subscribes (the new consumer's messages come before its
            # subscribe returns) was dropped: that one subscribes once more when it is done.
            self._again = self._again or not pause
            return

        async def again(pause: bool = pause) -> None:
            while True:
                if pause and self._fast and self._sub is not None:
                    # What the server sent before it hears of the unsubscribe is taken, not
                    # dropped and read again (_on_stored, up to the queue size).
                    fastread.linger(self.conn.nc, self._sub)
                await self._unsubscribe()
                low = self.queue_size // 4
                while pause and self._reading and self._enqueued - self.last_seq > low:
                    await self._advanced.wait()
                if self._fast:
                    # All of it came long ago (it precedes the unsubscribe on the connection):
                    # nothing of the old consumer may pass for the new one's first messages.
                    fastread.unlinger(self.conn.nc)
                self._paused = self._again = False
                if self._reading:
                    try:
                        await self._subscribe(self._enqueued + 1)
                    except Exception as exc:
                        # Nobody awaits this task: left to it, the failure went unseen and
                        # reading stopped for good (no consumer, no failure reported).
                        self._failed(exc)
                        return
                # The new consumer's messages may come before its subscribe returns: a pause
                # or a gap they caused meanwhile found this task running (_restart_reading
                # only noted it).
                if not self._reading or not (self._paused or self._again):
                    return
                pause = self._paused

        self._resub = asyncio.create_task(again(), name="netledger-projector-resubscribe")

    async def _watch_log(self) -> None:
        """Stop loudly if the stream's last sequence falls below one already read (a store that
        lost data or was restored from an old copy) instead of stalling or re-applying — or if,
        after a reconnect, the newest message read is no longer the log's at its sequence
        (restored from an old copy and written past it while this reader was away)."""
        poke = self.conn.reconnect_event()
        # the newest message read before a reconnect, until the log is seen to hold it (kept
        # while NATS does not answer: a check skipped then is not lost) — noted at the
        # reconnect itself: this task may wake later (in a question to a server that was away),
        # after the recreated consumer delivered the other log's messages (a CI flake)
        at_reconnect: list[RawTuple | None] = []

        def note() -> None:
            if not at_reconnect:
                at_reconnect.append(self.last_raw)
            if self.last_raw is not None:
                # Nothing read after the reconnect goes to the writer until the log is seen to
                # hold the message read before it (a CI flake: three messages of the other
                # log were projected before the check said so).
                self._held = True

        self.conn.reconnect_hooks.append(note)
        unchecked: RawTuple | None = None
        try:
            await self._watching(poke, at_reconnect, unchecked)
        finally:
            with contextlib.suppress(ValueError):
                self.conn.reconnect_hooks.remove(note)

    async def _watching(
        self, poke: asyncio.Event, at_reconnect: list[RawTuple | None], unchecked: RawTuple | None
    ) -> None:
        # A bounded run that reached its end while holding (after a reconnect) reads no more
        # but waits for what it holds: the check goes on until it releases it (it stopped with
        # the reading, and the run waited forever: found by review).
        while self._reading or (self._held and self._target is not None and not self._done.done()):
            reconnected = await self.conn.wait_interval_or_reconnect(poke, self.watch_interval)
            seen = max(self._enqueued, self.last_seq)
            if reconnected:
                if unchecked is None:
                    unchecked = at_reconnect[0] if at_reconnect else self.last_raw
                at_reconnect.clear()
            last = unchecked
            try:
                target = await last_seq(self.conn)
            except Exception as exc:  # NATS away for a moment: the reconnect deals with it
                log.debug("regression check skipped: %s", exc)
                continue
            try:
                check_regression(target, seen)
                if last is not None:
                    await check_same_message(self.conn, last[0], last[1], last[2])
                    unchecked = None
                if unchecked is None and self._held and not at_reconnect:
                    self._held = False
                    self._send()
            except LogRegression as exc:
                log.critical("%s", exc.message)
                self._reading = False
                await self._unsubscribe()
                self._failed(exc)
                return
            except Exception as exc:  # the message could not be read back now: next time
                log.debug("divergence check skipped: %s", exc)

    # --- what the writer says ------------------------------------------------------------------

    def _wake(self) -> None:
        """Wake everyone waiting for progress, then arm a fresh event. An event left set would
        make every ``while ...: await self._advanced.wait()`` loop spin without ever yielding
        (``Event.wait`` returns at once when set): the disk-full pause did that and froze the
        whole event loop in ``wait_failed``."""
        self._advanced.set()
        self._advanced = asyncio.Event()

    def _applied(self, last: int, events: int, rejected: int, busy: float) -> None:
        self.last_seq = last
        self.events += events
        self.rejected += rejected
        self.write_seconds += busy
        self.batches += 1
        self.batch_messages.observe(events + rejected)
        self.batch_seconds.observe(busy)
        self._wake()
        if self.progress is not None:
            self.progress(self.last_seq, self.to_seq, self.events, self.rejected)
        if self._target is not None and last >= self._target:
            self._finish()

    def _failed(self, exc: BaseException) -> None:
        if self.failure is None and disk_full(exc) and self.to_seq is None and self.at is None:
            # A daemon's projection waits for space; a bounded run (replay, audit) reports it.
            if self.paused is None:
                self._pause_full(exc)
            return
        if self.paused is not None:
            # The writer that hit the full disk ending (it exits after its failure): expected.
            log.debug("projector writer ended while paused: %s", exc)
            return
        if self.failure is None:
            if not isinstance(exc, LogRegression):
                log.error("projector writer failed at seq %d: %s", self.last_seq, exc)
            self.failure = exc
        self._reading = False
        if not self._done.done():
            self._done.set_exception(exc)
            self._done.exception()  # retrieved: done() / wait_failed() report it
        self._wake()

    def _finish(self) -> None:
        if not self._done.done():
            self._done.set_result(self.last_seq)
        self._wake()

    # --- waiting -----------------------------------------------------------------------------

    async def done(self) -> int:
        """Wait until a ``to_seq`` / ``at`` limit is reached; return the last applied seq.
        Raises the writer's failure if it failed."""
        return await asyncio.shield(self._done)

    async def wait_for(self, seq: int, timeout: float | None = 30.0) -> None:
        """Wait until the message with stream sequence ``seq`` has been committed."""

        async def wait() -> None:
            while self.last_seq < seq:
                if self.failure is not None:
                    raise self.failure
                if self._done.done() or (self._writer is None and not self._reading):
                    raise ProjectorStopped(
                        f"projector stopped at seq {self.last_seq}",
                        last_seq=self.last_seq,
                        wanted=seq,
                    )
                await self._advanced.wait()

        await asyncio.wait_for(wait(), timeout)

    async def catch_up(self, timeout: float | None = 60.0) -> int:
        """Wait until everything in the stream right now is committed; return that seq."""
        info = await retrying(lambda: self.conn.js.stream_info(self.conn.stream), "stream info")
        target = int(info.state.last_seq)
        await self.wait_for(target, timeout)
        return target

    async def wait_failed(self) -> BaseException:
        """Wait until the writer fails (for daemons that should exit on it)."""
        while self.failure is None:
            await self._advanced.wait()
        return self.failure


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None and not task.done():
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


def bar_hooks(advance: Callable[..., None], label: str) -> dict[str, Any]:
    """:func:`project_until` keyword arguments that drive a progress bar
    (``netledger.common.progress``): the sequence reached, then "``label``: building indexes"
    while the indexes a long catch-up deferred are built."""
    reached = 0

    def progress(seq: int, _to: int | None, _events: int, _rejected: int) -> None:
        nonlocal reached
        reached = seq
        advance(seq)

    def building() -> None:
        advance(reached, description=f"{label}: building indexes")

    return {"progress": progress, "on_building": building}


async def project_until(
    conn: Connection,
    db_path: str | Path,
    *,
    to_seq: int | None = None,
    at: datetime.datetime | float | None = None,
    progress: Progress | None = None,
    batch_size: int = DEFAULT_BATCH,
    owns_connection: bool = False,
    on_building: Callable[[], None] | None = None,
) -> int:
    """Bring the projection at ``db_path`` up to ``to_seq`` (default and cap: the stream's last
    sequence now), or to the last message stored at or before ``at``; return the last applied
    sequence. The work the replay and audit tools build on. ``owns_connection``: as for
    :class:`Projector` (``conn`` serves nothing else meanwhile, nor afterwards)."""
    info = await conn.js.stream_info(conn.stream)
    end = int(info.state.last_seq)
    target = end if to_seq is None else min(to_seq, end)
    p = Projector(
        conn,
        db_path,
        batch_size=batch_size,
        to_seq=target,
        at=at,
        progress=progress,
        owns_connection=owns_connection,
        on_building=on_building,
    )
    await p.start()
    try:
        return await p.done()
    finally:
        await p.close()
