"""Reading rtnetlink messages: only the attributes the executor uses, straight from the bytes.

pyroute2 decodes every attribute of every message into objects (a link carries ~75 of them, ~38
decoded objects, ~0.3 ms each: 2,000 links took 0.8 s to read, the raw dump 1 ms). The executor
needs a dozen, so this module walks the attribute headers with ``struct`` and decodes only those
— a link in a few microseconds. Messages are still *built* with pyroute2 (kernel.py): writing is
rare and pyroute2's encoders are right by construction; reading is every pass and every
notification.

The attribute numbers are the kernel's (``include/uapi/linux/if_link.h``, ``if_addr.h``,
``neighbour.h``); tests/executor/test_executor_nlparse.py checks each against pyroute2's own maps and
every parser against pyroute2's decoding of the same bytes, dumped from a real namespace.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import NamedTuple

NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
NLA_HDR = struct.Struct("=HH")  # length, type
IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
NDMSG = struct.Struct("=BxxxiHBB")  # family, ifindex, state, flags, type
U32 = struct.Struct("=I")
S32 = struct.Struct("=i")
U16 = struct.Struct("=H")
BE16 = struct.Struct("!H")
NLA_TYPE_MASK = 0x3FFF

RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 2, 3, 4
#: a dump's message flag: the table changed while it was dumped (netlink.h)
NLM_F_DUMP_INTR = 0x10

# if_link.h
IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_AF_SPEC, IFLA_LINK_NETNSID = 18, 20, 26, 37
IFLA_STATS, IFLA_STATS64 = 7, 23
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFLA_BR_HELLO_TIMER, IFLA_BR_TCN_TIMER = 16, 17
IFLA_BR_TOPOLOGY_CHANGE_TIMER, IFLA_BR_GC_TIMER = 18, 19
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_PORT = 1, 3, 4, 15
IFLA_VXLAN_LOCAL6 = 17
IFLA_VLAN_ID = 1
# IFLA_AF_SPEC holds one nest per address family; AF_INET6's (if_link.h, IFLA_INET6_*)
AF_INET6 = 10
IFLA_INET6_CONF, IFLA_INET6_ADDR_GEN_MODE = 2, 8
IFLA_INET6_FLAGS, IFLA_INET6_STATS, IFLA_INET6_CACHEINFO, IFLA_INET6_ICMP6STATS = 1, 3, 5, 6
#: IFLA_INET6_CONF is the link's IPv6 sysctls as an array of s32 indexed by DEVCONF_* (ipv6.h)
DEVCONF_ACCEPT_RA = 3
# if_addr.h
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD = 0x02
# neighbour.h
NDA_DST, NDA_LLADDR, NDA_CACHEINFO, NDA_MASTER = 1, 2, 3, 9


#: The attributes link() reads, and the counters it notes for ``cut`` (the others are skipped
#: after one set lookup).
_LINK_WANTED = frozenset(
    {IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_MASTER, IFLA_IFALIAS, IFLA_AF_SPEC, IFLA_LINK,
     IFLA_LINK_NETNSID, IFLA_STATS, IFLA_STATS64}
)  # fmt: skip
#: What changes in a link's IPv6 nest with no change of configuration (its flags as the
#: kernel solicits routers, its counters, its timestamps and randomized reachable time)
_INET6_CUT = frozenset(
    {IFLA_INET6_FLAGS, IFLA_INET6_STATS, IFLA_INET6_CACHEINFO, IFLA_INET6_ICMP6STATS}
)
#: A bridge's running timers (its forwarding database's garbage collection always runs)
_BR_TIMERS = frozenset(
    {IFLA_BR_HELLO_TIMER, IFLA_BR_TCN_TIMER, IFLA_BR_TOPOLOGY_CHANGE_TIMER, IFLA_BR_GC_TIMER}
)
_VXLAN_WANTED = frozenset({IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LOCAL6, IFLA_VXLAN_LINK,
                           IFLA_VXLAN_PORT})  # fmt: skip


class Link(NamedTuple):
    """One link as the kernel reports it (indexes, not names: kernel.py resolves them)."""

    ifindex: int
    flags: int
    name: str | None
    alias: str | None
    kind: str | None
    master: int | None
    mtu: int | None
    parent: int | None  # IFLA_LINK (vlan) or IFLA_VXLAN_LINK (vxlan); None in another netns
    vni: int | None = None
    vlan: int | None = None
    local: str | None = None
    port: int | None = None
    stp: int | None = None
    forward_delay: int | None = None
    #: how the kernel makes the link's own IPv6 addresses (IN6_ADDR_GEN_MODE_*; 1: none);
    #: None when the link has no IPv6 (disabled, or an MTU below 1280)
    addr_gen_mode: int | None = None
    #: net.ipv6.conf.<link>.accept_ra (None: the link has no IPv6)
    accept_ra: int | None = None


class Addr(NamedTuple):
    ifindex: int
    family: int
    prefixlen: int
    address: str | None  # IFA_LOCAL, else IFA_ADDRESS
    broadcast: str | None
    flags: int = 0  # IFA_FLAGS, else the header's


class Neigh(NamedTuple):
    ifindex: int
    family: int
    state: int
    flags: int
    lladdr: str | None
    dst: str | None
    master: int | None


def messages(data: bytes | memoryview) -> Iterator[tuple[int, int, int, int, int]]:
    """(type, flags, seq, payload start, message end) of each message in a netlink buffer."""
    off, n = 0, len(data)
    while off + NLMSG_HDR.size <= n:
        length, mtype, flags, seq, _pid = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size:
            return
        end = off + length
        yield mtype, flags, seq, off + NLMSG_HDR.size, min(end, n)
        off = (end + 3) & ~3


def attrs(data: bytes | memoryview, off: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in ``data[off:end]``."""
    while off + NLA_HDR.size <= end:
        length, atype = NLA_HDR.unpack_from(data, off)
        if length < NLA_HDR.size:
            return
        yield atype & NLA_TYPE_MASK, off + NLA_HDR.size, min(off + length, end)
        off = (off + length + 3) & ~3


