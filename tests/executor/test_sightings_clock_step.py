"""A step of the executor's wall clock breaks the continuity of its observation (review h131).

Reports and heartbeats are stamped with the executor's wall clock, and reclaim measures the
grace as the difference of two of them. A clock set forward while the executor runs (NTP
stepping a clock that was hours behind at boot, a VM resumed after a pause) made that
difference hours long after a minute: a heartbeat after the step "proved" a freshly booted
host's instances absent for the grace, and a live instance whose VM took a minute to start was
reclaimed. Now the reporter compares its wall clock with its monotonic one at every poll: a
step is a break (as a failure to observe is) — its next report is a start, and its heartbeats
count from after the step.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from netledger.events.host_events import HostInstancesSeen
from netledger.events.reclaim_events import HostSightings
from netledger.executor.sightings import Sighting, SightingReporter

STEP = 3 * 3600.0


def _reporter(published: list[Any], beats: list[tuple[float, float]]) -> SightingReporter:
    sightings: dict[str, Any] = {}

    async def publish(events: list[Any]) -> int:
        published.append(events[0])
        h = sightings["h1"] = HostSightings()
        h.record(100 + len(published), time.time(), events[0].macs, events[0].networks)
        return 100 + len(published)

    ex = SimpleNamespace(
        cfg=SimpleNamespace(host="h1"),
        state=SimpleNamespace(sightings=sightings, live_networks=lambda: []),
        _publish=publish,
        opts=SimpleNamespace(sighting_changes=True),
    )
    r = SightingReporter.__new__(SightingReporter)
    r.__dict__.update(
        ex=ex, poll=0.01, heartbeat=0.0, last=None, last_at=0.0, reports=0, report_seq=0,
        heartbeats=0, since=time.time(), broken=False, _kv=None, _kv_missing_logged=False,
    )  # fmt: skip
    quiet = Sighting(frozenset(), frozenset({"1"}), 0)
    r.observe = lambda bridges: quiet  # type: ignore[method-assign]
    r._bridges = dict  # type: ignore[method-assign]

    async def heartbeat(s: Sighting) -> bool:
        beats.append((time.time(), r.since))
        return True

    r._heartbeat = heartbeat  # type: ignore[method-assign]
    return r


async def test_a_clock_set_forward_is_a_break_not_hours_of_absence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published: list[Any] = []
    beats: list[tuple[float, float]] = []
    r = _reporter(published, beats)
    assert await r.report_once()  # the start report: the set, at the clock before the step
    assert not await r.report_once()  # a heartbeat confirming it
    assert len(published) == 1 and len(beats) == 1

    wall = time.time
    monkeypatch.setattr(time, "time", lambda: wall() + STEP)  # NTP sets the clock forward
    await r.report_once()
    await r.report_once()
    # Not a heartbeat "still that report" 3 hours later on the same clock: a new start report,
    # and heartbeats counting from after the step.
    assert len(published) == 2, (published, beats)
    assert isinstance(published[1], HostInstancesSeen) and published[1].reason == "start"
    assert all(since >= wall() + STEP - 60 for t, since in beats[1:])
    assert len(beats) >= 1 and beats[0][0] < wall() + 60


async def test_a_steady_clock_is_no_break() -> None:
    published: list[Any] = []
    beats: list[tuple[float, float]] = []
    r = _reporter(published, beats)
    assert await r.report_once()
    for _ in range(5):
        assert not await r.report_once()
    assert len(published) == 1 and len(beats) == 5 and not r.broken
