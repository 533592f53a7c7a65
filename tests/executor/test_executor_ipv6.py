"""IPv6 in the executor's pure parts (issue 14): what a host should have for a dual-stack or
IPv6-only network, the diff, the nftables text and its read-back, dnsmasq's command line and
hosts file, which kernel addresses are modelled, how netlink batches are cut. The kernel side
is tests/executor/test_ipv6_netns.py."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from dataclasses import replace
from typing import Any

import pytest
from msgspec.structs import replace as evolve

from netledger.events.types import FixedIpAllocated
from netledger.executor import nft
from netledger.executor.desired import HostConfig, build
from netledger.executor.dhcp import DhcpPaths, dnsmasq_argv, gateways, render_hosts
from netledger.executor.diff import diff
from netledger.executor.kernel import IFA_F_PERMANENT, address_kept
from netledger.executor.model import (
    ADDR_GEN_NONE,
    AddrState,
    DeleteAddress,
    DhcpHost,
    DhcpSpec,
    DhcpSubnet,
    HostActual,
    LinkState,
    NatTable,
    SetForwarding,
    SetLink,
    SetNat,
)
from netledger.executor.netlink import Request, chunks
from netledger.executor.nlparse import Addr

from .test_executor_desired import ann, book_for, fold, network
from .test_executor_lab import lab, ns_exec

MAC_A = "02:16:3e:00:00:0a"


def dual(nid: str = "1", mode: str = "slaac", **kw: Any) -> Any:
    return network(
        nid, f"10.0.{nid}.0/24", "vxlan", vni=100 + int(nid), bridge=f"brvx{100 + int(nid)}",
        network_host="net", cidr_v6=f"fd00:{nid}::/64", gateway_v6=f"fd00:{nid}::1",
        ipv6_mode=mode, **kw,
    )  # fmt: skip


def only6(nid: str = "2", mode: str = "slaac") -> Any:
    net = network(
        nid, "10.9.9.0/24", "vxlan", vni=100 + int(nid), bridge=f"brvx{100 + int(nid)}",
        network_host="net", cidr_v6=f"fd00:{nid}::/64", gateway_v6=f"fd00:{nid}::1",
        ipv6_mode=mode,
    )  # fmt: skip
    return replace(net, cidr=None, netmask=None, gateway=None, broadcast=None, dhcp_start=None)


def alloc6(nid: str, addr: str | None, addr6: str, inst: str, host: str) -> FixedIpAllocated:
    return FixedIpAllocated(
        network_id=nid, address=addr or addr6, instance=inst, mac=MAC_A, host=host,
        project=None, address_v6=addr6,
    )  # fmt: skip


def test_serving_host_gets_gateway6_router_link_local_routing_and_the_ip6_table() -> None:
    st, an = fold(
        dual("1"), alloc6("1", "10.0.1.2", "fd00:1::16:3eff:fe00:a", "a", "c1"),
        ann("net", "192.168.0.9"), ann("c1", "192.168.0.1"),
    )  # fmt: skip
    d = build(st, book_for("net", an), HostConfig(host="net", physical_interface="eth0"))
    assert {a.address for a in d.addresses} == {"10.0.1.1/24", "fd00:1::1/64", "fe80::1/64"}
    assert d.forwarding and d.forwarding_v6
    assert d.nat.routed_v6 == (("brvx101", "fd00:1::/64"),)
    assert d.nat.fixed_ranges == ("10.0.1.0/24",)
    [spec] = d.dhcp
    [sub] = spec.subnets
    assert (sub.prefix6, sub.gateway6, sub.mode6) == ("fd00:1::/64", "fd00:1::1", "slaac")
    assert spec.hosts[0].address6 is None  # slaac: the instance makes its own address
    # the compute host: the bridge and its VXLAN link, no IPv6 address, no routing
    c = build(st, book_for("c1", an), HostConfig(host="c1", physical_interface="eth0"))
    assert c.addresses == () and not c.forwarding_v6 and c.nat.empty


def test_ipv6_only_network_has_no_ipv4_anything() -> None:
    addr6 = "fd00:2::2"
    st, an = fold(only6("2", "dhcpv6"), alloc6("2", None, addr6, "a", "net"))
    d = build(st, book_for("net", an), HostConfig(host="net", physical_interface="eth0"))
    assert {a.address for a in d.addresses} == {"fd00:2::1/64", "fe80::1/64"}
    assert d.forwarding_v6 and not d.forwarding
    assert d.nat.v4_empty and d.nat.routed_v6 == (("brvx102", "fd00:2::/64"),)
    [spec] = d.dhcp
    assert spec.hosts == (DhcpHost(MAC_A, "a", None, addr6),)
    assert render_hosts(spec) == f"{MAC_A},a,[{addr6}]\n"
    # and the plan on an empty host: the v6 forwarding op, the NAT transaction
    ops = diff(d, HostActual()).ops
    assert SetForwarding(True, version=6) in ops
    assert not any(isinstance(o, SetForwarding) and o.version == 4 for o in ops)
    assert any(isinstance(o, SetNat) for o in ops)


def test_a_link_the_kernel_makes_addresses_on_is_repaired_and_its_own_ignored() -> None:
    st, an = fold(dual("1"), alloc6("1", "10.0.1.2", "fd00:1::16:3eff:fe00:a", "a", "net"))
    d = build(st, book_for("net", an), HostConfig(host="net", physical_interface="eth0"))
    links = [
        LinkState("eth0", 2, None, up=True),
        LinkState("brvx101", 5, "bridge", alias="netledger:1", up=True, stp=0, forward_delay=0,
                  addr_gen_mode=0),
        LinkState("vx101", 6, "vxlan", alias="netledger:1", master="brvx101", up=True, vni=101,
                  parent="eth0", port=4789, addr_gen_mode=ADDR_GEN_NONE),
    ]  # fmt: skip
    actual = HostActual(
        links=tuple(links),
        addresses=tuple(AddrState("brvx101", a.address, a.broadcast) for a in d.addresses),
        nat=d.nat,
        forwarding=True,
        forwarding_v6=True,
    )
    ops = diff(d, actual).ops
    assert ops == (SetLink(d.links[0], ("addr_gen_mode",)),)
    # the v6 forwarding turned off behind our back: only that comes back
    ops = diff(d, evolve(actual, links=(links[0], evolve(links[1], addr_gen_mode=1), links[2]),
                          forwarding_v6=False)).ops  # fmt: skip
    assert ops == (SetForwarding(True, version=6),)


def test_a_link_taking_router_advertisements_is_repaired_and_its_slaac_address_removed() -> None:
    """addr_gen_mode none stops only the link-local address: a compute host's bridge that
    takes the network host's advertisements gets a SLAAC address in the tenant's /64. The
    diff turns accept_ra off and removes the address (on our link only)."""
    st, an = fold(dual("1"), alloc6("1", "10.0.1.2", "fd00:1::16:3eff:fe00:a", "a", "c1"))
    d = build(st, book_for("c1", an), HostConfig(host="c1", physical_interface="eth0"))
    assert not d.addresses  # a compute host: no address on the tenant's segment
    bridge, vx = d.links[0], d.links[1]
    links = (
        LinkState("eth0", 2, None, up=True, accept_ra=1),
        LinkState(bridge.name, 5, "bridge", alias=bridge.alias, up=True, stp=0, forward_delay=0,
                  addr_gen_mode=ADDR_GEN_NONE, accept_ra=1),
        LinkState(vx.name, 6, "vxlan", alias=vx.alias, master=bridge.name, up=True, vni=vx.vni,
                  parent="eth0", port=4789, addr_gen_mode=ADDR_GEN_NONE, accept_ra=0),
    )  # fmt: skip
    slaac = AddrState(bridge.name, "fd00:1::5c3b:1eff:fe2a:1/64")
    host_own = AddrState("eth0", "2001:db8::7/64")
    actual = HostActual(links=links, addresses=(slaac, host_own), fdb=(), nat=d.nat)
    ops = diff(d, actual).ops
    assert DeleteAddress(bridge.name, slaac.address, None, "stale") in ops
    assert SetLink(bridge, ("accept_ra",)) in ops
    assert not any(getattr(o, "interface", None) == "eth0" for o in ops)  # not ours
    assert not any(isinstance(o, SetLink) and o.spec.name == vx.name for o in ops)


def _addr(address: str, prefixlen: int, flags: int = IFA_F_PERMANENT) -> Addr:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    return Addr(5, family, prefixlen, address, None, flags)


def test_addresses_modelled_are_ours_or_could_be() -> None:
    assert address_kept(_addr("10.0.0.1", 24, 0))
    assert address_kept(_addr("fd00:1::1", 64))
    assert address_kept(_addr("fe80::1", 64))
    assert not address_kept(_addr("fe80::16:3eff:fe00:a", 64))  # the kernel's link-local
    # SLAAC (a lifetime, not permanent): modelled, so that on our links it is removed
    assert address_kept(_addr("fd00:1::16:3eff:fe00:a", 64, 0))
    assert not address_kept(Addr(5, socket.AF_INET6, 64, None, None, 0))


def test_a_batch_never_separates_requests_that_follow() -> None:
    def r(follows: bool = False) -> Request:
        return Request(b"", 0, 0, follows=follows)

    reqs = [r(), r(True), r(True), r(), r(True), r(True), r()]
    assert chunks(reqs, 2) == [(0, 3), (3, 6), (6, 7)]
    assert chunks(reqs, 4) == [(0, 6), (6, 7)]
    assert chunks([r() for _ in range(5)], 2) == [(0, 2), (2, 4), (4, 5)]
    assert chunks([], 2) == []


# --- nftables -------------------------------------------------------------------------------

V4 = NatTable(
    floating=(("203.0.113.5", "10.0.1.2"),),
    fixed_ranges=("10.0.1.0/24",),
    snat_to="198.51.100.1",
)
ROUTED = (("brvx101", "fd00:1::/64"), ("brvx102", "fd00:2::/64"))


def test_ipv4_table_text_is_unchanged_and_no_ip6_table_is_left() -> None:
    text = nft.render(V4)
    assert text == nft.render4(V4) + "table ip6 netledger\ndelete table ip6 netledger\n"
    assert "ip6" not in nft.render4(V4)


def test_ip6_table_rendering() -> None:
    text = nft.render(evolve(V4, routed_v6=ROUTED))
    assert text.startswith(nft.render4(V4))
    assert 'elements = { "brvx101" . fd00:1::/64, "brvx102" . fd00:2::/64 }' in text
    assert 'iifname @bridges iifname . ip6 saddr != @routed drop comment "v6-spoof"' in text
    only = nft.render(NatTable(routed_v6=ROUTED))
    assert only.startswith("table ip netledger\ndelete table ip netledger\ntable ip6 ")


def _listing(routed: tuple[tuple[str, str], ...], rules: tuple[str, ...] = ("v6-spoof",)) -> Any:
    objs: list[dict[str, Any]] = [
        {"table": {"family": "ip6", "name": "netledger"}},
        {"set": {"name": "bridges", "elem": sorted({b for b, _ in routed})}},
        {"set": {"name": "routed", "elem": [
            {"concat": [b, {"prefix": {"addr": p.split("/")[0], "len": 64}}]} for b, p in routed
        ]}},
        {"chain": {"name": "forward", "type": "filter", "hook": "forward", "prio": 0,
                   "policy": "accept"}},
    ]  # fmt: skip
    objs += [{"rule": {"chain": "forward", "comment": c, "expr": SPOOF_EXPR}} for c in rules]
    return {"nftables": objs}


#: The anti-spoofing rule's statements as nft 1.0.6 lists them (``nft -j list table ip6``).
SPOOF_EXPR = [
    {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "@bridges"}},
    {"match": {"op": "!=", "left": {"concat": [
        {"meta": {"key": "iifname"}}, {"payload": {"protocol": "ip6", "field": "saddr"}},
    ]}, "right": "@routed"}},
    {"drop": None},
]  # fmt: skip


def test_ip6_table_read_back() -> None:
    assert nft.parse6(_listing(ROUTED)) == (ROUTED, True)
    assert nft.parse6({"nftables": []}) == (None, True)
    assert nft.parse6(_listing(ROUTED, ("v6-spoof", "extra")))[1] is False
    broken = _listing(ROUTED)
    broken["nftables"][1]["set"]["elem"] = ["brvx101"]
    assert nft.parse6(broken)[1] is False


@pytest.mark.netns
def test_tables_round_trip_through_nft() -> None:
    """The text loads in one transaction, and reads back as what was written (a namespace of
    its own: nft is run in it)."""
    with lab() as world:
        ns = world.ns("nft6")

        def read() -> tuple[NatTable | None, bool]:
            return nft.read(ns)

        for table in (evolve(V4, routed_v6=ROUTED), NatTable(routed_v6=ROUTED[:1]), V4):
            nft.apply(ns, nft.render(table))
            assert read() == (table, True)
        nft.apply(ns, nft.render_delete())
        assert read() == (None, True)
        p = ns_exec(ns, "nft", "list", "tables")
        assert "netledger" not in p.stdout


@pytest.mark.netns
def test_the_filter_rule_is_a_negated_lookup_ending_in_drop() -> None:
    """How nft understood the rule: the bridge is one of ours, and (bridge, source) is not in
    the routed set -> drop. (That forwarded packets obey it is tests/executor/test_ipv6_netns.py.)"""
    with lab() as world:
        ns = world.ns(f"f{uuid.uuid4().hex[:3]}")
        nft.apply(ns, nft.render(NatTable(routed_v6=ROUTED)))
        out = ns_exec(ns, "nft", "-j", "list", "chain", "ip6", "netledger", "forward").stdout
        rule = next(o["rule"] for o in json.loads(out)["nftables"] if "rule" in o)
        ops = [e["match"]["op"] for e in rule["expr"] if "match" in e]
        assert ops == ["==", "!="] and {"drop": None} in rule["expr"]


# --- dnsmasq --------------------------------------------------------------------------------

PATHS = DhcpPaths("/run/x")


def _spec(*subnets: DhcpSubnet, hosts: tuple[DhcpHost, ...] = ()) -> DhcpSpec:
    return DhcpSpec("brvx101", subnets[0].network_id, subnets, hosts)


V4_SUB = DhcpSubnet("1", "10.0.1.1", "255.255.255.0", "10.0.1.2", 256, mtu=1450)


def test_an_ipv4_only_dnsmasq_command_line_has_nothing_of_ipv6() -> None:
    argv = dnsmasq_argv(_spec(V4_SUB), PATHS)
    assert not any(a.startswith(("--enable-ra", "--ra-param")) or "::" in a for a in argv)
    assert "--listen-address=10.0.1.1" in argv


def test_slaac_dnsmasq_announces_the_prefix_ra_only() -> None:
    sub = evolve(V4_SUB, prefix6="fd00:1::/64", gateway6="fd00:1::1", mode6="slaac",
                  dns6=("fd00::53",))  # fmt: skip
    argv = dnsmasq_argv(_spec(sub), PATHS)
    assert "--enable-ra" in argv
    assert "--dhcp-range=set:net1,fd00:1::,ra-only,64,86400s" in argv
    assert "--dhcp-option=tag:net1,option6:dns-server,[fd00::53]" in argv
    assert "--listen-address=fd00:1::1" in argv
    assert "--ra-param=brvx101,mtu:1450,0" in argv
    # the IPv4 part is what it was
    assert "--dhcp-range=set:net1,10.0.1.2,static,255.255.255.0,86400s" in argv
    assert gateways(_spec(sub)) == {
        ("brvx101", "10.0.1.1"), ("brvx101", "fd00:1::1"), ("brvx101", "fe80::1")
    }  # fmt: skip


def test_dhcpv6_only_dnsmasq_hands_out_the_hosts_files_addresses() -> None:
    sub = DhcpSubnet("2", None, None, None, 1 << 16, prefix6="fd00:2::/64", gateway6="fd00:2::1",
                     mode6="dhcpv6")  # fmt: skip
    host = DhcpHost(MAC_A, "vm-a", None, "fd00:2::2")
    spec = _spec(sub, hosts=(host,))
    argv = dnsmasq_argv(spec, PATHS)
    assert "--dhcp-range=set:net2,fd00:2::,static,64,86400s" in argv
    assert not any(a.startswith("--dhcp-option=tag:net2,3") for a in argv)
    assert not any("None" in a for a in argv)
    assert render_hosts(spec) == f"{MAC_A},vm-a,[fd00:2::2]\n"
    dual_host = DhcpHost(MAC_A, "vm-a", "10.0.1.5", "fd00:1::5")
    assert render_hosts(_spec(V4_SUB, hosts=(dual_host,))) == f"{MAC_A},vm-a,10.0.1.5,[fd00:1::5]\n"


def test_dnsmasq_accepts_the_ipv6_command_line() -> None:
    """dnsmasq itself parses the options (--test: check the configuration and exit)."""
    import shutil

    if shutil.which("dnsmasq", path="/usr/sbin:/usr/bin") is None:
        pytest.fail("dnsmasq is missing: apt-get install -y dnsmasq (.ci/run does)")
    sub = evolve(V4_SUB, prefix6="fd00:1::/64", gateway6="fd00:1::1", mode6="dhcpv6",
                  dns6=("fd00::53",))  # fmt: skip
    argv = [a for a in dnsmasq_argv(_spec(sub), PATHS) if not a.startswith("--log-facility")]
    p = subprocess.run([*argv, "--test"], capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr


def test_ipv6_forwarding_and_routed_prefixes_are_logged_and_folded() -> None:
    """IPv6 forwarding is its own HostForwardingSet (version 6) and the routed /64s are in
    HostNatApplied: the host's record tells a change of the IPv6 part from drift."""
    from netledger.events.codec import Envelope
    from netledger.executor.host_report import applied_events
    from netledger.executor.hosts import HostBook
    from netledger.executor.kernel import OpResult
    from netledger.executor.model import NatTable, SetForwarding, SetNat

    book = HostBook("h1")
    table = NatTable(routed_v6=(("br1", "2001:db8:0:1::/64"),))
    ops = [SetForwarding(True, version=6), SetNat(table)]
    first = applied_events("h1", book, None, [OpResult(op) for op in ops])
    fwd, nat = first
    assert (fwd.version, fwd.enabled, fwd.drift) == (6, True, False)
    assert nat.routed_v6 == {"2001:db8:0:1::/64": "br1"} and not nat.drift
    for ev in first:
        book.apply(Envelope(ev, "x", "x", 0.0))
    assert book.forwarding_v6 and not book.forwarding
    # made again with the record unchanged: drift (someone undid it); IPv4's is separate
    again = applied_events("h1", book, None, [OpResult(op) for op in [*ops, SetForwarding(True)]])
    assert [(e.drift, getattr(e, "version", None)) for e in again] == [
        (True, 6), (True, None), (False, 4)]  # fmt: skip
    # another routed prefix is a change, not drift
    more = NatTable(routed_v6=(("br1", "2001:db8:0:1::/64"), ("br2", "2001:db8:0:2::/64")))
    [changed] = applied_events("h1", book, None, [OpResult(SetNat(more))])
    assert not changed.drift
