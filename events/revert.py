"""Revert: undo a stored change by appending compensating events (history is never rewritten).

The client reads the events to undo from the log (those of one command id, or every event after
a sequence within a scope) and sends them in a ``revert`` command. The service decides on *its*
current state like for any command: each stored event, newest first, gets the compensating
event that undoes it, checked against the state as the earlier compensations of the same revert
leave it (a :class:`_Shadow` over :class:`State`); anything a later change made impossible (the
address was re-allocated to another instance, the network has addresses in use) refuses the
whole revert with every reason, appending nothing. The compensations and a
:class:`ChangeReverted` marker are appended as one atomic batch with the OCC check on every
subject they touch, so a revert decided on stale state is rejected by the log and decided again.

Why the client reads and the service checks: the service's state is a fold that keeps no events,
and an index of every event for arbitrary ``--to-seq`` ranges would grow with the log in every
replica (or a stream read would block a lane). Nothing the client sends is trusted for safety:
every compensation must be valid on the service's current state, exactly as the equivalent
admin commands would be, and each event must lie in the state's past on its own subject.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import msgpack

from .commands import Command, Request, command
from .decide import DECIDERS, Decision, Pending
from .errors import ConflictError, InvalidField, LimitExceeded, NotFound, Unavailable
from .host_events import HostEvent
from .ids import EVENT_PREFIX
from .revert_events import REVERT_SUBJECT, ChangeReverted
from .state import FixedIp, FloatingIp, NetworkState, PoolState, State
from .types import (
    EVENT_TYPES,
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpFreed,
    FixedIpLeased,
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

#: JetStream's atomic batch holds at most 1000 messages: compensations plus the marker.
MAX_REVERT_EVENTS = 1000
#: Decompressed size cap of the events a request carries (a zip bomb is refused, not unpacked).
MAX_EVENTS_BYTES = 8 * 1024 * 1024
SCOPE_KINDS = ("network", "project", "pool")

#: Reported facts about the world, not decisions: a revert leaves them as they are (undoing a
#: DHCP lease would lie about the client that holds it).
SKIPPED_TYPES: tuple[type[Event], ...] = (
    FixedIpLeased,
    FixedIpReleased,
    FixedIpFreed,
    ChangeReverted,
    HostEvent,
)


class RevertConflict(ConflictError):
    """Later changes make the revert impossible; ``reasons`` lists each one."""

    code = "revert_conflict"


class RevertTooLarge(LimitExceeded):
    code = "revert_too_large"


class NothingToRevert(NotFound):
    code = "nothing_to_revert"


class ServiceBehind(Unavailable):
    """The service has not folded an event the client read yet (try again)."""

    code = "service_behind"


@dataclass(frozen=True)
class StoredEvent:
    """One event as read from the log: where it sits and what it says."""

    seq: int
    subject: str
    event: Event
    command_id: str = ""


# --- what a revert covers ---------------------------------------------------------------------


def command_id_for(
    reverted_command_id: str | None,
    after_seq: int | None,
    upto_seq: int | None,
    scope: str | None,
) -> str:
    """The revert's own command id: deterministic, so a retried revert is not applied twice
    and the marker is found from the reverted command id (``revert-<id>``)."""
    if reverted_command_id:
        return f"revert-{reverted_command_id}"
    tail = f"-{scope.replace(':', '-')}" if scope else ""
    return f"revert-seq-{after_seq}-{upto_seq}{tail}"


def in_scope(ev: Event, scope: str | None, instances: set[str] | None = None) -> bool:
    """Whether ``ev`` concerns ``scope`` (``kind:id``; None = everything).

    network: every event naming the network (its creation, its addresses, floating IPs
    associated with them); pool: the pool's creation and its floating IPs; project: events
    naming the project, plus fixed-IP events of instances seen allocated for it in ``instances``
    (deallocations and leases do not name the project).
    """
    if scope is None:
        return True
    kind, _, value = scope.partition(":")
    if kind == "network":
        return getattr(ev, "network_id", None) == value
    if kind == "pool":
        return getattr(ev, "pool", None) == value
    if getattr(ev, "project", None) == value:
        if instances is not None and isinstance(ev, FixedIpAllocated):
            instances.add(ev.instance)
        return True
    return (
        instances is not None
        and isinstance(ev, FixedIpDeallocated | FixedIpLeased | FixedIpReleased | FixedIpFreed)
        and ev.instance in instances
    )


def is_skipped(ev: Event) -> bool:
    return isinstance(ev, SKIPPED_TYPES) or ev.subject().startswith(f"{EVENT_PREFIX}.host.")


# --- the state as earlier compensations of the same revert leave it -------------------------


class _Shadow:
    """Reads of :class:`State` with the compensations decided so far laid over it (the state
    itself is never changed: it is folded from the log only)."""

    def __init__(self, state: State) -> None:
        self.st = state
        self.fixed: dict[tuple[str, str], FixedIp | None] = {}
        self.by_instance: dict[tuple[str, str], str | None] = {}
        self.macs: dict[tuple[str, str], str | None] = {}
        self.in_use: dict[str, int] = {}
        self.floating: dict[tuple[str, str], FloatingIp | None] = {}
        self.net_project: dict[str, str | None] = {}
        self.project_net: dict[str, str | None] = {}
        self.deleted: set[str] = set()
        self._floating_on: dict[tuple[str, str], set[tuple[str, str]]] | None = None

    def network(self, network_id: str) -> NetworkState | None:
        n = self.st.networks.get(network_id)
        if n is None or n.deleted or network_id in self.deleted:
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
        return n.pool.is_free(n.offset(address))

    def project_of(self, n: NetworkState) -> str | None:
        nid = n.network_id
        return self.net_project[nid] if nid in self.net_project else n.project

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
                ev.address, ev.instance, ev.mac, ev.host, ev.project
            )
            self.by_instance[(ev.network_id, ev.instance)] = ev.address
            self.macs[(ev.network_id, ev.mac)] = ev.address
            self.in_use[ev.network_id] = self.count(n) + 1
        elif isinstance(ev, FixedIpDeallocated):
            n = self.st.networks[ev.network_id]
            self.by_instance[(ev.network_id, ev.instance)] = None
            if ev.freed:
                self._free(n, ev.address, ev.mac)
            else:
                ip = self.fixed_ip(n, ev.address)
                if ip is not None:
                    self.fixed[(ev.network_id, ev.address)] = replace(ip, allocated=False)
        elif isinstance(ev, FixedIpFreed):
            n = self.st.networks[ev.network_id]
            ip = self.fixed_ip(n, ev.address)
            self._free(n, ev.address, ip.mac if ip is not None else "")
        elif isinstance(ev, FixedIpLeased):
            n = self.st.networks[ev.network_id]
            ip = self.fixed_ip(n, ev.address)
            if ip is not None:
                self.fixed[(ev.network_id, ev.address)] = replace(ip, leased=True)
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
        elif isinstance(ev, NetworkAssociated):
            self.net_project[ev.network_id] = ev.project
            self.project_net[ev.project] = ev.network_id
        elif isinstance(ev, NetworkDisassociated):
            self.net_project[ev.network_id] = None
            self.project_net[ev.project] = None

    def _free(self, n: NetworkState, address: str, mac: str) -> None:
        if self.fixed_ip(n, address) is None:
            return
        self.fixed[(n.network_id, address)] = None
        if mac and self.mac_address(n, mac) == address:
            self.macs[(n.network_id, mac)] = None
        self.in_use[n.network_id] = self.count(n) - 1


# --- the compensations ----------------------------------------------------------------------


class _Refused(Exception):
    """One stored event cannot be compensated (collected into :class:`RevertConflict`)."""


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
            freed=n.net.mode == "flat" or not ip.leased,
        )
    ]


def _undo_fixed_deallocated(sh: _Shadow, ev: FixedIpDeallocated, why: str) -> list[Event]:
    n = _live(sh, ev.network_id)
    ip = sh.fixed_ip(n, ev.address)
    out: list[Event] = []
    project = sh.project_of(n)
    leased = False
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
        project, leased = ip.project, ip.leased
    elif not sh.address_free(n, ev.address):
        raise _Refused(f"{ev.address} is no longer free")
    held = sh.instance_address(n, ev.instance)
    if held is not None:
        raise _Refused(f"{ev.instance} now holds {held} on network {n.network_id}")
    other = sh.mac_address(n, ev.mac)
    if other is not None and other != ev.address:
        raise _Refused(f"MAC {ev.mac} is now used by {other} on network {n.network_id}")
    out.append(
        FixedIpAllocated(
            network_id=n.network_id,
            address=ev.address,
            instance=ev.instance,
            mac=ev.mac,
            host=ev.host,
            project=project,
        )
    )
    if leased:
        out.append(
            FixedIpLeased(
                network_id=n.network_id, address=ev.address, mac=ev.mac, instance=ev.instance
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
    return [NetworkAssociated(network_id=n.network_id, project=ev.project)]


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
    NetworkDeleted: _refuse("a deleted network cannot be restored (create a new one)"),
    FloatingPoolCreated: _refuse("a floating IP pool cannot be deleted"),
}


@dataclass
class Plan:
    """The compensations of one revert (newest stored event first) and what was skipped."""

    events: list[Event]
    reverted: list[int]
    skipped: list[int]


def compensate(state: State, stored: Sequence[StoredEvent], why: str = "revert") -> Plan:
    """The compensating events undoing ``stored`` on ``state``; raise :class:`RevertConflict`
    naming every stored event a later change made impossible to undo. Pure: reads only."""
    sh = _Shadow(state)
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
    return Plan(out, sorted(reverted), sorted(skipped))


# --- the command ------------------------------------------------------------------------------


def pack_events(stored: Iterable[StoredEvent]) -> bytes:
    """The events a request carries: compressed (a revert of 1000 allocations repeats the same
    keys and ids, and must fit the service's request size limit)."""
    rows = [[s.seq, s.subject, s.event.TYPE, s.event.to_data(), s.command_id] for s in stored]
    packed: bytes = msgpack.packb(rows, use_bin_type=True)
    return zlib.compress(packed, 9)


def unpack_events(blob: Any) -> tuple[StoredEvent, ...]:
    if not isinstance(blob, bytes):
        raise InvalidField("events must be bytes (zlib-compressed msgpack)", field="events")
    try:
        d = zlib.decompressobj()
        raw = d.decompress(blob, MAX_EVENTS_BYTES)
        if d.unconsumed_tail:
            raise InvalidField("events are too large", field="events")
        rows = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except InvalidField:
        raise
    except Exception:
        raise InvalidField("events are not zlib-compressed msgpack", field="events") from None
    if not isinstance(rows, list):
        raise InvalidField("events must be a list", field="events")
    if len(rows) > MAX_REVERT_EVENTS:
        raise RevertTooLarge(
            f"a revert covers at most {MAX_REVERT_EVENTS} events, got {len(rows)}: narrow it"
            " with --scope or a later --to-seq",
            count=len(rows),
        )
    out: list[StoredEvent] = []
    for row in rows:
        try:
            seq, subject, type_name, data, cid = row
            cls = EVENT_TYPES[type_name]
            if not isinstance(seq, int) or seq < 1 or not isinstance(subject, str):
                raise ValueError("bad seq or subject")
            out.append(StoredEvent(seq, subject, cls.from_data(data), str(cid or "")))
        except Exception:
            raise InvalidField(f"bad event in events: {str(row)[:200]}", field="events") from None
    return tuple(out)


def _opt_int(a: dict[str, Any], name: str) -> int | None:
    v = a.get(name)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise InvalidField(f"{name} must be a non-negative integer", field=name)
    return v


def _scope(a: dict[str, Any]) -> str | None:
    from .ids import check_id

    v = a.get("scope")
    if v is None:
        return None
    kind, _, value = str(v).partition(":")
    if kind not in SCOPE_KINDS:
        raise InvalidField(f"scope must be one of {', '.join(SCOPE_KINDS)}", field="scope")
    return f"{kind}:{check_id(value, 'scope')}"


@command
@dataclass(frozen=True)
class Revert(Command):
    """Undo the stored events ``events`` (those of ``reverted_command_id``, or those after
    ``after_seq`` up to ``upto_seq`` within ``scope``) with compensating events."""

    NAME: ClassVar[str] = "revert"
    ADMIN_ONLY: ClassVar[bool] = True
    reverted_command_id: str | None
    after_seq: int | None
    upto_seq: int | None
    scope: str | None
    events: tuple[StoredEvent, ...]

    @classmethod
    def parse(cls, a: dict[str, Any]) -> Revert:
        cid = a.get("reverted_command_id")
        if cid is not None and (not isinstance(cid, str) or not cid or len(cid) > 200):
            raise InvalidField("reverted_command_id must be a non-empty string", field="cid")
        after, upto = _opt_int(a, "after_seq"), _opt_int(a, "upto_seq")
        if (cid is None) == (after is None):
            raise InvalidField("give exactly one of reverted_command_id and after_seq")
        return cls(cid, after, upto, _scope(a), unpack_events(a.get("events")))

    def lane(self, state: State) -> str:
        return "revert"

    def label(self) -> str:
        if self.reverted_command_id:
            return f"command {self.reverted_command_id}"
        where = f" in {self.scope}" if self.scope else ""
        return f"seqs {self.after_seq}..{self.upto_seq}{where}"


@command
@dataclass(frozen=True)
class RevertPlan(Revert):
    """The same decision, appended never (``--dry-run``)."""

    NAME: ClassVar[str] = "revert.plan"
    READ_ONLY: ClassVar[bool] = True


def decide_revert(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, Revert)
    if not cmd.events:
        raise NothingToRevert(f"nothing to revert for {cmd.label()}")
    for s in cmd.events:
        # The client read these from the log: they must lie in the past of the state this
        # decision is made on (else this replica has not folded them yet).
        if not s.event.accepts_subject(s.subject):
            raise InvalidField(f"#{s.seq} {s.event.TYPE} does not belong on {s.subject}")
        if s.seq > state.seq_of(s.subject):
            raise ServiceBehind(
                f"the service has not yet seen #{s.seq} on {s.subject}; try again", seq=s.seq
            )
    plan = compensate(state, cmd.events, why=f"{req.command_id}: revert of {cmd.label()}")
    if not plan.events:
        raise NothingToRevert(
            f"nothing to revert for {cmd.label()}: only reported facts (leases, releases,"
            " host events), which a revert leaves as they are",
            skipped=plan.skipped,
        )
    if len(plan.events) + 1 > MAX_REVERT_EVENTS:
        raise RevertTooLarge(
            f"the revert needs {len(plan.events)} compensating events; one atomic batch holds"
            f" {MAX_REVERT_EVENTS - 1} plus the marker: narrow it with --scope",
            count=len(plan.events),
        )
    marker = ChangeReverted(
        reverted_command_id=cmd.reverted_command_id,
        after_seq=cmd.after_seq,
        upto_seq=cmd.upto_seq,
        scope=cmd.scope,
        reverted_seqs=plan.reverted,
        skipped_seqs=plan.skipped,
        compensations=len(plan.events),
    )
    # The marker goes last: it lands right after the compensations in the same atomic batch.
    events = [*plan.events, marker]
    result = {
        "revert_command_id": req.command_id,
        "reverted_command_id": cmd.reverted_command_id,
        "after_seq": cmd.after_seq,
        "upto_seq": cmd.upto_seq,
        "scope": cmd.scope,
        "reverted_seqs": plan.reverted,
        "skipped_seqs": plan.skipped,
        "events": [{"type": e.TYPE, "subject": e.subject(), "data": e.to_data()} for e in events],
        "appended": not cmd.READ_ONLY,
    }
    return Decision(events, result)


DECIDERS[Revert] = decide_revert
DECIDERS[RevertPlan] = decide_revert

__all__ = [
    "MAX_REVERT_EVENTS",
    "REVERT_SUBJECT",
    "ChangeReverted",
    "NothingToRevert",
    "Plan",
    "Revert",
    "RevertConflict",
    "RevertPlan",
    "RevertTooLarge",
    "StoredEvent",
    "command_id_for",
    "compensate",
    "in_scope",
    "pack_events",
    "unpack_events",
]
