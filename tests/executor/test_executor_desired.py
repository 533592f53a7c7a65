"""Desired state of a host, built from folded events (pure: no kernel, no NATS)."""

from __future__ import annotations

from typing import Any

from netledger.events.codec import Envelope
from netledger.events.host_events import HostAnnounced
from netledger.events.placement_events import FloatingIpMapped
from netledger.events.state import State
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingPoolCreated,
    NetworkCreated,
)
from netledger.executor.desired import HostConfig, build
from netledger.executor.diff import diff
from netledger.executor.hosts import HostBook
from netledger.executor.model import AddrSpec, EnslaveSpec, FdbSpec, HostActual, LinkSpec


def network(nid: str, cidr: str, mode: str, **kw: Any) -> NetworkCreated:
    base = cidr.rsplit(".", 1)[0]
    args: dict[str, Any] = dict(
        network_id=nid,
        label=f"n{nid}",
        cidr=cidr,
        netmask="255.255.255.0",
        gateway=f"{base}.1",
        broadcast=f"{base}.255",
        dhcp_start=f"{base}.2",
        mode=mode,
        vlan=None,
        vni=None,
        bridge=f"br{nid}",
        bridge_interface=None,
        dns1=None,
        dns2=None,
        vpn_private_address=None,
        vpn_public_port=None,
        project=None,
        multi_host=False,
        network_host=None,
        mtu=None,
        cidr_v6=None,
    )
    args.update(kw)
    return NetworkCreated(**args)


def fold(*events: Event) -> tuple[State, list[HostAnnounced]]:
    st = State()
    announced = []
    for seq, ev in enumerate(events, 1):
        if isinstance(ev, HostAnnounced):
            announced.append(ev)
            continue
        st.apply(seq, ev.subject(), Envelope(ev, f"e{seq}", f"c{seq}", 0.0))
    return st, announced


def book_for(host: str, announced: list[HostAnnounced]) -> HostBook:
    b = HostBook(host)
    for a in announced:
        b.apply(Envelope(a, "x", "x", 0.0))
    return b


def ann(host: str, vtep: str | None, network_host: bool = False) -> HostAnnounced:
    return HostAnnounced(
        host=host,
        vtep_address=vtep,
        physical_interface="eth0",
        public_interface=None,
        network_host=network_host,
    )


def alloc(nid: str, addr: str, inst: str, host: str) -> FixedIpAllocated:
    return FixedIpAllocated(
        network_id=nid,
        address=addr,
        instance=inst,
        mac=f"02:00:00:00:00:{addr[-1]}0",
        host=host,
        project=None,
    )


def test_vxlan_compute_host_gets_bridge_link_and_floods_to_the_other_hosts() -> None:
    st, an = fold(
        network("1", "10.0.1.0/24", "vxlan", vni=5001, bridge="brvx5001", network_host="net"),
        alloc("1", "10.0.1.2", "a", "c1"),
        alloc("1", "10.0.1.3", "b", "c2"),
        ann("c1", "192.168.0.1"),
        ann("c2", "192.168.0.2"),
        ann("net", "192.168.0.9"),
    )
    cfg = HostConfig(host="c1", physical_interface="eth0", vtep_address="192.168.0.1")
    d = build(st, book_for("c1", an), cfg)
    assert d.links == (
        LinkSpec("brvx5001", "bridge", "1"),
        LinkSpec(
            "vx5001",
            "vxlan",
            "1",
            master="brvx5001",
            vni=5001,
            parent="eth0",
            local="192.168.0.1",
            port=4789,
        ),
    )
    # The network host is a member too: it holds the gateway the instances route through.
    assert d.fdb == (FdbSpec("vx5001", "192.168.0.2", "1"), FdbSpec("vx5001", "192.168.0.9", "1"))
    assert d.addresses == () and d.nat.empty and not d.forwarding


def test_network_host_gets_gateway_and_snat_without_instances_of_its_own() -> None:
    st, an = fold(
        network("1", "10.0.1.0/24", "vxlan", vni=5001, bridge="brvx5001", network_host="net"),
        alloc("1", "10.0.1.2", "a", "c1"),
        ann("c1", "192.168.0.1"),
        ann("net", "192.168.0.9"),
    )
    d = build(
        st,
        book_for("net", an),
        HostConfig(
            host="net",
            physical_interface="eth0",
            vtep_address="192.168.0.9",
            snat_address="198.51.100.1",
        ),
    )
    assert [link.name for link in d.links] == ["brvx5001", "vx5001"]
    assert d.addresses == (AddrSpec("brvx5001", "10.0.1.1/24", "10.0.1.255", "1"),)
    assert d.nat.fixed_ranges == ("10.0.1.0/24",) and d.nat.snat_to == "198.51.100.1"
    assert d.forwarding
    # Another host that is neither compute nor network host for it has nothing.
    other = build(st, book_for("c9", an), HostConfig(host="c9"))
    assert other.links == () and other.nat.empty


