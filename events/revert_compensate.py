"""Revert's pure core: the compensating events that undo stored events on a :class:`State`.

Given the stored events a revert covers, :func:`compensate` walks them newest first and picks,
for each, the event that undoes it (``_UNDO``), checked against the state as the earlier
compensations of the same revert leave it (a :class:`_Shadow` over :class:`State`). Every event a
later change made impossible to undo is named in one :class:`RevertConflict`.

Kept apart from :mod:`netledger.events.revert` (the ``revert`` command: its wire format, parsing
and decider) because this is the domain rule itself: no request, no wire format, no I/O, so it is
unit- and hypothesis-tested on a bare :class:`State`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from msgspec import structs

from .errors import ConflictError
from .host_events import HostEvent
from .ids import EVENT_PREFIX, network_subject, project_subject
from .placement_events import (
    FloatingIpMapped,
    FloatingIpUnmapped,
    LegacyAnnouncementIndexed,
    NetworkHostJoined,
    NetworkRetired,
)
from .reclaim_events import FixedIpReconfirmed
from .revert_events import ChangeReverted, NetworkReassociated
from .revert_owners import Refused as _Refused
from .revert_owners import project_back
from .state import FixedIp, FloatingIp, NetworkState, PoolState, State
from .types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpFreed,
    FixedIpLeased,
    FixedIpMoved,
    FixedIpReleased,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    FloatingPoolCreated,
    NetworkAssociated,
    NetworkCreated,
    NetworkDeleted,
    NetworkDisassociated,
)

#: Reported facts about the world, not decisions: a revert leaves them as they are (undoing a
#: DHCP lease would lie about the client that holds it).
SKIPPED_TYPES: tuple[type[Event], ...] = (
    FixedIpLeased,
    FixedIpReleased,
    FixedIpFreed,
    # where an instance runs is the world's fact too: a revert of its allocation deallocates
    # it wherever it is now
    FixedIpMoved,
    # a retried allocation its host did not see renews it (the reclaim grace restarts): no
    # change of what is allocated; a revert of the allocation ends it (review hrev10)
    FixedIpReconfirmed,
    ChangeReverted,
    HostEvent,
    # written for the executors' reading with the events they follow: the revert's own
    # compensations bring their own (events/placement.py)
    NetworkHostJoined,
    FloatingIpMapped,
    FloatingIpUnmapped,
    # the registry's record of a deletion (events/placement.py), which itself is never undone
    NetworkRetired,
    # where a host's announcement sits (the host's own fact): nothing a revert changes
    LegacyAnnouncementIndexed,
)


class RevertConflict(ConflictError):
    """Later changes make the revert impossible; ``reasons`` lists each one."""

    code = "revert_conflict"


@dataclass(frozen=True)
class StoredEvent:
    """One event as read from the log: where it sits and what it says."""

    seq: int
    subject: str
    event: Event
    command_id: str = ""


def is_skipped(ev: Event) -> bool:
    return isinstance(ev, SKIPPED_TYPES) or ev.subject().startswith(f"{EVENT_PREFIX}.host.")


# --- the state as earlier compensations of the same revert leave it -------------------------


class _Shadow:
    """Reads of :class:`State` with the compensations decided so far laid over it (the state
    itself is never changed: it is folded from the log only)."""

    def __init__(
        self,
        state: State,
        allocations: Sequence[StoredEvent] = (),
        owners: Mapping[int, str | None] | None = None,
    ) -> None:
        self.st = state
        #: (network, address) -> the allocations of it among the events reverted, newest
        #: first, and deallocation seq -> the project of the allocation it ended, as the client
        #: read it from the log: where a freed address's project comes from
        #: (:func:`~netledger.events.revert_owners.allocation_owner`)
        self.allocations: dict[tuple[str, str], list[tuple[int, FixedIpAllocated]]] = {}
        for s in sorted(allocations, key=lambda s: s.seq, reverse=True):
            if isinstance(s.event, FixedIpAllocated):
                key = (s.event.network_id, s.event.address)
                self.allocations.setdefault(key, []).append((s.seq, s.event))
        self.owners = owners or {}
        self.fixed: dict[tuple[str, str], FixedIp | None] = {}
        self.by_instance: dict[tuple[str, str], str | None] = {}
        self.macs: dict[tuple[str, str], str | None] = {}
        #: (network, IPv6 address) -> the address naming its allocation (None: freed)
        self.v6: dict[tuple[str, str], str | None] = {}
        self.in_use: dict[str, int] = {}
        self.floating: dict[tuple[str, str], FloatingIp | None] = {}
        self.net_project: dict[str, str | None] = {}
        self.project_net: dict[str, str | None] = {}
        self.deleted: set[str] = set()
        self._floating_on: dict[tuple[str, str], set[tuple[str, str]]] | None = None
        #: the stored sequence being compensated: the state is read as of just before it
        self.at = 0

    def network(self, network_id: str) -> NetworkState | None:
        n = self.st.networks.get(network_id)
        if n is None or network_id in self.deleted:
            return None
        return n

    def fixed_ip(self, n: NetworkState, address: str) -> FixedIp | None:
        key = (n.network_id, address)
        return self.fixed[key] if key in self.fixed else n.fixed.get(address)

    def instance_address(self, n: NetworkState, instance: str) -> str | None:
        key = (n.network_id, instance)
        return self.by_instance[key] if key in self.by_instance else n.by_instance.get(instance)

    def mac_address(self, n: NetworkState, mac: str) -> str | None:
        key = (n.network_id, mac)
        return self.macs[key] if key in self.macs else n.macs.get(mac)

    def count(self, n: NetworkState) -> int:
        return self.in_use.get(n.network_id, len(n.fixed))

    def address_free(self, n: NetworkState, address: str) -> bool:
        key = (n.network_id, address)
        if key in self.fixed:
            return self.fixed[key] is None
        return n.key_free(address)

    def v6_holder(self, n: NetworkState, address_v6: str) -> str | None:
        key = (n.network_id, address_v6)
        return self.v6[key] if key in self.v6 else n.v6.get(address_v6)

    def project_of(self, n: NetworkState) -> str | None:
        nid = n.network_id
        return self.net_project[nid] if nid in self.net_project else n.project

    def project_since(self, n: NetworkState) -> int:
        """The sequence from which ``n`` has been its project's (:meth:`project_of`, not None)
        without a break: that project's last association, which is of ``n`` (a project holds
        one network, and every association — the allocator's, a network created for it, a
        revert's — is a NetworkAssociated on the project's subject). 0 where this revert itself
        gave the network its project: undoing later changes, newest first, it walks the
        association back (each undone change names the project it had before). 0 too on a
        stream whose association sits on the network's subject (the pre-release layout):
        unknown there."""
        project = self.project_of(n)
        if project is None or n.network_id in self.net_project:
            return 0
        return self.st.seq_of(project_subject(project))

    def network_of(self, project: str) -> str | None:
        if project in self.project_net:
            return self.project_net[project]
        return self.st.project_networks.get(project)

    def floating_ip(self, p: PoolState, address: str) -> FloatingIp | None:
        key = (p.name, address)
        return self.floating[key] if key in self.floating else p.floating.get(address)

    def floating_free(self, p: PoolState, address: str) -> bool:
        key = (p.name, address)
        if key in self.floating:
            return self.floating[key] is None
        return p.pool.is_free(p.offset(address))

    def floating_on(self, network_id: str, address: str) -> set[tuple[str, str]]:
        if self._floating_on is None:  # built once per revert: O(floating IPs)
            self._floating_on = {}
            for p in self.st.pools.values():
                for f in p.floating.values():
                    if f.network_id is not None and f.fixed_address is not None:
                        k = (f.network_id, f.fixed_address)
                        self._floating_on.setdefault(k, set()).add((p.name, f.address))
        return self._floating_on.setdefault((network_id, address), set())

    # --- laying a compensation over the state (mirrors State.apply) -------------------------

    def apply(self, ev: Event) -> None:
        if isinstance(ev, FixedIpAllocated):
            n = self.st.networks[ev.network_id]
            self.fixed[(ev.network_id, ev.address)] = FixedIp(
                ev.address, ev.instance, ev.mac, ev.host, ev.project, address_v6=ev.address_v6
            )
            self.by_instance[(ev.network_id, ev.instance)] = ev.address
            self.macs[(ev.network_id, ev.mac)] = ev.address
            if ev.address_v6 is not None:
                self.v6[(ev.network_id, ev.address_v6)] = ev.address
            self.in_use[ev.network_id] = self.count(n) + 1
        elif isinstance(ev, FixedIpDeallocated):
            n = self.st.networks[ev.network_id]
            self.by_instance[(ev.network_id, ev.instance)] = None
            if ev.freed:
                self._free(n, ev.address, ev.mac)
            else:
                ip = self.fixed_ip(n, ev.address)
                if ip is not None:
                    self.fixed[(ev.network_id, ev.address)] = structs.replace(ip, allocated=False)
        elif isinstance(ev, FixedIpFreed):
            n = self.st.networks[ev.network_id]
            ip = self.fixed_ip(n, ev.address)
            self._free(n, ev.address, ip.mac if ip is not None else "")
        elif isinstance(ev, FixedIpLeased):
            n = self.st.networks[ev.network_id]
            ip = self.fixed_ip(n, ev.address)
            if ip is not None:
                if ev.v6:
                    self.fixed[(ev.network_id, ev.address)] = structs.replace(ip, leased_v6=True)
                else:
                    self.fixed[(ev.network_id, ev.address)] = structs.replace(ip, leased=True)
        elif isinstance(ev, FloatingIpAllocated):
            self.floating[(ev.pool, ev.address)] = FloatingIp(ev.address, ev.pool, ev.project)
        elif isinstance(ev, FloatingIpDeallocated):
            self.floating[(ev.pool, ev.address)] = None
        elif isinstance(ev, FloatingIpAssociated):
            f = self.floating_ip(self.st.pools[ev.pool], ev.address)
            assert f is not None
            self.floating[(ev.pool, ev.address)] = replace(
                f, fixed_address=ev.fixed_address, network_id=ev.network_id, instance=ev.instance
            )
            self.floating_on(ev.network_id, ev.fixed_address).add((ev.pool, ev.address))
        elif isinstance(ev, FloatingIpDisassociated):
            f = self.floating_ip(self.st.pools[ev.pool], ev.address)
            assert f is not None
            self.floating[(ev.pool, ev.address)] = replace(
                f, fixed_address=None, network_id=None, instance=None
            )
            self.floating_on(ev.network_id, ev.fixed_address).discard((ev.pool, ev.address))
        elif isinstance(ev, NetworkDeleted):
            self.deleted.add(ev.network_id)
        elif isinstance(ev, NetworkAssociated | NetworkReassociated):
            self.net_project[ev.network_id] = ev.project
            self.project_net[ev.project] = ev.network_id
        elif isinstance(ev, NetworkDisassociated):
            self.net_project[ev.network_id] = None
            self.project_net[ev.project] = None

    def _free(self, n: NetworkState, address: str, mac: str) -> None:
        ip = self.fixed_ip(n, address)
        if ip is None:
            return
        self.fixed[(n.network_id, address)] = None
        if ip.address_v6 is not None and self.v6_holder(n, ip.address_v6) == address:
            self.v6[(n.network_id, ip.address_v6)] = None
        if mac and self.mac_address(n, mac) == address:
            self.macs[(n.network_id, mac)] = None
        self.in_use[n.network_id] = self.count(n) - 1


# --- the compensations ----------------------------------------------------------------------


def _holder(ip: FixedIp | None) -> str:
    if ip is None:
        return "free"
    if not ip.allocated:
        return f"deallocated from {ip.instance}, held until its DHCP release"
    return f"allocated to {ip.instance} ({ip.mac})"


def _live(sh: _Shadow, network_id: str) -> NetworkState:
    n = sh.network(network_id)
    if n is None:
        raise _Refused(f"network {network_id} no longer exists")
    return n


def _undo_fixed_allocated(sh: _Shadow, ev: FixedIpAllocated, why: str) -> list[Event]:
    n = _live(sh, ev.network_id)
    ip = sh.fixed_ip(n, ev.address)
    if ip is None or not ip.allocated or ip.instance != ev.instance or ip.mac != ev.mac:
        raise _Refused(f"{ev.address} is no longer allocated to {ev.instance}: now {_holder(ip)}")
    floats = sorted(sh.floating_on(n.network_id, ev.address))
    if floats:
        shown = ", ".join(f"{a} (pool {p})" for p, a in floats)
        raise _Refused(f"{ev.address} has floating IP {shown} associated with it since")
    return [
        FixedIpDeallocated(
            network_id=n.network_id,
            address=ev.address,
            instance=ev.instance,
            mac=ev.mac,
            host=ip.host,
            freed=n.net.mode == "flat" or not ip.any_lease,
            address_v6=ip.address_v6,
        )
    ]


def _undo_fixed_deallocated(sh: _Shadow, ev: FixedIpDeallocated, why: str) -> list[Event]:
    n = _live(sh, ev.network_id)
    ip = sh.fixed_ip(n, ev.address)
    out: list[Event] = []
    leased = leased_v6 = False
    if ip is not None:
        if ip.allocated or ip.instance != ev.instance or ip.mac != ev.mac:
            raise _Refused(f"{ev.address} cannot go back to {ev.instance}: now {_holder(ip)}")
        # Still held awaiting the release: free it, then allocate it again (the pool counts
        # each address once) and keep the lease the client still holds.
        out.append(
            FixedIpFreed(
                network_id=n.network_id, address=ev.address, instance=ev.instance, reason=why
            )
        )
        project, leased, leased_v6 = ip.project, ip.leased, ip.leased_v6
    elif not sh.address_free(n, ev.address):
        raise _Refused(f"{ev.address} is no longer free")
    else:
        project = project_back(sh, n, ev)
    held = sh.instance_address(n, ev.instance)
    if held is not None:
        raise _Refused(f"{ev.instance} now holds {held} on network {n.network_id}")
    other = sh.mac_address(n, ev.mac)
    if other is not None and other != ev.address:
        raise _Refused(f"MAC {ev.mac} is now used by {other} on network {n.network_id}")
    if ev.address_v6 is not None:
        v6_other = sh.v6_holder(n, ev.address_v6)
        if v6_other is not None and v6_other != ev.address:
            raise _Refused(f"{ev.address_v6} is now held by {v6_other} on network {n.network_id}")
    out.append(
        FixedIpAllocated(
            network_id=n.network_id,
            address=ev.address,
            instance=ev.instance,
            mac=ev.mac,
            host=ev.host,
            project=project,
            address_v6=ev.address_v6,
        )
    )
    for v6 in (False, True):
        if leased_v6 if v6 else leased:
            out.append(
                FixedIpLeased(
                    network_id=n.network_id,
                    address=ev.address,
                    mac=ev.mac,
                    instance=ev.instance,
                    v6=v6,
                )
            )
    return out


def _pool(sh: _Shadow, name: str) -> PoolState:
    p = sh.st.pools.get(name)
    if p is None:
        raise _Refused(f"pool {name} does not exist")
    return p


def _undo_floating_allocated(sh: _Shadow, ev: FloatingIpAllocated, why: str) -> list[Event]:
    f = sh.floating_ip(_pool(sh, ev.pool), ev.address)
    if f is None or f.project != ev.project:
        now = "free" if f is None else f"allocated to project {f.project}"
        raise _Refused(f"floating {ev.address} is no longer allocated to {ev.project}: now {now}")
    if f.fixed_address is not None:
        raise _Refused(f"floating {ev.address} has been associated with {f.fixed_address} since")
    return [FloatingIpDeallocated(pool=ev.pool, address=ev.address, project=ev.project)]


def _undo_floating_deallocated(sh: _Shadow, ev: FloatingIpDeallocated, why: str) -> list[Event]:
    p = _pool(sh, ev.pool)
    if not sh.floating_free(p, ev.address):
        f = sh.floating_ip(p, ev.address)
        owner = f"project {f.project}" if f is not None else "someone"
        raise _Refused(f"floating {ev.address} has since been allocated to {owner}")
    return [FloatingIpAllocated(pool=ev.pool, address=ev.address, project=ev.project)]


def _undo_floating_associated(sh: _Shadow, ev: FloatingIpAssociated, why: str) -> list[Event]:
    f = sh.floating_ip(_pool(sh, ev.pool), ev.address)
    if f is None or f.fixed_address != ev.fixed_address or f.network_id != ev.network_id:
        now = "not allocated" if f is None else f"associated with {f.fixed_address or 'nothing'}"
        raise _Refused(f"floating {ev.address} is no longer on {ev.fixed_address}: {now}")
    return [
        FloatingIpDisassociated(
            pool=ev.pool,
            address=ev.address,
            project=f.project,
            fixed_address=ev.fixed_address,
            network_id=ev.network_id,
            instance=ev.instance,
            reason=why,
        )
    ]


def _undo_floating_disassociated(sh: _Shadow, ev: FloatingIpDisassociated, why: str) -> list[Event]:
    f = sh.floating_ip(_pool(sh, ev.pool), ev.address)
    if f is None or f.project != ev.project:
        raise _Refused(f"floating {ev.address} is no longer allocated to {ev.project}")
    if f.fixed_address is not None:
        raise _Refused(f"floating {ev.address} is now associated with {f.fixed_address}")
    n = _live(sh, ev.network_id)
    ip = sh.fixed_ip(n, ev.fixed_address)
    if ip is None or not ip.allocated or ip.instance != ev.instance:
        raise _Refused(f"{ev.fixed_address} is no longer allocated to {ev.instance}: {_holder(ip)}")
    return [
        FloatingIpAssociated(
            pool=ev.pool,
            address=ev.address,
            project=ev.project,
            fixed_address=ev.fixed_address,
            network_id=ev.network_id,
            instance=ev.instance,
        )
    ]


def _undo_network_created(sh: _Shadow, ev: NetworkCreated, why: str) -> list[Event]:
    n = _live(sh, ev.network_id)
    if sh.count(n):
        raise _Refused(f"network {n.network_id} has {sh.count(n)} address(es) in use")
    project = sh.project_of(n)
    if project is not None:
        raise _Refused(f"network {n.network_id} is associated with project {project}")
    return [NetworkDeleted(network_id=n.network_id)]


def _undo_network_associated(sh: _Shadow, ev: NetworkAssociated, why: str) -> list[Event]:
    n = _live(sh, ev.network_id)
    if sh.project_of(n) != ev.project:
        raise _Refused(f"network {n.network_id} is no longer associated with {ev.project}")
    if sh.count(n):
        raise _Refused(f"network {n.network_id} has {sh.count(n)} address(es) in use")
    return [NetworkDisassociated(network_id=n.network_id, project=ev.project)]


def _undo_network_disassociated(sh: _Shadow, ev: NetworkDisassociated, why: str) -> list[Event]:
    n = _live(sh, ev.network_id)
    now = sh.project_of(n)
    if now is not None:
        raise _Refused(f"network {n.network_id} is now associated with project {now}")
    other = sh.network_of(ev.project)
    if other is not None:
        raise _Refused(f"project {ev.project} now holds network {other}")
    if sh.count(n):
        # An admin allocated on it by id since (no project held it): handed back, its
        # instances would sit on the project's segment, which the allocator never does
        # (decide_fixed._pick_network). As the disassociation itself needed it empty.
        raise _Refused(f"network {n.network_id} has {sh.count(n)} address(es) in use")
    return [NetworkAssociated(network_id=n.network_id, project=ev.project)]


def _undo_network_reassociated(sh: _Shadow, ev: NetworkReassociated, why: str) -> list[Event]:
    # The network's side of a revert's NetworkAssociated, which travels with it (same command,
    # same network and project: in every scope) and whose compensation undoes both.
    return []


def _refuse(message: str) -> Any:
    def undo(sh: _Shadow, ev: Event, why: str) -> list[Event]:
        raise _Refused(message)

    return undo


_UNDO: dict[type[Event], Any] = {
    FixedIpAllocated: _undo_fixed_allocated,
    FixedIpDeallocated: _undo_fixed_deallocated,
    FloatingIpAllocated: _undo_floating_allocated,
    FloatingIpDeallocated: _undo_floating_deallocated,
    FloatingIpAssociated: _undo_floating_associated,
    FloatingIpDisassociated: _undo_floating_disassociated,
    NetworkCreated: _undo_network_created,
    NetworkAssociated: _undo_network_associated,
    NetworkDisassociated: _undo_network_disassociated,
    NetworkReassociated: _undo_network_reassociated,
    NetworkDeleted: _refuse("a deleted network cannot be restored (create a new one)"),
    FloatingPoolCreated: _refuse("a floating IP pool cannot be deleted"),
}


def _with_network_sides(events: list[Event]) -> list[Event]:
    """``events`` with a NetworkReassociated after each NetworkAssociated whose network no other
    compensation is on the subject of. The association lives on the project's subject; the
    allocator appends it with the first allocation on the network's, and those two OCC checks
    keep a network from two projects. Without an event on the network's subject, a project's
    first allocation decided on the state before the revert would take the network too."""
    on = {e.subject() for e in events}
    out: list[Event] = []
    for e in events:
        out.append(e)
        if isinstance(e, NetworkAssociated) and network_subject(e.network_id) not in on:
            out.append(NetworkReassociated(network_id=e.network_id, project=e.project))
    return out


@dataclass
class Plan:
    """The compensations of one revert (newest stored event first) and what was skipped."""

    events: list[Event]
    reverted: list[int]
    skipped: list[int]


def compensate(
    state: State,
    stored: Sequence[StoredEvent],
    why: str = "revert",
    owners: Mapping[int, str | None] | None = None,
) -> Plan:
    """The compensating events undoing ``stored`` on ``state``; raise :class:`RevertConflict`
    naming every stored event a later change made impossible to undo. ``owners``: the
    sequence of a deallocation among ``stored`` -> the project of the allocation it ended
    (which the client read from the log; ``stored`` does not hold it): where a freed address's
    project comes from. Pure: reads only."""
    sh = _Shadow(state, stored, owners)
    out: list[Event] = []
    reverted: list[int] = []
    skipped: list[int] = []
    reasons: list[str] = []
    for s in sorted(stored, key=lambda s: s.seq, reverse=True):
        ev = s.event
        if is_skipped(ev):
            skipped.append(s.seq)
            continue
        undo = _UNDO.get(type(ev))
        sh.at = s.seq
        try:
            if undo is None:
                raise _Refused(f"{ev.TYPE} has no compensation")
            comp = undo(sh, ev, why)
        except _Refused as exc:
            reasons.append(f"#{s.seq} {ev.TYPE}: {exc}")
            continue
        for c in comp:
            sh.apply(c)
        out.extend(comp)
        reverted.append(s.seq)
    if reasons:
        raise RevertConflict(
            f"revert refused, later changes conflict: {'; '.join(reasons[:10])}"
            + (f" (and {len(reasons) - 10} more)" if len(reasons) > 10 else ""),
            reasons=reasons,
        )
    return Plan(_with_network_sides(out), sorted(reverted), sorted(skipped))
