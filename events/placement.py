"""When the command service writes ``NetworkHostJoined`` (events/placement_events.py). Pure.

A host *joins* a network when an allocation gives it an allocated address there while it held
none (``NetworkState.host_allocated``): the join goes into the same atomic batch as the
allocation, after it, so an executor that learns of the join can read the allocation from the
network's subject. A host that later holds no address there stops reading the network; its next
allocation there is a join again.

``backfill`` covers streams written before joins existed: every (host, network) with allocated
addresses and no join in the log gets one (the service appends them at start).
"""

from __future__ import annotations

from collections.abc import Iterable

from .ids import PLACEMENT_PREFIX
from .placement_events import NetworkHostJoined
from .state import State
from .types import Event, FixedIpAllocated


def joins(state: State, events: Iterable[Event], already: set[tuple[str, str]]) -> list[Event]:
    """The joins ``events`` (one decision) cause, given the joins ``already`` decided earlier in
    the same batch (updated)."""
    out: list[Event] = []
    for ev in events:
        if not isinstance(ev, FixedIpAllocated) or ev.host is None:
            continue
        key = (ev.host, ev.network_id)
        if key in already:
            continue
        n = state.networks.get(ev.network_id)
        if n is not None and n.host_allocated.get(ev.host, 0) > 0:
            continue
        already.add(key)
        out.append(NetworkHostJoined(network_id=ev.network_id, host=ev.host))
    return out


def backfill(state: State) -> list[NetworkHostJoined]:
    """Joins missing from the log for the addresses allocated now (sorted, deterministic)."""
    out = []
    for n in state.live_networks():
        for host in sorted(n.host_allocated):
            if (host, n.network_id) not in state.joined:
                out.append(NetworkHostJoined(network_id=n.network_id, host=host, reason="backfill"))
    return sorted(out, key=lambda j: (j.host, j.network_id))


def unchecked(subject: str) -> bool:
    """Subjects appended without an OCC check: a placement subject only collects joins decided
    under their network's check (two networks may add to one host's placements at once)."""
    return subject.startswith(PLACEMENT_PREFIX)
