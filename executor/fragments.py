"""A host's desired state, one network at a time. Pure: no I/O.

:func:`fragment` is what one network needs on this host (its bridge, its VXLAN / VLAN link and
flood entries, the physical interface in it for flat modes, the gateway address, the floating
IPs it NATs, its share of a dnsmasq); :func:`assemble` puts fragments together into the
:class:`HostDesired` of the whole host. ``desired.build`` is ``assemble`` of every network's
fragment; the executor keeps the fragments between passes and recomputes only those of the
networks an event touched (executor/incremental.py), so the cost of a change follows the
change, not the number of networks the host serves.

The rules are executor/desired.py's (module docstring): who needs a network, who serves it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import netaddr

from netledger.events.ids import REGISTRY_SUBJECT, vlan_link_name, vxlan_link_name
from netledger.events.state import NetworkState, State
from netledger.events.state import serving_hosts as state_serving_hosts

from .hosts import HostBook
from .model import (
    ROUTER_LINK_LOCAL,
    VXLAN_PORT,
    AddrSpec,
    DhcpHost,
    DhcpSpec,
    DhcpSubnet,
    EnslaveSpec,
    FdbSpec,
    HostDesired,
    LinkSpec,
    NatTable,
)
from .slices import ITEMS, Steps, complete, sorted_steps

#: Modes whose served networks get a DHCP server (plain flat injects addresses instead).
DHCP_MODES = ("flat_dhcp", "vlan", "vxlan")
#: Modes whose networks may share a bridge (and the physical interface in it).
SHARED_MODES = ("flat", "flat_dhcp")
#: What a served IPv6 network's dnsmasq may lease beyond its IPv4 addresses (dhcpv6 mode: one
#: per instance; a /64 is not a useful cap).
V6_LEASES = 1 << 16

log = logging.getLogger("netledger.executor")


@dataclass(frozen=True)
class DhcpPiece:
    """One network's part of the dnsmasq on its bridge."""

    bridge: str
    network_id: str
    subnet: DhcpSubnet
    #: (address naming the allocation, mac, instance, IPv4 address or None, IPv6 address
    #: handed out by DHCPv6 or None)
    entries: tuple[tuple[str, str, str, str | None, str | None], ...]


@dataclass(frozen=True)
class Fragment:
    """What one network needs on this host."""

    network_id: str
    bridge: LinkSpec
    segment: LinkSpec | None = None  # the vxlan / vlan link in the bridge
    fdb: tuple[FdbSpec, ...] = ()
    enslaved: EnslaveSpec | None = None  # flat modes: the physical interface in the bridge
    served: bool = False
    gateway: AddrSpec | None = None
    #: served IPv6: the gateway_v6 /64 and the router's link-local on the bridge
    gateway6: tuple[AddrSpec, ...] = ()
    fixed_range: str | None = None  # served: SNATed
    routed6: tuple[str, str] | None = None  # served IPv6: (bridge, /64), routed, not NATed
    floating: tuple[tuple[str, str], ...] = ()  # (floating, fixed) NATed here
    floating_addresses: tuple[AddrSpec, ...] = ()  # their /32s on the public interface
    dhcp: DhcpPiece | None = None
    #: flat modes: the bridge (and the physical interface) may be shared with other networks
    shared: bool = False

    def links(self) -> tuple[LinkSpec, ...]:
        return (self.bridge,) if self.segment is None else (self.bridge, self.segment)

    def addresses(self) -> tuple[AddrSpec, ...]:
        gw = () if self.gateway is None else (self.gateway,)
        return gw + self.gateway6 + self.floating_addresses

    @property
    def served4(self) -> bool:
        return self.served and self.gateway is not None

    @property
    def served6(self) -> bool:
        return self.served and bool(self.gateway6)


@dataclass(frozen=True)
class HostConfig:
    host: str
    physical_interface: str | None = None
    public_interface: str | None = None
    network_host: bool = False
    vtep_address: str | None = None
    snat_address: str | None = None  # None: masquerade on the public interface
    dhcp: bool = True  # run dnsmasq for the DHCP-mode networks this host serves
    dhcp_lease_time: int = 86400  # seconds (nova's dhcp_lease_time)
    #: the fixed ranges never NATed between each other (``--fixed-range``, nova's fixed_range);
    #: empty: every network's range (:func:`fixed_space`)
    fixed_range: tuple[str, ...] = ()


