"""The executor's netlink request encoder (executor/nlencode.py) packs what pyroute2 packs.

Every kind of request the executor sends, with and without its optional attributes, compared
byte for byte with pyroute2's encoding of the same message (header stripped: the sender numbers
the requests). The requests themselves are exercised against real kernels by every executor
test in a namespace.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from netledger.executor import nlencode

HDR = 16


def body(msg: Any) -> bytes:
    msg.encode()
    return bytes(msg.data[HDR:])


def link_msg(index: int, up: bool, attrs: list[tuple[str, Any]]) -> Any:
    m = ifinfmsg()
    m["index"] = index
    if up:
        m["flags"] = m["change"] = 1
    m["attrs"] = attrs
    return m


def info(kind: str, data: list[tuple[str, Any]]) -> tuple[str, Any]:
    return (
        "IFLA_LINKINFO",
        {"attrs": [("IFLA_INFO_KIND", kind), ("IFLA_INFO_DATA", {"attrs": data})]},
    )


BRIDGE = [("IFLA_BR_FORWARD_DELAY", 0), ("IFLA_BR_STP_STATE", 0)]


@pytest.mark.parametrize(
    ("mine", "ref"),
    [
        (
            nlencode.new_link(5, "br100", mtu=1400, address="02:aa:bb:cc:dd:ee",
                              info=nlencode.linkinfo("bridge", nlencode.bridge_data())),
            link_msg(5, True, [("IFLA_IFNAME", "br100"), ("IFLA_MTU", 1400),
                               ("IFLA_ADDRESS", "02:aa:bb:cc:dd:ee"), info("bridge", BRIDGE)]),
        ),
        (
            nlencode.new_link(6, "vx7", master=5, info=nlencode.linkinfo(
                "vxlan", nlencode.vxlan_data(7, "192.0.2.1", 2, 4789))),
            link_msg(6, True, [("IFLA_IFNAME", "vx7"), ("IFLA_MASTER", 5), info("vxlan", [
                ("IFLA_VXLAN_ID", 7), ("IFLA_VXLAN_LOCAL", "192.0.2.1"), ("IFLA_VXLAN_LINK", 2),
                ("IFLA_VXLAN_PORT", 4789)])]),
        ),
        (
            nlencode.new_link(7, "vx8", master=5, info=nlencode.linkinfo(
                "vxlan", nlencode.vxlan_data(8, None, None, None))),
            link_msg(7, True, [("IFLA_IFNAME", "vx8"), ("IFLA_MASTER", 5),
                               info("vxlan", [("IFLA_VXLAN_ID", 8)])]),
        ),
        (
            nlencode.new_link(8, "vlan100", mtu=9000, master=5, link=2,
                              info=nlencode.linkinfo("vlan", nlencode.vlan_data(100))),
            link_msg(8, True, [("IFLA_IFNAME", "vlan100"), ("IFLA_MTU", 9000), ("IFLA_MASTER", 5),
                               info("vlan", [("IFLA_VLAN_ID", 100)]), ("IFLA_LINK", 2)]),
        ),
        (nlencode.set_alias(5, "netledger:12"), link_msg(5, False, [("IFLA_IFALIAS", "netledger:12")])),
        (
            nlencode.set_link(5, alias="netledger:1", master=0, mtu=1500,
                              info=nlencode.linkinfo("bridge", nlencode.bridge_data())),
            link_msg(5, True, [("IFLA_IFALIAS", "netledger:1"), ("IFLA_MASTER", 0),
                               ("IFLA_MTU", 1500), info("bridge", BRIDGE)]),
        ),
        (
            nlencode.set_link(3, alias=None, master=5, mtu=None),
            link_msg(3, True, [("IFLA_MASTER", 5)]),
        ),
        (nlencode.del_link(9), link_msg(9, False, [])),
    ],
)  # fmt: skip
def test_link_requests_are_pyroute2s_bytes(mine: bytes, ref: Any) -> None:
    assert mine == body(ref)


@pytest.mark.parametrize("broadcast", [None, "10.0.0.255"])
def test_address_requests_are_pyroute2s_bytes(broadcast: str | None) -> None:
    m = ifaddrmsg()
    m["family"] = socket.AF_INET
    m["prefixlen"] = 24
    m["index"] = 5
    attrs: list[tuple[str, Any]] = [("IFA_LOCAL", "10.0.0.1"), ("IFA_ADDRESS", "10.0.0.1")]
    if broadcast:
        attrs.append(("IFA_BROADCAST", broadcast))
    m["attrs"] = attrs
    assert nlencode.addr(5, "10.0.0.1/24", broadcast) == body(m)


def test_flood_requests_are_pyroute2s_bytes() -> None:
    m = ndmsg()
    m["family"] = 7
    m["ifindex"] = 6
    m["state"] = 0x80
    m["flags"] = 0x02
    m["attrs"] = [("NDA_LLADDR", "00:00:00:00:00:00"), ("NDA_DST", "192.0.2.20")]
    assert nlencode.flood(6, "192.0.2.20", "00:00:00:00:00:00") == body(m)


# --- IPv6 (issue 14) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mine", "ref"),
    [
        (
            nlencode.new_link(5, "br6", up=False, address="02:aa:bb:cc:dd:ee",
                              info=nlencode.linkinfo("bridge", nlencode.bridge_data())),
            link_msg(5, False, [("IFLA_IFNAME", "br6"), ("IFLA_ADDRESS", "02:aa:bb:cc:dd:ee"),
                                info("bridge", BRIDGE)]),
        ),
        (
            nlencode.new_link(6, "vx9", master=5, up=False, info=nlencode.linkinfo(
                "vxlan", nlencode.vxlan_data(9, "2001:db8::7", 2, 4789))),
            link_msg(6, False, [("IFLA_IFNAME", "vx9"), ("IFLA_MASTER", 5), info("vxlan", [
                ("IFLA_VXLAN_ID", 9), ("IFLA_VXLAN_LOCAL6", "2001:db8::7"),
                ("IFLA_VXLAN_LINK", 2), ("IFLA_VXLAN_PORT", 4789)])]),
        ),
        (
            nlencode.set_alias(5, "netledger:3", up=True),
            link_msg(5, True, [("IFLA_IFALIAS", "netledger:3")]),
        ),
        (
            nlencode.set_addr_gen_mode(5),
            link_msg(5, False, [("IFLA_AF_SPEC", {"attrs": [
                ("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", 1)]})]})]),
        ),
    ],
)  # fmt: skip
def test_ipv6_link_requests_are_pyroute2s_bytes(mine: bytes, ref: Any) -> None:
    assert mine == body(ref)


@pytest.mark.parametrize("cidr", ["2001:db8:0:1::1/64", "fe80::1/64"])
def test_ipv6_address_requests_are_pyroute2s_bytes(cidr: str) -> None:
    ip, plen = cidr.split("/")
    m = ifaddrmsg()
    m["family"] = socket.AF_INET6
    m["prefixlen"] = int(plen)
    m["flags"] = 0x02  # IFA_F_NODAD
    m["index"] = 5
    m["attrs"] = [("IFA_LOCAL", ip), ("IFA_ADDRESS", ip)]
    assert nlencode.addr(5, cidr) == body(m)


def test_ipv6_flood_requests_are_pyroute2s_bytes() -> None:
    m = ndmsg()
    m["family"] = 7
    m["ifindex"] = 6
    m["state"] = 0x80
    m["flags"] = 0x02
    m["attrs"] = [("NDA_LLADDR", "00:00:00:00:00:00"), ("NDA_DST", "2001:db8::20")]
    assert nlencode.flood(6, "2001:db8::20", "00:00:00:00:00:00") == body(m)


def test_dump_requests_are_pyroute2s_bytes() -> None:
    """The dumps the executor reads the kernel with (links, addresses of both families or one,
    bridge forwarding entries), header included, are what pyroute2 sends for them — and the
    numbers it names them by are pyroute2's (the executor no longer imports pyroute2 to run)."""
    from pyroute2 import netlink
    from pyroute2.netlink import rtnl

    from netledger.executor import nlparse

    for name in ("RTM_NEWLINK", "RTM_DELLINK", "RTM_GETLINK", "RTM_NEWADDR", "RTM_DELADDR",
                 "RTM_GETADDR", "RTM_NEWNEIGH", "RTM_DELNEIGH", "RTM_GETNEIGH"):  # fmt: skip
        assert getattr(nlencode, name) == getattr(rtnl, name), name
    for name in ("NLM_F_REQUEST", "NLM_F_ACK", "NLM_F_DUMP", "NLM_F_EXCL", "NLM_F_CREATE",
                 "NLM_F_APPEND"):  # fmt: skip
        assert getattr(nlencode, name) == getattr(netlink, name), name
    assert (nlparse.NLMSG_DONE, nlparse.NLMSG_ERROR) == (netlink.NLMSG_DONE, netlink.NLMSG_ERROR)

    def ref(msg: Any, mtype: int) -> bytes:
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = netlink.NLM_F_REQUEST | netlink.NLM_F_DUMP
        msg["header"]["sequence_number"] = 7
        msg.encode()
        return bytes(msg.data)

    def mine(body: bytes, mtype: int) -> bytes:
        flags = nlencode.NLM_F_REQUEST | nlencode.NLM_F_DUMP
        return nlparse.NLMSG_HDR.pack(16 + len(body), mtype, flags, 7, 0) + body

    assert mine(nlencode.link_dump(), 18) == ref(ifinfmsg(), 18)
    assert mine(nlencode.addr_dump(), 22) == ref(ifaddrmsg(), 22)
    for family in (socket.AF_INET, socket.AF_INET6):
        m = ifaddrmsg()
        m["family"] = family
        assert mine(nlencode.addr_dump(family), 22) == ref(m, 22)
    nd = ndmsg()
    nd["family"] = nlencode.AF_BRIDGE
    assert mine(nlencode.neigh_dump(), 30) == ref(nd, 30)


def test_the_executor_runs_without_importing_pyroute2() -> None:
    """pyroute2's package imports all of itself (IPDB, NDB, conntrack, ethtool…: ~0.1 s, a tenth
    of an ``executor run --once``); the executor encodes and parses its own messages."""
    import subprocess
    import sys

    code = (
        "import sys, netledger.cli, netledger.executor.cli, netledger.executor.daemon;"
        " print('pyroute2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
