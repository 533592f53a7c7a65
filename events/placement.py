"""The events the service adds to a decision for the executors' reading (events/placement_events.py).
Pure.

A host *joins* a network when an allocation (or an instance moving to it, ``FixedIpMoved``)
gives it an allocated address there while it held none (``NetworkState.host_allocated``): the
join is appended with the allocation — right before it on a single server (the allocation
stored only if the join is the stream's last message: service/prelink.py), else in the same
atomic batch, after it — so an executor that learns of the join reads the allocation from the
network's subject. A join whose allocation was refused stays alone (reason ``allocating``):
its host reads the network, holds nothing there, and stops. A host that later holds no address there stops reading the network; its next
allocation there is a join again.

A floating IP associated (disassociated) on its pool's subject is also mapped (unmapped) on the
network's subject, in the same batch: the NAT of a network is read from the network.

A network deleted (``NetworkDeleted`` on its subject) is also *retired* on the registry
(``NetworkRetired``), in the same atomic batch, after it: the registry is the one subject every
executor reads, and a network's own subject only while it needs the network (executor/view.py
takes a retirement of a network it still holds as its deletion: ``State.retire``). The registry
is OCC-checked like the network: network creations decide on it (a creation and a deletion on
two replicas at once: one of them decides again), and the service folds its own appends ahead of
its reader only on checked subjects (service/service.py ``_fold_appended``). Deletions written
before retirements existed get theirs later (``legacy_retirements``).

``backfill`` covers streams written before these existed: every (host, network) with allocated
addresses and no join in the log, every association without its mapping, gets one (the service
appends them at start).

``legacy_indexes``: a host whose latest announcement sits on its host subject (written by an
executor from before ``netledger.evt.announce.<host>``, which the other executors' shares do not
read) gets a ``LegacyAnnouncementIndexed`` pointing at it — at the service's start, and whenever
such an announcement comes later (an executor not yet upgraded restarting).

``legacy_retirements``: a deletion with no retirement after it (written before retirements
existed, or by a service not yet upgraded) gets one on the registry, at the service's start
and whenever one comes later — unless the id was created again since (the retirement would
take the new network out of the views). An executor that never read the deletion (its share
did not hold the network then, or it started later and read the creation from the registry
alone) drops the network; one that read it changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from .decide_common import Pending
from .ids import PLACEMENT_PREFIX
from .placement_events import (
    FloatingIpMapped,
    FloatingIpUnmapped,
    LegacyAnnouncementIndexed,
    NetworkHostJoined,
    NetworkRetired,
)
from .state import State
from .types import (
    Event,
    FixedIpAllocated,
    FixedIpMoved,
    FloatingIpAssociated,
    FloatingIpDisassociated,
    NetworkDeleted,
)


def joins(
    state: State,
    events: Iterable[Event],
    already: set[tuple[str, str]],
    pending: Pending | None = None,
) -> list[Event]:
    """The joins ``events`` (one decision) cause, given the joins ``already`` decided earlier in
    the same batch (updated) and how the batch's earlier decisions changed each host's count
    (``pending``: a host whose last address went earlier in the batch joins again — found by
    review: its executor may leave the network before it reads the allocation)."""
    out: list[Event] = []
    for ev in events:
        if not isinstance(ev, FixedIpAllocated | FixedIpMoved) or ev.host is None:
            continue
        key = (ev.host, ev.network_id)
        if key in already:
            continue
        n = state.networks.get(ev.network_id)
        delta = pending.host_delta.get(key, 0) if pending is not None else 0
        if n is not None and n.host_allocated.get(ev.host, 0) + delta > 0:
            continue
        already.add(key)
        out.append(NetworkHostJoined(network_id=ev.network_id, host=ev.host))
    return out


def mappings(events: Iterable[Event]) -> list[Event]:
    """The network-side twin of every floating association change in ``events``."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, FloatingIpAssociated):
            out.append(FloatingIpMapped(ev.network_id, ev.address, ev.fixed_address, ev.pool))
        elif isinstance(ev, FloatingIpDisassociated):
            out.append(FloatingIpUnmapped(ev.network_id, ev.address, ev.fixed_address, ev.pool))
    return out


def retirements(events: Iterable[Event]) -> list[Event]:
    """The registry's record of every network deletion in ``events``."""
    return [NetworkRetired(ev.network_id) for ev in events if isinstance(ev, NetworkDeleted)]


def companions(
    state: State,
    events: list[Event],
    joined: set[tuple[str, str]],
    pending: Pending | None = None,
) -> list[Event]:
    """Everything the service appends with ``events`` (one decision) for the executors."""
    return [*mappings(events), *joins(state, events, joined, pending), *retirements(events)]


def backfill(state: State) -> list[Event]:
    """Joins and mappings missing from the log for what is allocated and associated now
    (sorted, deterministic: replicas starting together write the same message ids)."""
    out: list[Event] = []
    for n in state.live_networks():
        for host in sorted(n.host_allocated):
            if host not in n.joined:
                out.append(NetworkHostJoined(network_id=n.network_id, host=host, reason="backfill"))
    for p in sorted(state.pools.values(), key=lambda p: p.name):
        for f in sorted(p.floating.values(), key=lambda f: f.address):
            if f.network_id is None or f.fixed_address is None:
                continue
            net = state.networks.get(f.network_id)
            if net is not None and net.floating.get(f.address) != (f.fixed_address, p.name):
                out.append(
                    FloatingIpMapped(f.network_id, f.address, f.fixed_address, p.name, "backfill")
                )
    return out


def legacy_indexes(state: State) -> list[LegacyAnnouncementIndexed]:
    """A pointer to every announcement the executors' shares miss (sorted, deterministic:
    replicas write the same message ids)."""
    return [LegacyAnnouncementIndexed(h, s) for h, s in sorted(state.legacy_announced.items())]


def legacy_retirements(state: State) -> list[tuple[NetworkRetired, int]]:
    """A retirement of every deletion without one, with its deletion's sequence (oldest
    first, deterministic: replicas write the same message ids)."""
    pending = sorted(state.unretired.items(), key=lambda kv: kv[1])
    return [(NetworkRetired(nid), seq) for nid, seq in pending]


def unchecked(subject: str) -> bool:
    """Subjects appended without an OCC check: a placement subject only collects joins decided
    under their network's check (two networks may add to one host's placements at once)."""
    return subject.startswith(PLACEMENT_PREFIX)