# The names are the domain's (events/ids.py): network create refuses a bridge named so.
vxlan_name = vxlan_link_name
vlan_name = vlan_link_name


def in_use_hosts(n: NetworkState) -> set[str]:
    return {h for h, count in n.host_allocated.items() if count > 0}


def _may_hold(n: NetworkState) -> bool:
    """Whether ``n`` may have an address held for its release (deallocated, still leased):
    ``fixed`` has more entries than allocated addresses. O(hosts), so that the scan of
    :func:`holds` is made only where there is something to find."""
    return len(n.fixed) > sum(n.host_allocated.values())


def holds(n: NetworkState, host: str | None = None) -> bool:
    """Whether ``n`` has an address held for its DHCP release (deallocated but leased) — of an
    instance on ``host``, or on any host (None)."""
    if not _may_hold(n):
        return False
    return any(
        ip.any_lease and not ip.allocated and (host is None or ip.host == host)
        for ip in n.fixed.values()
    )


def held_hosts(n: NetworkState) -> set[str]:
    """The hosts of the addresses held for their DHCP release."""
    if not _may_hold(n):
        return set()
    return {ip.host for ip in n.fixed.values() if ip.any_lease and not ip.allocated and ip.host}


def serving_hosts(n: NetworkState, book: HostBook, instance_hosts: set[str]) -> set[str]:
    """The hosts that hold the gateway (and NAT) of an in-use network (the rule the command
    service also uses for DHCP leases: events/state.py)."""
    return state_serving_hosts(n, instance_hosts, book.network_hosts())


def serves(n: NetworkState, cfg: HostConfig, book: HostBook, inst: set[str]) -> bool:
    """Whether this host serves ``n``: it is in use (an allocated address), or an address is
    held for its DHCP release — the serving host keeps the gateway and the dnsmasq that knows
    the address, or the release is never reported and the address waits for the reaper (nova
    kept serving). Multi-host: the held address's own host (each host answers its own)."""
    if n.net.multi_host:
        return cfg.host in inst or holds(n, cfg.host)
    if not inst and not holds(n):
        return False
    if n.net.network_host:
        return bool(n.net.network_host == cfg.host)
    return cfg.network_host


