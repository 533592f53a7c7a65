"""The executor's desired state as build() computed it before fragments (executor/fragments.py):
kept as the oracle of tests/executor/test_executor_fragments.py, which checks that assembling fragments
gives exactly this. Not used by the code.

The desired state of one host, computed from the folded log — and, for the NAT table's fixed
ranges, from the log itself (``log``: the events folded, in order). Pure: no I/O.

For every live network that has this host among its *hosts* (an allocated fixed IP with this
host, or this host serves the network), the host needs the network's bridge (forward delay 0,
STP off, up, the network's MTU) and its segmentation: ``vlan<N>`` over the physical interface
(vlan mode), ``vx<vni>`` with head-end replication entries toward every other host of the
network (vxlan mode), or the physical interface itself in the bridge (flat modes).

A host *serves* a network (gateway address on the bridge, SNAT of the range, floating IPs of its
addresses) when it is the network's ``network_host``, or the network names none and the host
runs as a network host, or — multi-host — when it has an instance there. The served network
also needs at least one allocated address, or one held for its DHCP release (deallocated but
leased: the serving host keeps its gateway and the dnsmasq that reports the release; no compute
host joins for it): an unused network costs nothing anywhere. The NAT table's fixed ranges (not
NATed between each other) are every network's, not only those served here: the range of every
live network of the log (created, not deleted nor retired), rebuilt here from the log's events
rather than read from the fold, which is what the executor reads and so what this oracle
checks. A served
network in a DHCP mode (flat_dhcp, vlan, vxlan) also gets a dnsmasq on its bridge
(:func:`dhcp_specs`; run by executor/dhcp.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import netaddr

from netledger.events.placement_events import NetworkRetired
from netledger.events.state import NetworkState, State
from netledger.events.state import serving_hosts as state_serving_hosts
from netledger.events.types import Event, NetworkCreated, NetworkDeleted
from netledger.executor.hosts import HostBook
from netledger.executor.model import (
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

MAX_IFNAME = 15
#: Modes whose served networks get a DHCP server (plain flat injects addresses instead).
DHCP_MODES = ("flat_dhcp", "vlan", "vxlan")


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


def vxlan_name(vni: int) -> str:
    return f"vx{vni}"


def vlan_name(vlan: int) -> str:
    return f"vlan{vlan}"


def network_hosts(n: NetworkState, book: HostBook) -> set[str]:
    """Every host that needs this network's bridge (an address held for its DHCP release keeps
    the serving hosts', never a compute host's)."""
    hosts = {ip.host for ip in n.fixed.values() if ip.allocated and ip.host}
    held = _held_hosts(n)
    if not hosts and not held:
        return set()
    return hosts | serving_hosts(n, book, hosts | held)


def serving_hosts(n: NetworkState, book: HostBook, instance_hosts: set[str]) -> set[str]:
    """The hosts that hold the gateway (and NAT) of an in-use network (the rule the command
    service also uses for DHCP leases: events/state.py)."""
    return state_serving_hosts(n, instance_hosts, book.network_hosts())


def _in_use_hosts(n: NetworkState) -> set[str]:
    return {ip.host for ip in n.fixed.values() if ip.allocated and ip.host}


def _held_hosts(n: NetworkState) -> set[str]:
    """Hosts of addresses deallocated but leased: held (and served) until DHCP releases them."""
    return {ip.host for ip in n.fixed.values() if not ip.allocated and ip.any_lease and ip.host}


def serves(n: NetworkState, cfg: HostConfig, book: HostBook) -> bool:
    inst = _in_use_hosts(n)
    held = _held_hosts(n)
    if n.net.multi_host:
        return cfg.host in inst | held
    if not inst and not held:
        return False
    if n.net.network_host:
        return bool(n.net.network_host == cfg.host)
    return cfg.network_host


def build(state: State, book: HostBook, cfg: HostConfig, log: Sequence[Event]) -> HostDesired:
    links: dict[str, LinkSpec] = {}
    addresses: dict[tuple[str, str], AddrSpec] = {}
    fdb: dict[tuple[str, str], FdbSpec] = {}
    enslaved: dict[str, EnslaveSpec] = {}
    served: list[NetworkState] = []
    vteps = book.vteps()
    for n in sorted(state.live_networks(), key=lambda n: n.network_id):
        inst = _in_use_hosts(n)
        if not inst and not _held_hosts(n):
            continue
        here_serves = serves(n, cfg, book)
        if cfg.host not in inst and not here_serves:
            continue
        net = n.net
        nid = n.network_id
        parent = net.bridge_interface or cfg.physical_interface
        bridge = links.get(net.bridge)
        if bridge is None or nid < (bridge.network_id or nid):
            # Flat networks may share one bridge: it is named after the lowest network id.
            links[net.bridge] = LinkSpec(
                name=net.bridge, kind="bridge", network_id=nid, mtu=net.mtu
            )
        if net.mode == "vxlan" and net.vni is not None:
            name = vxlan_name(net.vni)
            links[name] = LinkSpec(
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
                # a peer's VTEP of the other family than ours gets no entry (the kernel refuses it)
                if dst and dst != cfg.vtep_address and (":" in dst) == v6:
                    fdb[(name, dst)] = FdbSpec(interface=name, dst=dst, network_id=nid)
        elif net.mode == "vlan" and net.vlan is not None and parent:
            name = vlan_name(net.vlan)
            links[name] = LinkSpec(
                name=name,
                kind="vlan",
                network_id=nid,
                master=net.bridge,
                mtu=net.mtu,
                vlan=net.vlan,
                parent=parent,
            )
        elif net.mode in ("flat", "flat_dhcp") and parent:
            enslaved[parent] = EnslaveSpec(interface=parent, master=net.bridge, network_id=nid)
        if here_serves:
            served.append(n)
            prefix = n.ipnet.prefixlen
            addr = f"{net.gateway}/{prefix}"
            addresses[(net.bridge, addr)] = AddrSpec(
                interface=net.bridge, address=addr, broadcast=net.broadcast, network_id=nid
            )
    floating = _floating(state, {n.network_id for n in served}, cfg, addresses)
    fixed_ranges = _fixed_space(log, state, cfg.fixed_range)
    nat = NatTable()
    if floating or served:
        nat = NatTable(
            floating=floating,
            fixed_ranges=fixed_ranges,
            snat_to=cfg.snat_address,
            masquerade_interface=None if cfg.snat_address else cfg.public_interface,
        )
    return HostDesired(
        links=tuple(sorted(links.values())),
        addresses=tuple(sorted(addresses.values())),
        fdb=tuple(sorted(fdb.values())),
        enslaved=tuple(sorted(enslaved.values())),
        nat=nat,
        forwarding=bool(served),
        floating_ranges=tuple(sorted((str(p.ipnet) for p in state.pools.values()), key=_cidr_key)),
        dhcp=dhcp_specs(served, cfg) if cfg.dhcp else (),
    )


def _fixed_space(
    log: Sequence[Event], state: State, configured: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """The IPv4 range of every live network of the log (created, and neither deleted nor
    retired since) — or the configured ones (--fixed-range) — merged, the floating pools cut
    out."""
    live: dict[str, str] = {}
    for e in log:
        if isinstance(e, NetworkCreated) and e.cidr is not None:
            live[e.network_id] = e.cidr
        elif isinstance(e, NetworkDeleted | NetworkRetired):
            live.pop(e.network_id, None)
    nets = [netaddr.IPNetwork(c) for c in (configured or live.values())]
    cidrs = netaddr.cidr_merge(nets)
    for p in state.pools.values():
        cidrs = [part for c in cidrs for part in netaddr.cidr_exclude(c, p.ipnet)]
    return tuple(str(c) for c in sorted(netaddr.cidr_merge(cidrs)))


def dhcp_specs(served: Iterable[NetworkState], cfg: HostConfig) -> tuple[DhcpSpec, ...]:
    """One dnsmasq per bridge, for the DHCP-mode networks served here.

    The hosts file lists every address still bound to an instance: allocated, or deallocated
    but leased (held until DHCP releases it — the client may renew meanwhile, and only a
    dnsmasq that knows the address reports the release). Multi-host: only this host's
    instances (each host answers its own, as in nova).
    """
    by_bridge: dict[str, list[NetworkState]] = {}
    for n in served:
        if n.net.mode in DHCP_MODES:
            by_bridge.setdefault(n.net.bridge, []).append(n)
    specs = []
    for bridge, nets in sorted(by_bridge.items()):
        nets.sort(key=lambda n: _id_key(n.network_id))
        subnets = []
        entries: dict[str, tuple[str, str]] = {}  # address -> (mac, instance)
        for n in nets:
            net = n.net
            subnets.append(
                DhcpSubnet(
                    network_id=n.network_id,
                    gateway=net.gateway,
                    netmask=net.netmask,
                    dhcp_start=net.dhcp_start,
                    size=n.ipnet.size,
                    dns=tuple(d for d in (net.dns1, net.dns2) if d),
                    mtu=net.mtu,
                )
            )
            for ip in n.fixed.values():
                if not (ip.allocated or ip.any_lease):
                    continue
                if net.multi_host and ip.host != cfg.host:
                    continue
                entries[ip.address] = (ip.mac.lower(), ip.instance)
        hosts = []
        taken: set[str] = set()
        for address in sorted(entries, key=_ip_key):
            mac, instance = entries[address]
            name = hostname_for(instance)
            if name in taken:
                # dnsmasq keys leases by name too: two instances must never share one.
                name = f"{name[:48]}-{address.replace('.', '-')}"
            taken.add(name)
            hosts.append(DhcpHost(mac=mac, hostname=name, address=address))
        specs.append(
            DhcpSpec(
                bridge=bridge,
                network_id=nets[0].network_id,
                subnets=tuple(subnets),
                hosts=tuple(hosts),
                lease_time=cfg.dhcp_lease_time,
            )
        )
    return tuple(specs)


def hostname_for(instance: str) -> str:
    """A DNS label from an instance id (ids are letters, digits, '-' and '_').

    dnsmasq reads a hosts-file field that looks like a number as a lease time, so a name
    always starts with a letter.
    """
    label = "".join(c if c.isascii() and c.isalnum() else "-" for c in instance.lower())
    label = label.strip("-") or "instance"
    if not label[0].isalpha():
        label = f"i-{label}"
    return label[:63].rstrip("-")


def _id_key(network_id: str) -> tuple[int, str]:
    return (int(network_id), "") if network_id.isdigit() else (1 << 62, network_id)


def _floating(
    state: State, served: set[str], cfg: HostConfig, addresses: dict[tuple[str, str], AddrSpec]
) -> tuple[tuple[str, str], ...]:
    """The floating IPs NATed here: the mappings of the networks this host serves (read from the
    networks' own subjects: FloatingIpMapped, events/placement_events.py)."""
    pairs: list[tuple[str, str]] = []
    for nid in sorted(served):
        n = state.networks[nid]
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
                addr = f"{floating}/32"
                addresses[(iface, addr)] = AddrSpec(interface=iface, address=addr, network_id=nid)
    return tuple(sorted(pairs, key=lambda fx: _ip_key(fx[0])))


def _ip_key(a: str) -> int:
    return int(netaddr.IPAddress(a))


def _cidr_key(c: str) -> tuple[int, int]:
    n = netaddr.IPNetwork(c)
    return (int(n.network), n.prefixlen)


def too_long(names: Iterable[str]) -> list[str]:
    """Names the kernel would refuse (IFNAMSIZ): reported as conflicts by the diff."""
    return [n for n in names if len(n) > MAX_IFNAME]
