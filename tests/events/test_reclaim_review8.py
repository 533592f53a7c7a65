"""Review hrev8 (reclaim under races), pure parts: thinning a host's reports must not lose a
start report — "no absence reaches back across a start" (docs/reclaim.md) must hold however
many reports a host has made since."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from netledger.events.host_events import HostInstancesSeen
from netledger.events.reclaim import candidates
from netledger.events.reclaim_events import MAX_REPORTS, HostSightings
from tests.events.test_reclaim_units import world

M = "02:16:3e:00:00:01"
OTHERS = [f"02:16:3e:00:01:{i:02x}" for i in range(4)]


def _restart_then_busy(h: Any, first_seq: int, record: Any) -> None:
    """A report lacking M, then the host down for ~5 h (a reboot), a start report, and then
    enough set changes (VMs booting, leases) to fill the host's memory: 64 reports in 320 s."""
    record(first_seq, 1000.0, [OTHERS[0]], False)
    record(first_seq + 1, 20000.0, [], True)  # the executor's first report after the reboot
    for k in range(1, MAX_REPORTS):
        record(first_seq + 1 + k, 20000.0 + 5 * k, [OTHERS[k % 4]], False)


def test_thinning_keeps_a_start_report_from_being_crossed() -> None:
    h = HostSightings()

    def record(seq: int, t: float, macs: list[str], start: bool) -> None:
        h.record(seq, t, macs, ["1"], start)

    _restart_then_busy(h, 10, record)
    assert len(h.reports) <= MAX_REPORTS  # thinned once
    a = h.absence(M, "1", since_seq=5)
    assert a is not None
    # Observed without a break only since the start report at 20,000 (its time on the host's
    # clock): M's absence cannot be longer than that.
    assert a.first.time >= 20000.0, (a.first, a.span)
    assert a.span <= h.reports[-1].time - 20000.0


def test_a_live_instance_booting_after_a_host_reboot_is_not_reclaimed() -> None:
    """The same on the fold the service decides on: vm-a's host rebooted 315 s ago; before the
    reboot vm-a was not seen (nor since: it is still booting). Nobody watched those 5 hours."""
    log, _a, b = world()
    keep = b["mac"]

    def record(seq: int, t: float, macs: list[str], start: bool) -> None:
        ev = HostInstancesSeen(
            host="h1", macs=[keep, *macs], networks=["1"], reason="start" if start else "change"
        )
        log.add(ev, t)

    _restart_then_busy(None, 0, record)
    found = candidates(log.state, 3600.0)
    assert [c.instance for c in found] == [], [(c.instance, c.absence.span) for c in found]


# --- the rule, with starts, against its definition (brute force) ---------------------------

REPORT = st.tuples(
    st.floats(0.0, 50.0),  # time since the previous report
    st.sets(st.sampled_from(["a", "b", "c"]), max_size=3),
    st.booleans(),  # covers the network
    st.sampled_from([False] * 6 + [True]),  # a start (rare: a later one would hide the loss)
)


def brute_force_span(
    reports: list[tuple[int, float, set[str], bool, bool]], mac: str, since_seq: int
) -> float | None:
    """docs/reclaim.md: r1 the first covering report after b, r2 the latest covering one; a
    start between (r1, r2] moves r1 to the first covering report at or after it."""
    last_seen = max((s for s, _, m, _, _ in reports if mac in m), default=0)
    after = max(since_seq, last_seen)
    later = [r for r in reports if r[0] > after]
    covering = [r for r in later if r[3]]
    if not covering:
        return None
    first, last = covering[0], covering[-1]
    starts = [r for r in later if r[4] and first[0] < r[0] <= last[0]]
    if starts:
        first = next(r for r in covering if r[0] >= starts[-1][0])
    return last[1] - first[1]


LIMIT = 8


@settings(max_examples=300, deadline=None)
@given(st.lists(REPORT, min_size=LIMIT, max_size=LIMIT * 5), st.sampled_from(["a", "b", "c"]))
@example(
    [(1.0, set(), True, False), (100.0, set(), True, True)] + [(1.0, set(), True, False)] * 7, "a"
)
def test_thinning_never_lengthens_an_absence_with_starts(
    raw: list[tuple[float, set[str], bool, bool]], mac: str
) -> None:
    h = HostSightings(limit=LIMIT)
    reports = []
    t = 0.0
    for i, (dt, macs, covers, start) in enumerate(raw, 1):
        t += dt
        reports.append((i, t, macs, covers, start))
        h.record(i, t, sorted(macs), ["1"] if covers else ["9"], start)
    for since in (0, len(raw) // 3, len(raw) // 2):
        a = h.absence(mac, "1", since)
        want = brute_force_span(reports, mac, since)
        if a is not None:
            assert want is not None and a.span <= want, (a, want)