def test_vlan_mode_builds_vlanN_over_the_physical_interface() -> None:
    st, an = fold(
        network("3", "10.0.3.0/24", "vlan", vlan=103, bridge="br103", mtu=1400),
        alloc("3", "10.0.3.4", "a", "c1"),
    )
    d = build(
        st, book_for("c1", an), HostConfig(host="c1", physical_interface="bond0", network_host=True)
    )
    assert d.links == (
        LinkSpec("br103", "bridge", "3", mtu=1400),
        LinkSpec("vlan103", "vlan", "3", master="br103", mtu=1400, vlan=103, parent="bond0"),
    )
    assert d.addresses == (AddrSpec("br103", "10.0.3.1/24", "10.0.3.255", "3"),)
    # From nothing, the plan creates the bridge, then the VLAN link in it, then the address.
    eth = HostActual(links=(_phys("bond0"),))
    ops = [type(op).__name__ for op in diff(d, eth).ops]
    assert ops == ["CreateLink", "CreateLink", "AddAddress", "SetNat", "SetForwarding"]


def _phys(name: str) -> Any:
    from netledger.executor.model import LinkState

    return LinkState(name, 2, None, up=True)


def test_flat_networks_share_a_bridge_and_enslave_the_network_interface() -> None:
    st, an = fold(
        network(
            "1", "10.0.1.0/24", "flat", bridge="br100", bridge_interface="eth1", network_host="h"
        ),
        network("2", "10.0.2.0/24", "flat_dhcp", bridge="br100", network_host="h"),
        alloc("1", "10.0.1.2", "a", "h"),
        alloc("2", "10.0.2.2", "b", "h"),
    )
    d = build(st, book_for("h", an), HostConfig(host="h", physical_interface="eth0"))
    assert d.links == (LinkSpec("br100", "bridge", "1"),)
    assert d.enslaved == (EnslaveSpec("eth0", "br100", "2"), EnslaveSpec("eth1", "br100", "1"))
    assert [a.address for a in d.addresses] == ["10.0.1.1/24", "10.0.2.1/24"]


def test_multi_host_every_instance_host_serves_and_nats_its_own_floating_ips() -> None:
    st, an = fold(
        network("1", "10.0.1.0/24", "vxlan", vni=7, bridge="brvx7", multi_host=True),
        alloc("1", "10.0.1.2", "a", "c1"),
        alloc("1", "10.0.1.3", "b", "c2"),
        FloatingPoolCreated(pool="pub", cidr="203.0.113.0/24", public_interface="pub0"),
        FloatingIpAllocated(pool="pub", address="203.0.113.5", project="p"),
        FloatingIpAssociated(
            pool="pub",
            address="203.0.113.5",
            project="p",
            fixed_address="10.0.1.3",
            network_id="1",
            instance="b",
        ),
        # what the service writes with it on the network's subject (events/placement.py)
        FloatingIpMapped("1", "203.0.113.5", "10.0.1.3", "pub"),
    )
    d1 = build(st, book_for("c1", an), HostConfig(host="c1"))
    d2 = build(st, book_for("c2", an), HostConfig(host="c2"))
    assert AddrSpec("brvx7", "10.0.1.1/24", "10.0.1.255", "1") in d1.addresses
    assert d1.nat.floating == () and d2.nat.floating == (("203.0.113.5", "10.0.1.3"),)
    assert AddrSpec("pub0", "203.0.113.5/32", None, "1") in d2.addresses
    assert d2.floating_ranges == ("203.0.113.0/24",)


def test_deallocated_instance_no_longer_needs_the_bridge() -> None:
    st, an = fold(
        network("1", "10.0.1.0/24", "vxlan", vni=7, bridge="brvx7", network_host="net"),
        alloc("1", "10.0.1.2", "a", "c1"),
        FixedIpDeallocated(
            network_id="1",
            address="10.0.1.2",
            instance="a",
            mac="02:00:00:00:00:20",
            host="c1",
            freed=False,
        ),
    )
    assert build(st, book_for("c1", an), HostConfig(host="c1")).links == ()
    assert build(st, book_for("net", an), HostConfig(host="net")).links == ()


def test_names_are_deterministic_and_fit_the_kernel_limit() -> None:
    st, an = fold(
        network("1", "10.0.1.0/24", "vxlan", vni=16777215, bridge="brvx16777215"),
        alloc("1", "10.0.1.2", "a", "c1"),
    )
    d = build(st, book_for("c1", an), HostConfig(host="c1"))
    assert [link.name for link in d.links] == ["brvx16777215", "vx16777215"]
    assert all(len(link.name) <= 15 for link in d.links)
