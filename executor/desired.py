"""The desired state of one host, computed from the folded log. Pure: no I/O.

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
NATed between each other) are every network's, not only those served here. A served
network in a DHCP mode (flat_dhcp, vlan, vxlan) also gets a dnsmasq on its bridge (run by
executor/dhcp.py).

The work is done one network at a time (executor/fragments.py): :func:`build` assembles the
fragment of every network; a running executor recomputes only the fragments of the networks an
event touched.
"""

from __future__ import annotations

from collections.abc import Iterable

from netledger.events.state import NetworkState, State

from .fragments import (
    DHCP_MODES,
    HostConfig,
    assemble,
    dhcp_assemble,
    dhcp_piece,
    fragments,
    held_hosts,
    hostname_for,
    in_use_hosts,
    serving_hosts,
    vlan_name,
    vxlan_name,
)
from .hosts import HostBook
from .model import DhcpSpec, HostDesired

MAX_IFNAME = 15

__all__ = [
    "DHCP_MODES",
    "MAX_IFNAME",
    "HostConfig",
    "build",
    "dhcp_specs",
    "hostname_for",
    "network_hosts",
    "serving_hosts",
    "too_long",
    "vlan_name",
    "vxlan_name",
]


def build(state: State, book: HostBook, cfg: HostConfig) -> HostDesired:
    return assemble(fragments(state, book, cfg), state, cfg)


def network_hosts(n: NetworkState, book: HostBook) -> set[str]:
    """Every host that needs this network's bridge (an address held for its DHCP release keeps
    the serving hosts', never a compute host's)."""
    hosts = in_use_hosts(n)
    held = held_hosts(n)
    if not hosts and not held:
        return set()
    return hosts | serving_hosts(n, book, hosts | held)


def dhcp_specs(served: Iterable[NetworkState], cfg: HostConfig) -> tuple[DhcpSpec, ...]:
    """One dnsmasq per bridge, for the DHCP-mode networks served here."""
    return dhcp_assemble((dhcp_piece(n, cfg) for n in served if n.net.mode in DHCP_MODES), cfg)


def too_long(names: Iterable[str]) -> list[str]:
    """Names the kernel would refuse (IFNAMSIZ): reported as conflicts by the diff."""
    return [n for n in names if len(n) > MAX_IFNAME]
