"""The facts of reclamation, and what the fold remembers of the hosts' sighting reports.

Kept apart from :mod:`netledger.events.reclaim` (the command and its decider) because every
reader of the log must know these types — the state fold, the projector, the executor — while
only the command service decides reclaims.

* ``HostInstancesSeen`` (host subject, written by executors) says which instance MACs a host saw
  on its bridges, ``HostInstancesChanged`` what changed since its previous report;
  :class:`HostSightings` is the fold's compact memory of those reports.
* ``FixedIpReclaimed`` (network subject) frees an address whose instance its host has not seen
  for the grace period; it names the reports that prove it.
* ``FixedIpReclaimSealed`` (network subject) closes every reclaim batch. It is the message that
  carries the OCC check on the *host's* subject (``Nats-Expected-Last-Subject-Sequence-Subject``),
  so a sighting appended after the decision rejects the whole batch (docs/reclaim.md).
* ``FixedIpReconfirmed`` (network subject): an allocation request for an instance that already
  holds its address while its host does not see it renews the allocation (and so pushes any
  reclaim back by a whole grace period, and rejects a reclaim decided before it).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

from .types import NetworkEvent, event_type

#: Reports kept per host. Dropping a report can only make an absence look *shorter* (the
#: first report lacking a MAC is then a later one), never longer: thinning is always safe.
#: Reports are appended only when a host's set changes, so a few dozen span a long time; and
#: the memory of last sightings is pruned with them. The oldest report is never dropped (an
#: absence can always be proven from it), so what bounds the memory of last sightings is the
#: fold: a MAC is forgotten when no live allocation on the host has it any more (State).
MAX_REPORTS = 64


@event_type
@dataclass(frozen=True)
class FixedIpReclaimed(NetworkEvent):
    """``address`` went back to the pool: host ``host`` reported ``mac`` absent from report
    ``first_absent_seq`` (at ``first_absent_at``, the host's clock) through report
    ``report_seq`` (at ``report_at``), at least ``grace`` seconds, after the allocation or
    the last sighting (``last_seen_seq``, 0 when never seen)."""

    TYPE: ClassVar[str] = "FixedIpReclaimed"
    address: str
    instance: str
    mac: str
    host: str
    reason: str
    report_seq: int
    report_at: float
    first_absent_seq: int
    first_absent_at: float
    last_seen_seq: int
    allocated_seq: int
    grace: float
    #: when the latest evidence is a heartbeat (journal/liveness.py), not a report in the log:
    #: its KV revision and the digest of the MAC set it confirmed (``report_seq``'s)
    heartbeat_revision: int | None = None
    heartbeat_digest: str | None = None
    #: the allocation's IPv6 address, freed with it
    address_v6: str | None = None
    #: the heartbeat's ``since``: its reporter observed without a break from then only, so
    #: the span proven counts from ``max(first_absent_at, heartbeat_since)`` — without it the
    #: event named a longer span than the one decided on (found by review h131)
    heartbeat_since: float | None = None


@event_type
@dataclass(frozen=True)
class FixedIpReclaimSealed(NetworkEvent):
    """The reclaims of one batch were decided on ``host``'s subject as of ``host_seq``; the
    log accepted this message only because that subject had not moved since."""

    TYPE: ClassVar[str] = "FixedIpReclaimSealed"
    host: str
    host_seq: int
    addresses: list[str]


@event_type
@dataclass(frozen=True)
class FixedIpReconfirmed(NetworkEvent):
    """The instance asked for its address again while its host did not see it: the allocation
    counts as new from here (its absence has to be proven again from later reports)."""

    TYPE: ClassVar[str] = "FixedIpReconfirmed"
    address: str
    instance: str
    mac: str
    host: str | None


class Report(NamedTuple):
    """One sighting report as the fold keeps it (a tuple: a host's 64 and a snapshot's tens of
    thousands are built in a third of a frozen dataclass's time)."""

    seq: int
    time: float
    networks: frozenset[str]
    #: the first report of an executor's run, or the first after its reporting failed: the host
    #: was not watching before it, so no absence reaches back across it (found by review)
    start: bool = False


def macs_digest(macs: Iterable[str]) -> str:
    """SHA-256 of a set of MACs (lower case, sorted, one per line): what a heartbeat confirms."""
    return hashlib.sha256("\n".join(sorted(m.lower() for m in macs)).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A host's "the instances I see are still those of my report at ``report_seq``" (MAC set
    ``digest``), at ``time`` on its own clock — kept in the liveness bucket, not the log
    (journal/liveness.py); ``revision`` is its KV revision (the evidence a reclaim names)."""

    host: str
    report_seq: int
    time: float
    digest: str
    revision: int = 0
    #: the reporter has observed without a break since then (its start, or its last failure to
    #: observe or report): a confirmed absence counts from here at the earliest
    since: float | None = None


@dataclass(frozen=True, slots=True)
class Absence:
    """A MAC absent from every report of a host from ``first`` through ``last`` (``last`` may be
    the newest report as confirmed later by ``heartbeat``: then its time is the heartbeat's)."""

    first: Report
    last: Report
    last_seen_seq: int
    heartbeat: Heartbeat | None = None

    @property
    def span(self) -> float:
        # Both times come from the same host's clock: no cross-host skew in the span. A
        # heartbeat's reporter observed without a break only since ``since``.
        since = self.heartbeat.since if self.heartbeat is not None else None
        start = self.first.time if since is None else max(self.first.time, since)
        return self.last.time - start


@dataclass
class HostSightings:
    """One host's sighting reports as far as reclaiming needs them.

    When each MAC was last seen (:attr:`seen`: MAC -> the stream sequence of the last report
    that contained it) is kept in two parts: the MACs of the newest report were last seen in
    it (all of them, but those :meth:`forget` dropped since), and :attr:`past` holds the
    others. A report then costs what changed since the one before (a MAC or two), not a
    write per MAC it holds: a whole report (``HostInstancesSeen``, ~20 MACs here) was ~20% of
    the service's fold of a long log; a change (``HostInstancesChanged``,
    :meth:`record_change`) costs what it carries, not the set. The mapping and every answer are exactly
    those of one dict written at every report (tests/events/test_sightings_lazy.py)."""

    reports: list[Report] = field(default_factory=list)
    #: MAC -> stream sequence of the last report that contained it, for the MACs not in the
    #: newest report (``last_macs``)
    past: dict[str, int] = field(default_factory=dict)
    #: the newest report's MACs: a frozenset of a whole report, a set changed in place by the
    #: changes after it (:meth:`record_change`); nothing outside holds it
    last_macs: frozenset[str] | set[str] = frozenset()
    limit: int = MAX_REPORTS
    #: MACs of the newest report whose sighting was forgotten since (:meth:`forget`,
    #: :meth:`keep_only`): a subset of ``last_macs``
    forgotten: set[str] = field(default_factory=set)

    @classmethod
    def from_seen(
        cls, reports: list[Report], seen: dict[str, int], last_macs: frozenset[str], limit: int
    ) -> HostSightings:
        """From the mapping :attr:`seen` (a snapshot's): ValueError when it cannot be what the
        fold kept (a MAC of the newest report last seen elsewhere than in it)."""
        newest = reports[-1].seq if reports else None
        if last_macs and newest is None:
            raise ValueError("MACs of a newest report without any report")
        past = {m: s for m, s in seen.items() if m not in last_macs}
        forgotten = set()
        for m in last_macs:
            s = seen.get(m)
            if s is None:
                forgotten.add(m)
            elif s != newest:
                raise ValueError(f"{m} of the report at seq {newest} last seen at seq {s}")
        return cls(
            reports=reports, past=past, last_macs=last_macs, limit=limit, forgotten=forgotten
        )

    @property
    def seen(self) -> dict[str, int]:
        """MAC -> stream sequence of the last report that contained it (a new dict)."""
        out = dict(self.past)
        if self.last_macs:
            newest = self.reports[-1].seq
            forgotten = self.forgotten
            for m in self.last_macs:
                if m not in forgotten:
                    out[m] = newest
        return out

    def last_seen(self, mac: str) -> int:
        """The stream sequence of the last report that contained ``mac`` (lower case), else 0."""
        if mac in self.last_macs and mac not in self.forgotten:
            return self.reports[-1].seq
        return self.past.get(mac, 0)

    def forget(self, mac: str) -> None:
        """No allocation on this host has ``mac`` (lower case) any more: forget its sighting."""
        if mac in self.last_macs:
            self.forgotten.add(mac)
        else:
            self.past.pop(mac, None)

    def record(
        self, seq: int, time: float, macs: list[str], networks: list[str], start: bool = False
    ) -> None:
        nets = frozenset(networks)
        reports = self.reports
        if reports and reports[-1].networks == nets:
            nets = reports[-1].networks  # one set shared by reports that cover the same
        # MACs are written in lower case: when the report is (lower() of the whole changes no
        # character, so of none of its parts), it is taken as it is instead of one new string
        # per MAC (a third of this, 19 MACs).
        joined = "".join(macs)
        new = frozenset(macs) if joined.lower() == joined else frozenset(map(str.lower, macs))
        old = self.last_macs
        past = self.past
        if old:
            # Last seen in the newest report until now: those it had and this one has not.
            newest = reports[-1].seq
            forgotten = self.forgotten
            for m in old - new:
                if m not in forgotten:
                    past[m] = newest
            for m in new - old:
                past.pop(m, None)
        elif past:
            for m in new:
                past.pop(m, None)
        if self.forgotten:
            self.forgotten = set()
        self.last_macs = new
        reports.append(Report(seq, time, nets, start))
        if len(reports) > self.limit:
            self._thin()

    def record_change(
        self,
        seq: int,
        time: float,
        added: list[str],
        removed: list[str],
        networks_added: list[str],
        networks_removed: list[str],
    ) -> None:
        """:meth:`record` of the set of the newest report less ``removed`` plus ``added`` (a
        ``HostInstancesChanged`` on it: the caller checked that it is its base), covering its
        networks less ``networks_removed`` plus ``networks_added`` — the same state, at the
        cost of what changed: the newest set is kept as a ``set`` and changed in place (one
        copy of it at the first change after a whole report), the networks shared while they
        stay the same (tests/events/test_sightings_delta.py)."""
        reports = self.reports
        newest = reports[-1]
        nets = newest.networks
        if networks_added or networks_removed:
            changed = nets.difference(networks_removed).union(networks_added)
            if changed != nets:
                nets = changed
        came = [m.lower() for m in added]
        gone = [m.lower() for m in removed]
        macs = self.last_macs
        if type(macs) is not set:
            macs = set(macs)  # (a whole report's frozenset: ours to change from here on)
        past = self.past
        forgotten = self.forgotten
        if gone:
            kept = set(came)
            for m in gone:
                # Last seen in the newest report until now: those it had and this one has not.
                if m in macs and m not in kept:
                    macs.discard(m)
                    if m not in forgotten:
                        past[m] = newest.seq
        for m in came:
            if m not in macs:
                macs.add(m)
                past.pop(m, None)
        if forgotten:
            self.forgotten = set()
        self.last_macs = macs
        reports.append(Report(seq, time, nets, False))
        if len(reports) > self.limit:
            self._thin()

    def keep_only(self, live: dict[str, int] | None) -> None:
        """Forget the MACs not allocated on this host (``live``: State.host_macs of it) once
        they outnumber those: a MAC reported after its deallocation (its DHCP lease is still in
        the lease file) came back after the fold had forgotten it, and stayed. Its entry
        changes no absence — a later allocation of it is judged from its own sequence. Found
        at a million events: the check before, which forgot nothing, ran at every report."""
        n = len(live) if live else 0
        if len(self.past) + len(self.last_macs) - len(self.forgotten) > 2 * n + 4 * self.limit:
            self.past = {m: s for m, s in self.past.items() if live and m in live}
            self.forgotten.update(m for m in self.last_macs if not (live and m in live))

    def keep_newest(self) -> None:
        """No allocation on this host any more: keep its newest report only. Reclaim judges an
        allocation from reports after its own sequence (later than all of these), so the older
        reports and the last sightings can change no answer; the newest is what a restarted
        executor compares its first observation with (adopting it instead of appending a
        report: executor/sightings.py) and what a heartbeat confirms. A host retired from the
        cloud then keeps one report in the fold, not 64, for good."""
        if len(self.reports) > 1 or self.past:
            self.reports = self.reports[-1:]
            self.past = {}

    def _thin(self) -> None:
        """Drop every other report of the older half (the newest report is always kept)."""
        half = len(self.reports) // 2
        kept = self.reports[:half:2] + self.reports[half:]
        # A start dropped passes its mark to the next report kept (found by review): lost, an
        # absence reached back across the time nobody watched. Later is safe: a start only
        # ever moves the first absent report later, i.e. makes an absence shorter.
        for k in range(1, half, 2):
            if self.reports[k].start and not kept[(k + 1) // 2].start:
                kept[(k + 1) // 2] = kept[(k + 1) // 2]._replace(start=True)
        self.reports = kept
        # A MAC last seen before the oldest kept report gains nothing from its entry: the first
        # kept report after its allocation is after that sighting anyway. (The newest report's
        # MACs were seen in it: kept.)
        oldest = self.reports[0].seq
        self.past = {m: s for m, s in self.past.items() if s >= oldest}

    def confirms(self, hb: Heartbeat | None) -> bool:
        """Whether ``hb`` confirms this host's newest report (same report, same MAC set, later)."""
        if hb is None or not self.reports:
            return False
        newest = self.reports[-1]
        return (
            hb.report_seq == newest.seq
            and hb.time > newest.time
            and hb.digest == macs_digest(self.last_macs)
        )

    def absence(
        self, mac: str, network_id: str, since_seq: int, heartbeat: Heartbeat | None = None
    ) -> Absence | None:
        """The absence of ``mac`` after stream sequence ``since_seq`` (its allocation), as
        shown by reports that covered ``network_id``'s bridge; None when no such report. A
        ``heartbeat`` that confirms the newest report extends it to the heartbeat's time."""
        last_seen = self.last_seen(mac.lower())
        after = max(since_seq, last_seen)
        seqs = [r.seq for r in self.reports]
        i = bisect.bisect_right(seqs, after)
        first = next((r for r in self.reports[i:] if network_id in r.networks), None)
        if first is None:
            return None
        last = next(r for r in reversed(self.reports) if network_id in r.networks)
        # No absence reaches back across a start (the executor was not watching before it):
        # from the newest start report up to ``last`` on, at the earliest.
        restart = next(
            (k for k in range(len(self.reports) - 1, i - 1, -1)
             if self.reports[k].start and first.seq < self.reports[k].seq <= last.seq),
            None,
        )  # fmt: skip
        if restart is not None:
            first = next(r for r in self.reports[restart:] if network_id in r.networks)
        if last is self.reports[-1] and self.confirms(heartbeat):
            assert heartbeat is not None
            return Absence(
                first,
                Report(last.seq, heartbeat.time, last.networks, last.start),
                last_seen,
                heartbeat,
            )
        return Absence(first, last, last_seen)

    @property
    def last_seq(self) -> int:
        return self.reports[-1].seq if self.reports else 0