def fragment(
    state: State, n: NetworkState, book: HostBook, cfg: HostConfig, vteps: dict[str, str]
) -> Fragment | None:
    """What network ``n`` needs on this host (None: nothing). An address held for its release
    keeps the serving host's part (bridge, gateway, dnsmasq) but makes no compute host join."""
    inst = in_use_hosts(n)
    if not inst and not n.fixed:
        return None
    here_serves = serves(n, cfg, book, inst)
    if cfg.host not in inst and not here_serves:
        return None
    net = n.net
    nid = n.network_id
    parent = net.bridge_interface or cfg.physical_interface
    bridge = LinkSpec(name=net.bridge, kind="bridge", network_id=nid, mtu=net.mtu)
    segment: LinkSpec | None = None
    fdb: list[FdbSpec] = []
    enslaved: EnslaveSpec | None = None
    if net.mode == "vxlan" and net.vni is not None:
        name = vxlan_name(net.vni)
        segment = LinkSpec(
            name=name,
            kind="vxlan",
            network_id=nid,
            master=net.bridge,
            mtu=net.mtu,
            vni=net.vni,
            parent=cfg.physical_interface,
            local=cfg.vtep_address,
            port=VXLAN_PORT,
        )
        peers = (inst | serving_hosts(n, book, inst)) - {cfg.host}
        v6 = bool(cfg.vtep_address) and ":" in str(cfg.vtep_address)
        for peer in sorted(peers):
            dst = vteps.get(peer)
            if dst and dst != cfg.vtep_address:
                if (":" in dst) != v6:
                    _other_family(peer, dst, cfg.vtep_address)
                    continue
                fdb.append(FdbSpec(interface=name, dst=dst, network_id=nid))
    elif net.mode == "vlan" and net.vlan is not None and parent:
        name = vlan_name(net.vlan)
        segment = LinkSpec(
            name=name,
            kind="vlan",
            network_id=nid,
            master=net.bridge,
            mtu=net.mtu,
            vlan=net.vlan,
            parent=parent,
        )
    elif net.mode in SHARED_MODES and parent:
        enslaved = EnslaveSpec(interface=parent, master=net.bridge, network_id=nid)
    elif net.mode == "vlan" and net.vlan is not None:
        _no_vlan_parent(nid, net.vlan, net.bridge)
    if not here_serves:
        return Fragment(nid, bridge, segment, tuple(fdb), enslaved, shared=net.mode in SHARED_MODES)
    gateway = fixed_range = None
    if n.ipnet is not None and net.gateway is not None:
        addr = f"{net.gateway}/{n.ipnet.prefixlen}"
        gateway = AddrSpec(
            interface=net.bridge, address=addr, broadcast=net.broadcast, network_id=nid
        )
        fixed_range = str(n.ipnet)
    gateway6: tuple[AddrSpec, ...] = ()
    routed6 = None
    if n.ipnet6 is not None and net.gateway_v6 is not None:
        gateway6 = (
            AddrSpec(
                interface=net.bridge,
                address=f"{net.gateway_v6}/{n.ipnet6.prefixlen}",
                network_id=nid,
            ),
            AddrSpec(interface=net.bridge, address=ROUTER_LINK_LOCAL, network_id=nid),
        )
        routed6 = (net.bridge, str(n.ipnet6))
    floating, floating_addresses = _floating(state, n, cfg)
    return Fragment(
        nid,
        bridge,
        segment,
        tuple(fdb),
        enslaved,
        served=True,
        gateway=gateway,
        gateway6=gateway6,
        fixed_range=fixed_range,
        routed6=routed6,
        floating=floating,
        floating_addresses=floating_addresses,
        dhcp=dhcp_piece(n, cfg) if cfg.dhcp and net.mode in DHCP_MODES else None,
        shared=net.mode in SHARED_MODES,
    )


def fragments(
    state: State, book: HostBook, cfg: HostConfig, only: Iterable[str] | None = None
) -> dict[str, Fragment]:
    """The fragment of every network (or of ``only`` those) that needs something here."""
    vteps = book.vteps()
    nets = (
        state.live_networks()
        if only is None
        else (state.networks[nid] for nid in only if nid in state.networks)
    )
    out = {}
    for n in nets:
        f = fragment(state, n, book, cfg, vteps)
        if f is not None:
            out[n.network_id] = f
    return out


def assemble(
    frags: dict[str, Fragment], state: State, cfg: HostConfig, nat: NatTable | None = None
) -> HostDesired:
    """The desired state made of ``frags``; ``nat``, when given, is used as the NAT table (an
    incremental pass computes it from every fragment, not only those it assembles)."""
    return complete(assemble_steps(frags, state, cfg, nat))


def assemble_steps(
    frags: dict[str, Fragment], state: State, cfg: HostConfig, nat: NatTable | None = None
) -> Steps[HostDesired]:
    """:func:`assemble` in steps (executor/slices.py: the periodic sweep assembles the whole
    host on the event loop); ``state`` is read in its last step."""
    links: dict[str, LinkSpec] = {}
    addresses: dict[tuple[str, str], AddrSpec] = {}
    fdb: dict[tuple[str, str], FdbSpec] = {}
    enslaved: dict[str, EnslaveSpec] = {}
    pieces: list[DhcpPiece] = []
    served = served6 = False
    for i, nid in enumerate(sorted(frags)):
        if not i % ITEMS:
            yield
        f = frags[nid]
        # Flat networks may share one bridge: it is named after the lowest network id.
        links.setdefault(f.bridge.name, f.bridge)
        if f.segment is not None:
            links[f.segment.name] = f.segment
        for e in f.fdb:
            fdb[e.key] = e
        if f.enslaved is not None:
            enslaved[f.enslaved.interface] = f.enslaved
        for a in f.addresses():
            addresses[a.key] = a
        served |= f.served4
        served6 |= f.served6
        if f.dhcp is not None:
            pieces.append(f.dhcp)
    sorted_links = yield from sorted_steps(links.values())
    sorted_addresses = yield from sorted_steps(addresses.values())
    sorted_fdb = yield from sorted_steps(fdb.values())
    dhcp = yield from dhcp_assemble_steps(pieces, cfg)
    if nat is None:
        nat = yield from nat_table_steps(frags.values(), cfg, fixed_space(state, cfg.fixed_range))
    return HostDesired(
        links=tuple(sorted_links),
        addresses=tuple(sorted_addresses),
        fdb=tuple(sorted_fdb),
        enslaved=tuple(sorted(enslaved.values())),
        nat=nat,
        forwarding=served,
        forwarding_v6=served6,
        floating_ranges=floating_ranges(state),
        dhcp=dhcp,
    )


