"""Review h106: reclaim on a log of changes never frees what the log of whole sets would not.

A model of one host's executors and the command service, driven by hypothesis: the real
:class:`~netledger.executor.sightings.SightingReporter` (``report_once``: ``_base``,
``report_of``, the change counter, adoption, ``broken``) over its own real fold of the log (a
:class:`State`, as its view: read back after each append, rebuilt — through a snapshot — at a
restart), the command service's real fold (snapshotted now and then), and the deciders for
the allocations. Only the kernel and the stream are played: what the executor observes is
drawn, and an append is stored (and read back), stored twice (a retry outside the duplicate
window), stored while the reporter is told something else came after it (a lost ack: the
stream's last sequence), refused, stored though refused (outcome unknown), or not stored
though answered the stream's last sequence (``Reports._append`` on a ``MaybeApplied``). Two executors
may report under the same host name; the host may be retired and announce itself again;
addresses are deallocated and allocated; the sightings keep as few as two reports (thinned).

Beside the log, the same log with every ``HostInstancesChanged`` replaced by the whole set the
executor saw then (what an executor before the changes sent, under the same sequences and
times), folded by its own service without thinning (the absence as defined: thinning only
ever shortens one, but not in step on two folds holding different reports). After every step, for every allocated address, with the
host's latest heartbeat:

* the absence proven on the log of changes is never longer than on the log of whole sets
  (so no grace is ever met that the whole sets would not meet);
* with one executor, no absence spans a moment at which it observed the MAC (the truth).
"""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import SYSTEM, Actor, Envelope
from netledger.events.commands import parse_command
from netledger.events.decide import Pending, decide
from netledger.events.errors import LogUnavailable
from netledger.events.host_events import HostAnnounced, HostInstancesChanged, HostInstancesSeen
from netledger.events.reclaim_events import Absence, Heartbeat
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.types import HostRetired
from netledger.executor import sightings
from netledger.executor.sightings import Sighting, SightingReporter
from netledger.journal.liveness import heartbeat_from_json

HOST = "h1"
ADMIN = Actor(role="admin", user="ops")
STRAY = "02:aa:00:00:00:01"  # a MAC the host sees that no allocation has


class Clock:
    """The executor's clock (``time.time``/``time.monotonic`` of executor/sightings.py): the
    model's, so that reports, heartbeats and ``since`` are on the one clock reclaim compares."""

    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


class KV:
    """The liveness bucket's ``host.<h>.seen`` key: the latest heartbeat, as the service reads
    it back (journal/liveness.py's JSON)."""

    def __init__(self) -> None:
        self.latest: Heartbeat | None = None
        self.revision = 0

    async def put(self, key: str, value: bytes) -> None:
        self.revision += 1
        self.latest = heartbeat_from_json(value, self.revision)


class Proc:
    """One executor process of the host: its view (a fold of the log up to ``pos``) and its
    reporter."""

    def __init__(self, world: World, view: State, pos: int) -> None:
        self.world = world
        self.view = view
        self.pos = pos
        #: what it observes (it starts seeing every allocated instance)
        self.seeing = Sighting(frozenset(world.macs()), frozenset({"1", "2"}), 0)
        #: how the next append goes (see World.publish)
        self.fault = "ok"
        ex = SimpleNamespace(
            cfg=SimpleNamespace(host=HOST),
            state=view,
            _publish=self.publish,
            opts=SimpleNamespace(netns=None, sighting_changes=True),
            conn=None,
        )
        self.r = SightingReporter(ex, poll=1.0, heartbeat=0.0)  # type: ignore[arg-type]
        self.r.observe = lambda bridges: self.seeing  # type: ignore[method-assign]
        self.r._bridges = lambda: {}  # type: ignore[method-assign]
        self.r._kv = world.kv

    def sync(self) -> None:
        """Read the log on to its end (the follower, ``wait_for`` after an append)."""
        for seq, subject, env in self.world.log[self.pos :]:
            self.view.apply(seq, subject, env)
            _limit(self.view, self.world.limit)
        self.pos = len(self.world.log)

    async def publish(self, events: list[Any]) -> int:
        [ev] = events
        w = self.world
        fault, self.fault = self.fault, "ok"
        if fault == "refused":
            raise LogUnavailable("the log refuses writes (model)")
        if fault == "unknown":  # Reports._append on MaybeApplied: the stream's last sequence
            w.unknown = True
            return len(w.log)
        seq = w.store(ev, self.seeing)
        if fault == "twice":  # retried after the duplicate window: stored again
            seq = w.store(ev, self.seeing)
        elif fault == "lost_ack":  # the stream's last sequence, something stored after it
            w.store(HostAnnounced(host="h2", vtep_address=None, physical_interface=None,
                                  public_interface=None, network_host=False))  # fmt: skip
            seq = len(w.log)
        self.sync()
        if fault == "stored_refused":  # stored, but the appender said it was not known to be
            raise LogUnavailable("no answer in time (model)")
        return seq

    async def observe(self, macs: frozenset[str], nets: frozenset[str]) -> None:
        self.seeing = Sighting(macs, nets, 0)
        self.world.observed.append((self.world.clock.now, self, macs))
        try:
            await self.r.report_once()
        except LogUnavailable:
            self.r._broke()  # what SightingReporter.run does

    def close(self) -> None:
        self.r.kernel.close()


