"""Reporting which instances this host sees, so the log can prove an instance gone.

An instance is *seen* on this host when its MAC is a learned (dynamic) entry in the forwarding
database of one of our bridges — the kernel learns it from the instance's own traffic — or holds
an unexpired lease in one of our dnsmasq lease files. The reporter appends
``HostInstancesSeen`` to the log only when that set (or the set of bridges read) changes — a
restart that finds the set of the host's last report in the log appends nothing. At least every
``heartbeat`` seconds it writes a *heartbeat* into the liveness bucket instead
(journal/liveness.py: "still the set of my report at seq N", with the set's digest): reclaiming
needs evidence *after* the grace period that still lacks the MAC (events/reclaim.py), and a
silent host proves nothing — but "nothing changed" is not a change, so it stays out of the log.

Caveat (docs/reclaim.md): a learned entry ages out after the bridge's ageing time (300 s by
default) of silence, so the grace must exceed the longest silence of a live instance; a DHCP
client renews at half its lease time, so with DHCP a grace above the lease time is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

from netledger.events.errors import LogUnavailable
from netledger.events.host_events import HostInstancesSeen
from netledger.events.reclaim_events import Heartbeat, macs_digest
from netledger.events.state import State
from netledger.journal.liveness import heartbeat_to_json, live_bucket, seen_key

from .kernel import Kernel
from .tasks import stop_task

log = logging.getLogger("netledger.executor.sightings")


class Executor(Protocol):
    """What the reporter uses of its running executor (executor/daemon.py's ``Executor``).

    Named here rather than imported: the daemon imports this module to start the reporter, and
    an import back would make the two a cycle."""

    conn: Any  # a journal Connection
    opts: Any  # the daemon's Options: netns, dhcp_paths, sightings_poll, sightings_heartbeat
    cfg: Any  # the host's HostConfig (``host``)
    sightings: SightingReporter | None

    @property
    def state(self) -> State: ...

    async def _publish(self, events: list[Any]) -> int: ...


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

    adopted = False  # (see __init__)

    def __init__(self, ex: Executor, poll: float, heartbeat: float) -> None:
        self.ex = ex
        self.poll = poll
        self.heartbeat = heartbeat
        self.last: Sighting | None = None
        self.last_at = 0.0
        self.reports = 0
        #: stream sequence of this host's newest report in the log (what heartbeats confirm)
        self.report_seq = 0
        self.heartbeats = 0
        #: observing without a break since (wall clock, as the reports): this run's start, or
        #: its last failure to observe or to report — what heartbeats say, so that no absence
        #: is counted across time nobody watched (found by review)
        self.since = time.time()
        #: a report failed: the next one appended is a start (no absence reaches back across it)
        self.broken = False
        #: this run adopted the log's newest report (appended nothing at its start): the next
        #: report appended is its first, a start — else nothing in the log marks the time
        #: before this run as unwatched, and an absence reached back across it (review hrev8)
        self.adopted = False
        self._kv: Any = None
        self._kv_missing_logged = False
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

    def _as_in_log(self, seen: Sighting) -> bool:
        """Whether the log's newest report of this host lists exactly ``seen`` (a restart with
        nothing changed: adopt that report instead of appending another)."""
        folded = self.ex.state.sightings.get(self.ex.cfg.host)
        if folded is None or not folded.reports:
            return False
        newest = folded.reports[-1]
        if folded.last_macs != seen.macs or newest.networks != seen.networks:
            return False
        self.report_seq = newest.seq
        return True

    async def report_once(self) -> bool:
        """Observe; append a report when the set changed (True), else heartbeat when due."""
        seen = await asyncio.to_thread(self.observe, self._bridges())
        now = time.monotonic()
        reason = should_report(self.last, seen, now - self.last_at, self.heartbeat)
        if reason == "start" and self._as_in_log(seen):
            self.last = seen
            self.adopted = True
            reason = "heartbeat"
        if self.broken and reason == "heartbeat":
            # What the log's newest report says may be older than what was seen since (a
            # report refused meanwhile): report afresh, as a start, never confirm it.
            reason = "start"
        if reason in ("start", "change"):
            ev = HostInstancesSeen(
                host=self.ex.cfg.host,
                macs=sorted(seen.macs),
                networks=sorted(seen.networks),
                reason="start" if self.broken or self.adopted else reason,
                leases=seen.leases,
            )
            self.report_seq = await self.ex._publish([ev])
            self.last, self.last_at = seen, now
            self.broken = self.adopted = False
            self.reports += 1
            return True
        if reason == "heartbeat" and await self._heartbeat(seen):
            self.last_at = now
        return False

    async def _heartbeat(self, seen: Sighting) -> bool:
        """ "Still the set of report ``report_seq``" into the liveness bucket (not the log)."""
        if not self.report_seq:
            return False
        if self._kv is None:
            self._kv = await live_bucket(self.ex.conn)
            if self._kv is None:
                if not self._kv_missing_logged:
                    log.warning(
                        "the liveness bucket does not exist yet (a command service creates"
                        " it): heartbeats wait for it"
                    )
                    self._kv_missing_logged = True
                return False
        hb = Heartbeat(
            host=self.ex.cfg.host,
            report_seq=self.report_seq,
            time=time.time(),
            digest=macs_digest(seen.macs),
            since=self.since,
        )
        await self._kv.put(seen_key(hb.host), heartbeat_to_json(hb))
        self.heartbeats += 1
        return True

    def _broke(self) -> None:
        """Observing or reporting failed: continuity ends here."""
        self.broken = True
        self.since = time.time()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.report_once()
                except asyncio.CancelledError:
                    raise
                except LogUnavailable:
                    # Not stored (the log is full or unavailable; the executor said why, once):
                    # the set stays unreported; the next report is a start, and heartbeats
                    # count from now (what was seen meanwhile is not in the log).
                    self._broke()
                except Exception:
                    # Never report a set we could not read: a partial view would look like
                    # absence. The next poll tries again.
                    log.exception("reading the instances seen on this host failed")
                    self._broke()
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
    """Cancel the reporter and wait until it has stopped (executor/tasks.py)."""
    await stop_task(task)
