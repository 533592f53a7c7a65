"""The executor's netlink reader (executor/nlparse.py) against pyroute2, on real kernel bytes.

Its attribute numbers must be the kernel's: each is checked against pyroute2's own maps, and
every parser against pyroute2's decoding of the very same dump from a real namespace holding
every kind of link the executor reads (bridge, VXLAN, veth, a link in a bridge), addresses and
flood entries.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyroute2.netlink.rtnl import RTM_GETADDR, RTM_GETLINK, RTM_GETNEIGH
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from netledger.executor import nlparse
from netledger.executor import nlparse as P
from netledger.executor.netlink import RtSocket

from .test_executor_lab import lab, sh

pytestmark = pytest.mark.netns


def test_attribute_numbers_are_pyroute2s() -> None:
    ifinfmsg(), ifaddrmsg(), ndmsg()  # pyroute2 compiles its maps on first use
    r = ifinfmsg._nlmsg_base__r_nla_map  # type: ignore[attr-defined]
    for name in ("IFLA_IFNAME", "IFLA_MTU", "IFLA_LINK", "IFLA_MASTER", "IFLA_LINKINFO",
                 "IFLA_IFALIAS", "IFLA_LINK_NETNSID"):  # fmt: skip
        assert r[name]["type"] == getattr(nlparse, name), name
    a = ifaddrmsg._nlmsg_base__r_nla_map  # type: ignore[attr-defined]
    for name in ("IFA_ADDRESS", "IFA_LOCAL", "IFA_BROADCAST"):
        assert a[name]["type"] == getattr(nlparse, name), name
    n = ndmsg._nlmsg_base__r_nla_map  # type: ignore[attr-defined]
    for name in ("NDA_DST", "NDA_LLADDR", "NDA_MASTER"):
        assert n[name]["type"] == getattr(nlparse, name), name


def _raw_dump(sock: RtSocket, msg: object, msg_type: int) -> Iterator[bytes]:
    """Every message of a dump as its own bytes (for both parsers)."""
    msg.encode()  # type: ignore[attr-defined]
    body = bytes(msg.data)[nlparse.NLMSG_HDR.size :]  # type: ignore[attr-defined]
    for data, start, end in sock.dump_raw(body, msg_type):
        yield bytes(data[start - nlparse.NLMSG_HDR.size : end])


def _decoded(cls: type, raw: bytes) -> object:
    m = cls(raw)
    m.decode()
    return m


def test_every_parser_agrees_with_pyroute2_on_a_real_dump() -> None:
    with lab() as world:
        ns = world.ns("nlp")
        other = world.ns("nlq")
        world.wire(ns, "eth1", other, "eth1")
        sh("ip", "-n", ns, "addr", "add", "192.0.2.10/24", "dev", "eth1")
        sh(
            "ip",
            "-n",
            ns,
            "link",
            "add",
            "brp",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        )
        sh("ip", "-n", ns, "link", "set", "brp", "alias", "netledger:7", "mtu", "1400", "up")
        sh("ip", "-n", ns, "link", "add", "vx77", "type", "vxlan", "id", "77", "dstport", "4789",
           "local", "192.0.2.10", "dev", "eth1")  # fmt: skip
        sh("ip", "-n", ns, "link", "set", "vx77", "master", "brp", "alias", "netledger:7", "up")
        sh("ip", "-n", ns, "addr", "add", "10.7.0.1/24", "broadcast", "10.7.0.255", "dev", "brp")
        sh("ip", "-n", ns, "link", "add", "brq", "type", "bridge")  # STP and delay left default
        sh(
            "bridge",
            "-n",
            ns,
            "fdb",
            "append",
            "00:00:00:00:00:00",
            "dev",
            "vx77",
            "dst",
            "192.0.2.20",
        )
        with RtSocket(ns) as sock:
            links = list(_raw_dump(sock, ifinfmsg(), RTM_GETLINK))
            assert len(links) >= 5
            for raw in links:
                mine = nlparse.link(raw, nlparse.NLMSG_HDR.size, len(raw))
                ref = _decoded(ifinfmsg, raw)
                info = ref.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
                kind = info.get_attr("IFLA_INFO_KIND") if info else None
                data = info.get_attr("IFLA_INFO_DATA") if info else None
                assert mine.ifindex == ref["index"] and mine.flags == ref["flags"]  # type: ignore[index]
                assert mine.name == ref.get_attr("IFLA_IFNAME")  # type: ignore[attr-defined]
                assert mine.alias == ref.get_attr("IFLA_IFALIAS")  # type: ignore[attr-defined]
                assert mine.mtu == ref.get_attr("IFLA_MTU")  # type: ignore[attr-defined]
                assert mine.master == ref.get_attr("IFLA_MASTER")  # type: ignore[attr-defined]
                assert mine.kind == kind
                if kind == "bridge":
                    assert mine.stp == data.get_attr("IFLA_BR_STP_STATE")
                    assert mine.forward_delay == data.get_attr("IFLA_BR_FORWARD_DELAY")
                if kind == "vxlan":
                    assert mine.vni == data.get_attr("IFLA_VXLAN_ID") == 77
                    assert mine.local == data.get_attr("IFLA_VXLAN_LOCAL") == "192.0.2.10"
                    assert mine.port == data.get_attr("IFLA_VXLAN_PORT") == 4789
                    assert mine.parent == data.get_attr("IFLA_VXLAN_LINK")
            by_name = {
                x.name: x for x in (nlparse.link(r, nlparse.NLMSG_HDR.size, len(r)) for r in links)
            }
            assert by_name["brp"].alias == "netledger:7" and by_name["brp"].mtu == 1400
            assert by_name["brp"].stp == 0 and by_name["brp"].forward_delay == 0
            assert by_name["brq"].forward_delay != 0
            assert by_name["vx77"].master == by_name["brp"].ifindex

            m = ifaddrmsg()
            m["family"] = socket.AF_INET
            addrs = list(_raw_dump(sock, m, RTM_GETADDR))
            got = set()
            for raw in addrs:
                mine_a = nlparse.addr(raw, nlparse.NLMSG_HDR.size, len(raw))
                ref = _decoded(ifaddrmsg, raw)
                assert mine_a.ifindex == ref["index"] and mine_a.prefixlen == ref["prefixlen"]  # type: ignore[index]
                assert mine_a.address == (ref.get_attr("IFA_LOCAL") or ref.get_attr("IFA_ADDRESS"))  # type: ignore[attr-defined]
                assert mine_a.broadcast == ref.get_attr("IFA_BROADCAST")  # type: ignore[attr-defined]
                got.add((mine_a.address, mine_a.prefixlen, mine_a.broadcast))
            assert ("10.7.0.1", 24, "10.7.0.255") in got

            nd = ndmsg()
            nd["family"] = 7  # AF_BRIDGE
            flood = []
            for raw in _raw_dump(sock, nd, RTM_GETNEIGH):
                mine_n = nlparse.neigh(raw, nlparse.NLMSG_HDR.size, len(raw))
                ref = _decoded(ndmsg, raw)
                assert mine_n.ifindex == ref["ifindex"] and mine_n.state == ref["state"]  # type: ignore[index]
                assert mine_n.flags == ref["flags"]  # type: ignore[index]
                assert mine_n.lladdr == ref.get_attr("NDA_LLADDR")  # type: ignore[attr-defined]
                assert mine_n.dst == ref.get_attr("NDA_DST")  # type: ignore[attr-defined]
                assert mine_n.master == ref.get_attr("NDA_MASTER")  # type: ignore[attr-defined]
                if mine_n.dst:
                    flood.append((mine_n.ifindex, mine_n.dst, mine_n.lladdr))
                # flood(): the same entry whenever it is a flood entry; ports' MACs ruled out
                quick = nlparse.flood(raw, nlparse.NLMSG_HDR.size, len(raw))
                if mine_n.lladdr == "00:00:00:00:00:00":
                    assert quick == mine_n
                else:
                    assert quick is None or quick == mine_n
            assert (by_name["vx77"].ifindex, "192.0.2.20", "00:00:00:00:00:00") in flood


def test_truncated_and_odd_buffers_never_raise_past_their_end() -> None:
    # A header claiming more than the buffer holds, a zero-length attribute: no exception.
    assert list(nlparse.messages(b"\x00" * 3)) == []
    bogus = nlparse.NLMSG_HDR.pack(64, 16, 0, 1, 0) + b"\x00" * 20
    [(mtype, _f, _s, start, end)] = list(nlparse.messages(bogus))
    assert (mtype, start, end) == (16, 16, len(bogus))
    assert list(nlparse.attrs(b"\x00\x00\x00\x00", 0, 4)) == []


def _reference_link(data: bytes | memoryview, off: int, end: int) -> P.Link:
    """The parser before the inline walk (a generator step per attribute): the reference."""
    _family, _type, index, flags, _change = P.IFINFO.unpack_from(data, off)
    name = alias = kind = None
    master = mtu = parent = None
    netns_other = False
    info: tuple[int, int] | None = None
    inet6: tuple[int | None, int | None] = (None, None)
    for t, a, b in P.attrs(data, off + P.IFINFO.size, end):
        if t == P.IFLA_IFNAME:
            name = P._str(data, a, b)
        elif t == P.IFLA_IFALIAS:
            alias = P._str(data, a, b) or None
        elif t == P.IFLA_MASTER:
            master = P.U32.unpack_from(data, a)[0] or None
        elif t == P.IFLA_MTU:
            mtu = P.U32.unpack_from(data, a)[0]
        elif t == P.IFLA_LINK:
            parent = P.U32.unpack_from(data, a)[0]
        elif t == P.IFLA_LINK_NETNSID:
            netns_other = True
        elif t == P.IFLA_LINKINFO:
            info = (a, b)
        elif t == P.IFLA_AF_SPEC:
            inet6 = P._inet6(data, a, b)
    out = P.Link(index, flags, name, alias, None, master, mtu, None if netns_other else parent)
    if inet6 != (None, None):
        out = out._replace(addr_gen_mode=inet6[0], accept_ra=inet6[1])
    if info is None:
        return out
    data_at: tuple[int, int] | None = None
    for t, a, b in P.attrs(data, *info):
        if t == P.IFLA_INFO_KIND:
            kind = P._str(data, a, b)
        elif t == P.IFLA_INFO_DATA:
            data_at = (a, b)
    out = out._replace(kind=kind)
    if data_at is None:
        return out
    if kind == "bridge":
        stp = fd = None
        for t, a, _b in P.attrs(data, *data_at):
            if t == P.IFLA_BR_STP_STATE:
                stp = P.U32.unpack_from(data, a)[0]
            elif t == P.IFLA_BR_FORWARD_DELAY:
                fd = P.U32.unpack_from(data, a)[0]
        return out._replace(stp=stp, forward_delay=fd)
    if kind == "vxlan":
        vni = local = port = None
        lower = None
        for t, a, b in P.attrs(data, *data_at):
            if t == P.IFLA_VXLAN_ID:
                vni = P.U32.unpack_from(data, a)[0]
            elif t in (P.IFLA_VXLAN_LOCAL, P.IFLA_VXLAN_LOCAL6):
                local = P._ip(data, a, b)
            elif t == P.IFLA_VXLAN_LINK:
                lower = P.U32.unpack_from(data, a)[0] or None
            elif t == P.IFLA_VXLAN_PORT:
                port = P.BE16.unpack_from(data, a)[0]
        return out._replace(vni=vni, local=local, port=port, parent=lower)
    if kind == "vlan":
        for t, a, _b in P.attrs(data, *data_at):
            if t == P.IFLA_VLAN_ID:
                return out._replace(vlan=P.U16.unpack_from(data, a)[0])
    return out


def test_the_inline_link_parser_is_the_reference_one() -> None:
    """Every link of a real dump — a veth whose peer is in another namespace, bridges with and
    without STP, a VXLAN link with a lower device and one without, links with and without
    IPv6 — parses to the same tuple as with the generator-based parser it replaced."""
    with lab() as world:
        ns = world.ns("nlr")
        other = world.ns("nls")
        world.wire(ns, "eth1", other, "eth1")
        sh("ip", "-n", ns, "addr", "add", "192.0.2.10/24", "dev", "eth1")
        sh("ip", "-n", ns, "link", "add", "brp", "type", "bridge", "forward_delay", "0",
           "stp_state", "0")  # fmt: skip
        sh(
            "ip",
            "-n",
            ns,
            "link",
            "set",
            "brp",
            "addrgenmode",
            "none",
            "alias",
            "netledger:7",
            "up",
        )
        sh("ip", "-n", ns, "link", "add", "brq", "type", "bridge")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.brq.accept_ra=0")
        sh("ip", "-n", ns, "link", "add", "vx77", "type", "vxlan", "id", "77", "dstport", "4789",
           "local", "192.0.2.10", "dev", "eth1")  # fmt: skip
        sh("ip", "-n", ns, "link", "add", "vx78", "type", "vxlan", "id", "78", "dstport", "4789")
        sh("ip", "-n", ns, "link", "set", "vx77", "master", "brp", "up")
        sh("ip", "-n", ns, "link", "set", "vx78", "mtu", "1280", "master", "brq")
        with RtSocket(ns) as sock:
            links = list(_raw_dump(sock, ifinfmsg(), RTM_GETLINK))
        assert len(links) >= 6
        for raw in links:
            got = nlparse.link(raw, nlparse.NLMSG_HDR.size, len(raw))
            assert got == _reference_link(raw, nlparse.NLMSG_HDR.size, len(raw)), got.name
        by_name = {x.name: x for x in (nlparse.link(r, 16, len(r)) for r in links)}
        assert by_name["vx78"].parent is None and by_name["vx77"].parent is not None
        assert by_name["brp"].addr_gen_mode == 1 and by_name["brq"].accept_ra == 0


_ATTR = st.tuples(
    st.integers(0, 12),  # NDA_* numbers around the ones read (1 DST, 2 LLADDR, 9 MASTER)
    st.one_of(
        st.binary(max_size=24),
        st.sampled_from([bytes(6), bytes(4), bytes(16), b"\x0a\x00\x02\x00" + bytes(6)]),
    ),
)


@given(
    header=st.tuples(
        st.sampled_from([0, 7]), st.integers(0, 99), st.integers(0, 0xFFFF), st.integers(0, 255)
    ),
    attributes=st.lists(_ATTR, max_size=6),
    cut=st.integers(0, 8),
)
def test_flood_is_neigh_whenever_neigh_sees_a_flood_entry(
    header: tuple[int, int, int, int], attributes: list[tuple[int, bytes]], cut: int
) -> None:
    """Random ndmsg payloads (zero MACs as attributes of any type, inside other attributes'
    payloads, buffers cut short): flood() is None only for what neigh() does not read as a
    flood entry, and otherwise exactly neigh()."""
    family, ifindex, state, flags = header
    body = P.NDMSG.pack(family, ifindex, state, flags, 0)
    for t, payload in attributes:
        body += P.NLA_HDR.pack(4 + len(payload), t) + payload
        body += bytes(-len(body) % 4)
    data = bytes(8) + body  # the payload need not start the buffer
    end = max(8 + P.NDMSG.size, len(data) - cut)
    full = nlparse.neigh(data, 8, end)
    quick = nlparse.flood(data, 8, end)
    if full.lladdr == "00:00:00:00:00:00":
        assert quick == full
    else:
        assert quick is None or quick == full
