"""Reporting which instances this host sees, so the log can prove an instance gone.

An instance is *seen* on this host when its MAC is a learned (dynamic) entry in the forwarding
database of one of our bridges — the kernel learns it from the instance's own traffic — or holds
an unexpired lease in one of our dnsmasq lease files. The reporter appends
``HostInstancesSeen`` when that set (or the set of bridges read) changes, and at least every
``heartbeat`` seconds even when nothing changed: reclaiming needs a report *after* the grace
period that still lacks the MAC (events/reclaim.py), and a silent host proves nothing.

Caveat (docs/reclaim.md): a learned entry ages out after the bridge's ageing time (300 s by
default) of silence, so the grace must exceed the longest silence of a live instance; a DHCP
client renews at half its lease time, so with DHCP a grace above the lease time is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from netledger.events.host_events import HostInstancesSeen

from .kernel import Kernel

if TYPE_CHECKING:
    from .daemon import Executor

log = logging.getLogger("netledger.executor.sightings")


@dataclass(frozen=True)
class Sighting:
    macs: frozenset[str]
    networks: frozenset[str]
    leases: int


def read_leases(path: str, now: float) -> set[str]:
    """MACs with an unexpired lease in a dnsmasq lease file (``expiry mac ip name id`` lines;
    expiry 0 means infinite). A missing or unreadable file is no lease."""
    out: set[str] = set()
    try:
        with open(path) as f:
            lines = f.readlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        expiry = int(parts[0])
        if expiry == 0 or expiry > now:
            out.add(parts[1].lower())
    return out


def should_report(last: Sighting | None, now: Sighting, since_last: float, heartbeat: float) -> str:
    """Why to report now ("" = not now)."""
    if last is None:
        return "start"
    if now != last:
        return "change"
    if since_last >= heartbeat:
        return "heartbeat"
    return ""


class SightingReporter:
    """Owned by a running executor (``run_forever``): polls, reports, stops with it."""

    def __init__(self, ex: Executor, poll: float, heartbeat: float) -> None:
        self.ex = ex
        self.poll = poll
        self.heartbeat = heartbeat
        self.last: Sighting | None = None
        self.last_at = 0.0
        self.reports = 0
        # Its own netlink socket: the reconcile pass uses the executor's in another thread.
        self.kernel = Kernel(ex.opts.netns)

    def _bridges(self) -> dict[str, set[str]]:
        """Bridge name -> the live networks on it (read in the event loop, where the fold is)."""
        out: dict[str, set[str]] = {}
        for n in self.ex.state.live_networks():
            out.setdefault(n.net.bridge, set()).add(n.network_id)
        return out

    def observe(self, bridges: dict[str, set[str]]) -> Sighting:
        ours = {
            link.name
            for link in self.kernel.read_links()
            if link.ours and link.kind == "bridge" and link.name in bridges
        }
        macs = self.kernel.read_learned_macs(ours)
        leased: set[str] = set()
        paths = self.ex.opts.dhcp_paths
        if paths is not None:
            now = time.time()
            for b in sorted(ours):
                leased |= read_leases(paths.file(b, "leases"), now)
        networks = {nid for b in ours for nid in bridges[b]}
        return Sighting(frozenset(macs | leased), frozenset(networks), len(leased))

    async def report_once(self) -> bool:
        seen = await asyncio.to_thread(self.observe, self._bridges())
        now = time.monotonic()
        reason = should_report(self.last, seen, now - self.last_at, self.heartbeat)
        if not reason:
            return False
        ev = HostInstancesSeen(
            host=self.ex.cfg.host,
            macs=sorted(seen.macs),
            networks=sorted(seen.networks),
            reason=reason,
            leases=seen.leases,
        )
        await self.ex._publish([ev])
        self.last, self.last_at = seen, now
        self.reports += 1
        return True

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.report_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Never report a set we could not read: a partial view would look like
                    # absence. The next poll tries again.
                    log.exception("reading the instances seen on this host failed")
                await asyncio.sleep(self.poll)
        finally:
            self.kernel.close()


def start_reporter(ex: Executor) -> asyncio.Task[None] | None:
    poll = ex.opts.sightings_poll
    if not poll:
        return None
    r = SightingReporter(ex, poll, ex.opts.sightings_heartbeat)
    ex.sightings = r
    return asyncio.create_task(r.run(), name="netledger-executor-sightings")


async def stop_reporter(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
