"""What a pass reports: the host's liveness in the liveness bucket (``host.<host>.status``), and
its host events to the log — appended after the pass, in order (the outbox), so publishing does
not hold the next change back from the kernel. A mixin of
:class:`~netledger.executor.daemon.Executor`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from netledger.events.codec import Actor, Envelope
from netledger.events.errors import LogUnavailable
from netledger.events.host_events import HostEvent, HostInstancesChanged, HostInstancesSeen
from netledger.journal.append import Appender, DuplicateBatch, MaybeApplied, build_messages
from netledger.journal.liveness import live_bucket, status_key
from netledger.journal.stream import MAX_BATCH, Connection, last_seq, retrying

from .cache import KernelCache
from .desired import HostConfig
from .kernel import Kernel
from .options import Options, PassReport
from .snapshot import ViewSnapshots
from .view import HostView

log = logging.getLogger("netledger.executor")
#: up to this many host events of a pass are published one by one, more in atomic batches
FEW = 8
#: sighting reports: never sent again later (see Reports._append)
_SIGHTINGS = (HostInstancesSeen, HostInstancesChanged)


class Reports:
    """Publishing what passes did (what :class:`Executor` sets up)."""

    conn: Connection
    cfg: HostConfig
    opts: Options
    actor: Actor
    view: HostView
    started_at: float
    passes: int
    log_trouble: dict[str, Any] | None
    snapshots: ViewSnapshots | None
    read_back_own: bool
    _kv: Any
    _status_at: float
    _appender: Appender
    _record_diverged: bool
    kernel: Kernel | None
    cache: KernelCache | None
    #: events of ours already in the record (folded at once) that the log refused: appended
    #: first, in order, with their own ids, by the next append (every pass tries one)
    _unsent: list[Envelope]
    _outbox: asyncio.Queue[Callable[[], Awaitable[Any]]]
    _outbox_task: asyncio.Task[None] | None
    _jobs: int

    async def _put_status(self, report: PassReport, reason: str) -> None:
        """This host's liveness (``host.<host>.status``): never fatal, never in the log."""
        try:
            if self._kv is None:
                self._kv = await live_bucket(self.conn)
                if self._kv is None:
                    return  # created by a command service; written once it exists
            status = {
                "host": self.cfg.host,
                "time": time.time(),
                "started": self.started_at,
                "reason": reason,
                # everything of its share up to here is applied (its own reports included)
                "applied_seq": (
                    self.view.follower.position
                    if self.view.follower is not None
                    else report.applied_seq
                ),
                "pending": self.view.follower.pending if self.view.follower is not None else None,
                "passes": self.passes,
                "changes": report.changes,
                "drift_repairs": report.drift_repairs,
                "duration_ms": report.duration_ms,
                "dump_ms": report.dump_ms,
                "slice_ms": report.slice_ms,
                "failures": len(report.failures),
                "conflicts": len(report.conflicts),
                "events_read": self.view.follower.handled
                if self.view.follower is not None
                else None,
                "heartbeat": self.opts.heartbeat,
                "share": self.view.follower.subjects if self.view.follower is not None else None,
                # the log refuses this host's events (full, latched, unavailable): why, since
                "log_error": self.log_trouble,
                # its appends of host events sent again with the same ids, by reason, since it
                # started (journal/append.py RESEND_REASONS): the log answering slowly or not
                "append_resends": dict(self._appender.resends),
                # the view's snapshot: where the start began, the last one written
                "snapshot": self._snapshot_status(),
                # dumps of the kernel it marked interrupted since the start (a table changing
                # under them): read again, or taken by the cache (docs/executor.md)
                "dumps_interrupted": self._dumps_interrupted(),
            }
            await self._kv.put(status_key(self.cfg.host), json.dumps(status).encode())
            self._status_at = time.monotonic()
        except Exception as exc:
            log.warning("writing this host's status to the liveness bucket failed: %s", exc)

    def _dumps_interrupted(self) -> dict[str, int]:
        socks = [
            self.kernel.sock if self.kernel is not None else None,
            self.cache._dumper if self.cache is not None else None,
        ]
        got = [s for s in socks if s is not None]
        return {
            "marked": sum(s.interrupted for s in got),
            "taken": sum(s.accepted for s in got),
        }

    def _snapshot_status(self) -> dict[str, Any] | None:
        if self.snapshots is None:
            return None
        st = self.snapshots.stats
        return {
            "loaded_seq": st.loaded_seq,
            "refused": st.refused,
            "written": st.written,
            "last_written_seq": st.last_written_seq,
            "last_error": st.last_error,
        }

    def _envelopes(
        self, events: list[HostEvent], pass_id: str | None = None, start: int = 0
    ) -> list[Envelope]:
        """Envelopes of ``events``: numbered from ``start`` within their pass (one pass id for
        everything a pass reports, in as many parts as it is appended in)."""
        pass_id = pass_id or uuid.uuid4().hex
        now = time.time()
        return [
            Envelope(
                event=ev, event_id=f"{pass_id}:{i}", command_id=pass_id, time=now, actor=self.actor
            )
            for i, ev in enumerate(events, start)
        ]

    def _record(self, envs: list[Envelope]) -> None:
        """A pass's events: in our own record at once (the next pass knows what this one
        did), appended to the log after the pass (:meth:`_later`)."""
        self._fold_own(envs)

        async def append() -> None:
            await self._append(envs)

        self._later(append)

    def _fold_own(self, envs: list[Envelope]) -> None:
        """Our own record, at once (the follower's copy later is idempotent)."""
        for env in envs:
            self.view.book.apply(env)
            self.view.dhcp_book.apply(env)

    async def _publish(self, events: list[HostEvent]) -> int:
        """Append host events now; return the stream sequence of the last one."""
        envs = self._envelopes(events)
        last = await self._append(envs)
        self._fold_own(envs)
        return last

    async def _append(self, envs: list[Envelope]) -> int:
        """Append (only this executor writes its subjects: no OCC check) — a few one by one
        (publish-acks, ~0.3 ms each), more in atomic batches of up to 1,000 (a first pass over
        1,000 networks reports thousands of changes: one publish-ack each took 0.5 s). Retried
        through a failover with the same ids: never stored twice."""
        if self._unsent:  # what the log refused before goes first: the record's order
            envs, self._unsent = [*self._unsent, *envs], []
        if not envs:
            return 0
        last = 0
        groups = (
            [[e] for e in envs]
            if len(envs) <= FEW
            else [envs[i : i + MAX_BATCH] for i in range(0, len(envs), MAX_BATCH)]
        )
        for k, group in enumerate(groups):
            try:
                last = await self._append_group(group)
            except MaybeApplied:
                # The same ids were stored already (a retry after a lost ack): nothing twice.
                last = await last_seq(self.conn)
            except Exception as err:
                # Not in the log (or not known to be): kept, in order, for the next append —
                # our record holds them already, and nothing else would ever send them. Not
                # sightings: an observation stored later under a later sequence would pass for
                # one made after what came in between (an allocation: reclaim counts reports
                # by sequence); the reporter observes again instead (found by review).
                self._unsent = [
                    e for g in groups[k:] for e in g if not isinstance(e.event, _SIGHTINGS)
                ]
                if isinstance(err, LogUnavailable):
                    self._log_refused(err)
                raise
        if self.log_trouble is not None:
            log.warning("the log takes this host's events again")
            self.log_trouble = None
        if self.view.follower is not None and last and self.read_back_own:
            await self.view.follower.wait_for(last)
        return last

    async def _append_group(self, group: list[Envelope]) -> int:
        """One group (a message, or an atomic batch); the stream sequence of its last."""
        try:
            return await self._append_some(group)
        except DuplicateBatch:
            # Refused whole: one of its ids was stored before (an attempt whose answer was
            # lost), and nothing of it now — a sighting report at its end neither (review h106:
            # taken for stored, its observation was never in the log). One by one, each id is
            # deduplicated on its own: the stored answer their sequence, the rest are stored.
            last = 0
            for env in group:
                last = await self._append_some([env])
            return last

    async def _append_some(self, group: list[Envelope]) -> int:
        return await retrying(
            functools.partial(self._appender.append, build_messages(group), {}),
            f"appending {len(group)} host event(s)",
            wait=60.0,
        )

    def _log_refused(self, err: LogUnavailable) -> None:
        """Said once per episode (not a stack trace per pass); in the host's status meanwhile.
        Nothing is lost: the kernel is already right, and the refused events are appended first
        by the next append once the log takes writes again (every pass tries one)."""
        if self.log_trouble is None or self.log_trouble.get("code") != err.code:
            log.warning(
                "the log refuses this host's events [%s]: %s (they are appended, in order, once"
                " it takes writes again)",
                err.code,
                err.message,
            )
            self.log_trouble = {"code": err.code, "message": err.message, "since": time.time()}
        if not self._record_diverged and self.snapshots is not None:
            log.warning(
                "no view snapshot is written for the rest of this run: the record in memory"
                " holds events the log refused"
            )
        self._record_diverged = True

    def _later(self, job: Callable[[], Awaitable[Any]]) -> None:
        """Run ``job`` after the pass, in order with the other such jobs: publishing what a
        pass did must not hold the next change back from the kernel."""
        if self._outbox_task is None:
            self._outbox_task = asyncio.create_task(self._drain_outbox(), name="netledger-outbox")
        self._jobs += 1
        self._outbox.put_nowait(job)

    async def _drain_outbox(self) -> None:
        while True:
            job = await self._outbox.get()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except LogUnavailable:
                pass  # said by _log_refused, once
            except Exception:
                # Whatever failed (a connection closed, a failover outlasting the retries), our
                # record may now hold events the log never got: no view snapshot of it.
                self._record_diverged = True
                log.exception(
                    "reporting a pass failed (what did not go is appended first next time)"
                )
            finally:
                self._jobs -= 1
                self._outbox.task_done()

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait until what passes reported is in the log (and the liveness bucket)."""
        if self._outbox_task is not None:
            try:
                await asyncio.wait_for(self._outbox.join(), timeout)
            except TimeoutError:
                log.warning("reports still unsent after %.0fs", timeout)
