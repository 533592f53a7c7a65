"""No absence is counted across time the host was not watching (found by review): an
executor's downtime (its restart report, or its heartbeats after a restart that adopted the
log's newest report) and a report the log refused (the instance was seen, the log does not
say so) used to count as observed absence, and a live instance's address was reclaimed."""

from __future__ import annotations

from netledger.events.reclaim_events import Heartbeat, HostSightings, macs_digest

M = "02:16:3e:00:00:01"
OTHER = "02:16:3e:00:00:02"


def test_an_absence_does_not_reach_back_across_a_start_report() -> None:
    h = HostSightings()
    h.record(10, 1000.0, [OTHER], ["1"])  # lacks M
    h.record(11, 9000.0, [OTHER], ["1"], start=True)  # after 8,000 s nobody watched
    a = h.absence(M, "1", since_seq=5)
    assert a is not None and a.first.seq == 11 and a.span == 0.0
    h.record(12, 9500.0, [OTHER, "02:16:3e:00:00:03"], ["1"])
    a = h.absence(M, "1", since_seq=5)
    assert a is not None and (a.first.seq, a.span) == (11, 500.0)


def test_without_a_start_the_reports_span_as_before() -> None:
    h = HostSightings()
    h.record(10, 1000.0, [OTHER], ["1"])
    h.record(11, 9000.0, [OTHER, "02:16:3e:00:00:03"], ["1"])
    a = h.absence(M, "1", since_seq=5)
    assert a is not None and a.span == 8000.0


def test_a_heartbeat_counts_only_from_when_its_reporter_watched_without_a_break() -> None:
    h = HostSightings()
    h.record(10, 1000.0, [OTHER], ["1"])
    digest = macs_digest([OTHER])
    old = Heartbeat("h1", 10, 9000.0, digest)  # a reporter of before: no "since"
    assert h.absence(M, "1", 5, old).span == 8000.0  # type: ignore[union-attr]
    restarted = Heartbeat("h1", 10, 9000.0, digest, since=8900.0)  # adopted report 10 at 8,900
    assert h.absence(M, "1", 5, restarted).span == 100.0  # type: ignore[union-attr]
    watching = Heartbeat("h1", 10, 9000.0, digest, since=500.0)
    assert h.absence(M, "1", 5, watching).span == 8000.0  # type: ignore[union-attr]
