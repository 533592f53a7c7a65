"""A network as the fold keeps it (:class:`NetworkState`) and its allocations (:class:`FixedIp`).

Built from its ``NetworkCreated`` by :func:`network_state`: the free IPv4 addresses (nova's
reserved ones left out: network, broadcast, gateway, VPN, below ``dhcp_start``) and the served
IPv6 /64 (with its free addresses in dhcpv6 mode). :func:`serving_hosts` says which hosts hold
its gateway, NAT and DHCP. The fold (:class:`~netledger.events.state.State`) changes them; the
deciders only read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast, overload

import msgspec
import netaddr
from netaddr.strategy import ipv4, ipv6

from .state_offsets import OffsetPool, ip_int_of, ipv4_int, parse_cidr
from .types import NetworkCreated

_T = TypeVar("_T")


class _cached(Generic[_T]):
    """``functools.cached_property`` without the lock Python 3.11's takes at every first access
    (the fold is single-threaded): a start from a snapshot touches each network's ``base`` and
    ``size`` first in its tail, where they were ~6% of the fold of a 10,000-event tail."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> _cached[_T]: ...

    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...

    def __get__(self, obj: object | None, owner: type | None = None) -> _T | _cached[_T]:
        if obj is None:
            return self
        value = obj.__dict__[self.name] = self.fn(obj)  # read from there from now on
        return value


class FixedIp(msgspec.Struct, gc=False):
    """An address of a network as the fold holds it (allocated, or deallocated and held for a
    lease). Untracked by the cyclic GC (``gc=False``: it holds only strings, numbers and
    None, so it can be in no reference cycle): the fold's objects are frozen after a start
    (service/service.py ``gc.freeze``), but an allocation made later stayed one tracked object
    more for every full collection to walk — with ``seen``'s entries, what the command
    service's generation-2 collections walked in the open-loop bench (26-36 ms of CPU each
    after ~40 k allocations, 3-4 ms untracked: bench/README.md "Commands arriving steadily")."""

    address: str
    instance: str
    mac: str
    host: str | None
    project: str | None
    allocated: bool = True
    #: DHCP holds a lease of ``address`` (the IPv4 one, or an IPv6-only network's)...
    leased: bool = False
    deallocated_at: float | None = None
    #: stream sequence of the allocation (or its reconfirmation): reclaiming needs absence
    #: proven from reports after it
    allocated_seq: int = 0
    #: its IPv6 address (the network serves IPv6); on an IPv6-only network also ``address``
    address_v6: str | None = None
    #: ...and of ``address_v6`` on a dual-stack dhcpv6 network: a deallocated address is held
    #: until both are released (found by review: one flag for two leases freed the other early)
    leased_v6: bool = False

    @property
    def any_lease(self) -> bool:
        return self.leased or self.leased_v6


#: ``NetworkState.joined`` of a network no host joined yet: shared and immutable (a view holds
#: every network of the cloud, most never joined by a host: a set was 216 bytes each)
NO_JOINS = cast(set[str], frozenset())