def _str(data: bytes | memoryview, a: int, b: int) -> str:
    return bytes(data[a:b]).split(b"\0", 1)[0].decode(errors="replace")


def _ip(data: bytes | memoryview, a: int, b: int) -> str | None:
    if b - a == 4:
        return socket.inet_ntop(socket.AF_INET, bytes(data[a:b]))
    if b - a == 16:
        return socket.inet_ntop(socket.AF_INET6, bytes(data[a:b]))
    return None


def _mac(data: bytes | memoryview, a: int, b: int) -> str | None:
    return ":".join(f"{x:02x}" for x in bytes(data[a:b])) if b - a == 6 else None


def link(data: bytes | memoryview, off: int, end: int, cut: list[int] | None = None) -> Link:
    """An ``ifinfomsg`` (RTM_NEWLINK / RTM_DELLINK) payload.

    The hot path of every dump and notification (a link has ~55 attributes, a bridge's
    IFLA_INFO_DATA ~45 more): the attribute headers are walked in plain loops here rather than
    through :func:`attrs` (a generator step per attribute was half the cost of a 2,000-link
    dump), and the tuple is built once.

    ``cut``: extended with (start, end) of spans of ``data`` this function did not read that
    change from one dump to the next by themselves — the link's counters, its IPv6 nest's
    flags, counters and timestamps, a bridge's running timers and its attributes after the two
    read. A message of the same length that differs from this one only there reads the same
    (executor/dumpmemo.py). Not in order."""
    _family, _type, index, flags, _change = IFINFO.unpack_from(data, off)
    hdr = NLA_HDR.unpack_from
    name = alias = kind = None
    master = mtu = parent = None
    netns_other = False
    info_a = info_b = 0
    mode = accept_ra = None
    o = off + IFINFO.size
    while o + 4 <= end:
        length, t = hdr(data, o)
        if length < 4:
            break
        a = o + 4
        b = o + length
        o = (b + 3) & ~3
        t &= NLA_TYPE_MASK
        if t not in _LINK_WANTED:
            continue  # most of a link's ~40 attributes: one set lookup each
        if b > end:
            b = end
        if t == IFLA_IFNAME:
            name = _str(data, a, b)
        elif t == IFLA_MTU:
            mtu = U32.unpack_from(data, a)[0] if b - a >= 4 else None
        elif t == IFLA_LINKINFO:
            info_a, info_b = a, b
        elif t == IFLA_MASTER:
            master = U32.unpack_from(data, a)[0] or None if b - a >= 4 else None
        elif t == IFLA_IFALIAS:
            alias = _str(data, a, b) or None
        elif t == IFLA_AF_SPEC:
            mode, accept_ra = _inet6(data, a, b, cut)
        elif t == IFLA_LINK:
            parent = U32.unpack_from(data, a)[0] if b - a >= 4 else None
        elif t == IFLA_LINK_NETNSID:
            netns_other = True
        elif cut is not None:  # IFLA_STATS, IFLA_STATS64
            cut += (a, b)
    if netns_other:
        parent = None
    vni = vlan = local = port = stp = fd = None
    data_a = data_b = 0
    o = info_a
    while o + 4 <= info_b:
        length, t = hdr(data, o)
        if length < 4:
            break
        a, b = o + 4, min(o + length, info_b)
        o = (o + length + 3) & ~3
        t &= NLA_TYPE_MASK
        if t == IFLA_INFO_KIND:
            kind = _str(data, a, b)
        elif t == IFLA_INFO_DATA:
            data_a, data_b = a, b
    o = data_a
    if kind == "bridge":
        while o + 4 <= data_b and (stp is None or fd is None):
            length, t = hdr(data, o)
            if length < 4:
                break
            a = o + 4
            b = min(o + length, data_b)
            o = (o + length + 3) & ~3
            t &= NLA_TYPE_MASK
            # A u32 each: one shorter (or cut by its nest's end) is not read past its end — it
            # counts as absent, and the walk goes on (the rest is then not cut: compared whole)
            if t == IFLA_BR_STP_STATE:
                if b - a >= 4:
                    stp = U32.unpack_from(data, a)[0]
            elif t == IFLA_BR_FORWARD_DELAY:
                if b - a >= 4:
                    fd = U32.unpack_from(data, a)[0]
            elif cut is not None and t in _BR_TIMERS:  # before the two read, in recent kernels
                cut += (a, b)
        if cut is not None and stp is not None and fd is not None and o < data_b:
            # not read: the rest. Only after both were read — a walk stopped by an attribute
            # shorter than its header read that header, where the rest would begin.
            cut += (o, data_b)
    elif kind == "vxlan" and data_b:
        parent = None  # a VXLAN link's lower device is IFLA_VXLAN_LINK, not IFLA_LINK
        while o + 4 <= data_b:
            length, t = hdr(data, o)
            if length < 4:
                break
            a = o + 4
            b = o + length
            o = (b + 3) & ~3
            t &= NLA_TYPE_MASK
            if t not in _VXLAN_WANTED:
                continue
            if b > data_b:
                b = data_b
            if t == IFLA_VXLAN_ID:
                vni = U32.unpack_from(data, a)[0] if b - a >= 4 else None
            elif t == IFLA_VXLAN_LOCAL or t == IFLA_VXLAN_LOCAL6:
                local = _ip(data, a, b)
            elif t == IFLA_VXLAN_LINK:
                parent = U32.unpack_from(data, a)[0] or None if b - a >= 4 else None
            elif t == IFLA_VXLAN_PORT:
                port = BE16.unpack_from(data, a)[0] if b - a >= 2 else None
    elif kind == "vlan":
        for t, a, b in attrs(data, data_a, data_b):
            if t == IFLA_VLAN_ID:
                vlan = U16.unpack_from(data, a)[0] if b - a >= 2 else None
                break
    return Link(
        index, flags, name, alias, kind, master, mtu, parent, vni, vlan, local, port, stp, fd,
        mode, accept_ra,
    )  # fmt: skip


