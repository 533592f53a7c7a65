"""Review h106: sighting changes at the edges the executor can produce, on the real fold.

* a change stored twice (a retry after the duplicate window): the second copy's base is the
  report before the first — a gap: the host is forgotten, and a MAC the change saw is never
  absent across it;
* a heartbeat after a change confirms it with the digest of the whole set the fold holds, and
  one with the digest of the set before the change does not;
* a service that loads a snapshot between a change's base and the change applies it to the
  restored set.
"""

from __future__ import annotations

from netledger.events.host_events import HostInstancesChanged
from netledger.events.reclaim import candidates
from netledger.events.reclaim_events import Heartbeat, macs_digest
from netledger.events.snapshot import state_from_wire, state_to_wire
from tests.events.test_reclaim_units import world


def _change(
    base: int, added: list[str] | None = None, removed: list[str] | None = None
) -> HostInstancesChanged:
    return HostInstancesChanged(host="h1", base_seq=base, added=added or [],
                                removed=removed or [], networks_added=[], networks_removed=[],
                                leases=0)  # fmt: skip


def test_a_change_stored_twice_forgets_the_host_and_reaches_back_across_nothing() -> None:
    log, a, b = world()
    r1 = log.report("h1", [a["mac"]], 1000)
    log.add(_change(r1, added=[b["mac"]]), 1100)  # vm-b seen at 1100
    log.add(_change(r1, added=[b["mac"]]), 1100)  # the same, stored again
    assert "h1" not in log.state.sightings
    log.report("h1", [a["mac"]], 5000)  # vm-b gone again: a whole set
    log.report("h1", [a["mac"]], 5100)
    # proven from 5000 on only (never from 1000: vm-b was seen at 1100)
    assert candidates(log.state, 200.0) == []
    [c] = candidates(log.state, 100.0)
    assert c.instance == "vm-b" and c.absence.first.time == 5000


def test_a_heartbeat_after_a_change_confirms_the_whole_set() -> None:
    log, a, b = world()
    r1 = log.report("h1", [a["mac"], b["mac"]], 1000)
    r2 = log.add(_change(r1, removed=[b["mac"]]), 1001)
    whole = Heartbeat("h1", r2, 5000.0, macs_digest([a["mac"]]), since=900.0)
    before = Heartbeat("h1", r2, 5000.0, macs_digest([a["mac"], b["mac"]]), since=900.0)
    delta = Heartbeat("h1", r2, 5000.0, macs_digest([]), since=900.0)  # (what changed only)
    [c] = candidates(log.state, 3000.0, heartbeats={"h1": whole})
    assert c.instance == "vm-b" and c.absence.last.time == 5000.0
    assert candidates(log.state, 3000.0, heartbeats={"h1": before}) == []
    assert candidates(log.state, 3000.0, heartbeats={"h1": delta}) == []


def test_a_change_after_a_snapshot_applies_to_the_restored_set() -> None:
    log, a, b = world()
    r1 = log.report("h1", [a["mac"], b["mac"]], 1000)
    r2 = log.add(_change(r1, removed=[b["mac"]]), 1001)
    log.state = state_from_wire(state_to_wire(log.state))
    r3 = log.add(_change(r2, added=[b["mac"]], removed=[a["mac"]]), 1002)
    h = log.state.sightings["h1"]
    assert h.last_macs == {b["mac"]} and h.last_seen(a["mac"]) == r2 and h.last_seq == r3