@dataclass
class NetworkState:
    net: NetworkCreated
    #: the IPv4 network (None: IPv6-only) and its free addresses (empty when IPv6-only)
    ipnet: netaddr.IPNetwork | None
    pool: OffsetPool
    seq: int = 0
    project: str | None = None
    fixed: dict[str, FixedIp] = field(default_factory=dict)
    by_instance: dict[str, str] = field(default_factory=dict)
    macs: dict[str, str] = field(default_factory=dict)
    #: host -> how many allocated addresses it holds here (derived from ``fixed``, kept so
    #: that "does this host have an instance here" costs O(1), not a scan of the network)
    host_allocated: dict[str, int] = field(default_factory=dict)
    #: floating IP -> (the fixed address it NATs to, its pool), from FloatingIpMapped
    floating: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: the served IPv6 /64 (None: IPv6 not served) and, in dhcpv6 mode, its free addresses
    ipnet6: netaddr.IPNetwork | None = None
    pool6: OffsetPool | None = None
    #: IPv6 address -> the address naming its allocation (a key of ``fixed``)
    v6: dict[str, str] = field(default_factory=dict)
    #: hosts the log has a ``NetworkHostJoined`` here for (events/placement.py: backfill);
    #: :data:`NO_JOINS` until the first join gives it a set of its own (State._host_joined)
    joined: set[str] = NO_JOINS
    #: ``net.network_id``, kept beside the other fields: the fold reads it for nearly every
    #: event of the network, and its ``NetworkCreated`` (another object, cold in a start's
    #: tail) need not be touched for it
    network_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.network_id = self.net.network_id

    def count_host(self, ip: FixedIp, delta: int) -> None:
        if ip.host is None:
            return
        n = self.host_allocated.get(ip.host, 0) + delta
        if n > 0:
            self.host_allocated[ip.host] = n
        else:
            self.host_allocated.pop(ip.host, None)

    def unallocate(self, ip: FixedIp) -> None:
        """``ip`` no longer counts as allocated (deallocated, freed, reclaimed)."""
        if ip.allocated:
            ip.allocated = False
            self.count_host(ip, -1)

    def offset(self, address: str) -> int:
        """The offset of an IPv4 address in the network (IPv6: :meth:`offset6`)."""
        return ip_int_of(address, 4) - self.base

    def offset_in(self, address: str) -> int:
        """:meth:`offset` of an address that must be in the network (ValueError if not: a
        stored event naming one elsewhere is refused by the fold)."""
        offset = ip_int_of(address, 4) - self.base
        if not 0 <= offset < self.size:
            raise ValueError(f"{address} is not in network {self.network_id} ({self.ipnet})")
        return offset

    @_cached
    def size(self) -> int:
        """How many IPv4 addresses the network has (netaddr computes ``size`` at each call,
        from ``first`` and ``last``: 0.7 us, where its prefix length gives it in 0.2)."""
        assert self.ipnet is not None, "an IPv6-only network has no IPv4 offsets"
        width = 32 if self.ipnet.version == 4 else 128
        return 1 << (width - int(self.ipnet.prefixlen))

    @_cached
    def base(self) -> int:
        assert self.ipnet is not None, "an IPv6-only network has no IPv4 offsets"
        return int(self.ipnet.first)  # the network address (no IPAddress built)

    def address(self, offset: int) -> str:
        """The IPv4 address at ``offset``: netaddr's own int-to-text of the address family,
        without building an ``IPAddress`` (and the network's) for every allocation (2.1 ->
        0.4 us)."""
        return str(ipv4.int_to_str(self.base + offset))

    @property
    def v6_only(self) -> bool:
        return self.ipnet is None

    @_cached
    def base6(self) -> int:
        assert self.ipnet6 is not None, "a network without IPv6 has no IPv6 offsets"
        return int(self.ipnet6.network)

    def offset6(self, address: str) -> int:
        return ip_int_of(address, 6) - self.base6

    def in_cidr_v6(self, address: str) -> bool:
        """Whether an IPv6 address lies in ``cidr_v6`` (served or not)."""
        if self.net.cidr_v6 is None:
            return False
        net6 = parse_cidr(self.net.cidr_v6)
        try:
            return bool(int(net6.network) <= ip_int_of(address, 6) <= net6.last)
        except ValueError:
            return False

    def offset6_in(self, address: str) -> int:
        """:meth:`offset6` of an address that must be in the served /64 (else ValueError)."""
        assert self.ipnet6 is not None
        offset = ip_int_of(address, 6) - self.base6
        if not 0 <= offset < self.ipnet6.size:
            raise ValueError(f"{address} is not in network {self.network_id} ({self.ipnet6})")
        return offset

    def address6(self, offset: int) -> str:
        return str(ipv6.int_to_str(self.base6 + offset))

    def key_free(self, address: str) -> bool:
        """Whether ``address`` could name a new allocation: a free IPv4 address, or on an
        IPv6-only network an IPv6 address held by nobody (and free in the dhcpv6 pool)."""
        if self.ipnet is not None:
            return self.pool.is_free(self.offset(address))
        if address in self.fixed or address in self.v6:
            return False
        return self.pool6 is None or self.pool6.is_free(self.offset6(address))

    def capacity(self) -> int:
        """How many addresses it can hand out (IPv4; IPv6-only: the /64's)."""
        if self.ipnet is not None:
            return self.pool.capacity
        if self.pool6 is not None:
            return self.pool6.capacity
        return V6_CAPACITY

    def in_use(self) -> int:
        return len(self.fixed)


