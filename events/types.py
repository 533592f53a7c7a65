"""The events of netledger: facts, named in the past tense.

Each event type is a frozen dataclass registered under its name with its current schema
version. ``subject()`` names the aggregate (the unit of optimistic concurrency) it belongs to.
Older schema versions are upcast in :mod:`netledger.events.codec`.

Host events (what an executor did on its host) live on ``netledger.evt.host.<host>`` and are
registered the same way (see :mod:`netledger.events.host_events`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from .ids import (
    REGISTRY_SUBJECT,
    network_subject,
    pool_subject,
    project_subject,
    retired_subject,
)

EVENT_TYPES: dict[str, type[Event]] = {}

E = TypeVar("E", bound="type[Event]")


def event_type(cls: E) -> E:
    """Register an event class under its ``TYPE`` name."""
    name = cls.TYPE
    if name in EVENT_TYPES:
        raise ValueError(f"event type {name} registered twice")
    EVENT_TYPES[name] = cls
    return cls


@dataclass(frozen=True)
class Event:
    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def subject(self) -> str:
        raise NotImplementedError

    def accepts_subject(self, subject: str) -> bool:
        """Whether a stored copy of this event on ``subject`` is legitimate (its aggregate's
        subject; some types also accept where an older layout stored them)."""
        return subject == self.subject()

    def to_data(self) -> dict[str, Any]:
        """The fields as a map (``dataclasses.asdict``); without its recursive deep copy when
        every value is a plain scalar, or a list/tuple/dict of them (every append encodes its
        events: asdict was ~40 us of a host event's encoding)."""
        out: dict[str, Any] = {}
        for name in _shape(type(self))[0]:
            v = getattr(self, name)
            t = type(v)
            if t in _SCALARS:
                out[name] = v
            elif (
                t is dict
                and _SCALARS.issuperset(map(type, v))
                and _SCALARS.issuperset(map(type, v.values()))
            ):
                out[name] = dict(v)
            elif (t is list or t is tuple) and _SCALARS.issuperset(map(type, v)):
                out[name] = t(v)
            else:
                return dataclasses.asdict(self)
        return out

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Event:
        """Build from stored data. A field missing from ``data`` that has a default gets it (a
        field added later with a default is a compatible change); other missing fields and
        unknown keys are errors / ignored respectively."""
        names, defaults = _shape(cls)
        try:
            return cls(**{n: data[n] for n in names})
        except KeyError:
            pass
        missing = [n for n in names if n not in data and n not in defaults]
        if missing:
            raise KeyError(f"{cls.TYPE} is missing {', '.join(sorted(missing))}")
        return cls(**{n: data[n] if n in data else defaults[n]() for n in names})


def _same(value: Any) -> Any:
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})

_SHAPES: dict[type, tuple[tuple[str, ...], dict[str, Callable[[], Any]]]] = {}


