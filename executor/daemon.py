"""The executor daemon: follow the log, reconcile the kernel, log what changed.

One pass: build the desired state from the folded log (in the event loop, where the fold lives),
then — in a worker thread — read the kernel, diff, apply, read back, up to three rounds. What was
applied becomes host events on ``netledger.evt.host.<host>`` (the translation, drift repairs and
the record kept equal to the kernel, is executor/host_report.py); this module owns the lifecycle,
the loop and converging; publishing what a pass did is executor/reports.py, the options and the
pass report executor/options.py.

Passes run at start (recovery: the whole log is replayed), after changes (debounced), and every
``interval`` seconds (drift repair). ``HostReconciled`` is appended only when a pass changed
something or the desired state changed: an idle host appends nothing to the log. Its liveness —
the last pass's time, applied sequence, changes and failures — goes into the liveness bucket
(``host.<host>.status``, journal/liveness.py) after every pass that changed something and at
least every ``heartbeat`` seconds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from netledger.common import metrics
from netledger.events.codec import Actor, Envelope
from netledger.events.errors import LogRegression, NetledgerError
from netledger.events.host_events import (
    HostAnnounced,
    HostApplyFailed,
    HostEvent,
    HostReconciled,
)
from netledger.events.state import State
from netledger.journal.append import Appender
from netledger.journal.follow import Follower
from netledger.journal.stream import Connection

from .cache import KernelCache
from .converge import Converger
from .desired import HostConfig
from .dhcp import DhcpBook, Dnsmasq, dhcp_events
from .errors import ExecutorError, NotPermitted
from .host_report import applied_events, record_fixes, space_only
from .hosts import HostBook
from .incremental import Fragments, PassPlan, Watched, full_plan, incremental_plan
from .kernel import Kernel, OpResult
from .model import HostActual, HostDesired, NatTable
from .netlink import check_netns
from .options import Options, PassReport
from .reports import Reports
from .sightings import SightingReporter, start_reporter, stop_reporter
from .snapshot import SETTLE_PAUSE_S, SETTLE_TRIES, ViewSnapshots
from .sweep import Swept, Touched
from .sweeping import Sweeping
from .tasks import stop_task
from .view import HostView

log = logging.getLogger("netledger.executor")
#: seconds an append of host events may take before it ends with the log's error
APPEND_BUDGET_S = 10.0
MAX_ROUNDS = 3


class ApplyIncomplete(ExecutorError):
    code = "apply_incomplete"


class Executor(Reports, Sweeping):
    def __init__(self, conn: Connection, cfg: HostConfig, opts: Options | None = None) -> None:
        self.conn = conn
        self.cfg = cfg
        self.opts = opts or Options()
        #: the fold of this host's share of the log (executor/view.py)
        self.view = HostView(
            conn,
            cfg.host,
            network_host=cfg.network_host,
            share=self.opts.share,
            on_change=self._dirty_set,
            heartbeat=self.opts.follow_heartbeat,
        )
        self.dnsmasq: Dnsmasq | None = None
        if self.opts.dhcp_paths is not None:
            self.dnsmasq = Dnsmasq(self.opts.dhcp_paths, self.opts.netns, self.opts.dhcp_script)
        self.actor = Actor(project=None, role="system", user=f"executor:{cfg.host}")
        self.kernel: Kernel | None = None
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_pass_end = 0.0  # loop time
        self._reported_failures: set[tuple[str, str, str]] = set()
        self.passes = 0
        #: the last periodic dump of the kernel (ms), told with the sweep that follows it
        self._dump_ms = 0.0
        #: while a periodic sweep's check runs: what the passes of changes look at meanwhile
        #: (executor/sweep.py: its findings there are stale)
        self._touched: Touched | None = None
        #: the periodic sweep up to its verdict, beside the passes (executor/sweeping.py)
        self._sweep_task: asyncio.Task[Swept | None] | None = None
        self.sightings: SightingReporter | None = None
        self.started_at = time.time()
        self._kv: Any = None
        self._status_at = float("-inf")  # monotonic time of the last status written
        #: the host's links/addresses/flood entries kept current by netlink notifications
        self.cache: KernelCache | None = None
        self.converger: Converger | None = None
        self._in_pass = False
        self._kernel_dirty = False
        #: a budget: when the log cannot store (full, latched, no quorum) an append ends with
        #: log_storage_full / log_unavailable in seconds instead of retrying blind (issue 16)
        self._appender = Appender(conn, budget=APPEND_BUDGET_S)
        #: the log's last refusal of this host's events, until an append succeeds again
        self.log_trouble: dict[str, Any] | None = None
        #: what passes report, sent in order after them (executor/reports.py: _later)
        self._outbox: asyncio.Queue[Callable[[], Awaitable[Any]]] = asyncio.Queue()
        self._outbox_task: asyncio.Task[None] | None = None
        #: an append waits until the follower has read it back (the next pass then works on a
        #: log that holds it); off for ``--once``, which ends after its pass
        self.read_back_own = True
        #: the desired state of every network that needs something here, as of the last pass
        self._frags: Fragments | None = None
        self._nat: NatTable | None = None
        self._snat: str | None = None
        #: the view's snapshots (executor/snapshot.py): a restart reads only the tail
        self.snapshots: ViewSnapshots | None = None
        if self.opts.snapshot_path is not None:
            self.snapshots = ViewSnapshots(
                conn,
                self.opts.snapshot_path,
                self.view.kind,
                every=self.opts.snapshot_every,
                load=self.opts.snapshot_load,
            )
        self._snapshot_task: asyncio.Task[None] | None = None
        #: outbox jobs queued or running: while any, our record holds events not yet in the log
        self._jobs = 0
        #: the log refused some of our events: the record in memory is no longer the fold of
        #: the log, so no snapshot of it is written for the rest of this run
        self._record_diverged = False
        self._unsent: list[Envelope] = []

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if os.geteuid() != 0:
            raise NotPermitted(
                "the executor changes the kernel's network state and must run as root"
            )
        check_netns(self.opts.netns)
        try:
            self.kernel = Kernel(self.opts.netns, self.opts.chunk_size, self.opts.pause)
        except PermissionError as exc:
            raise NotPermitted(f"cannot open a netlink socket: {exc}") from None
        loop = asyncio.get_running_loop()

        def changed() -> None:  # from the cache's reader thread
            try:
                loop.call_soon_threadsafe(self._kernel_changed)
            except RuntimeError:  # the loop closed: the reader outlives it by up to its poll
                pass

        cache = KernelCache(self.opts.netns, on_change=changed, live=self.opts.live_kernel)
        await asyncio.to_thread(cache.start)
        self.cache = cache
        self.converger = Converger(self.kernel, cache)
        if self.snapshots is not None:
            snap = await self.snapshots.load()
            if snap is not None:
                self.view.restore(snap)
        await self.view.start()
        await self.announce()

    def _kernel_changed(self) -> None:
        """The kernel changed, and not by the pass running now (its own changes are settled
        into the state it read last): something else did it — look."""
        if self._in_pass or self.converger is None:
            return
        if self.cache is not None and self.cache.changes > self.converger.seen_changes:
            self._kernel_dirty = True
            self._dirty.set()

    # The fold lives in the view; these names are what the passes (and sightings) read.
    @property
    def state(self) -> State:
        return self.view.state

    @property
    def book(self) -> HostBook:
        return self.view.book

    @property
    def dhcp_book(self) -> DhcpBook:
        return self.view.dhcp_book

    @property
    def follower(self) -> Follower | None:
        return self.view.follower

    def _dirty_set(self) -> None:
        self._dirty.set()

    async def close(self) -> None:
        await self.flush()
        if self._snapshot_task is not None:
            # Let a snapshot being written finish (a forked child, then a rename): bounded.
            await asyncio.wait([self._snapshot_task], timeout=30.0)
            await stop_task(self._snapshot_task)
            self._snapshot_task = None
        if self._outbox_task is not None:
            await stop_task(self._outbox_task)
            self._outbox_task = None
        await self.view.close()
        if self.cache is not None:
            await asyncio.to_thread(self.cache.close)
            self.cache = None
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None

    def stop(self) -> None:
        self._stop.set()

    # --- announcing -----------------------------------------------------------------------

    async def announce(self) -> None:
        cfg = self.cfg
        vtep = cfg.vtep_address
        if vtep is None and cfg.physical_interface and self.kernel is not None:
            vtep = await asyncio.to_thread(self.kernel.vtep_address, cfg.physical_interface)
        if vtep != cfg.vtep_address:
            self.cfg = cfg = dataclasses.replace(cfg, vtep_address=vtep)
        ev = HostAnnounced(
            host=cfg.host,
            vtep_address=vtep,
            physical_interface=cfg.physical_interface,
            public_interface=cfg.public_interface,
            network_host=cfg.network_host,
        )
        # Also when the log has it only on the host's own subject (a stream from before
        # announcements had theirs): the other hosts read announcements, not host subjects.
        if self.book.announced.get(cfg.host) != ev or self.view.legacy_announcement:
            await self._publish([ev])
            self.view.legacy_announcement = False

    # --- passes ----------------------------------------------------------------------------

    async def run_once(self) -> PassReport:
        assert self.follower is not None
        await self.view.sync()
        # Due (many events read since the snapshot it started from, or from the start of the
        # log): the fold as of this sync point, before the pass — whose own report is not
        # read back — is written while the pass runs (a forked child encodes it).
        if self.snapshots is not None and self._snapshot_due():
            await self.snapshots.created()  # asked before: the task's first step never waits
            self._snapshot_task = asyncio.create_task(
                self._snapshot(), name="netledger-view-snapshot"
            )
            await asyncio.sleep(0)  # its first step takes the image now, at the sync point
        if not self.read_back_own:
            # The process ends after this pass: reading on would only fold what others (and
            # this pass's own report, 2,000 events after a first pass over 1,000 networks)
            # append meanwhile — CPU taken from the pass and from appending its report.
            await self.view.stop_following()
        report = await self.reconcile("start")
        await self.flush()
        if self._snapshot_task is not None:
            await self._snapshot_task
            self._snapshot_task = None
        return report

    async def _watch_log(self) -> None:
        """Stop the daemon (not stall, not re-apply) if the log goes back under it."""
        assert self.follower is not None
        try:
            await self.follower.watch(self.opts.watch_interval)
        except LogRegression as exc:
            log.critical("%s", exc.message)
            self._dirty.set()  # wake the loop, which raises the follower's failure

    async def run_forever(self) -> None:
        watch = asyncio.create_task(self._watch_log(), name="netledger-executor-watch")
        reporter = start_reporter(self)
        try:
            await self._run_forever()
        finally:
            await stop_task(self._sweep_task)  # stopped: already done; cancelled: cancel it
            self._sweep_task = None
            await stop_task(watch)
            await stop_reporter(reporter)

    async def _run_forever(self) -> None:
        await self.reconcile("start")
        self._maybe_snapshot()
        if self.opts.freeze_gc:
            # What the start loaded (modules, the fold, the caches) lives as long as the
            # daemon: out of the collector's generations, so that a full collection does not
            # walk it all again in the middle of a change on its way to the kernel.
            gc.freeze()
        await self._passes()

    async def _passes(self) -> None:
        """A pass after every change, and the periodic sweep every --interval seconds."""
        loop = asyncio.get_running_loop()
        next_periodic = loop.time() + self.opts.interval
        # The sweep runs beside the passes up to its verdict (executor/sweeping.py): its dump
        # of the kernel in a worker thread, its check of the whole host in slices on the loop.
        # A change that comes meanwhile is applied at once instead of waiting for it.
        while not self._stop.is_set():
            sweeping = self._sweep_task
            timeout = None if sweeping is not None else max(0.0, next_periodic - loop.time())
            dirty = asyncio.ensure_future(self._dirty.wait())
            stop = asyncio.ensure_future(self._stop.wait())
            waits: set[asyncio.Future[Any]] = {dirty, stop}
            if sweeping is not None:
                waits.add(sweeping)
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (dirty, stop):
                    t.cancel()
                await asyncio.gather(dirty, stop, return_exceptions=True)
            if self._stop.is_set():
                if sweeping is not None:  # it stops between two slices
                    await asyncio.gather(sweeping, return_exceptions=True)
                break
            if self.follower is not None and self.follower.failure is not None:
                if isinstance(self.follower.failure, NetledgerError):
                    raise self.follower.failure
                raise ExecutorError(f"log reader failed: {self.follower.failure}")
            if self._dirty.is_set():
                # Leading-edge debounce (off by default): an isolated change is applied at once
                # (it is the command-to-kernel latency); within `debounce` of the previous pass
                # the rest is waited out.
                await asyncio.sleep(
                    max(0.0, self._last_pass_end + self.opts.debounce - loop.time())
                )
                reason = "change"
            elif sweeping is not None:
                if not sweeping.done():
                    continue
                next_periodic = loop.time() + self.opts.interval
                # No change waits (the branch above): the verdict is taken now, at once.
                self._sweep_task = None
                if self._sweep_end(sweeping) is not None:
                    self._last_pass_end = loop.time()
                    self._maybe_snapshot()
                    continue
                reason = "periodic"  # it found something to do: the whole pass, now
            elif self.cache is not None and self.opts.live_kernel:
                self._sweep_task = asyncio.create_task(
                    self._sweep_check(), name="netledger-executor-sweep"
                )
                continue
            else:
                reason = "periodic"
                next_periodic = loop.time() + self.opts.interval
            try:
                await self.reconcile(reason)
            except NetledgerError as exc:
                log.error("reconcile failed: [%s] %s", exc.code, exc.message)
            self._last_pass_end = loop.time()
            self._maybe_snapshot()

    # --- the view's snapshot ------------------------------------------------------------------

    def _snapshot_due(self) -> bool:
        f = self.follower
        return (
            self.snapshots is not None
            and f is not None
            and not self._record_diverged
            and (self._snapshot_task is None or self._snapshot_task.done())
            and self.snapshots.due(f.handled)
        )

    def _maybe_snapshot(self) -> None:
        """After a pass: write a snapshot of the view when enough was read since the last."""
        if self._snapshot_due():
            self._snapshot_task = asyncio.create_task(
                self._snapshot(), name="netledger-view-snapshot"
            )

    def _settled(self) -> bool:
        """The fold, the record and the view's bookkeeping are the log's fold up to the
        follower's position: every report of ours appended and read back (no outbox job
        left), no resubscription filling a network in."""
        return self._jobs == 0 and not self._record_diverged and self.view.settled()

    async def _snapshot(self) -> None:
        snaps = self.snapshots
        assert snaps is not None
        read = 0
        try:
            created = await snaps.created()
            for _ in range(SETTLE_TRIES):
                if self._settled():
                    break
                await asyncio.sleep(SETTLE_PAUSE_S)
            else:
                log.info("view snapshot postponed: the view did not settle (next pass tries)")
                return
            f = self.follower
            assert f is not None
            read = f.handled
            # No await between the check above and the image (taken before write's first wait).
            await snaps.write(self.state, f.position, read, self.view.snapshot_extra, created)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never fatal: the next start reads more of the log, that's all
            snaps.stats.last_error = f"{exc.__class__.__name__}: {exc}"
            if read:
                snaps.read_at_last = read  # not again at every pass: after as many reads
            log.warning("writing the view snapshot %s failed: %s", snaps.path, exc)

    async def reconcile(self, reason: str) -> PassReport:
        assert self.kernel is not None and self.follower is not None
        t0 = time.monotonic()
        self._dirty.clear()
        cfg = self.cfg
        # The first pass and the periodic sweep read the whole host again: the safety net for
        # whatever a notification could have missed. Other passes look only at the networks
        # the folded events touched (executor/incremental.py).
        full = reason in ("start", "periodic")
        if cfg.snat_address is None and cfg.public_interface:
            if full or self._snat is None:
                ranges = [str(p.ipnet) for p in self.state.pools.values()]
                self._snat = await asyncio.to_thread(
                    self.kernel.host_address, cfg.public_interface, ranges
                )
            cfg = dataclasses.replace(cfg, snat_address=self._snat)
        if reason == "periodic":
            # Nothing of the share may have arrived for a while: confirm how far it reaches.
            try:
                await self.follower.catch_up(timeout=5.0)
            except Exception as exc:  # NATS away: the pass works on what was folded
                log.debug("catch-up before a periodic pass: %s", exc)
        applied_seq = self.follower.position
        # The kernel changed behind our back: diff the whole host (against the cache).
        plan = self._plan_pass(cfg, full, drift=self._kernel_dirty)
        desired, scope, changed = plan.desired, plan.scope, plan.changed
        if self._touched is not None:  # a sweep's check runs: what this pass looks at is ours
            self._touched.add(scope)
        assert self.converger is not None
        drift = self._kernel_dirty
        self._kernel_dirty = False
        self._in_pass = True
        pass_id = uuid.uuid4().hex
        #: what the report already holds: the events of each round, appended while the
        #: worker thread reads the kernel back (a first pass over 1,000 networks: its 2,000
        #: events, ~70 ms of appending, no longer after the ~75 ms read-back but beside it)
        reported: list[HostEvent] = []
        reported_ops: set[int] = set()
        loop = asyncio.get_running_loop()
        #: the NAT table's fixed ranges are the registry's (HostNatApplied.fixed_space)
        follows = not cfg.fixed_range

        def report_round(round_results: list[OpResult]) -> None:  # on the loop
            evs = applied_events(cfg.host, self.book, plan.prev, round_results, follows)
            reported_ops.update(id(r) for r in round_results)
            if not evs:
                return
            self._record(self._envelopes(evs, pass_id, len(reported)))
            reported.extend(evs)

        def applied(round_results: list[OpResult]) -> None:  # in the worker thread
            loop.call_soon_threadsafe(report_round, round_results)

        try:
            if scope is None:
                # The loop runs report_round before it resumes this coroutine: callbacks
                # from the thread are queued ahead of the thread's result.
                results, conflicts, final = await asyncio.to_thread(
                    self.converger.converge, desired, full, scope, applied
                )
            else:
                # A few networks: milliseconds of netlink, done on the loop's own thread. A
                # worker thread has to win the GIL from the loop first (up to a switch
                # interval, 5 ms, when the loop is busy folding): the command's latency.
                results, conflicts, final = self.converger.converge(desired, full, scope)
        finally:
            self._in_pass = False
            if self.converger.outside:
                # Changed while it ran, outside what it looked at (its count covers it).
                self._kernel_dirty = True
                self._dirty.set()
            # Changed after the state this pass read last (ignored while it ran): look again.
            self._kernel_changed()
        if drift:
            log.info("the kernel changed behind our back: repaired what was ours")
        dhcp_done = (
            # The book copied here, on the loop: it goes on folding into it while the worker
            # thread plans (the sweep copies it alike; a fold changing a dict being iterated
            # raised there, and the error stopped the daemon: found by review).
            await asyncio.to_thread(self._dhcp, desired, final, plan.bridges, self._book_copy())
            if self.dnsmasq is not None
            else []
        )
        results.extend(r for r, _ in dhcp_done)
        report = PassReport(
            applied_seq=applied_seq,
            results=results,
            conflicts=[f"{c.name}: {c.reason}" for c in conflicts],
        )
        rest = [r for r in results if id(r) not in reported_ops]
        events = applied_events(self.cfg.host, self.book, plan.prev, rest, follows)
        if scope is None:  # the record checked against the kernel (the book holds `reported`)
            events.extend(record_fixes(self.cfg.host, self.book, desired, events, final, follows))
        events.extend(dhcp_events(cfg.host, dhcp_done))
        report.changes = sum(1 for r in results if r.ok)
        report.drift_repairs = sum(1 for e in (*reported, *events) if getattr(e, "drift", False))
        failures = {(type(r.op).__name__, r.op.target(), r.error or "") for r in report.failures}
        said: set[tuple[str, str, str]] = set()
        for r in report.failures:
            key = (type(r.op).__name__, r.op.target(), r.error or "")
            # Once per distinct failure: a pass may try an operation again in a later round
            # (the same failure three times in one pass was three events).
            if key not in self._reported_failures and key not in said:
                said.add(key)
                events.append(
                    HostApplyFailed(
                        host=cfg.host,
                        operation=key[0],
                        target=key[1],
                        error=key[2],
                        errno=r.errno or None,
                    )
                )
            log.warning("%s %s failed: %s", key[0], key[1], key[2])
        for c in report.conflicts:
            log.warning("not applied: %s", c)
        now = time.monotonic()
        report.duration_ms = round((now - t0) * 1000, 1)
        if reason == "periodic":
            report.dump_ms, self._dump_ms = self._dump_ms, 0.0
        # A change, not the passing of time: nothing is appended when nothing changed (the
        # first pass after a restart included); liveness goes to the liveness bucket. Nor
        # when only the registry's fixed ranges grew (a network created anywhere: every NAT
        # host's set takes it; its record says "the registry's ranges", still true).
        if reported or events or (changed and not (follows and space_only(plan.prev, desired))):
            events.append(
                HostReconciled(
                    host=cfg.host,
                    applied_seq=applied_seq,
                    changes=report.changes,
                    drift_repairs=report.drift_repairs,
                    duration_ms=report.duration_ms,
                )
            )
        metrics.executor_reconciled(
            cfg.host, applied_seq, report.changes, report.drift_repairs, report.duration_ms
        )
        for r in report.failures:
            metrics.executor_failed(cfg.host, type(r.op).__name__)
        self._reported_failures = failures if scope is None else self._reported_failures | failures
        self._commit_pass(plan)
        report.events = len(reported) + len(events)
        if events:
            self._record(self._envelopes(events, pass_id, len(reported)))
        self._pass_done(report, reason, now, retry=not events)
        if report.changes:
            log.info(
                "%s pass: %d changes (%d drift repairs) in %.1f ms, log at %d",
                reason,
                report.changes,
                report.drift_repairs,
                report.duration_ms,
                applied_seq,
            )
        return report

    def _pass_done(self, report: PassReport, reason: str, now: float, retry: bool) -> None:
        """Count the pass, complete its report, write the status when due (after a pass that
        appends, changed the kernel or failed, and at least every heartbeat); ``retry``: append
        what the log refused before (tried again after every pass that appends nothing new)."""
        assert self.follower is not None
        self.passes += 1
        report.events_read = self.follower.handled
        report.snapshot_seq = self.snapshots.stats.loaded_seq if self.snapshots else None
        report.share_networks = len(self.view.networks) if self.opts.share else None
        if retry and self._unsent:
            self._later(functools.partial(self._append, []))
        # A pass that changed the kernel says so even when it appended nothing (a set of fixed
        # ranges that took the registry's new networks): else `status` counted the registry's
        # events since its last status as not applied, until the heartbeat.
        if (
            report.events
            or report.changes
            or report.failures
            or now - self._status_at >= self.opts.heartbeat
        ):
            self._status_at = now

            async def status() -> None:
                await self._put_status(report, reason)

            self._later(status)

    def _plan_pass(self, cfg: HostConfig, full: bool, drift: bool = False) -> PassPlan:
        """What a pass diffs: everything, or only the networks the folded events touched."""
        dirty = self.view.take_dirty()
        before = None if self._frags is None else self._frags.frags
        if full or dirty is None or self._frags is None:
            return full_plan(self.state, self.book, cfg, before, nat=self._nat)
        if drift:
            return full_plan(self.state, self.book, cfg, before, dirty, nat=self._nat)
        return incremental_plan(self.state, self.book, cfg, self._frags, dirty, self._nat)

    def _commit_pass(self, plan: PassPlan) -> None:
        if plan.fragments is not None:
            self._frags = plan.fragments
            if self.cache is not None:
                # From now on a change of a link not ours that no fragment names (a tap) calls
                # for no pass; an incremental pass updates the fragments' names in place.
                self.cache.watched = Watched(self.cfg, plan.fragments)
        elif plan.updates is not None and self._frags is not None:
            self._frags.update(plan.updates)
        self._nat = plan.nat

    def _book_copy(self) -> DhcpBook:
        b = self.dhcp_book
        return DhcpBook(me=b.me, running=dict(b.running), network=dict(b.network))

    def _dhcp(
        self,
        desired: HostDesired,
        final: HostActual,
        bridges: set[str] | None = None,
        book: DhcpBook | None = None,
    ) -> list[tuple[OpResult, int | None]]:
        """dnsmasq after the kernel: it binds the gateway address the kernel pass adds
        (``book``: a copy of the DHCP book when this runs in a worker thread)."""
        if self.dnsmasq is None:
            return []
        return self.dnsmasq.reconcile(desired.dhcp, final, book or self.dhcp_book, bridges)


async def run_executor(
    conn: Connection, cfg: HostConfig, opts: Options, once: bool
) -> PassReport | None:
    if once:
        # One pass: read the kernel back after it. Following notifications instead costs more
        # than the read-back (1,000 networks from empty: the kernel's apply 0.42 -> 0.75 s
        # with a listener to queue them for, against a 0.11-0.16 s dump).
        opts = dataclasses.replace(opts, live_kernel=False)
    ex = Executor(conn, cfg, opts)
    if once:
        # The process ends after this pass: its acks prove the report stored, and reading it
        # back (2,000 events after a first pass over 1,000 networks) would only delay the exit.
        ex.read_back_own = False
    try:
        await ex.start()
        if once:
            report = await ex.run_once()
            if report.failures:
                raise ApplyIncomplete(
                    f"{len(report.failures)} operation(s) failed: "
                    + "; ".join(
                        f"{type(r.op).__name__} {r.op.target()}: {r.error}" for r in report.failures
                    ),
                    failures=len(report.failures),
                )
            return report
        import signal

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, ex.stop)
        await ex.run_forever()
        return None
    finally:
        await ex.close()