def nat_table(frags: Iterable[Fragment], cfg: HostConfig, space: tuple[str, ...]) -> NatTable:
    """The host's NAT table: the floating IPs of the networks it serves, and — once it serves
    an IPv4 range — the set of fixed ranges, ``space`` (:func:`fixed_space`): every network's,
    not only those served here (traffic to a range another host serves is not NATed either)."""
    return complete(nat_table_steps(frags, cfg, space))


def nat_table_steps(
    frags: Iterable[Fragment], cfg: HostConfig, space: tuple[str, ...]
) -> Steps[NatTable]:
    """:func:`nat_table` in steps."""
    floating: list[tuple[str, str]] = []
    served = False
    routed6: set[tuple[str, str]] = set()
    bridges: set[str] = set()
    for i, f in enumerate(frags):
        if not i % ITEMS:
            yield
        floating.extend(f.floating)
        served |= f.fixed_range is not None
        bridges.add(f.bridge.name)
        if f.routed6 is not None:
            routed6.add(f.routed6)
    v6 = tuple(sorted(routed6, key=lambda r: (r[0], _cidr_key(r[1]))))
    blocked = tuple(sorted(bridges - {b for b, _ in v6})) if v6 else ()
    if not floating and not served:
        return NatTable(routed_v6=v6, blocked_v6=blocked)
    by_address = yield from sorted_steps(floating, key=lambda fx: _ip_key(fx[0]))
    return NatTable(
        floating=tuple(by_address),
        fixed_ranges=space,
        snat_to=cfg.snat_address,
        masquerade_interface=None if cfg.snat_address else cfg.public_interface,
        routed_v6=v6,
        blocked_v6=blocked,
    )


#: the last :func:`fixed_space` computed: (its state, the key it was computed for, the result)
_space_cache: (
    tuple[weakref.ref[State], tuple[int, int, int, tuple[str, ...]], tuple[str, ...]] | None
) = None