def _shape(cls: type) -> tuple[tuple[str, ...], dict[str, Callable[[], Any]]]:
    """Field names and default makers of an event class (cached: decode is a hot path)."""
    shape = _SHAPES.get(cls)
    if shape is None:
        defaults: dict[str, Callable[[], Any]] = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                defaults[f.name] = functools.partial(_same, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                defaults[f.name] = f.default_factory
        shape = _SHAPES[cls] = (tuple(f.name for f in dataclasses.fields(cls)), defaults)
    return shape


# --- registry: networks and pools, the rules that span aggregates ---------------------------


@event_type
@dataclass(frozen=True)
class NetworkCreated(Event):
    """A network. The IPv4 fields (``cidr`` .. ``dhcp_start``) are None on an IPv6-only
    network. IPv6 is *served* (a gateway on the bridge, router advertisements, addresses
    handed out) when ``gateway_v6`` is set; ``cidr_v6`` without it is a prefix recorded by code
    that predates IPv6 support, kept as it was (never served)."""

    TYPE: ClassVar[str] = "NetworkCreated"
    network_id: str
    label: str
    cidr: str | None
    netmask: str | None
    gateway: str | None
    broadcast: str | None
    dhcp_start: str | None
    mode: str
    vlan: int | None
    vni: int | None
    bridge: str
    bridge_interface: str | None
    dns1: str | None
    dns2: str | None
    vpn_private_address: str | None
    vpn_public_port: int | None
    project: str | None
    multi_host: bool
    network_host: str | None
    mtu: int | None
    cidr_v6: str | None
    #: the /64's first address, on the serving host's bridge (None: IPv6 not served)
    gateway_v6: str | None = None
    #: how instances get their IPv6 address: "slaac" (EUI-64 from the MAC, router
    #: advertisements only) or "dhcpv6" (the lowest free address, handed out by DHCPv6)
    ipv6_mode: str | None = None

    @property
    def v6_served(self) -> bool:
        return self.gateway_v6 is not None and self.cidr_v6 is not None

    def subject(self) -> str:
        return REGISTRY_SUBJECT


@event_type
@dataclass(frozen=True)
class FloatingPoolCreated(Event):
    TYPE: ClassVar[str] = "FloatingPoolCreated"
    pool: str
    cidr: str
    public_interface: str | None

    def subject(self) -> str:
        return REGISTRY_SUBJECT


# --- a network and its fixed IPs ---------------------------------------------------------


@dataclass(frozen=True)
class NetworkEvent(Event):
    network_id: str

    def subject(self) -> str:
        return network_subject(self.network_id)


@event_type
@dataclass(frozen=True)
class NetworkDeleted(NetworkEvent):
    TYPE: ClassVar[str] = "NetworkDeleted"


@event_type
@dataclass(frozen=True)
class NetworkAssociated(NetworkEvent):
    """A project got the network (VLAN/VXLAN: on first use). It lives on the *project's*
    subject: appended in one atomic batch with the first allocation on the network's subject,
    the two OCC checks make sure a project never gets two networks and a network never two
    projects, whatever the replicas race."""

    TYPE: ClassVar[str] = "NetworkAssociated"
    project: str

    def subject(self) -> str:
        return project_subject(self.project)

    def accepts_subject(self, subject: str) -> bool:
        # Early streams stored it on the network's subject.
        return subject in (self.subject(), network_subject(self.network_id))


@event_type
@dataclass(frozen=True)
class NetworkDisassociated(NetworkEvent):
    TYPE: ClassVar[str] = "NetworkDisassociated"
    project: str


@event_type
@dataclass(frozen=True)
class FixedIpAllocated(NetworkEvent):
    """``address`` names the allocation: its IPv4 address, or on an IPv6-only network its
    IPv6 one; ``address_v6`` is its IPv6 address when the network serves IPv6."""

    TYPE: ClassVar[str] = "FixedIpAllocated"
    address: str
    instance: str
    mac: str
    host: str | None
    project: str | None
    address_v6: str | None = None


@event_type
@dataclass(frozen=True)
class FixedIpDeallocated(NetworkEvent):
    """The instance gave the address up. ``freed`` is true when the address went back to the
    pool at once (flat mode, or no lease outstanding); otherwise it is held until the DHCP
    release (or the release timeout) frees it."""

    TYPE: ClassVar[str] = "FixedIpDeallocated"
    address: str
    instance: str
    mac: str
    host: str | None
    freed: bool
    address_v6: str | None = None


@event_type
@dataclass(frozen=True)
class FixedIpLeased(NetworkEvent):
    """DHCP leased the allocation named ``address``; ``v6``: its IPv6 address (a dual-stack
    dhcpv6 allocation holds two leases, which end apart)."""

    TYPE: ClassVar[str] = "FixedIpLeased"
    address: str
    mac: str
    instance: str
    v6: bool = False


@event_type
@dataclass(frozen=True)
class FixedIpReleased(NetworkEvent):
    """DHCP released the lease (``v6``: of the IPv6 address, as for :class:`FixedIpLeased`);
    ``freed`` when the address returns to the pool with it."""

    TYPE: ClassVar[str] = "FixedIpReleased"
    address: str
    mac: str
    instance: str
    freed: bool
    v6: bool = False


@event_type
@dataclass(frozen=True)
class FixedIpFreed(NetworkEvent):
    """A deallocated address whose release never came went back to the pool (timeout)."""

    TYPE: ClassVar[str] = "FixedIpFreed"
    address: str
    instance: str
    reason: str


@event_type
@dataclass(frozen=True)
class FixedIpMoved(NetworkEvent):
    """The instance holding ``address`` now runs on ``host`` (it migrated from ``from_host``):
    an allocation request naming another host for an instance that already holds its address
    (nova's ``migrate_instance_finish``). The address, MAC and lease stay; what follows the
    host moves with it (a multi-host network's bridge, DHCP entry and floating-IP NAT; the
    reports reclaim reads). Counts as a new allocation for reclaim: absence must be proven
    again, from the new host's reports."""

    TYPE: ClassVar[str] = "FixedIpMoved"
    address: str
    instance: str
    mac: str
    host: str
    from_host: str | None


# --- floating IP pools ------------------------------------------------------------------


@dataclass(frozen=True)
class PoolEvent(Event):
    pool: str

    def subject(self) -> str:
        return pool_subject(self.pool)


@event_type
@dataclass(frozen=True)
class FloatingIpAllocated(PoolEvent):
    TYPE: ClassVar[str] = "FloatingIpAllocated"
    address: str
    project: str


@event_type
@dataclass(frozen=True)
class FloatingIpAssociated(PoolEvent):
    TYPE: ClassVar[str] = "FloatingIpAssociated"
    address: str
    project: str
    fixed_address: str
    network_id: str
    instance: str


@event_type
@dataclass(frozen=True)
class FloatingIpDisassociated(PoolEvent):
    TYPE: ClassVar[str] = "FloatingIpDisassociated"
    address: str
    project: str
    fixed_address: str
    network_id: str
    instance: str
    reason: str


@event_type
@dataclass(frozen=True)
class FloatingIpDeallocated(PoolEvent):
    TYPE: ClassVar[str] = "FloatingIpDeallocated"
    address: str
    project: str


@event_type
@dataclass(frozen=True)
class HostRetired(Event):
    """Host ``host`` left the cloud (``host retire``: decommissioned, no address allocated
    there). What was known of it goes: its sighting reports, its ``--network-host`` role, its
    VTEP in every other host's flood entries, its row in ``status``. An executor starting there
    again announces itself: the host is back."""

    TYPE: ClassVar[str] = "HostRetired"
    host: str

    def subject(self) -> str:
        return retired_subject(self.host)
