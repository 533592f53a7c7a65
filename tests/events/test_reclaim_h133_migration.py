"""Review h133: an address is never reclaimed while any host's newest report lists its MAC.

The allocation names host h2 (a migration was recorded: ``FixedIpMoved``), the instance still
runs on h1 (the live migration failed and left it there). h2's reports prove it absent from h2;
h1's, which list it, used to be ignored — only the allocation's host was consulted — and the
address was freed while the instance ran. Checked on the fold the service decides on: whole
reports and changes, MACs in any case, the old host keeping only its newest report, a snapshot.
"""

from __future__ import annotations

from collections import OrderedDict

from netledger.events.host_events import HostInstancesChanged
from netledger.events.reclaim import candidates, survey
from netledger.events.reclaim_events import FixedIpReclaimed
from netledger.events.snapshot import digest, dumps, loads
from netledger.events.state import State
from tests.events.test_reclaim_units import Log, world

GRACE = 5.0


def _moved_but_left_on_h1(log: Log, moved: list[str], macs: list[str]) -> None:
    """h1 sees ``macs``; every instance of ``moved`` is moved to h2; h2 then reports without
    any of them for far longer than the grace."""
    log.report("h1", macs, 1000)
    for inst in moved:
        log.run("fixed_ip.allocate", {"instance": inst, "network_id": "1", "host": "h2"})
    log.report("h2", [], 1001)
    log.report("h2", [], 1100)


def test_an_instance_left_on_its_old_host_is_held_back_and_said_so() -> None:
    log, a, b = world()
    _moved_but_left_on_h1(log, ["vm-b"], [a["mac"], b["mac"].upper()])  # (any case)
    assert candidates(log.state, GRACE) == []
    s = survey(log.state, GRACE)
    [held] = s.held_back
    assert (held.candidate.instance, held.candidate.host, held.seen_on) == ("vm-b", "h2", ("h1",))
    assert held.as_dict()["seen_on"] == ["h1"]
    assert log.reclaim("1", "h2", GRACE) == []
    # h1 goes on listing it in changes (not whole sets): still held back.
    base = log.state.sightings["h1"].last_seq
    log.add(HostInstancesChanged("h1", base, ["02:00:00:00:00:99"], [], [], [], 0), 1200)
    assert log.reclaim("1", "h2", GRACE) == []
    # h1 stops listing it: h2's absence, long past the grace, frees it.
    base = log.state.sightings["h1"].last_seq
    log.add(HostInstancesChanged("h1", base, [], [b["mac"]], [], [], 0), 1201)
    [ev] = log.reclaim("1", "h2", GRACE)[:-1]
    assert isinstance(ev, FixedIpReclaimed) and ev.instance == "vm-b" and ev.host == "h2"


def test_the_old_host_holding_no_allocation_still_holds_the_reclaim_back() -> None:
    """Every allocation moved off h1: the fold keeps only h1's newest report (and forgets the
    MACs' last sightings there) — that report's set is what holds the reclaims back."""
    log, a, b = world()
    _moved_but_left_on_h1(log, ["vm-a", "vm-b"], [a["mac"], b["mac"]])
    assert "h1" not in log.state.host_macs
    s = survey(log.state, GRACE)
    assert s.candidates == []
    assert sorted(h.candidate.instance for h in s.held_back) == ["vm-a", "vm-b"]
    assert log.reclaim("1", "h2", GRACE) == []
    log.report("h1", [a["mac"]], 1300)  # vm-b left h1
    [ev] = log.reclaim("1", "h2", GRACE)[:-1]
    assert isinstance(ev, FixedIpReclaimed) and ev.instance == "vm-b"


def test_a_service_started_from_a_snapshot_holds_back_the_same() -> None:
    log, a, b = world()
    _moved_but_left_on_h1(log, ["vm-b"], [a["mac"], b["mac"]])
    created = "2026-12-07T00:00:00+00:00"
    body = dumps(log.state, OrderedDict(), seq=log.seq, stream="NETLEDGER", created=created)
    loaded: State = loads(body, sha256=digest(body), stream="NETLEDGER", created=created).state
    assert survey(loaded, GRACE) == survey(log.state, GRACE)
    assert candidates(loaded, GRACE) == []
