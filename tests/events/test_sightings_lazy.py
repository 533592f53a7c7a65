"""A host's sightings keep "when was each MAC last seen" in two parts (events/reclaim_events.py
``HostSightings``: the newest report's MACs, and ``past``) instead of one dict written at every
report. Held here to the one-dict way it replaced (``Eager``, that code as it was): after any
sequence of reports, forgettings (an allocation ended), prunings (``keep_only``) and thinnings,
the same mapping, the same last sighting of every MAC, the same absences; through a snapshot's
wire form too."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.reclaim_events import HostSightings, Report
from netledger.events.snapshot import _sightings_from, _sightings_to

MACS = [f"02:00:00:00:00:{i:02x}" for i in range(12)]
NETS = ["1", "2", "3"]


@dataclass
class Eager:
    """HostSightings before (7048533): one dict, every MAC of every report written into it."""

    reports: list[Report] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    last_macs: frozenset[str] = frozenset()
    limit: int = 64

    def record(
        self, seq: int, time: float, macs: list[str], networks: list[str], start: bool
    ) -> None:
        nets = frozenset(networks)
        if self.reports and self.reports[-1].networks == nets:
            nets = self.reports[-1].networks
        self.reports.append(Report(seq, time, nets, start))
        self.last_macs = frozenset(map(str.lower, macs))
        self.seen.update(dict.fromkeys(self.last_macs, seq))
        if len(self.reports) > self.limit:
            half = len(self.reports) // 2
            kept = self.reports[:half:2] + self.reports[half:]
            for k in range(1, half, 2):  # a start dropped marks the next report kept
                if self.reports[k].start:
                    kept[(k + 1) // 2] = kept[(k + 1) // 2]._replace(start=True)
            self.reports = kept
            oldest = self.reports[0].seq
            self.seen = {m: s for m, s in self.seen.items() if s >= oldest}

    def keep_only(self, live: dict[str, int] | None) -> None:
        n = len(live) if live else 0
        if len(self.seen) > 2 * n + 4 * self.limit:
            self.seen = {m: s for m, s in self.seen.items() if live and m in live}

    def forget(self, mac: str) -> None:
        self.seen.pop(mac, None)


macs_st = st.lists(st.sampled_from(MACS), max_size=8, unique=True)
op_st = st.one_of(
    st.tuples(
        st.just("report"),
        macs_st,
        st.lists(st.sampled_from(NETS), min_size=1, unique=True),
        st.booleans(),
    ),
    st.tuples(st.just("forget"), st.sampled_from(MACS)),
    st.tuples(
        st.just("keep"), st.none() | st.lists(st.sampled_from(MACS), max_size=6, unique=True)
    ),
)


def _same(h: HostSightings, ref: Eager) -> None:
    assert h.seen == ref.seen
    assert h.last_macs == ref.last_macs
    assert h.reports == ref.reports
    for m in MACS:
        assert h.last_seen(m) == ref.seen.get(m, 0)
    assert h.forgotten <= h.last_macs
    assert not set(h.past) & h.last_macs


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(op_st, max_size=60), limit=st.sampled_from([2, 3, 5, 64]))
def test_two_parts_answer_as_one_dict(ops: list[tuple], limit: int) -> None:
    h, ref = HostSightings(limit=limit), Eager(limit=limit)
    seq = 0
    for op in ops:
        seq += 1
        if op[0] == "report":
            _, macs, nets, start = op
            # upper case at times: taken in lower case either way
            sent = [m.upper() if seq % 3 == 0 else m for m in macs]
            h.record(seq, float(seq), sent, nets, start)
            ref.record(seq, float(seq), sent, nets, start)
        elif op[0] == "forget":
            h.forget(op[1])
            ref.forget(op[1])
        else:
            live = None if op[1] is None else dict.fromkeys(op[1], 1)
            h.keep_only(live)
            ref.keep_only(live)
        _same(h, ref)
        for mac in MACS[:4]:
            for net in NETS[:2]:
                for since in (0, seq // 2):
                    assert h.absence(mac, net, since) == _eager_absence(ref, mac, net, since)
        again = _sightings_from(_sightings_to(h))
        assert again == h  # the same parts from the snapshot's wire form


class _OnOneDict(HostSightings):
    """HostSightings whose last sightings are read from one given dict (as before)."""

    def __init__(self, ref: Eager) -> None:
        super().__init__(reports=list(ref.reports), last_macs=ref.last_macs, limit=ref.limit)
        self.one = ref.seen

    def last_seen(self, mac: str) -> int:
        return self.one.get(mac, 0)


def _eager_absence(ref: Eager, mac: str, net: str, since: int) -> object:
    return _OnOneDict(ref).absence(mac, net, since)


def test_a_snapshot_whose_newest_macs_were_seen_elsewhere_is_refused() -> None:
    """The newest report's MACs were all last seen in it: a mapping that says otherwise is not
    what the fold kept (the snapshot is then not used: the log is folded instead)."""
    reports = [Report(3, 3.0, frozenset({"1"})), Report(7, 7.0, frozenset({"1"}))]
    macs = frozenset({MACS[0], MACS[1]})
    ok = HostSightings.from_seen(reports, {MACS[0]: 7, MACS[2]: 3}, macs, 64)
    assert ok.seen == {MACS[0]: 7, MACS[2]: 3}
    assert ok.forgotten == {MACS[1]}
    with pytest.raises(ValueError):
        HostSightings.from_seen(reports, {MACS[0]: 3}, macs, 64)
    with pytest.raises(ValueError):
        HostSightings.from_seen([], {}, macs, 64)
