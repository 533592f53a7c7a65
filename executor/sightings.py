"""Reporting which instances this host sees, so the log can prove an instance gone.

An instance is *seen* on this host when its MAC is a learned (dynamic) entry in the forwarding
database of one of our bridges — the kernel learns it from the instance's own traffic — or holds
an unexpired lease in one of our dnsmasq lease files. The reporter appends
a report to the log only when that set (or the set of bridges read) changes — a restart that
finds the set of the host's last report in the log appends nothing. A report carries what
changed since the one before (``HostInstancesChanged``: a MAC or two, where the whole set of a
host of 200 instances was ~3.8 KB) when the reporter knows that one is the log's newest report
of the host; the whole set (``HostInstancesSeen``) at a start, after a failure, after an append
whose stored sequence it does not know, when the change is not smaller than the set, and at
least every ``FULL_EVERY`` reports (docs/reclaim.md: a reader that lost a change's base holds a
set again from there). At least every
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
from netledger.events.host_events import FULL_EVERY, HostInstancesChanged, HostInstancesSeen
from netledger.events.reclaim_events import Heartbeat, macs_digest
from netledger.events.state import State
from netledger.journal.liveness import heartbeat_to_json, live_bucket, seen_key

from .kernel import Kernel
from .model import is_ours
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


def report_of(
    host: str, last: Sighting | None, base_seq: int, seen: Sighting, reason: str
) -> HostInstancesSeen | HostInstancesChanged:
    """The report of ``seen``: what changed since ``last`` (the set of this host's report at
    ``base_seq``, the log's newest: 0 when not known), or the whole set (a start, no base, or
    a change not smaller than the set)."""
    if reason == "change" and last is not None and base_seq:
        added, removed = seen.macs - last.macs, last.macs - seen.macs
        if len(added) + len(removed) < len(seen.macs):
            return HostInstancesChanged(
                host=host,
                base_seq=base_seq,
                added=sorted(added),
                removed=sorted(removed),
                networks_added=sorted(seen.networks - last.networks),
                networks_removed=sorted(last.networks - seen.networks),
                leases=seen.leases,
            )
    return HostInstancesSeen(
        host=host,
        macs=sorted(seen.macs),
        networks=sorted(seen.networks),
        reason=reason,
        leases=seen.leases,
    )


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


#: How far the wall clock may move against the monotonic one between two polls before it counts
#: as set (a step), not slewed: NTP slews at most 500 ppm, 2.5 ms a 5 s poll. Reports and
#: heartbeats carry the wall clock and reclaim measures the grace as a difference of them: a
#: clock set forward by hours while the executor ran made a minute's absence look hours long
#: (found by review h131), so a step breaks continuity as a failure to observe does.
CLOCK_STEP_S = 1.0


def clock_offset() -> float:
    """The wall clock less the monotonic one: constant but for slewing, until the clock is set
    (or the machine was suspended: the monotonic clock does not count it)."""
    return time.time() - time.monotonic()


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
    changes = 0
    #: :func:`clock_offset` at the previous poll (None before the first)
    offset: float | None = None

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
        #: reports appended as changes since the last whole set (at most FULL_EVERY - 1)
        self.changes = 0
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
        # One dump of the bridges alone (the kernel filters by kind), their names and indexes
        # from the same read. It was two dumps of every link, each decoded whole: at 1,200
        # networks 172 ms of CPU a poll against 62 now, in a worker thread that holds the
        # interpreter from the event loop meanwhile (a change's pass waited for it).
        found = {
            x.name: x.ifindex
            for x in self.kernel.read_bridges()
            if x.name in bridges and is_ours(x.alias)
        }
        ours = set(found)
        macs = self.kernel.read_learned_macs(set(found.values()))
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

    def _base(self) -> int:
        """The sequence of our last report when a change may be relative to it: this
        executor's fold of the log (its own subject, read back after each append) holds it as
        the host's newest report, with the set and networks we reported; else 0 (a whole set).

        Asked of the fold rather than of the append: an append retried over a lost
        acknowledgement returns the log's last sequence, not necessarily the report's, and only
        the fold knows that nothing else was reported on this subject since (another executor
        of the same host name, a restart)."""
        last = self.last
        if not self.ex.opts.sighting_changes:
            return 0
        if last is None or not self.report_seq or self.changes >= FULL_EVERY - 1:
            return 0
        folded = self.ex.state.sightings.get(self.ex.cfg.host)
        if folded is None or folded.last_seq != self.report_seq:
            return 0
        if folded.last_macs != last.macs or folded.reports[-1].networks != last.networks:
            return 0
        return self.report_seq

    async def report_once(self) -> bool:
        """Observe; append a report when the set changed (True), else heartbeat when due."""
        seen = await asyncio.to_thread(self.observe, self._bridges())
        offset = clock_offset()
        if self.offset is not None and abs(offset - self.offset) > CLOCK_STEP_S:
            log.warning(
                "the wall clock moved %.1f s against the monotonic one (set, or the host was"
                " suspended): what was observed before does not count on past it",
                offset - self.offset,
            )
            self._broke()
        self.offset = offset
        now = time.monotonic()
        reason = should_report(self.last, seen, now - self.last_at, self.heartbeat)
        if reason == "start" and self._as_in_log(seen):
            self.last = seen
            self.adopted = True
            reason = "heartbeat"
        if (
            reason == "heartbeat"
            and self.report_seq
            and self.ex.cfg.host not in self.ex.state.sightings
        ):
            # The log's fold forgot this host (a change whose base it did not hold, e.g. one
            # stored twice): no heartbeat confirms a report it no longer holds, and a quiet
            # host reports nothing else for long — nothing of it reclaimable meanwhile. The
            # whole set, now (review h106).
            reason = "change"
        if self.broken and reason == "heartbeat":
            # What the log's newest report says may be older than what was seen since (a
            # report refused meanwhile): report afresh, as a start, never confirm it.
            reason = "start"
        if reason in ("start", "change"):
            if self.broken or self.adopted:
                reason = "start"
            ev = report_of(self.ex.cfg.host, self.last, self._base(), seen, reason)
            self.report_seq = await self.ex._publish([ev])
            self.changes = self.changes + 1 if isinstance(ev, HostInstancesChanged) else 0
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
