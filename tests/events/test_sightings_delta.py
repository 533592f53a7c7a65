"""A host's sighting report as what changed (``HostInstancesChanged``, events/host_events.py)
folds to exactly the state of the same reports sent as whole sets (``HostInstancesSeen``): the
newest set, when each MAC was last seen, the reports — through forgettings, prunings, thinnings
and snapshots taken between them. A change whose base the fold does not hold (a gap) is never
guessed: the host's reports are forgotten, and no absence reaches back across it."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.host_events import HostInstancesChanged, HostInstancesSeen, HostReconciled
from netledger.events.reclaim import candidates
from netledger.events.reclaim_events import HostSightings
from netledger.events.snapshot import _sightings_from, _sightings_to, state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.wire_fast import wire_of
from tests.events.test_reclaim_units import world

MACS = [f"02:00:00:00:00:{i:02x}" for i in range(12)]
NETS = ["1", "2", "3"]

macs_st = st.lists(st.sampled_from(MACS), max_size=8, unique=True)
nets_st = st.lists(st.sampled_from(NETS), min_size=1, unique=True)
op_st = st.one_of(
    st.tuples(st.just("report"), macs_st, nets_st, st.booleans()),
    st.tuples(st.just("forget"), st.sampled_from(MACS)),
    st.tuples(
        st.just("keep"), st.none() | st.lists(st.sampled_from(MACS), max_size=6, unique=True)
    ),
)


def _same(h: HostSightings, ref: HostSightings) -> None:
    assert h.reports == ref.reports
    assert h.past == ref.past
    assert h.last_macs == ref.last_macs
    assert h.forgotten == ref.forgotten
    assert h.seen == ref.seen
    for m in MACS:
        assert h.last_seen(m) == ref.last_seen(m)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op_st, max_size=60), limit=st.sampled_from([2, 3, 5, 64]))
def test_changes_record_what_whole_sets_record(ops: list[tuple[Any, ...]], limit: int) -> None:
    full, delta = HostSightings(limit=limit), HostSightings(limit=limit)
    sent: tuple[set[str], set[str]] | None = None  # what the delta side last reported
    seq = 0
    for op in ops:
        seq += 1
        if op[0] == "report":
            _, macs, nets, start = op
            upper = [m.upper() if seq % 3 == 0 else m for m in macs]  # lower case either way
            full.record(seq, float(seq), upper, nets, start)
            if sent is None or start:  # a start is always a whole set (executor/sightings.py)
                delta.record(seq, float(seq), upper, nets, start)
            else:
                old, old_nets = sent
                delta.record_change(
                    seq,
                    float(seq),
                    [m for m in upper if m.lower() not in old],
                    sorted(old - set(macs)),
                    sorted(set(nets) - old_nets),
                    sorted(old_nets - set(nets)),
                )
            sent = (set(macs), set(nets))
        elif op[0] == "forget":
            full.forget(op[1])
            delta.forget(op[1])
        else:
            live = None if op[1] is None else dict.fromkeys(op[1], 1)
            full.keep_only(live)
            delta.keep_only(live)
        _same(delta, full)
        for mac in MACS[:4]:
            for net in NETS[:2]:
                assert delta.absence(mac, net, seq // 2) == full.absence(mac, net, seq // 2)
        again = _sightings_from(_sightings_to(delta))
        assert again == full  # a snapshot's wire form: the same parts
        if seq % 4 == 0:
            delta = again  # and the changes after a snapshot apply to what it restored


# --- through the fold: the events, their wire form, snapshots between them -----------------

reports_st = st.lists(st.tuples(macs_st, nets_st, st.integers(0, 2)), min_size=1, max_size=30)


def _streams(reports: list[tuple[list[str], list[str], int]]) -> tuple[list[Any], list[Any]]:
    """(seq, event, time) of the same reports as whole sets and as changes (a start whole),
    with other host events between them (the changes' base is the previous report's seq)."""
    full: list[Any] = []
    delta: list[Any] = []
    seq, base = 0, 0
    old: tuple[set[str], set[str]] | None = None
    for k, (macs, nets, between) in enumerate(reports):
        for _ in range(between):
            seq += 1
            ev = HostReconciled(host="h1", applied_seq=seq, changes=0, drift_repairs=0,
                                duration_ms=1.0)  # fmt: skip
            full.append((seq, ev, float(k)))
            delta.append((seq, ev, float(k)))
        seq += 1
        whole = HostInstancesSeen(host="h1", macs=macs, networks=nets,
                                  reason="start" if old is None else "change")  # fmt: skip
        full.append((seq, whole, float(k)))
        if old is None:
            delta.append((seq, whole, float(k)))
        else:
            ev = HostInstancesChanged(
                host="h1", base_seq=base, added=sorted(set(macs) - old[0]),
                removed=sorted(old[0] - set(macs)), networks_added=sorted(set(nets) - old[1]),
                networks_removed=sorted(old[1] - set(nets)), leases=0,
            )  # fmt: skip
            delta.append((seq, ev, float(k)))
        old, base = (set(macs), set(nets)), seq
    return full, delta


def _fold(state: State, events: list[Any], wire: bool) -> State:
    for seq, ev, t in events:
        env = Envelope(ev, f"e{seq}", f"c{seq}", t, SYSTEM)
        if wire:
            w = wire_of(encode(env))
            assert w is not None
            assert state.fold_wire(seq, ev.subject(), w) is None
        else:
            assert state.apply(seq, ev.subject(), env)
    return state


@settings(max_examples=150, deadline=None)
@given(
    reports=reports_st,
    live=st.none() | st.lists(st.sampled_from(MACS), min_size=1, max_size=6, unique=True),
    cut=st.integers(0, 60),
    wire=st.booleans(),
)
def test_the_fold_of_changes_is_the_fold_of_whole_sets(
    reports: list[tuple[list[str], list[str], int]], live: list[str] | None, cut: int, wire: bool
) -> None:
    full, delta = _streams(reports)
    want, got = State(), State()
    if live is not None:  # allocations on the host (what its memory of sightings follows)
        for s in (want, got):
            s.host_macs["h1"] = dict.fromkeys(live, 1)
    _fold(want, full, wire)
    # a snapshot at any point between: the changes after it apply to what it restored
    _fold(got, delta[:cut], wire)
    got = state_from_wire(state_to_wire(got))
    if live is not None:  # (derived from the allocations, which this state has none of)
        got.host_macs["h1"] = dict.fromkeys(live, 1)
    _fold(got, delta[cut:], wire)
    assert state_to_wire(got) == state_to_wire(want)
    assert got.sightings == want.sightings


# --- gaps ----------------------------------------------------------------------------------


def _change(base: int, added: list[str] = [], removed: list[str] = []) -> HostInstancesChanged:  # noqa: B006
    return HostInstancesChanged(host="h1", base_seq=base, added=added, removed=removed,
                                networks_added=[], networks_removed=[], leases=0)  # fmt: skip


def test_a_change_whose_base_is_not_the_newest_report_forgets_the_host() -> None:
    log, a, b = world()
    r1 = log.report("h1", [a["mac"], b["mac"]], 1000)
    log.add(_change(r1, removed=[b["mac"]]), 1001)
    assert log.state.sightings["h1"].last_macs == {a["mac"]}
    log.add(_change(r1, added=[b["mac"]]), 1002)  # its base is not the newest (a gap)
    assert "h1" not in log.state.sightings
    log.add(_change(log.seq, removed=[a["mac"]]), 1003)  # nothing held: nothing to change
    assert "h1" not in log.state.sightings
    log.report("h1", [a["mac"]], 1004)  # a whole set: held again, from here on
    h = log.state.sightings["h1"]
    assert h.last_macs == {a["mac"]} and [r.time for r in h.reports] == [1004]


def test_no_absence_reaches_back_across_a_gap() -> None:
    """vm-b was absent at 1000, seen in a change this reader could not apply (1100), absent
    again at 5000: a whole-set fold knows it was seen at 1100; a fold that guessed — or kept
    its reports across the gap — would see it absent 4,000 s and free a live address."""
    log, a, b = world()
    r1 = log.report("h1", [a["mac"]], 1000)
    log.add(_change(r1 + 1, added=[b["mac"]]), 1100)  # a base this reader does not hold
    log.report("h1", [a["mac"]], 5000)
    assert candidates(log.state, 3600.0) == []
    log.report("h1", [a["mac"]], 8600)  # from the whole set after the gap on: proven
    [c] = candidates(log.state, 3600.0)
    assert c.instance == "vm-b" and c.absence.first.time == 5000


def test_a_change_is_a_report_for_reclaim_and_heartbeats() -> None:
    log, a, b = world()
    r1 = log.report("h1", [a["mac"], b["mac"]], 1000)
    r2 = log.add(_change(r1, removed=[b["mac"].upper()]), 1001)
    r3 = log.add(_change(r2), 1010)  # (nothing changed: still a report)
    [c] = candidates(log.state, 5.0)
    assert (c.instance, c.absence.first.seq, c.absence.last.seq) == ("vm-b", r2, r3)
    log.add(_change(r3, added=[b["mac"]]), 1011)  # seen again
    assert candidates(log.state, 5.0) == []
