"""Reclaim against random interleavings (review h131), pure: the deciders on a fold, executors
played by a model that knows what each host *truly* sees at every moment.

Random histories of allocations, deallocations and migrations on two hosts; instances booting
and vanishing; executors polling (whole sets, changes relative to ``base_seq``, changes on a
base the log does not end with), stopping, restarting (adopting the log's newest report, or a
start report), heartbeating into the liveness bucket (entries that expire); reclaims decided
with the latest heartbeat; the service restarting from a snapshot. Checked at every reclaim:

* no other host's newest report lists the MAC (an instance left on its old host by a migration
  the log recorded: review h133);
* the truth: the MAC was not on its host at any moment of the span the event names as
  evidence, that span is at least the grace, the host's newest report lacks the MAC, and the
  evidence (report sequences and times, heartbeat revision and digest) is what the host wrote;
* a service started from a snapshot taken at any point decides exactly what the fold of the
  whole log decides (the same events, the same candidates), and holds the same state;
* no address is ever held by two instances.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import SYSTEM, Actor, Envelope, encode
from netledger.events.commands import Request, parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.host_events import HostInstancesChanged, HostInstancesSeen
from netledger.events.reclaim import FixedIpReclaim, candidates
from netledger.events.reclaim_events import FixedIpReclaimed, Heartbeat, macs_digest
from netledger.events.snapshot import digest, dumps, loads
from netledger.events.state import State
from netledger.events.types import Event
from netledger.events.wire_fast import wire_of

ADMIN = Actor(role="admin", user="ops")
HOSTS = ["h1", "h2"]
INSTANCES = [f"vm{i}" for i in range(4)]
STRAY = "02:16:3e:7f:ff:ff"  # a MAC no allocation has
GRACE = 100.0
STREAM, CREATED = "NETLEDGER", "2026-12-07T00:00:00+00:00"


@dataclass
class Executor:
    """One host's executor as the model plays it (executor/sightings.py's rules)."""

    up: bool = False
    since: float = 0.0
    #: the log's newest report of this host as this executor knows it (0: none yet)
    report_seq: int = 0
    last: frozenset[str] | None = None
    #: the next report is a start (a restart that adopted the log's report, or a failure)
    adopted: bool = False


@dataclass
class World:
    full: State = field(default_factory=State)  # the fold of the whole log
    snap: State | None = None  # a service started from a snapshot, fed the rest
    seq: int = 0
    now: float = 1000.0
    log: list[tuple[int, str, Envelope]] = field(default_factory=list)
    #: host -> MACs truly on it now
    present: dict[str, set[str]] = field(default_factory=lambda: {h: set() for h in HOSTS})
    #: (host, mac) -> [start, end) intervals of true presence
    presence: dict[tuple[str, str], list[list[float]]] = field(default_factory=dict)
    #: host -> [(seq, time, true set, start)] every report the host appended
    reports: dict[str, list[tuple[int, float, frozenset[str], bool]]] = field(
        default_factory=lambda: {h: [] for h in HOSTS}
    )
    executors: dict[str, Executor] = field(default_factory=lambda: {h: Executor() for h in HOSTS})
    heartbeats: dict[str, Heartbeat] = field(default_factory=dict)
    written: dict[int, Heartbeat] = field(default_factory=dict)  # revision -> heartbeat
    revisions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    reclaimed: int = 0
    #: hosts whose latest report was a change on a base the log does not end with: the fold
    #: forgot their reports until their next whole set (docs/reclaim.md)
    forgotten: set[str] = field(default_factory=set)

    def add(self, ev: Event) -> int:
        self.seq += 1
        env = Envelope(ev, f"e{self.seq}", f"c{self.seq}", self.now, SYSTEM)
        subject = ev.subject()
        assert self.full.apply(self.seq, subject, env)
        if self.snap is not None:  # (folded as the service reads the log: events/wire_fast.py)
            w = wire_of(encode(env))
            assert w is not None and self.snap.fold_wire(self.seq, subject, w) is None
        self.log.append((self.seq, subject, env))
        return self.seq

    def run(self, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
        req = parse_command(
            name, {"command_id": f"cmd-{next(self.ids)}", "actor": ADMIN.to_wire(), "args": args}
        )
        try:
            d = decide(self.full, req)
        except NetledgerError:
            return None
        if self.snap is not None:  # a service started from a snapshot decides the same
            assert decide(self.snap, req).events == d.events
        for ev in d.events:
            self.add(ev)
        return d.result

    # --- the hosts --------------------------------------------------------------------

    def set_present(self, host: str, mac: str, on: bool, stale_base: bool = False) -> None:
        spans = self.presence.setdefault((host, mac), [])
        if on and mac not in self.present[host]:
            self.present[host].add(mac)
            spans.append([self.now, float("inf")])
        elif not on and mac in self.present[host]:
            self.present[host].discard(mac)
            spans[-1][1] = self.now
        self.poll(host, stale_base)  # a running executor notices every change (every 5 s)

    def poll(self, host: str, stale_base: bool = False) -> None:
        ex = self.executors[host]
        if not ex.up:
            return
        seen = frozenset(self.present[host])
        if ex.last is not None and seen == ex.last and not ex.adopted:
            return
        if ex.last is not None and seen == ex.last:
            return  # (adopted: still the log's report; heartbeats confirm it)
        start = ex.adopted or ex.last is None
        if not start and ex.report_seq:
            base = ex.report_seq
            if stale_base:  # (a base the log does not end with: a report stored twice...)
                older = [s for s, *_ in self.reports[host] if s < base]
                base = older[-1] if older else base - 1
            ev: Event = HostInstancesChanged(
                host=host,
                base_seq=base,
                added=sorted(seen - ex.last),  # type: ignore[operator]
                removed=sorted(ex.last - seen),  # type: ignore[operator]
                networks_added=[],
                networks_removed=[],
                leases=0,
            )
        else:
            ev = HostInstancesSeen(
                host=host, macs=sorted(seen), networks=["1"], reason="start" if start else "change"
            )
        ex.report_seq = self.add(ev)
        if isinstance(ev, HostInstancesSeen):
            self.forgotten.discard(host)
        elif stale_base:
            self.forgotten.add(host)
        ex.last, ex.adopted = seen, False
        self.reports[host].append((ex.report_seq, self.now, seen, start))

    def stop(self, host: str) -> None:
        self.executors[host].up = False

    def start(self, host: str) -> None:
        ex = self.executors[host]
        if ex.up:
            return
        ex.up, ex.since = True, self.now
        folded = self.full.sightings.get(host)
        seen = frozenset(self.present[host])
        if folded is not None and folded.reports and folded.last_macs == seen:
            # Nothing changed since the log's newest report: adopted, nothing appended.
            ex.report_seq, ex.last, ex.adopted = folded.reports[-1].seq, seen, True
            return
        ex.last = None
        self.poll(host)

    def heartbeat(self, host: str) -> None:
        ex = self.executors[host]
        if not ex.up or not ex.report_seq or host not in self.full.sightings:
            return
        assert ex.last == frozenset(self.present[host])  # (every change was polled)
        rev = next(self.revisions)
        hb = Heartbeat(host, ex.report_seq, self.now, macs_digest(ex.last), rev, ex.since)
        self.heartbeats[host] = self.written[rev] = hb

    # --- the service ------------------------------------------------------------------

    def snapshot(self) -> None:
        body = dumps(self.full, OrderedDict(), seq=self.seq, stream=STREAM, created=CREATED)
        loaded = loads(body, sha256=digest(body), stream=STREAM, created=CREATED)
        assert loaded.state == self.full
        self.snap = loaded.state

    def reclaim(self, host: str) -> None:
        hb = self.heartbeats.get(host)
        req = Request(FixedIpReclaim("1", host, GRACE, hb), f"r-{next(self.ids)}", SYSTEM)
        d = decide(self.full, req)
        if self.snap is not None:
            assert decide(self.snap, req).events == d.events
        for ev in d.events:
            if isinstance(ev, FixedIpReclaimed):
                self.check(ev)
                self.reclaimed += 1
        for ev in d.events:
            self.add(ev)

    def check(self, ev: FixedIpReclaimed) -> None:
        """The reclaim is true to what its host saw, and names the evidence it wrote."""
        reports = {s: (t, macs, start) for s, t, macs, start in self.reports[ev.host]}
        newest = self.reports[ev.host][-1]
        assert ev.mac not in newest[2], "the host's newest report lists the instance"
        # Nor does any other host's (a migration recorded while the instance stayed where it
        # was: review h133), but one whose reports the fold forgot (a stale base).
        for other in HOSTS:
            if other != ev.host and self.reports[other] and other not in self.forgotten:
                assert ev.mac not in self.reports[other][-1][2], (
                    f"{ev.mac} reclaimed on {ev.host} while {other}'s newest report lists it"
                )
        first_t, first_macs, _ = reports[ev.first_absent_seq]
        assert first_t == ev.first_absent_at and ev.mac not in first_macs
        assert ev.first_absent_seq > ev.allocated_seq
        later = [s for s in reports if ev.first_absent_seq <= s <= ev.report_seq]
        assert all(ev.mac not in reports[s][1] for s in later)
        assert not any(reports[s][2] for s in later if s > ev.first_absent_seq)
        if ev.heartbeat_revision is None:
            end = ev.report_at
            assert reports[ev.report_seq][0] == ev.report_at
        else:
            hb = self.written[ev.heartbeat_revision]
            assert (hb.report_seq, hb.time) == (ev.report_seq, ev.report_at)
            assert hb.digest == ev.heartbeat_digest == macs_digest(reports[ev.report_seq][1])
            end = hb.time
        start = ev.first_absent_at
        if ev.heartbeat_revision is not None:
            since = self.written[ev.heartbeat_revision].since
            assert ev.heartbeat_since == since  # (the event names the span decided on)
            start = max(start, since if since is not None else start)
        else:
            assert ev.heartbeat_since is None
        assert end - start >= ev.grace
        # The truth: the instance was on its host at no moment of what the evidence covers.
        for a, b in self.presence.get((ev.host, ev.mac), []):
            assert not (a < end and b > start), (
                f"{ev.mac} was on {ev.host} from {a} to {b}, inside the evidence"
                f" {start}..{end}: {ev.reason}"
            )

    def invariants(self) -> None:
        for n in self.full.live_networks():
            holders = [ip.instance for ip in n.fixed.values() if ip.allocated]
            assert len(holders) == len(set(holders))
            for inst, addr in n.by_instance.items():
                assert n.fixed[addr].instance == inst
        if self.snap is not None:
            assert self.snap == self.full
            hbs = dict(self.heartbeats)
            assert candidates(self.snap, GRACE, heartbeats=hbs) == candidates(
                self.full, GRACE, heartbeats=hbs
            )


#: kinds of steps, weighted by repetition: a reclaim needs reports after an allocation,
#: heartbeats and time, and a history drawn uniformly over the kinds rarely had all three
KINDS = (
    ["tick"] * 4 + ["heartbeat"] * 4 + ["reclaim"] * 3 + ["alloc"] * 3 + ["boot", "vanish"] * 2
    + ["stray", "start"] * 2 + ["stale", "stop", "expire", "dealloc", "snapshot"]
)  # fmt: skip
OP = st.tuples(
    st.sampled_from(KINDS),
    st.sampled_from(INSTANCES),
    st.sampled_from(HOSTS),
    st.floats(1.0, 80.0),
)


def play(ops: list[Any]) -> World:
    w = World()
    w.run("network.create", {"label": "n", "cidr": "10.5.0.0/24", "mode": "flat", "bridge": "b"})
    for h in HOSTS:
        w.start(h)
    macs: dict[str, str] = {}  # instance -> the MAC of its latest allocation
    for kind, inst, host, dt in ops:
        if kind == "tick":
            w.now += dt
        elif kind == "alloc":
            r = w.run("fixed_ip.allocate", {"instance": inst, "network_id": "1", "host": host})
            if r is not None:
                macs[inst] = r["mac"]
        elif kind == "dealloc":
            w.run("fixed_ip.deallocate", {"instance": inst})
        elif kind in ("boot", "vanish") and inst in macs:
            w.set_present(host, macs[inst], kind == "boot")
        elif kind in ("stray", "stale"):  # stale: the change names a base the log lacks
            w.set_present(host, STRAY, STRAY not in w.present[host], kind == "stale")
        elif kind == "stop":
            w.stop(host)
        elif kind == "start":
            w.start(host)
        elif kind == "heartbeat":
            w.heartbeat(host)
        elif kind == "expire":  # the liveness entry expired (its TTL)
            w.heartbeats.pop(host, None)
        elif kind == "reclaim":
            w.reclaim(host)
        elif kind == "snapshot":
            w.snapshot()
        w.invariants()
    return w


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OP, max_size=120))
def test_no_interleaving_frees_a_live_address_and_a_snapshot_decides_as_the_log(
    ops: list[Any],
) -> None:
    play(ops)


def test_a_reclaim_names_since_when_its_heartbeat_observed() -> None:
    """The span decided on counts from the heartbeat's ``since`` when that is later than the
    first report lacking the MAC (an executor restarted and adopted the log's report): the
    event says so, so that ``audit`` shows the span that was proven, not a longer one."""
    w = play([("alloc", "vm0", "h1", 1.0), ("stray", "vm0", "h1", 1.0)])
    w.now += 500
    w.stop("h1")
    w.start("h1")  # adopts the report lacking vm0: observing since now
    w.now += GRACE
    w.heartbeat("h1")
    w.reclaim("h1")
    [ev] = [e for _, _, env in w.log if isinstance(e := env.event, FixedIpReclaimed)]
    assert ev.heartbeat_since == w.now - GRACE > ev.first_absent_at
    assert "observed without a break since" in ev.reason


def test_a_migration_that_left_the_instance_on_its_old_host_is_never_reclaimed() -> None:
    """The allocation moves to h2, the instance stays on h1 (a live migration that failed):
    h2's reports prove it absent from h2 for far longer than the grace, but h1's newest report
    lists it — nothing is reclaimed until h1 stops listing it (review h133)."""
    w = play([("alloc", "vm0", "h1", 1.0), ("boot", "vm0", "h1", 1.0)])
    w.run("fixed_ip.allocate", {"instance": "vm0", "network_id": "1", "host": "h2"})  # moved
    w.set_present("h2", STRAY, True)  # h2 reports after the move, without vm0
    for _ in range(3):
        w.now += GRACE
        w.heartbeat("h2")
        w.reclaim("h2")
    assert w.reclaimed == 0
    assert [ip.host for ip in w.full.networks["1"].fixed.values()] == ["h2"]
    [mac] = {m for h, m in w.presence if h == "h1"}
    w.set_present("h1", mac, False)  # gone from h1 too
    w.now += 1.0
    w.heartbeat("h2")
    w.reclaim("h2")
    assert w.reclaimed == 1