#: Offsets of a /64 that are never handed out: the top 128 (reserved subnet anycast, RFC 2526)
#: and, below, the subnet-router anycast address (0) and the gateway (1).
V6_TOP_RESERVED = 128
V6_SIZE = 1 << 64
V6_CAPACITY = V6_SIZE - V6_TOP_RESERVED - 2


def v6_pool(ipnet6: netaddr.IPNetwork, gateway_v6: str) -> OffsetPool:
    """The free addresses of a dhcpv6-mode /64: lowest first, as IPv4 (nova's rule)."""
    gw = int(netaddr.IPAddress(gateway_v6)) - int(ipnet6.network)
    if not 0 <= gw < ipnet6.size:
        raise ValueError(f"gateway_v6 {gateway_v6} is not in {ipnet6}")
    return OffsetPool(1, ipnet6.size - V6_TOP_RESERVED - 1, frozenset({gw}))


def reserved_offsets(
    net: NetworkCreated, ipnet: netaddr.IPNetwork
) -> tuple[int, int, frozenset[int]]:
    """(first allocatable, last allocatable, reserved offsets) for a network."""
    base = int(ipnet.first)  # the network address (no IPAddress built)
    size = ipnet.size

    def inside(name: str, address: str | None) -> int:
        if address is None:
            raise ValueError(f"{name} is missing")
        offset = ipv4_int(address) - base  # not an address: refused
        if not 0 <= offset < size:
            raise ValueError(f"{name} {address} is not in {ipnet}")
        return offset

    reserved = {0, size - 1, inside("gateway", net.gateway)}
    if net.vpn_private_address:
        reserved.add(inside("vpn_private_address", net.vpn_private_address))
    first = inside("dhcp_start", net.dhcp_start)
    return first, size - 2, frozenset(r for r in reserved if r >= first)


def network_state(ev: NetworkCreated) -> NetworkState:
    """A network as created: its IPv4 pool (empty when IPv6-only), its served /64."""
    if ev.cidr is None and not ev.v6_served:
        raise ValueError("no cidr, and no IPv6 served (cidr_v6 and gateway_v6)")
    net6 = None if ev.cidr_v6 is None else parse_cidr(ev.cidr_v6)
    if net6 is not None and net6.version != 6:
        raise ValueError(f"cidr_v6 {ev.cidr_v6} is not an IPv6 network")
    if ev.cidr is not None:
        net4 = parse_cidr(ev.cidr)
        if net4.version != 4:
            raise ValueError(f"cidr {ev.cidr} is not an IPv4 network")
        ipnet: netaddr.IPNetwork | None = net4
        first, last, reserved = reserved_offsets(ev, ipnet)
        pool = OffsetPool(first, last, reserved)
    else:
        ipnet, pool = None, OffsetPool(1, 0, frozenset())
    ipnet6 = pool6 = None
    if ev.gateway_v6 is not None and ev.cidr_v6 is not None:
        ipnet6 = net6
        if ev.ipv6_mode == "dhcpv6":
            pool6 = v6_pool(ipnet6, ev.gateway_v6)
    return NetworkState(
        net=ev, ipnet=ipnet, pool=pool, project=ev.project, ipnet6=ipnet6, pool6=pool6
    )


def serving_hosts(n: NetworkState, instance_hosts: set[str], network_hosts: set[str]) -> set[str]:
    """The hosts that hold an in-use network's gateway, NAT and DHCP: with multi-host every
    host of its instances, else the network's host, else the announced network hosts."""
    if n.net.multi_host:
        return set(instance_hosts)
    if n.net.network_host:
        return {n.net.network_host}
    return set(network_hosts)