def _inet6(
    data: bytes | memoryview, off: int, end: int, cut: list[int] | None = None
) -> tuple[int | None, int | None]:
    """(IFLA_INET6_ADDR_GEN_MODE, accept_ra of IFLA_INET6_CONF) inside IFLA_AF_SPEC (None:
    not there, e.g. no AF_INET6 nest: the link has no IPv6); ``cut`` as in :func:`link`."""
    mode = accept_ra = None
    hdr = NLA_HDR.unpack_from
    o = off
    while o + 4 <= end:  # one nest per address family: AF_INET6's is the one read
        length, t = hdr(data, o)
        if length < 4:
            break
        a, b = o + 4, min(o + length, end)
        o = (o + length + 3) & ~3
        if t & NLA_TYPE_MASK != AF_INET6:
            continue
        o6 = a
        while o6 + 4 <= b:  # plain loop, as in link(): every link and notification has it
            length6, t6 = hdr(data, o6)
            if length6 < 4:
                break
            a6, b6 = o6 + 4, min(o6 + length6, b)
            o6 = (o6 + length6 + 3) & ~3
            t6 &= NLA_TYPE_MASK
            if t6 == IFLA_INET6_ADDR_GEN_MODE and b6 > a6:
                mode = int(data[a6])
            elif t6 == IFLA_INET6_CONF and b6 - a6 >= 4 * (DEVCONF_ACCEPT_RA + 1):
                accept_ra = S32.unpack_from(data, a6 + 4 * DEVCONF_ACCEPT_RA)[0]
            elif cut is not None and t6 in _INET6_CUT:
                cut += (a6, b6)
    return mode, accept_ra


