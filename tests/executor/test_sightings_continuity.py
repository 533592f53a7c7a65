"""The sightings reporter after a report the log refused (found by review): the instance it
had seen is not in the log, so it must not confirm the log's older report by heartbeat — its
next report is a start (no absence reaches back across it) and its heartbeats count from the
failure."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from netledger.events.errors import LogStorageFull
from netledger.executor.sightings import Sighting, SightingReporter

M = "02:16:3e:00:00:01"


async def test_a_refused_report_breaks_continuity() -> None:
    published: list[Any] = []
    sightings: dict[str, Any] = {}
    refuse = [True]

    async def publish(events: list[Any]) -> int:
        if refuse[0]:
            refuse[0] = False
            raise LogStorageFull("the stream is full")
        published.append(events[0])
        sightings["h1"] = events[0]  # the executor's fold holds its report once stored
        return 100 + len(published)

    ex = SimpleNamespace(
        cfg=SimpleNamespace(host="h1"),
        state=SimpleNamespace(sightings=sightings, live_networks=lambda: []),
        _publish=publish,
        opts=SimpleNamespace(sighting_changes=True),
    )
    r = SightingReporter.__new__(SightingReporter)
    quiet = Sighting(frozenset(), frozenset({"1"}), 0)  # what report 7 in the log says
    r.__dict__.update(
        ex=ex, poll=0.01, heartbeat=0.0, last=quiet, last_at=0.0, reports=0, report_seq=7,
        heartbeats=0, since=0.0, broken=False, _kv=None, _kv_missing_logged=False,
        kernel=SimpleNamespace(close=lambda: None),
    )  # fmt: skip
    # M shows up (its report is refused), then goes quiet again: the set equals report 7's
    views = iter([Sighting(frozenset({M}), frozenset({"1"}), 0)])
    r.observe = lambda bridges: next(views, quiet)  # type: ignore[method-assign]
    beats: list[float] = []

    async def heartbeat(s: Sighting) -> bool:
        beats.append(r.since)
        return True

    r._heartbeat = heartbeat  # type: ignore[method-assign]
    task = asyncio.create_task(r.run())
    try:
        for _ in range(200):
            if published and beats:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    # not a heartbeat confirming report 7 (which never saw M): a new report, a start
    assert published and published[0].reason == "start" and published[0].macs == []
    assert r.report_seq == 101 and not r.broken
    assert r.since > 0.0 and all(b == r.since for b in beats)  # counted from the failure