class World:
    def __init__(self, clock: Clock, limit: int) -> None:
        #: reports a host's sightings keep (MAX_REPORTS; fewer: thinned within a run)
        self.limit = limit
        self.log: list[tuple[int, str, Envelope]] = []
        #: the same messages, each change as the whole set it stood for
        self.whole: list[tuple[int, str, Envelope]] = []
        self.svc = State()  # the service's fold of the log
        self.ref = State()  # ... and of the log of whole sets
        self.clock = clock
        self.kv = KV()
        self.ids = itertools.count(1)
        self.observed: list[tuple[float, Proc, frozenset[str]]] = []
        self.procs: list[Proc | None] = [None, None]
        self.two = False  # two executors reported under the host's name
        #: an append was taken for stored that was not (Reports._append on a MaybeApplied other
        #: than a duplicate batch: unreachable with the executor's append budget) — the log of
        #: whole sets misses that observation as well: the truth is not checked after it
        self.unknown = False
        self.allocated: list[dict[str, Any]] = []

    def store(self, ev: Any, seeing: Sighting | None = None) -> int:
        seq = len(self.log) + 1
        self.clock.now += 0.001  # (each message its own time: the executor's clock moves)
        env = Envelope(ev, f"e{seq}", f"c{seq}", self.clock.now, SYSTEM)
        self.log.append((seq, ev.subject(), env))
        whole = env
        if isinstance(ev, HostInstancesChanged):
            assert seeing is not None
            full = HostInstancesSeen(host=HOST, macs=sorted(seeing.macs),
                                     networks=sorted(seeing.networks), reason="change")  # fmt: skip
            whole = Envelope(full, env.event_id, env.command_id, env.time, SYSTEM)
        self.whole.append((seq, ev.subject(), whole))
        self.svc.apply(seq, ev.subject(), env)
        self.ref.apply(seq, ev.subject(), whole)
        _limit(self.svc, self.limit)
        _limit(self.ref, UNTHINNED)
        return seq

    def run(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        req = parse_command(
            name, {"command_id": f"cmd-{next(self.ids)}", "actor": ADMIN.to_wire(), "args": args}
        )
        d = decide(self.svc, req, Pending())
        for ev in d.events:
            self.store(ev)
        return d.result

    def macs(self) -> list[str]:
        return [a["mac"] for a in self.allocated] + [STRAY]


#: the log of whole sets is folded without thinning: the absence by its definition. (Thinned,
#: it may drop the first report of an absence that the fold of changes — holding fewer reports
#: after a gap — keeps: both absences are true, the thinned one only shorter.)
UNTHINNED = 1 << 30


def _limit(state: State, limit: int) -> None:
    """The host's sightings thinned beyond ``limit`` reports from its next report on."""
    h = state.sightings.get(HOST)
    if h is not None:
        h.limit = limit


def _span(a: Absence | None) -> float:
    return float("-inf") if a is None else a.span


def _check(w: World) -> None:
    hb = w.kv.latest
    for n in w.svc.live_networks():
        for ip in n.fixed.values():
            if not ip.allocated or ip.host != HOST:
                continue
            h, ref = w.svc.sightings.get(HOST), w.ref.sightings.get(HOST)
            got = h.absence(ip.mac, n.network_id, ip.allocated_seq, hb) if h else None
            want = ref.absence(ip.mac, n.network_id, ip.allocated_seq, hb) if ref else None
            # never longer than the whole sets prove: no grace met they would not meet
            assert _span(got) <= _span(want), (ip.instance, got, want)
            if got is None or w.two or w.unknown:
                continue
            # the truth: no moment the executor saw the MAC lies inside the absence
            since = got.heartbeat.since if got.heartbeat is not None else None
            start = got.first.time if since is None else max(got.first.time, since)
            for t, _, macs in w.observed:
                assert not (ip.mac in macs and start <= t <= got.last.time), (ip.instance, t, got)


K = [0, 0, 0, 1]  # the executor (mostly the first; the second only once started)
FAULTS = ["ok"] * 12 + ["twice", "lost_ack", "refused", "stored_refused", "unknown"]
DT = [1.0, 5.0, 60.0, 900.0]
see_st = st.tuples(  # executor k observes a set (indices into the world's MACs)
    st.just("see"),
    st.sampled_from(K),
    st.sets(st.integers(0, 8), max_size=9),
    st.sampled_from([("1",), ("1", "2"), ("2",)]),
    st.sampled_from(FAULTS),
    st.sampled_from(DT),
)
flip_st = st.tuples(  # ... one MAC more or less than it saw (a change, not a whole set)
    st.just("flip"), st.sampled_from(K), st.integers(0, 8), st.sampled_from(FAULTS),
    st.sampled_from(DT),
)  # fmt: skip
step_st = st.one_of(
    see_st,
    flip_st,
    flip_st,
    flip_st,
    st.tuples(st.just("tick"), st.sampled_from(K), st.sampled_from(DT)),
    st.tuples(st.just("restart"), st.integers(0, 1), st.booleans()),
    st.tuples(st.just("stop"), st.integers(1, 1)),
    st.tuples(st.just("service_snapshot")),
    st.tuples(st.just("realloc"), st.integers(0, 7)),
    st.tuples(st.just("retire")),
    st.tuples(st.just("announce")),
)


async def _play(steps: list[tuple[Any, ...]], clock: Clock, limit: int) -> None:
    w = World(clock, limit)
    for nid, cidr in (("1", "10.5.0.0/24"), ("2", "10.6.0.0/24")):
        w.run("network.create", {"label": f"n{nid}", "cidr": cidr, "mode": "flat_dhcp",
                                 "bridge": f"br{nid}"})  # fmt: skip
    for i in range(8):
        a = w.run("fixed_ip.allocate", {"instance": f"vm-{i}", "network_id": str(1 + i % 2),
                                        "host": HOST})  # fmt: skip
        w.allocated.append(a)
    w.procs[0] = Proc(w, State(), 0)
    w.procs[0].sync()
    try:
        for step in steps:
            kind = step[0]
            if kind == "see":
                _, k, idx, nets, fault, dt = step
                p = w.procs[k]
                if p is None:
                    continue
                w.two = w.two or (w.procs[1 - k] is not None)
                w.clock.now += dt
                macs = w.macs()
                p.fault = fault
                await p.observe(frozenset(macs[i] for i in idx if i < len(macs)), frozenset(nets))
            elif kind == "flip":
                _, k, i, fault, dt = step
                p = w.procs[k]
                if p is None:
                    continue
                w.two = w.two or (w.procs[1 - k] is not None)
                w.clock.now += dt
                mac = w.macs()[i]
                p.fault = fault
                await p.observe(p.seeing.macs ^ {mac}, p.seeing.networks or frozenset({"1"}))
            elif kind == "tick":  # the same set again: a heartbeat
                _, k, dt = step
                p = w.procs[k]
                if p is None:
                    continue
                w.clock.now += dt
                await p.observe(p.seeing.macs, p.seeing.networks)
            elif kind == "restart":  # the process ends; another starts, from a snapshot or not
                _, k, snap = step
                old = w.procs[k]
                if old is not None:
                    old.close()
                    view = state_from_wire(state_to_wire(old.view)) if snap else State()
                    pos = old.pos if snap else 0
                else:
                    view, pos = State(), 0
                w.clock.now += 1.0
                p = w.procs[k] = Proc(w, view, pos)
                p.sync()
                if old is not None:
                    p.seeing = old.seeing
            elif kind == "stop":
                _, k = step
                if w.procs[k] is not None:
                    w.procs[k].close()  # type: ignore[union-attr]
                    w.procs[k] = None
            elif kind == "service_snapshot":  # the service restarts from its snapshot
                again = state_from_wire(state_to_wire(w.svc))
                assert state_to_wire(again) == state_to_wire(w.svc)
                w.svc = again
            elif kind == "realloc":  # an instance goes, another comes (a new MAC)
                _, i = step
                gone = w.allocated[i]
                w.run("fixed_ip.deallocate", {"instance": gone["instance"]})
                nid = gone["network_id"]
                w.allocated[i] = w.run("fixed_ip.allocate", {
                    "instance": f"vm-{next(w.ids)}", "network_id": nid, "host": HOST})  # fmt: skip
            elif kind == "retire":
                w.store(HostRetired(host=HOST))
            elif kind == "announce":
                w.store(HostAnnounced(host=HOST, vtep_address=None, physical_interface=None,
                                      public_interface=None, network_host=False))  # fmt: skip
            _check(w)
    finally:
        for p in w.procs:
            if p is not None:
                p.close()


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(step_st, min_size=40, max_size=120), limit=st.sampled_from([2, 3, 5, 64]))
def test_changes_never_reclaim_what_whole_sets_would_not(
    steps: list[tuple[Any, ...]], limit: int
) -> None:
    clock = Clock()
    with mock.patch.object(sightings, "time", clock):
        asyncio.run(_play(steps, clock, limit))