def addr(data: bytes | memoryview, off: int, end: int) -> Addr:
    """An ``ifaddrmsg`` (RTM_NEWADDR / RTM_DELADDR) payload: IPv4 or IPv6."""
    family, prefixlen, flags, _scope, index = IFADDR.unpack_from(data, off)
    local = address = broadcast = None
    for t, a, b in attrs(data, off + IFADDR.size, end):
        if t == IFA_LOCAL:
            local = _ip(data, a, b)
        elif t == IFA_ADDRESS:
            address = _ip(data, a, b)
        elif t == IFA_BROADCAST:
            broadcast = _ip(data, a, b)
        elif t == IFA_FLAGS and b - a >= 4:
            flags = U32.unpack_from(data, a)[0]
    return Addr(index, family, prefixlen, local or address, broadcast, flags)


#: a flood entry's NDA_LLADDR attribute, header and all: 10 bytes, the MAC all zeros
_FLOOD_LLADDR = NLA_HDR.pack(NLA_HDR.size + 6, NDA_LLADDR) + bytes(6)


def flood(data: bytes, off: int, end: int) -> Neigh | None:
    """An ``ndmsg`` payload parsed only if it can be a flood entry (its NDA_LLADDR all zeros);
    None when it cannot. A bridge's forwarding table is mostly the ports' own MACs (three
    entries per VXLAN network here: 6,000 on a host of 1,000 networks, a third of a full
    read-back's time parsed for nothing); one search in C for the attribute's bytes rules them
    out. The bytes found may sit inside another attribute: then the full parse decides, so the
    answer is :func:`neigh`'s whenever that is a flood entry."""
    return neigh(data, off, end) if may_be_flood(data, off, end) else None


def may_be_flood(data: bytes, off: int, end: int) -> bool:
    """Whether the ``ndmsg`` payload holds an all-zeros NDA_LLADDR's bytes (:func:`flood`)."""
    return data.find(_FLOOD_LLADDR, off + NDMSG.size, end) >= 0


def neigh(data: bytes | memoryview, off: int, end: int, cut: list[int] | None = None) -> Neigh:
    """An ``ndmsg`` (RTM_NEWNEIGH / RTM_DELNEIGH) payload. ``cut`` as in :func:`link`: the
    entry's ages (NDA_CACHEINFO), which change with every dump."""
    family, ifindex, state, flags, _type = NDMSG.unpack_from(data, off)
    lladdr = dst = None
    master = None
    for t, a, b in attrs(data, off + NDMSG.size, end):
        if t == NDA_LLADDR:
            lladdr = _mac(data, a, b)
        elif t == NDA_DST:
            dst = _ip(data, a, b)
        elif t == NDA_MASTER and b - a >= 4:  # a short attribute: no master, not a crash
            master = U32.unpack_from(data, a)[0]
        elif t == NDA_CACHEINFO and cut is not None:
            cut += (a, b)
    return Neigh(ifindex, family, state, flags, lladdr, dst, master)
