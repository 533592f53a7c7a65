"""Reclaiming addresses whose instance is gone — and never one whose instance is alive.

An address is a *candidate* when (all read from the folded log, :func:`candidates`):

* it is allocated (not deallocated-and-held: the release reaper owns those) with a host ``H``;
* ``H``'s executor has reported (``HostInstancesSeen``) on the network's bridge, and every
  report of ``H`` after the allocation (or its reconfirmation) and after the last report that
  contained the instance's MAC lacks it, from a first such report ``r1`` through the latest
  report ``r2`` covering the network, with ``r2.time - r1.time >= grace`` — two reports of the
  same host, times from the same clock, so the grace is proven by the log, not by whoever
  decides;
* no host's newest report (as the fold holds it) lists the MAC: an allocation that names ``H``
  while the instance still runs on another host (a live migration that failed after the move
  was recorded) is absent from ``H`` and live elsewhere — held back (:class:`HeldBack`), and
  said so, not reclaimed (review h133).

:func:`decide_reclaim` recomputes that on the current state for one (network, host) and returns
the reclaims followed by a :class:`FixedIpReclaimSealed`. The command service appends them as
one atomic batch with two OCC checks (service/reclaim_run.py): the network's subject as of the
decision, and — carried by the seal — the host's subject as of the decision. Any allocation,
deallocation, reconfirmation or reclaim in the network, and any report of the host, that lands
between deciding and appending rejects the batch; the service catches up and decides again.

Allocation requests for an instance that already holds its address append nothing
(decide_fixed.py: they return the first answer). While the instance is unseen on its host that would
let a reclaim decided just before (or after) free an address the client has just been told is
its own, so ``decide_fixed_allocate`` makes such an answer append :class:`FixedIpReconfirmed`:
the allocation counts as new, and a racing reclaim fails its network OCC check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .commands import Command, Request, _bool, _id, command
from .decide import DECIDERS, Decision, Pending
from .errors import InvalidField
from .ids import host_subject
from .reclaim_events import Absence, FixedIpReclaimed, FixedIpReclaimSealed, Heartbeat
from .state import FixedIp, NetworkState, State
from .types import Event, FloatingIpDisassociated

DEFAULT_GRACE = 3600.0


@dataclass(frozen=True)
class Candidate:
    network_id: str
    address: str
    instance: str
    mac: str
    host: str
    allocated_seq: int
    absence: Absence
    address_v6: str | None = None

    def as_dict(self) -> dict[str, Any]:
        a = self.absence
        hb = a.heartbeat
        return {
            "network_id": self.network_id,
            "address": self.address,
            "address_v6": self.address_v6,
            "instance": self.instance,
            "mac": self.mac,
            "host": self.host,
            "allocated_seq": self.allocated_seq,
            "last_seen_seq": a.last_seen_seq,
            "first_absent_seq": a.first.seq,
            "first_absent_at": a.first.time,
            "report_seq": a.last.seq,
            "report_at": a.last.time,
            "unseen_for": round(a.span, 3),
            "heartbeat_revision": hb.revision if hb is not None else None,
            "heartbeat_since": hb.since if hb is not None else None,
        }


#: host -> its latest heartbeat (the liveness bucket, journal/liveness.py)
Heartbeats = dict[str, Heartbeat]


def candidate(
    state: State, n: NetworkState, ip: FixedIp, grace: float, heartbeats: Heartbeats | None = None
) -> Candidate | None:
    """``ip`` as a reclaim candidate, or None (see the module docstring for the rule)."""
    if grace <= 0 or not ip.allocated or ip.host is None:
        return None
    h = state.sightings.get(ip.host)
    if h is None:
        return None
    absence = h.absence(ip.mac, n.network_id, ip.allocated_seq, (heartbeats or {}).get(ip.host))
    if absence is None or absence.span < grace:
        return None
    return Candidate(
        n.network_id,
        ip.address,
        ip.instance,
        ip.mac,
        ip.host,
        ip.allocated_seq,
        absence,
        ip.address_v6,
    )


@dataclass(frozen=True)
class HeldBack:
    """A candidate by its own host's reports that is not reclaimed: the newest report of each
    host in ``seen_on`` lists its MAC (its allocation names one host, the instance runs on
    another: a live migration that failed and left it where it was — review h133)."""

    candidate: Candidate
    seen_on: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {**self.candidate.as_dict(), "seen_on": list(self.seen_on)}


@dataclass(frozen=True)
class Survey:
    """What a reclaim may free (``candidates``) and what it holds back (``held_back``)."""

    candidates: list[Candidate]
    held_back: list[HeldBack]


def seen_on(state: State, macs: set[str]) -> dict[str, tuple[str, ...]]:
    """MAC (lower case) of ``macs`` -> the hosts whose newest report, as the fold holds it,
    lists it. The newest report's whole set (``last_macs``, forgotten sightings included: the
    old host of a moved allocation forgets its MAC's last sighting, not that it sees it now);
    a host whose reports the fold forgot (a change on a base it did not hold) has none until
    its next whole set. One intersection per host, each the size of the smaller set: built
    once per survey, and only when there is a candidate."""
    out: dict[str, list[str]] = {}
    for host, h in state.sightings.items():
        for m in macs.intersection(h.last_macs):
            out.setdefault(m, []).append(host)
    return {m: tuple(sorted(hosts)) for m, hosts in out.items()}


def survey(
    state: State,
    grace: float,
    *,
    host: str | None = None,
    network_id: str | None = None,
    heartbeats: Heartbeats | None = None,
) -> Survey:
    """Every reclaim candidate (optionally of one host / one network), in a stable order, less
    those whose MAC any host's newest report lists (held back: the allocation's host proves
    only that the instance is not *there*)."""
    found: list[Candidate] = []
    for n in state.live_networks():
        if network_id is not None and n.network_id != network_id:
            continue
        for ip in n.fixed.values():
            if host is not None and ip.host != host:
                continue
            c = candidate(state, n, ip, grace, heartbeats)
            if c is not None:
                found.append(c)
    found.sort(key=lambda c: (c.network_id, c.host, c.address))
    if not found:
        return Survey(found, [])
    where = seen_on(state, {c.mac.lower() for c in found})
    if not where:
        return Survey(found, [])
    free: list[Candidate] = []
    held: list[HeldBack] = []
    for c in found:
        hosts = where.get(c.mac.lower())
        if hosts:
            held.append(HeldBack(c, hosts))
        else:
            free.append(c)
    return Survey(free, held)


def candidates(
    state: State,
    grace: float,
    *,
    host: str | None = None,
    network_id: str | None = None,
    heartbeats: Heartbeats | None = None,
) -> list[Candidate]:
    """The addresses a reclaim may free (:func:`survey`'s candidates)."""
    return survey(state, grace, host=host, network_id=network_id, heartbeats=heartbeats).candidates


# --- the command and its decider ------------------------------------------------------------


def _grace(a: dict[str, Any]) -> float:
    v = a.get("grace", DEFAULT_GRACE)
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise InvalidField("grace must be a positive number of seconds", field="grace")
    return float(v)


@dataclass(frozen=True)
class FixedIpReclaim(Command):
    """Reclaim the addresses of ``network_id`` held on ``host`` whose instance is gone.

    Deliberately not registered with ``@command``: no client may send it, because only the
    service's own runner (service/reclaim_run.py) appends it with the host-subject check."""

    NAME: ClassVar[str] = "fixed_ip.reclaim_one"
    ADMIN_ONLY: ClassVar[bool] = True
    network_id: str
    host: str
    grace: float = DEFAULT_GRACE
    #: the host's latest heartbeat, read by the runner from the liveness bucket
    heartbeat: Heartbeat | None = None


@command
@dataclass(frozen=True)
class FixedIpReclaimSweep(Command):
    """Find (``dry_run``) or reclaim every candidate, optionally of one host / network. Run by
    the command service itself (service/reclaim_run.py), one decision per (network, host)."""

    NAME: ClassVar[str] = "fixed_ip.reclaim"
    ADMIN_ONLY: ClassVar[bool] = True
    grace: float = DEFAULT_GRACE
    host: str | None = None
    network_id: str | None = None
    dry_run: bool = False

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FixedIpReclaimSweep:
        return cls(
            grace=_grace(a),
            host=_id(a, "host"),
            network_id=_id(a, "network_id"),
            dry_run=_bool(a, "dry_run"),
        )


#: Messages one reclaim decision appends at most (one atomic batch holds 1,000): its own events,
#: the network-side unmapping of each floating IP it lets go (service/reclaim_run.py) and the
#: seal. The candidates past it are left to the next decision (the sweep goes on).
MAX_RECLAIM_MESSAGES = 1000


def decide_reclaim(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpReclaim)
    hbs = {cmd.host: cmd.heartbeat} if cmd.heartbeat is not None else None
    found_all = survey(state, cmd.grace, host=cmd.host, network_id=cmd.network_id, heartbeats=hbs)
    found = found_all.candidates
    events: list[Event] = []
    reclaimed: list[dict[str, Any]] = []
    messages = 1  # the seal
    taken: list[Candidate] = []
    too_large: list[str] = []
    for c in found:
        floating = state.floating_for_fixed(c.network_id, c.address)
        cost = 1 + 2 * len(floating)  # reclaimed; per floating IP: disassociated and unmapped
        if 1 + cost > MAX_RECLAIM_MESSAGES:
            # More floating IPs on it than one atomic batch can let go with it: never
            # reclaimable whole, so left to an operator (found by review: it was taken first
            # and the batch refused, every sweep).
            too_large.append(c.address)
            continue
        if taken and messages + cost > MAX_RECLAIM_MESSAGES:
            break
        messages += cost
        taken.append(c)
        a = c.absence
        hb = a.heartbeat
        through = (
            f"heartbeat rev {hb.revision} at {hb.time:.0f} confirming report seq {a.last.seq}"
            if hb is not None
            else f"seq {a.last.seq}"
        )
        if hb is not None and hb.since is not None and hb.since > a.first.time:
            through += f", observed without a break since {hb.since:.0f}"
        for f in floating:
            events.append(
                FloatingIpDisassociated(
                    pool=f.pool,
                    address=f.address,
                    project=f.project,
                    fixed_address=c.address,
                    network_id=c.network_id,
                    instance=c.instance,
                    reason="fixed ip reclaimed",
                )
            )
        events.append(
            FixedIpReclaimed(
                network_id=c.network_id,
                address=c.address,
                instance=c.instance,
                mac=c.mac,
                host=c.host,
                reason=(
                    f"{c.mac} absent from every report of host {c.host} from seq {a.first.seq}"
                    f" through {through} ({a.span:.1f}s >= grace {cmd.grace:g}s)"
                ),
                report_seq=a.last.seq,
                report_at=a.last.time,
                first_absent_seq=a.first.seq,
                first_absent_at=a.first.time,
                last_seen_seq=a.last_seen_seq,
                allocated_seq=c.allocated_seq,
                grace=cmd.grace,
                heartbeat_revision=hb.revision if hb is not None else None,
                heartbeat_digest=hb.digest if hb is not None else None,
                address_v6=c.address_v6,
                heartbeat_since=hb.since if hb is not None else None,
            )
        )
        reclaimed.append(c.as_dict())
    host_seq = state.seq_of(host_subject(cmd.host))
    if events:
        events.append(
            FixedIpReclaimSealed(
                network_id=cmd.network_id,
                host=cmd.host,
                host_seq=host_seq,
                addresses=[c.address for c in taken],
            )
        )
    return Decision(
        events,
        {
            "network_id": cmd.network_id,
            "host": cmd.host,
            "host_seq": host_seq,
            "reclaimed": reclaimed,
            # candidates left for the next decision (past MAX_RECLAIM_MESSAGES)
            "more": len(taken) + len(too_large) < len(found),
            # candidates never reclaimed here: too many floating IPs for one batch
            "too_large": too_large,
            # absent from this host, listed by another's newest report: never reclaimed
            "held_back": [h.as_dict() for h in found_all.held_back],
        },
    )


def decide_sweep_dry_run(state: State, req: Request, pending: Pending) -> Decision:
    """The sweep as a decision appends nothing: it lists candidates (the service runs the real
    sweep as one :class:`FixedIpReclaim` per (network, host))."""
    cmd = req.command
    assert isinstance(cmd, FixedIpReclaimSweep)
    found = survey(state, cmd.grace, host=cmd.host, network_id=cmd.network_id)
    return Decision(
        [],
        {
            "dry_run": True,
            "candidates": [c.as_dict() for c in found.candidates],
            "held_back": [h.as_dict() for h in found.held_back],
        },
    )


# --- allocation answers that renew an unseen allocation -------------------------------------


def unseen(state: State, n: NetworkState, ip: FixedIp) -> bool:
    return state.unseen(n, ip)


DECIDERS[FixedIpReclaim] = decide_reclaim
DECIDERS[FixedIpReclaimSweep] = decide_sweep_dry_run
