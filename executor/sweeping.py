"""The periodic drift sweep of a running executor, beside the passes of changes. A mixin of
:class:`~netledger.executor.daemon.Executor`.

Up to its verdict the sweep is a task of its own (:meth:`Sweeping._sweep_check`), which the
daemon's loop of passes waits for beside the changes: the dump of the kernel into the cache
and the read of the NAT tables and forwarding in worker threads, the check of the whole host
(executor/sweep.py) in slices of :data:`SLICE_S` on the event loop, dnsmasq looked at in a
worker thread. A change that comes meanwhile is applied by its own pass at once, between two
slices; what it looked at is ``_touched`` and the check's findings there are dropped. The
verdict (:meth:`Sweeping._sweep_end`) is taken when no change waits: nothing left, the sweep
ends there; anything left (drift), the whole pass runs at once on a fresh view, as every sweep
did before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from netledger.common import metrics

from .cache import KernelCache
from .converge import Converger
from .desired import HostConfig
from .dhcp import Dnsmasq
from .incremental import Fragments
from .kernel import Kernel
from .model import Op
from .options import Options, PassReport
from .slices import Slicing, in_slices
from .sweep import Swept, Touched, check_steps, left
from .view import HostView

log = logging.getLogger("netledger.executor")
#: seconds of the sweep's check on the event loop before it lets a change's pass run: what a
#: change that comes during a sweep waits for (at most about this, whatever the host's size)
SLICE_S = 0.002
#: and the loop's turn between two slices (executor/slices.py: ``in_slices``)
PAUSE_S = 0.0005


class Sweeping:
    """The periodic sweep (what :class:`Executor` sets up)."""

    cfg: HostConfig
    opts: Options
    view: HostView
    kernel: Kernel | None
    cache: KernelCache | None
    converger: Converger | None
    dnsmasq: Dnsmasq | None
    _frags: Fragments | None
    _snat: str | None
    _stop: asyncio.Event
    _dump_ms: float
    _touched: Touched | None
    _reported_failures: set[tuple[str, str, str]]

    def _pass_done(self, report: PassReport, reason: str, now: float, retry: bool) -> None: ...

    async def _sweep_check(self) -> Swept | None:
        """The sweep up to its verdict, beside the passes (None: the executor stops)."""
        cache, conv, kernel, f = self.cache, self.converger, self.kernel, self.view.follower
        assert cache is not None and conv is not None and kernel is not None and f is not None
        self._touched = Touched()  # from now on, the passes of changes say what they look at
        t0 = time.monotonic()
        await asyncio.to_thread(cache.resync)
        t1 = time.monotonic()
        self._dump_ms = round((t1 - t0) * 1000, 1)
        conv.dumped = True  # the whole pass, if it comes to that, need not dump again
        since = conv.host_writes
        read = await asyncio.to_thread(conv.read_host)
        cfg = self.cfg
        if cfg.snat_address is None and cfg.public_interface:
            ranges = [str(p.ipnet) for p in self.view.state.pools.values()]
            self._snat = await asyncio.to_thread(kernel.host_address, cfg.public_interface, ranges)
            cfg = dataclasses.replace(cfg, snat_address=self._snat)
        try:  # nothing of the share may have arrived for a while: confirm how far it reaches
            await f.catch_up(timeout=5.0)
        except Exception as exc:  # NATS away: the sweep works on what was folded
            log.debug("catch-up before a periodic sweep: %s", exc)
        assert self._frags is not None
        slicing = Slicing()
        steps = check_steps(
            self.view.state, self.view.book, cfg, self._frags.frags, read, cache.state_steps(None)
        )
        check = await in_slices(steps, SLICE_S, PAUSE_S, self._stop.is_set, slicing)
        if check is None:
            return None
        dhcp: tuple[Op, ...] = ()
        if self.dnsmasq is not None:
            book = self.view.dhcp_book  # copied here: the loop goes on folding into it
            dhcp = await asyncio.to_thread(
                self.dnsmasq.planned,
                check.desired.dhcp,
                check.actual,
                dict(book.running),
                dict(book.network),
            )
        return Swept(check, read, since, dhcp, slicing, t1)

    def _sweep_end(self, sweeping: asyncio.Task[Swept | None]) -> PassReport | None:
        """The sweep's verdict, taken when no change waits: its report, or None when it found
        something to do (the caller runs the whole pass now)."""
        touched, self._touched = self._touched, None
        conv, f = self.converger, self.view.follower
        assert conv is not None and f is not None
        failed = None if sweeping.cancelled() else sweeping.exception()
        if failed is not None:  # the whole pass dumps again if the dump was what failed
            log.warning("the periodic sweep failed before its verdict: %s", failed)
        swept = None if sweeping.cancelled() or failed is not None else sweeping.result()
        if swept is None or touched is None:
            return None
        found = left(swept, touched, conv.host_writes, conv.holds())
        if found.work:
            log.info(
                "the periodic sweep found something to do (%d operations, %d records to fix,"
                " %d networks, NAT/forwarding %s): the whole pass now",
                len(found.ops),
                len(found.fixes),
                len(found.differs),
                "changed" if found.host_drift else "as held",
            )
            return None
        conv.dumped = False
        now = time.monotonic()
        report = PassReport(
            applied_seq=f.position, conflicts=[f"{c.name}: {c.reason}" for c in found.conflicts]
        )
        for c in report.conflicts:
            log.warning("not applied: %s", c)
        report.duration_ms = round((now - swept.started) * 1000, 1)
        report.dump_ms, self._dump_ms = self._dump_ms, 0.0
        report.slice_ms = round(swept.slicing.longest * 1000, 2)
        if not touched:  # no operation fails now: a failure that comes back is told again
            self._reported_failures = set()
        metrics.executor_reconciled(self.cfg.host, report.applied_seq, 0, 0, report.duration_ms)
        self._pass_done(report, "periodic", now, retry=True)
        return report