def fixed_space(state: State, configured: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The fixed ranges, as the NAT table's ``fixed`` set holds them: the IPv4 range of every
    live network, merged (adjacent blocks of one range become one prefix: the set and its
    ``HostNatApplied`` report stay small), without the floating IP pools.

    nova matched its whole ``fixed_range`` (every network) in ``-s fixed -d fixed -j ACCEPT``
    and in the SNAT rule. Every view holds every live network (created on the registry, which
    every host reads; gone at its deletion or, for a host that does not read the network, at
    its retirement on the registry — written with every deletion, and by the service for those
    of older logs: service/legacy_pointers.py), so every host builds the same set, and a
    deleted network's range leaves it: the set follows the live cloud, not every network it
    ever had (it grew by one range per network ever created: review hrev83). Pools may overlap
    a deleted network's range: the merge keeps the set valid, and floating addresses are never
    in it.

    ``configured`` (``--fixed-range``) replaces the networks' ranges: a supernet that does not
    change when a network is created (else every NAT host rewrites its table then).

    Computed again only when the networks or pools changed (a creation or retirement moves the
    registry, an older deletion the count of networks); a pass in between finds it in O(1)."""
    global _space_cache
    key = (state.seq_of(REGISTRY_SUBJECT), len(state.networks), len(state.pools), configured)
    cached = _space_cache
    if cached is not None and cached[0]() is state and cached[1] == key:
        return cached[2]
    if configured:
        ranges = netaddr.IPSet(configured)
    else:
        ranges = netaddr.IPSet(n.net.cidr for n in state.networks.values() if n.net.cidr)
    for p in state.pools.values():
        ranges.remove(p.ipnet)
    space = tuple(str(c) for c in ranges.iter_cidrs())
    _space_cache = (weakref.ref(state), key, space)
    return space


def floating_ranges(state: State) -> tuple[str, ...]:
    return tuple(sorted((str(p.ipnet) for p in state.pools.values()), key=_cidr_key))


def _floating(
    state: State, n: NetworkState, cfg: HostConfig
) -> tuple[tuple[tuple[str, str], ...], tuple[AddrSpec, ...]]:
    """The floating IPs this served network NATs here (read from the network's own subject:
    FloatingIpMapped, events/placement_events.py) and their /32s on the public interface."""
    pairs: list[tuple[str, str]] = []
    addrs: list[AddrSpec] = []
    nid = n.network_id
    for floating, (fixed_address, pool) in n.floating.items():
        fixed = n.fixed.get(fixed_address)
        if fixed is None or not fixed.allocated:
            continue
        if n.net.multi_host and fixed.host != cfg.host:
            continue  # multi-host: the instance's own host NATs its floating IPs
        pairs.append((floating, fixed_address))
        p = state.pools.get(pool)
        iface = (p.created.public_interface if p is not None else None) or cfg.public_interface
        if iface:
            addrs.append(AddrSpec(interface=iface, address=f"{floating}/32", network_id=nid))
    return tuple(pairs), tuple(addrs)


def dhcp_piece(n: NetworkState, cfg: HostConfig) -> DhcpPiece:
    """The hosts file lists every address still bound to an instance: allocated, or deallocated
    but leased (held until DHCP releases it — the client may renew meanwhile, and only a
    dnsmasq that knows the address reports the release). Multi-host: only this host's
    instances (each host answers its own, as in nova)."""
    net = n.net
    dns = tuple(d for d in (net.dns1, net.dns2) if d)
    v6 = n.ipnet6 is not None
    dhcpv6 = v6 and n.pool6 is not None
    subnet = DhcpSubnet(
        network_id=n.network_id,
        gateway=net.gateway,
        netmask=net.netmask,
        dhcp_start=net.dhcp_start,
        size=(n.ipnet.size if n.ipnet is not None else 0) + (V6_LEASES if dhcpv6 else 0),
        dns=tuple(d for d in dns if ":" not in d),
        mtu=net.mtu,
        prefix6=str(n.ipnet6) if v6 else None,
        gateway6=net.gateway_v6 if v6 else None,
        mode6=net.ipv6_mode if v6 else None,
        dns6=tuple(d for d in dns if ":" in d) if v6 else (),
    )
    entries = []
    for ip in n.fixed.values():
        if not (ip.allocated or ip.any_lease):
            continue
        if net.multi_host and ip.host != cfg.host:
            continue
        if n.ipnet is None and not dhcpv6:
            continue  # IPv6-only, SLAAC: nothing for dnsmasq to hand out
        entries.append(
            (
                ip.address,
                ip.mac.lower(),
                ip.instance,
                ip.address if n.ipnet is not None else None,
                ip.address_v6 if dhcpv6 else None,
            )
        )
    return DhcpPiece(net.bridge, n.network_id, subnet, tuple(entries))


def dhcp_assemble(pieces: Iterable[DhcpPiece], cfg: HostConfig) -> tuple[DhcpSpec, ...]:
    """One dnsmasq per bridge (flat networks may share one)."""
    return complete(dhcp_assemble_steps(pieces, cfg))


def dhcp_assemble_steps(
    pieces: Iterable[DhcpPiece], cfg: HostConfig
) -> Steps[tuple[DhcpSpec, ...]]:
    """:func:`dhcp_assemble` in steps (one bridge a step, or :data:`ITEMS` of its hosts)."""
    by_bridge: dict[str, list[DhcpPiece]] = {}
    for p in pieces:
        by_bridge.setdefault(p.bridge, []).append(p)
    specs = []
    for bridge, group in sorted(by_bridge.items()):
        yield
        group.sort(key=lambda p: _id_key(p.network_id))
        # address -> (mac, instance, IPv4, IPv6)
        entries: dict[str, tuple[str, str, str | None, str | None]] = {}
        for p in group:
            for address, mac, instance, v4, v6 in p.entries:
                entries[address] = (mac, instance, v4, v6)
        hosts = []
        taken: set[str] = set()
        in_order = yield from sorted_steps(entries, key=_ip_sort)
        for i, address in enumerate(in_order):
            if not i % ITEMS:
                yield
            mac, instance, v4, v6 = entries[address]
            name = hostname_for(instance)
            if name in taken:
                # dnsmasq keys leases by name too: two instances must never share one.
                suffix = address.replace(".", "-").replace(":", "-")
                keep = 48 if "." in address else 62 - len(suffix)  # a DNS label: 63 at most
                name = f"{name[:keep]}-{suffix}"
            taken.add(name)
            hosts.append(DhcpHost(mac=mac, hostname=name, address=v4, address6=v6))
        specs.append(
            DhcpSpec(
                bridge=bridge,
                network_id=group[0].network_id,
                subnets=tuple(p.subnet for p in group),
                hosts=tuple(hosts),
                lease_time=cfg.dhcp_lease_time,
            )
        )
    return tuple(specs)


def hostname_for(instance: str) -> str:
    """A DNS label from an instance id (ids are letters, digits, '-' and '_').

    dnsmasq reads a hosts-file field that looks like a number as a lease time, so a name
    always starts with a letter; and ``ignore``, ``infinite`` and ``deprecated`` as its
    keywords (an instance named ``ignore`` got no address at all, one named ``infinite`` a
    lease that never ends: found by review), so those get the same prefix.
    """
    label = "".join(c if c.isascii() and c.isalnum() else "-" for c in instance.lower())
    label = label.strip("-") or "instance"
    if not label[0].isalpha() or label in DNSMASQ_KEYWORDS:
        label = f"i-{label}"
    return label[:63].rstrip("-")


#: words dnsmasq reads as keywords in a dhcp-host line (never as a host name)
DNSMASQ_KEYWORDS = frozenset({"ignore", "infinite", "deprecated"})


def _id_key(network_id: str) -> tuple[int, str]:
    return (int(network_id), "") if network_id.isdigit() else (1 << 62, network_id)


def _ip_key(a: str) -> int:
    return int(netaddr.IPAddress(a))


def _ip_sort(a: str) -> tuple[int, int]:
    ip = netaddr.IPAddress(a)
    return (ip.version, int(ip))


def _cidr_key(c: str) -> tuple[int, int]:
    n = netaddr.IPNetwork(c)
    return (int(n.network), n.prefixlen)


#: (peer, VTEP) pairs already warned about (:func:`_other_family`): once per process
_WARNED_FAMILY: set[tuple[str, str]] = set()
#: the VLAN networks warned of having no interface to carry their tag (said once)
_WARNED_VLAN: set[str] = set()


def _no_vlan_parent(network_id: str, vlan: int, bridge: str) -> None:
    """A VLAN network with no interface to carry its tag (neither its own bridge_interface
    nor the executor's --physical-interface) gets its bridge alone: its instances reach no
    other host, and nothing said so (review h130). Said once per network."""
    if network_id not in _WARNED_VLAN:
        _WARNED_VLAN.add(network_id)
        log.warning(
            "network %s is VLAN %d but no interface carries it (no --physical-interface, no"
            " bridge interface of its own): only its bridge %s is built, and its instances"
            " reach no other host",
            network_id, vlan, bridge,
        )  # fmt: skip


def _other_family(peer: str, dst: str, mine: str | None) -> None:
    """A peer's VTEP of the other address family than this host's (IPv4 when it has none)
    gets no flood entry: the kernel refuses one on the VXLAN link, and every pass of every
    host sharing a network with that peer failed for it (found by review). Said once."""
    if (peer, dst) not in _WARNED_FAMILY:
        _WARNED_FAMILY.add((peer, dst))
        log.warning(
            "host %s announces VTEP %s, not of this host's address family (%s): no VXLAN"
            " flood entry toward it (give every host --vtep-address of one family)",
            peer, dst, mine or "IPv4, no --vtep-address",
        )  # fmt: skip
