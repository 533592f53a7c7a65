"""The projection itself, pure: one stored event -> the row changes it makes.

``project(seq, subject, envelope, view)`` reads the current rows through ``view`` (a read-only
:class:`View`: the SQLite batch in production, a dict in tests) and returns an :class:`Outcome`:
the row upserts and deletes, plus the ``events`` index row. It performs no I/O itself and never
raises for a bad event: an event that cannot be applied (an allocation in an unknown network,
a type on the wrong subject, a lease of an address not in use) comes back as a rejection, which
the writer records in ``rejected_events`` while the projector goes on with the next message.

Rows carry the stream sequence and the event's own time, never the wall clock, so projecting
the same stream twice gives byte-identical tables.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Protocol

from netledger.events.codec import Envelope
from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostAnnounced,
    HostEvent,
    HostLinkCreated,
    HostLinkRemoved,
    HostNatApplied,
    HostReconciled,
)
from netledger.events.reclaim_events import (
    FixedIpReclaimed,
    FixedIpReclaimSealed,
    FixedIpReconfirmed,
)
from netledger.events.revert_events import ChangeReverted
from netledger.events.types import (
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
    PoolEvent,
)

from .tables import (
    FIXED_IPS,
    FLOATING_IPS,
    FLOATING_POOLS,
    HOST_ADDRESSES,
    HOST_LINKS,
    HOST_NAT,
    HOSTS,
    NETWORKS,
    PROJECTS,
    REJECTED_EVENTS,
    Key,
    Row,
    Table,
)

#: Raw bytes kept of a rejected message (enough to debug it, not enough to bloat the file).
MAX_RAW = 64 * 1024


class View(Protocol):
    """Read access to the projection as it stands before the event (no writes)."""

    def get(self, table: str, key: Key) -> Row | None: ...

    def select(self, table: str, column: str, value: Any) -> list[Row]: ...


@dataclass(frozen=True, slots=True)
class Change:
    """Set the row at ``key`` of ``table`` to ``row``; ``row is None`` deletes it."""

    table: str
    key: Key
    row: Row | None


@dataclass(frozen=True, slots=True)
class Outcome:
    changes: tuple[Change, ...] = ()
    event: Row | None = None
    rejected: Row | None = None


class Rejected(Exception):
    """Raised inside a handler to turn the event into a ``rejected_events`` row."""


def reject(
    seq: int,
    subject: str,
    reason: str,
    *,
    type_name: str | None = None,
    stream_time: float | None = None,
    raw: bytes | None = None,
) -> Outcome:
    """The outcome for a message that could not be decoded or applied."""
    row = REJECTED_EVENTS.blank(
        seq=seq,
        subject=subject,
        type=type_name,
        reason=reason[:1000],
        stream_time=stream_time,
        raw=raw[:MAX_RAW] if raw is not None else None,
    )
    return Outcome(rejected=row)


# --- the handlers' working context ---------------------------------------------------------


class _Tx:
    """Changes of one event, readable by the handler that is building them."""

    __slots__ = ("changes", "env", "index", "seq", "view")

    def __init__(self, seq: int, env: Envelope, view: View) -> None:
        self.seq = seq
        self.env = env
        self.view = view
        self.changes: dict[tuple[str, Key], Row | None] = {}
        # What the events index says this event concerns (filled in by handlers).
        self.index: dict[str, Any] = {}

    def get(self, table: Table, key: Key) -> Row | None:
        k = (table.name, key)
        if k in self.changes:
            row = self.changes[k]
            return None if row is None else dict(row)
        row = self.view.get(table.name, key)
        return None if row is None else dict(row)

    def put(self, table: Table, row: Row) -> None:
        self.changes[(table.name, table.key(row))] = row

    def delete(self, table: Table, key: Key) -> None:
        self.changes[(table.name, key)] = None

    def stamp(self, row: Row, prefix: str = "updated") -> Row:
        row[f"{prefix}_seq"] = self.seq
        row[f"{prefix}_at"] = self.env.time
        return row

    def touch_project(
        self, project: str | None, network_id: str | None = None, set_network: bool = False
    ) -> None:
        """Record that ``project`` was seen; with ``set_network``, its network becomes that."""
        if not project:
            return
        row = self.get(PROJECTS, (project,))
        if row is None:
            row = PROJECTS.blank(project=project, first_seq=self.seq, first_at=self.env.time)
        row["last_seq"] = self.seq
        row["last_at"] = self.env.time
        if set_network:
            row["network_id"] = network_id
        self.put(PROJECTS, row)


@lru_cache(maxsize=4096)
def _ip_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


@lru_cache(maxsize=4096)
def _net_bits(cidr: str) -> tuple[int, int, int]:
    """(address family, network as int, netmask as int) of a CIDR."""
    n = _ip_network(cidr)
    family = socket.AF_INET if n.version == 4 else socket.AF_INET6
    return family, int(n.network_address), int(n.netmask)


def _in_cidr(address: str, cidr: str) -> bool:
    # inet_pton instead of ipaddress: this runs for every allocation (5x faster).
    try:
        family, network, mask = _net_bits(cidr)
        value = int.from_bytes(socket.inet_pton(family, address), "big")
    except (ValueError, TypeError, OSError):
        return False
    return value & mask == network


# --- registry -------------------------------------------------------------------------------


def _network_created(tx: _Tx, ev: NetworkCreated) -> None:
    old = tx.get(NETWORKS, (ev.network_id,))
    if old is not None and not old["deleted"]:
        raise Rejected(f"network {ev.network_id} already exists")
    if not _is_cidr(ev.cidr):
        raise Rejected(f"network {ev.network_id}: bad cidr {ev.cidr!r}")
    values = {f: getattr(ev, f) for f in _field_names(NetworkCreated) if f in NETWORKS.columns}
    row = NETWORKS.blank(**values)
    row["multi_host"] = int(bool(ev.multi_host))
    row["deleted"] = 0
    tx.stamp(row, "created")
    tx.put(NETWORKS, tx.stamp(row))
    tx.touch_project(ev.project, ev.network_id, set_network=True)
    tx.index.update(network_id=ev.network_id, project=ev.project, host=ev.network_host)


def _pool_created(tx: _Tx, ev: FloatingPoolCreated) -> None:
    if tx.get(FLOATING_POOLS, (ev.pool,)) is not None:
        raise Rejected(f"pool {ev.pool} already exists")
    if not _is_cidr(ev.cidr):
        raise Rejected(f"pool {ev.pool}: bad cidr {ev.cidr!r}")
    row = FLOATING_POOLS.blank(pool=ev.pool, cidr=ev.cidr, public_interface=ev.public_interface)
    tx.put(FLOATING_POOLS, tx.stamp(row, "created"))
    tx.index.update(pool=ev.pool)


def _is_cidr(cidr: str) -> bool:
    try:
        _ip_network(cidr)
    except (ValueError, TypeError):
        return False
    return True


# --- a network and its fixed IPs --------------------------------------------------------------


def _live_network(tx: _Tx, network_id: str) -> Row:
    net = tx.get(NETWORKS, (network_id,))
    if net is None:
        raise Rejected(f"unknown network {network_id}")
    if net["deleted"]:
        raise Rejected(f"network {network_id} was deleted at seq {net['deleted_seq']}")
    tx.index.update(network_id=network_id, project=net["project"])
    return net


def _network_deleted(tx: _Tx, ev: NetworkDeleted) -> None:
    net = _live_network(tx, ev.network_id)
    net["deleted"] = 1
    tx.stamp(net, "deleted")
    tx.put(NETWORKS, tx.stamp(net))


def _network_associated(tx: _Tx, ev: NetworkAssociated) -> None:
    net = _live_network(tx, ev.network_id)
    net["project"] = ev.project
    tx.put(NETWORKS, tx.stamp(net))
    tx.touch_project(ev.project, ev.network_id, set_network=True)
    tx.index["project"] = ev.project


def _network_disassociated(tx: _Tx, ev: NetworkDisassociated) -> None:
    net = _live_network(tx, ev.network_id)
    net["project"] = None
    tx.put(NETWORKS, tx.stamp(net))
    proj = tx.get(PROJECTS, (ev.project,))
    tx.touch_project(
        ev.project, None, set_network=proj is not None and proj["network_id"] == ev.network_id
    )
    tx.index["project"] = ev.project


def _fixed_allocated(tx: _Tx, ev: FixedIpAllocated) -> None:
    net = _live_network(tx, ev.network_id)
    if not _in_cidr(ev.address, net["cidr"]):
        raise Rejected(f"{ev.address} is not in network {ev.network_id} ({net['cidr']})")
    row = FIXED_IPS.blank(
        network_id=ev.network_id,
        address=ev.address,
        instance=ev.instance,
        mac=ev.mac,
        host=ev.host,
        project=ev.project,
        allocated=1,
        leased=0,
    )
    tx.stamp(row, "allocated")
    tx.put(FIXED_IPS, tx.stamp(row))
    tx.touch_project(ev.project)
    tx.index.update(
        address=ev.address, instance=ev.instance, host=ev.host, project=ev.project or net["project"]
    )


def _fixed_in_use(tx: _Tx, network_id: str, address: str) -> Row:
    _live_network(tx, network_id)
    row = tx.get(FIXED_IPS, (network_id, address))
    if row is None:
        raise Rejected(f"{address} is not in use in network {network_id}")
    tx.index.update(address=address, instance=row["instance"], host=row["host"])
    if row["project"]:
        tx.index["project"] = row["project"]
    return row


def _fixed_deallocated(tx: _Tx, ev: FixedIpDeallocated) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    if ev.freed:
        tx.delete(FIXED_IPS, (ev.network_id, ev.address))
    else:
        # Held until the DHCP release (or its timeout) frees it: still reserved.
        row["allocated"] = 0
        tx.put(FIXED_IPS, tx.stamp(row))
    tx.index.update(instance=ev.instance, host=ev.host or row["host"])


def _fixed_leased(tx: _Tx, ev: FixedIpLeased) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    row["leased"] = 1
    tx.put(FIXED_IPS, tx.stamp(row))


def _fixed_released(tx: _Tx, ev: FixedIpReleased) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    if ev.freed:
        tx.delete(FIXED_IPS, (ev.network_id, ev.address))
    else:
        row["leased"] = 0
        tx.put(FIXED_IPS, tx.stamp(row))


def _fixed_freed(tx: _Tx, ev: FixedIpFreed) -> None:
    _fixed_in_use(tx, ev.network_id, ev.address)
    tx.delete(FIXED_IPS, (ev.network_id, ev.address))


def _fixed_reclaimed(tx: _Tx, ev: FixedIpReclaimed) -> None:
    # The index names address, instance, host and network; ``data`` carries the reason and
    # the host reports (seqs, times) that proved the instance gone: ``audit address`` shows it.
    _fixed_in_use(tx, ev.network_id, ev.address)
    tx.delete(FIXED_IPS, (ev.network_id, ev.address))
    tx.index.update(instance=ev.instance, host=ev.host)


def _fixed_reconfirmed(tx: _Tx, ev: FixedIpReconfirmed) -> None:
    row = _fixed_in_use(tx, ev.network_id, ev.address)
    tx.put(FIXED_IPS, tx.stamp(row))


def _reclaim_sealed(tx: _Tx, ev: FixedIpReclaimSealed) -> None:
    _live_network(tx, ev.network_id)
    tx.index.update(host=ev.host)


# --- floating IPs ----------------------------------------------------------------------------


def _pool_of(tx: _Tx, ev: PoolEvent) -> Row:
    pool = tx.get(FLOATING_POOLS, (ev.pool,))
    if pool is None:
        raise Rejected(f"unknown pool {ev.pool}")
    tx.index.update(pool=ev.pool)
    return pool


def _floating(tx: _Tx, ev: PoolEvent, address: str) -> Row:
    _pool_of(tx, ev)
    row = tx.get(FLOATING_IPS, (address,))
    if row is None or row["pool"] != ev.pool:
        raise Rejected(f"floating IP {address} is not allocated in pool {ev.pool}")
    return row


def _floating_allocated(tx: _Tx, ev: FloatingIpAllocated) -> None:
    pool = _pool_of(tx, ev)
    if not _in_cidr(ev.address, pool["cidr"]):
        raise Rejected(f"{ev.address} is not in pool {ev.pool} ({pool['cidr']})")
    row = FLOATING_IPS.blank(address=ev.address, pool=ev.pool, project=ev.project)
    tx.stamp(row, "allocated")
    tx.put(FLOATING_IPS, tx.stamp(row))
    tx.touch_project(ev.project)
    tx.index.update(address=ev.address, project=ev.project)


def _floating_associated(tx: _Tx, ev: FloatingIpAssociated) -> None:
    row = _floating(tx, ev, ev.address)
    row.update(fixed_address=ev.fixed_address, network_id=ev.network_id, instance=ev.instance)
    tx.put(FLOATING_IPS, tx.stamp(row))
    tx.touch_project(ev.project)
    tx.index.update(
        address=ev.address,
        fixed_address=ev.fixed_address,
        network_id=ev.network_id,
        instance=ev.instance,
        project=ev.project,
    )


def _floating_disassociated(tx: _Tx, ev: FloatingIpDisassociated) -> None:
    row = _floating(tx, ev, ev.address)
    row.update(fixed_address=None, network_id=None, instance=None)
    tx.put(FLOATING_IPS, tx.stamp(row))
    tx.touch_project(ev.project)
    tx.index.update(
        address=ev.address,
        fixed_address=ev.fixed_address,
        network_id=ev.network_id,
        instance=ev.instance or None,
        project=ev.project,
    )


def _floating_deallocated(tx: _Tx, ev: FloatingIpDeallocated) -> None:
    _floating(tx, ev, ev.address)
    tx.delete(FLOATING_IPS, (ev.address,))
    tx.touch_project(ev.project)
    tx.index.update(address=ev.address, project=ev.project)


# --- hosts (what executors did) -----------------------------------------------------------------


def _host_row(tx: _Tx, host: str) -> Row:
    row = tx.get(HOSTS, (host,))
    if row is None:
        row = HOSTS.blank(host=host, first_seq=tx.seq)
    row["last_seq"] = tx.seq
    row["last_at"] = tx.env.time
    return row


def _host_announced(tx: _Tx, ev: HostAnnounced) -> None:
    row = _host_row(tx, ev.host)
    row.update(
        vtep_address=ev.vtep_address,
        physical_interface=ev.physical_interface,
        public_interface=ev.public_interface,
        network_host=int(bool(ev.network_host)),
    )
    tx.put(HOSTS, tx.stamp(row, "announced"))


def _host_link_created(tx: _Tx, ev: HostLinkCreated) -> None:
    tx.put(HOSTS, _host_row(tx, ev.host))
    row = HOST_LINKS.blank(
        host=ev.host,
        name=ev.name,
        kind=ev.kind,
        network_id=ev.network_id,
        drift=int(bool(ev.drift)),
        detail=_json(ev.detail),
    )
    tx.put(HOST_LINKS, tx.stamp(row, "created"))
    tx.index.update(network_id=ev.network_id)


def _host_link_removed(tx: _Tx, ev: HostLinkRemoved) -> None:
    # A link left over from before a crash may never have been recorded: removing it is fine.
    tx.put(HOSTS, _host_row(tx, ev.host))
    tx.delete(HOST_LINKS, (ev.host, ev.name))
    tx.index.update(network_id=ev.network_id)


def _host_address_added(tx: _Tx, ev: HostAddressAdded) -> None:
    tx.put(HOSTS, _host_row(tx, ev.host))
    row = HOST_ADDRESSES.blank(
        host=ev.host,
        interface=ev.interface,
        address=ev.address,
        network_id=ev.network_id,
        drift=int(bool(ev.drift)),
    )
    tx.put(HOST_ADDRESSES, tx.stamp(row, "added"))
    tx.index.update(network_id=ev.network_id, address=_bare(ev.address))


def _host_address_removed(tx: _Tx, ev: HostAddressRemoved) -> None:
    tx.put(HOSTS, _host_row(tx, ev.host))
    tx.delete(HOST_ADDRESSES, (ev.host, ev.interface, ev.address))
    tx.index.update(network_id=ev.network_id, address=_bare(ev.address))


def _host_nat_applied(tx: _Tx, ev: HostNatApplied) -> None:
    # The executor replaced its whole NAT table atomically: so do we.
    row = _host_row(tx, ev.host)
    row.update(
        snat_ranges=_json(list(ev.snat_ranges)),
        nat_drift=int(bool(ev.drift)),
        snat_to=getattr(ev, "snat_to", None),
    )
    row["nat_seq"] = tx.seq
    tx.put(HOSTS, row)
    for old in tx.view.select(HOST_NAT.name, "host", ev.host):
        if old["floating_address"] not in ev.floating:
            tx.delete(HOST_NAT, (ev.host, old["floating_address"]))
    for floating, fixed in sorted(ev.floating.items()):
        nat = HOST_NAT.blank(host=ev.host, floating_address=floating, fixed_address=fixed)
        tx.put(HOST_NAT, tx.stamp(nat, "applied"))


def _host_nat_removed(tx: _Tx, ev: HostEvent) -> None:
    row = _host_row(tx, ev.host)
    row.update(snat_ranges=None, snat_to=None, nat_drift=0, nat_seq=tx.seq)
    tx.put(HOSTS, row)
    for old in tx.view.select(HOST_NAT.name, "host", ev.host):
        tx.delete(HOST_NAT, (ev.host, old["floating_address"]))


def _host_reconciled(tx: _Tx, ev: HostReconciled) -> None:
    row = _host_row(tx, ev.host)
    row.update(
        applied_seq=ev.applied_seq,
        reconciled_at=tx.env.time,
        changes=ev.changes,
        drift_repairs=ev.drift_repairs,
        duration_ms=ev.duration_ms,
    )
    tx.put(HOSTS, row)


def _bare(address: str) -> str:
    """``10.0.0.1/24`` -> ``10.0.0.1`` (the index is searched by plain address)."""
    return address.split("/", 1)[0]


def _change_reverted(tx: _Tx, ev: ChangeReverted) -> None:
    # The marker changes no table (its compensations, same command id, do); its index row names
    # the scope it was limited to, so ``audit network 7`` lists the revert itself.
    kind, _, value = (ev.scope or "").partition(":")
    column = {"network": "network_id", "project": "project", "pool": "pool"}.get(kind)
    if column and value:
        tx.index[column] = value


# --- dispatch -------------------------------------------------------------------------------------

_HANDLERS: dict[type[Event], Any] = {
    NetworkCreated: _network_created,
    FloatingPoolCreated: _pool_created,
    NetworkDeleted: _network_deleted,
    NetworkAssociated: _network_associated,
    NetworkDisassociated: _network_disassociated,
    FixedIpAllocated: _fixed_allocated,
    FixedIpDeallocated: _fixed_deallocated,
    FixedIpLeased: _fixed_leased,
    FixedIpReleased: _fixed_released,
    FixedIpFreed: _fixed_freed,
    FixedIpReclaimed: _fixed_reclaimed,
    FixedIpReconfirmed: _fixed_reconfirmed,
    FixedIpReclaimSealed: _reclaim_sealed,
    FloatingIpAllocated: _floating_allocated,
    FloatingIpAssociated: _floating_associated,
    FloatingIpDisassociated: _floating_disassociated,
    FloatingIpDeallocated: _floating_deallocated,
    HostAnnounced: _host_announced,
    HostLinkCreated: _host_link_created,
    HostLinkRemoved: _host_link_removed,
    HostAddressAdded: _host_address_added,
    HostAddressRemoved: _host_address_removed,
    HostNatApplied: _host_nat_applied,
    HostReconciled: _host_reconciled,
    ChangeReverted: _change_reverted,
}


#: Host event types handled by name: newer executor events this module need not import.
_BY_NAME: dict[str, Any] = {"HostNatRemoved": lambda tx, ev: _host_nat_removed(tx, ev)}

#: Event fields copied into the events index when a handler did not set them.
_INDEXED = ("network_id", "address", "fixed_address", "instance", "project", "host", "pool")


def expected_subject(ev: Event) -> str:
    """The subject an event is stored on: the aggregate its type declares (some types also
    accept an older layout's subject: ``Event.accepts_subject``)."""
    return ev.subject()


_FIELDS: dict[type[Event], tuple[str, ...]] = {}
_INDEXED_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def _indexed_fields(cls: type[Event]) -> tuple[str, ...]:
    names = _INDEXED_FIELDS.get(cls)
    if names is None:
        own = set(_field_names(cls))
        names = _INDEXED_FIELDS[cls] = tuple(n for n in _INDEXED if n in own)
    return names


def _field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return names


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _json(value: Any) -> str:
    return _ENCODER.encode(value)


def event_data(ev: Event) -> str:
    """The event's data as compact JSON (the ``events.data`` column)."""
    return _json({n: getattr(ev, n) for n in _field_names(type(ev))})


def project(
    seq: int, subject: str, env: Envelope, view: View, stream_time: float | None = None
) -> Outcome:
    """The row changes stored event ``seq`` makes, or its rejection. Never raises for bad data."""
    ev = env.event
    try:
        ok = ev.accepts_subject(subject)
        want = "" if ok else expected_subject(ev)
    except Exception as exc:  # a malformed event whose subject cannot even be named
        return reject(seq, subject, f"{ev.TYPE}: {exc}", type_name=ev.TYPE, stream_time=stream_time)
    if not ok:
        return reject(
            seq,
            subject,
            f"{ev.TYPE} belongs on {want}, not {subject}",
            type_name=ev.TYPE,
            stream_time=stream_time,
        )
    tx = _Tx(seq, env, view)
    handler = _HANDLERS.get(type(ev)) or _BY_NAME.get(ev.TYPE)
    try:
        if handler is not None:
            handler(tx, ev)
        elif isinstance(ev, HostEvent):
            # A host event this projector has no table for: the host was still active.
            tx.put(HOSTS, _host_row(tx, ev.host))
    except Rejected as exc:
        return reject(seq, subject, str(exc), type_name=ev.TYPE, stream_time=stream_time)
    except Exception as exc:  # bad field types in a decodable event: record, do not stop
        return reject(
            seq,
            subject,
            f"{ev.TYPE} could not be applied: {exc.__class__.__name__}: {exc}",
            type_name=ev.TYPE,
            stream_time=stream_time,
        )
    actor = env.actor
    idx = tx.index
    for name in _indexed_fields(type(ev)):
        if idx.get(name) is None:
            value = getattr(ev, name)
            if isinstance(value, str) and value:
                idx[name] = _bare(value) if name == "address" else value
    get = idx.get
    # Every column of EVENTS, built directly (this runs for every event).
    event_row = {
        "seq": seq, "time": env.time, "stream_time": stream_time, "subject": subject,
        "type": ev.TYPE, "event_id": env.event_id, "command_id": env.command_id,
        "actor_project": actor.project, "actor_role": actor.role, "actor_user": actor.user,
        "network_id": get("network_id"), "address": get("address"),
        "fixed_address": get("fixed_address"), "instance": get("instance"),
        "project": get("project"), "host": get("host"), "pool": get("pool"),
        "data": event_data(ev),
    }  # fmt: skip
    changes = tuple(Change(t, k, r) for (t, k), r in tx.changes.items())
    return Outcome(changes=changes, event=event_row)


# --- an in-memory store: the same projection without SQLite (tests, tools) ------------------------


class MemoryStore:
    """Tables as dicts, fed by :func:`project`; the reference the SQLite writer must match."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Key, Row]] = {}
        self.events: dict[int, Row] = {}
        self.rejected: dict[int, Row] = {}
        self.last_seq = 0

    def get(self, table: str, key: Key) -> Row | None:
        return self.tables.get(table, {}).get(key)

    def select(self, table: str, column: str, value: Any) -> list[Row]:
        return [r for r in self.tables.get(table, {}).values() if r.get(column) == value]

    def apply(self, seq: int, outcome: Outcome) -> None:
        for ch in outcome.changes:
            t = self.tables.setdefault(ch.table, {})
            if ch.row is None:
                t.pop(ch.key, None)
            else:
                t[ch.key] = ch.row
        if outcome.event is not None:
            self.events[seq] = outcome.event
        if outcome.rejected is not None:
            self.rejected[seq] = outcome.rejected
        self.last_seq = max(self.last_seq, seq)

    def feed(
        self, seq: int, subject: str, env: Envelope, stream_time: float | None = None
    ) -> Outcome:
        out = project(seq, subject, env, self, stream_time)
        self.apply(seq, out)
        return out

    def rows(self, table: str) -> list[Row]:
        return [self.tables.get(table, {})[k] for k in sorted(self.tables.get(table, {}), key=repr)]
