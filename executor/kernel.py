"""Reading the actual state of a host and applying operations: the only module that touches it.

Links, addresses and flood entries go through :mod:`netlink` (our own encoding and parsing, checked
against pyroute2 in tests; batched); NAT
through :mod:`nft`; ``ip_forward`` (and ``net.ipv6.conf.all.forwarding``) through /proc inside the namespace.
Every operation is idempotent: "already exists" / "already gone" answers count as success, anything else is
returned as a failure of that operation and the next read-back shows what is really there.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from . import nft, nlencode, nlparse
from .errors import NftError
from .model import (
    FLOOD_MAC,
    ROUTER_LINK_LOCAL,
    AddAddress,
    AddFdb,
    AddrState,
    CreateLink,
    DeleteAddress,
    DeleteFdb,
    DeleteLink,
    DeleteNat,
    Enslave,
    HostActual,
    LinkSpec,
    LinkState,
    Op,
    SetForwarding,
    SetLink,
    SetNat,
)
from .netlink import CHUNK, Dump, Request, RtSocket, in_netns
from .nlencode import (
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETNEIGH,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
)

IFF_UP = 1
AF_BRIDGE = 7
NUD_PERMANENT = 0x80
NUD_NOARP = 0x40
NTF_SELF = 0x02
log = logging.getLogger("netledger.executor.kernel")
#: Dumps the sighting reporter's reads (bridges, learned MACs) make at most while the kernel
#: marks them interrupted; then the poll reports nothing and the next tries again.
SIGHTING_TRIES = 2
IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"
IP6_FORWARD = "/proc/sys/net/ipv6/conf/all/forwarding"
#: ifaddrmsg flag of an address with no lifetime: ours, or the kernel's own link-local; an
#: address configured from a router advertisement (SLAAC, temporary) lacks it
IFA_F_PERMANENT = 0x80


def address_kept(ad: nlparse.Addr) -> bool:
    """Whether an address the kernel reports is one the executor models: every IPv4 address,
    and IPv6 ones that could be ours — not the kernel's own link-local addresses (every link
    with IPv6 that is not ours has one; ours get none: addr_gen_mode none) other than the
    router's ``fe80::1``. Ignoring those keeps a foreign or an older link's link-local out of
    every diff. A global address the kernel configured from a router advertisement (it carries
    a lifetime) is modelled: on one of our links it is not desired and is removed (our links
    take no advertisement: accept_ra 0), on a foreign link the diff leaves it alone."""
    if ad.address is None:
        return False
    if ad.family == socket.AF_INET:
        return True
    if ad.family != socket.AF_INET6:
        return False
    if ad.address.startswith("fe80:"):
        return f"{ad.address}/{ad.prefixlen}" == ROUTER_LINK_LOCAL
    return True


@dataclass(frozen=True)
class OpResult:
    op: Op
    errno: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.errno == 0 and self.error is None


_LINK_ATTRS = frozenset(
    {
        "IFLA_IFNAME",
        "IFLA_IFALIAS",
        "IFLA_MASTER",
        "IFLA_MTU",
        "IFLA_LINK",
        "IFLA_LINK_NETNSID",
        "IFLA_LINKINFO",
    }
)
_INFO_ATTRS = frozenset({"IFLA_INFO_KIND", "IFLA_INFO_DATA"})
_BRIDGE_ATTRS = frozenset({"IFLA_BR_STP_STATE", "IFLA_BR_FORWARD_DELAY"})
_VXLAN_ATTRS = frozenset(
    {"IFLA_VXLAN_ID", "IFLA_VXLAN_LOCAL", "IFLA_VXLAN_LINK", "IFLA_VXLAN_PORT"}
)
_VLAN_ATTRS = frozenset({"IFLA_VLAN_ID"})


def _attrs(msg: Any, wanted: frozenset[str]) -> dict[str, Any]:
    """The values of the ``wanted`` attributes of a pyroute2 message, in one pass.

    A link carries ~75 attributes; ``get_attr`` scans them all on every call and 8 calls per
    link made reading 120 links cost ~45 ms. Only the wanted ones are decoded here."""
    out: dict[str, Any] = {}
    for slot in msg["attrs"]:
        name = slot.name
        if name in wanted and name not in out:
            out[name] = slot.get_value()
    return out


def _links(dump: Dump) -> list[nlparse.Link]:
    return [nlparse.link(d, a, b) for d, a, b in dump]


class Kernel:
    """One host's kernel (a named namespace, or the current one)."""

    def __init__(
        self, netns: str | None = None, chunk_size: int = CHUNK, pause: float = 0.0
    ) -> None:
        self.netns = netns
        self.sock = RtSocket(netns)
        self.chunk_size = chunk_size
        self.pause = pause

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading --------------------------------------------------------------------------

    # Every read goes through RtSocket.read_raw: a dump the kernel marks interrupted (the table
    # changed under it) is read again, its reader run afresh on a new one.

    def read_links(self) -> list[LinkState]:
        raw = self.sock.read_raw(nlencode.link_dump(), RTM_GETLINK, _links)
        return links_from(raw)

    def read(self, links: list[LinkState] | None = None) -> HostActual:
        links = links if links is not None else self.read_links()
        by_index = {link.index: link for link in links}

        def read_addrs(dump: Dump) -> list[AddrState]:
            addrs = []
            for d, a, b in dump:
                x = nlparse.addr(d, a, b)
                link = by_index.get(x.ifindex)
                if link is None or not address_kept(x):
                    continue
                addrs.append(AddrState(link.name, f"{x.address}/{x.prefixlen}", x.broadcast))
            return addrs

        ours_vx = {link.index: link.name for link in links if link.ours and link.kind == "vxlan"}

        def read_fdb(dump: Dump) -> list[tuple[str, str]]:
            fdb = []
            for d, a, b in dump:
                n = nlparse.flood(d, a, b)
                name = None if n is None else ours_vx.get(n.ifindex)
                if n is not None and name is not None and n.dst and n.lladdr == FLOOD_MAC:
                    fdb.append((name, n.dst))
            return fdb

        addrs = self.sock.read_raw(nlencode.addr_dump(), RTM_GETADDR, read_addrs)  # v4 and v6
        fdb = []
        if ours_vx:
            fdb = self.sock.read_raw(nlencode.neigh_dump(AF_BRIDGE), RTM_GETNEIGH, read_fdb)
        table, intact = nft.read(self.netns)
        return HostActual(
            links=tuple(links),
            addresses=tuple(sorted(addrs)),
            fdb=tuple(sorted(set(fdb))),
            nat=table,
            nat_intact=intact,
            forwarding=self.read_forwarding(),
            forwarding_v6=self.read_forwarding_v6(),
        )

    def read_bridges(self) -> list[nlparse.Link]:
        """The host's bridges, undecoded beyond what nlparse reads: the kernel sends only
        them (a dump filtered by kind), not the VXLAN links and taps beside them."""
        return [
            x
            for x in self.sock.read_raw(
                nlencode.link_dump("bridge"), RTM_GETLINK, _links, tries=SIGHTING_TRIES
            )
            if x.kind == "bridge"  # (a kernel that did not filter)
        ]

    def read_learned_macs(self, index: set[int]) -> set[str]:
        """MACs the kernel learned from traffic (dynamic forwarding entries) on the ports of
        the bridges of ``index`` (their interface indexes): not the ports' own addresses
        (permanent / ``self``), not static ones."""
        if not index:
            return set()
        skip, ndmsg = NUD_PERMANENT | NUD_NOARP, nlparse.NDMSG.unpack_from

        def read(dump: Dump) -> set[str]:
            out: set[str] = set()
            for d, a, b in dump:
                # Told by the header alone, before its attributes are decoded: most of a
                # bridge FDB is the ports' own addresses and the VXLAN links' flood entries
                # (permanent, ``self``), a few thousand entries at 1,200 networks, every poll.
                _, _, state, flags, _ = ndmsg(d, a)
                if state & skip or flags & NTF_SELF:
                    continue
                n = nlparse.neigh(d, a, b)
                if n.master in index and n.lladdr and n.lladdr != FLOOD_MAC:
                    out.add(n.lladdr.lower())
            return out

        # A dump marked interrupted may have skipped an instance's MAC: read again, or fail
        # (the reporter then reports nothing: an absence would be taken as the instance gone).
        # Twice, not four times: each try is the whole FDB, beside the passes, and the next
        # poll tries again (RtSocket.read_raw).
        return self.sock.read_raw(
            nlencode.neigh_dump(AF_BRIDGE), RTM_GETNEIGH, read, tries=SIGHTING_TRIES
        )

    def host_address(self, interface: str, exclude: list[str]) -> str | None:
        """The first IPv4 address of ``interface`` that is not a /32 in ``exclude`` ranges."""
        import netaddr

        ranges = [netaddr.IPNetwork(r) for r in exclude]
        return self._first_address(
            interface,
            socket.AF_INET,
            lambda x: (
                not (x.prefixlen == 32 and any(netaddr.IPAddress(x.address) in r for r in ranges))
            ),
        )

    def vtep_address(self, interface: str) -> str | None:
        """The VXLAN underlay address of ``interface``: its first IPv4 address, else its first
        usable global IPv6 one (an IPv6-only underlay)."""
        return self.host_address(interface, []) or self.host_address_v6(interface)

    def host_address_v6(self, interface: str) -> str | None:
        """The first IPv6 address of ``interface`` a VTEP can use: not link-local, not
        deprecated, not failed DAD (a tentative one is taken: it is usable once DAD is over,
        and the executor may start before that)."""
        return self._first_address(
            interface,
            socket.AF_INET6,
            lambda x: (
                not (x.flags & (IFA_F_DADFAILED | IFA_F_DEPRECATED))
                and not _link_local_v6(x.address or "::1")
            ),
        )

    def _first_address(
        self, interface: str, family: int, usable: Callable[[nlparse.Addr], bool]
    ) -> str | None:
        links = {link.name: link.index for link in self.read_links()}
        idx = links.get(interface)

        def read(dump: Dump) -> str | None:
            found = None
            for d, a, b in dump:
                x = nlparse.addr(d, a, b)
                if found is not None or x.ifindex != idx or not x.address:
                    continue  # the dump is read to its end either way (and its mark with it)
                if usable(x):
                    found = x.address
            return found

        return self.sock.read_raw(nlencode.addr_dump(family), RTM_GETADDR, read)

    def read_forwarding(self) -> bool:
        def get() -> bool:
            with open(IP_FORWARD) as f:
                return f.read().strip() == "1"

        return in_netns(self.netns, get)

    def read_forwarding_v6(self) -> bool:
        """``net.ipv6.conf.all.forwarding`` (False when the host has no IPv6 at all)."""

        def get() -> bool:
            try:
                with open(IP6_FORWARD) as f:
                    return f.read().strip() == "1"
            except FileNotFoundError:
                return False

        return in_netns(self.netns, get)

    # --- applying ---------------------------------------------------------------------------

    def apply(self, ops: tuple[Op, ...], links: list[LinkState] | dict[str, int]) -> list[OpResult]:
        """Apply ``ops`` in order; netlink ones in one batch, then NAT and sysctl. ``links``:
        the host's links, or their indexes by name."""
        if isinstance(links, dict):
            index = dict(links)
        else:
            index = {link.name: link.index for link in links}
        next_index = own_index_below(index.values())
        requests: list[Request] = []
        owners: list[int] = []  # request -> position in ops
        results: dict[int, OpResult] = {}
        for pos, op in enumerate(ops):
            reqs: list[Request] = []
            if isinstance(op, CreateLink):
                # Choosing the index ourselves lets later requests in the batch name the link.
                idx = next_index
                next_index -= 1
                reqs = self._create(op.spec, idx, index)
                index[op.spec.name] = idx
            elif isinstance(op, DeleteLink):
                idx = index.pop(op.name, 0)
                if idx:
                    reqs = [Request(nlencode.del_link(idx), RTM_DELLINK, 0, ok=(errno.ENODEV,))]
            elif isinstance(op, SetLink):
                reqs = self._set(op, index)
            elif isinstance(op, Enslave):
                body = nlencode.set_link(
                    index.get(op.spec.interface, 0),
                    alias=None,
                    master=index.get(op.spec.master, 0),
                    mtu=None,
                )
                reqs = [Request(body, RTM_NEWLINK, 0)]
            elif isinstance(op, AddAddress | DeleteAddress):
                reqs = [self._addr(op, index)]
            elif isinstance(op, AddFdb | DeleteFdb):
                reqs = [self._fdb(op, index)]
            else:
                continue
            for r in reqs:
                requests.append(r)
                owners.append(pos)
            if not reqs:
                results[pos] = OpResult(op, errno.ENODEV, "link not found")
        codes = self.sock.batch(requests, self.chunk_size, self.pause) if requests else []
        for code, pos in zip(codes, owners, strict=True):
            if code and pos not in results:
                results[pos] = OpResult(ops[pos], code, _strerror(code))
        self._no_router_advertisements(ops, index, results)
        for pos, op in enumerate(ops):
            if isinstance(op, SetNat | DeleteNat):
                try:
                    nft.apply(
                        self.netns,
                        nft.render(op.table) if isinstance(op, SetNat) else nft.render_delete(),
                    )
                except NftError as exc:
                    results[pos] = OpResult(op, 0, exc.message)
            elif isinstance(op, SetForwarding):
                try:
                    path = IP6_FORWARD if op.version == 6 else IP_FORWARD
                    self._write(path, "1" if op.enabled else "0")
                except OSError as exc:
                    results[pos] = OpResult(op, exc.errno or 0, str(exc))
        return [results.get(pos, OpResult(op)) for pos, op in enumerate(ops)]

    def _no_router_advertisements(
        self, ops: tuple[Op, ...], index: dict[str, int], results: dict[int, OpResult]
    ) -> None:
        """Bridges created (down) take ``accept_ra`` 0 before they come up, and bridges found
        taking router advertisements are set so: the kernel would configure a SLAAC address
        from an advertisement on the tenant's segment on a compute host's bridge. One switch
        into the namespace for all of them (a /proc write each, ~0.1 ms), then the new bridges
        are brought up in one batch. Other links come up at once: as bridge ports they run no
        IPv6 of their own on what they receive."""
        names = [
            (pos, op.spec.name)
            for pos, op in enumerate(ops)
            if isinstance(op, CreateLink) and op.spec.kind == "bridge" and pos not in results
        ]
        created = {pos for pos, _ in names}
        names += [
            (pos, op.spec.name)
            for pos, op in enumerate(ops)
            if isinstance(op, SetLink) and "accept_ra" in op.changes and pos not in results
        ]
        if not names:
            return

        def put() -> dict[int, OSError]:
            failed: dict[int, OSError] = {}
            for pos, name in names:
                try:  # os.open/os.write: half the time of a text-mode open() per file
                    fd = os.open(f"/proc/sys/net/ipv6/conf/{name}/accept_ra", os.O_WRONLY)
                    try:
                        os.write(fd, b"0")
                    finally:
                        os.close(fd)
                except FileNotFoundError:
                    pass  # no IPv6 on this link (or this host): nothing to advertise to it
                except OSError as exc:
                    failed[pos] = exc
            return failed

        for pos, exc in in_netns(self.netns, put).items():
            if isinstance(ops[pos], SetLink):
                results[pos] = OpResult(ops[pos], exc.errno or 0, str(exc))
            else:  # the link is there: the next pass sees accept_ra and repairs it
                log.warning("accept_ra of a new link (op %d) not set: %s", pos, exc)
        ups = [
            Request(nlencode.ifinfo(index[name], up=True), RTM_NEWLINK, 0)
            for pos, name in names
            if pos in created and name in index
        ]
        owners = [pos for pos, name in names if pos in created and name in index]
        codes = self.sock.batch(ups, self.chunk_size, self.pause) if ups else []
        for code, pos in zip(codes, owners, strict=True):
            if code and pos not in results:
                results[pos] = OpResult(ops[pos], code, _strerror(code))

    def _write(self, path: str, value: str) -> None:
        def put() -> None:
            with open(path, "w") as f:
                f.write(value)

        in_netns(self.netns, put)

    def _create(self, spec: LinkSpec, idx: int, index: dict[str, int]) -> list[Request]:
        body = nlencode.new_link(
            idx,
            spec.name,
            # Created down: the kernel makes a link-local address (and from router
            # advertisements SLAAC addresses in the tenant's /64, on a compute host's bridge) as
            # soon as a link with IPv6 comes up. addr_gen_mode none (and on a bridge accept_ra
            # 0) is set before it is up.
            up=False,
            mtu=spec.mtu,
            # A bridge without an address of its own takes the lowest of its ports' and changes
            # it when ports come and go: instances' ARP caches then point at a MAC that is no
            # longer the gateway's, and they lose their network until the entry expires. An
            # address set at creation stays (a random locally administered unicast one).
            address=bridge_mac() if spec.kind == "bridge" else None,
            master=index.get(spec.master, 0) if spec.master else None,
            info=_linkinfo(spec, index),
            link=index.get(spec.parent, 0) if spec.kind == "vlan" and spec.parent else None,
        )
        # ifalias given at creation is silently dropped: set it in another request, sent in
        # the same sendmsg (``follows``) so that no crash can leave our link without its mark.
        # Between them addr_gen_mode none, a request of its own: a link without IPv6 (disabled
        # on the host) refuses it, which must fail nothing else. A bridge comes up after its
        # accept_ra is off (_no_router_advertisements); a crash before leaves it down, which
        # the next pass repairs.
        return [
            Request(body, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL),
            Request(nlencode.set_addr_gen_mode(idx), RTM_NEWLINK, 0, ok=_NO_IPV6, follows=True),
            Request(
                nlencode.set_alias(idx, spec.alias, up=spec.kind != "bridge"),
                RTM_NEWLINK,
                0,
                follows=True,
            ),
        ]

    def _set(self, op: SetLink, index: dict[str, int]) -> list[Request]:
        spec = op.spec
        idx = index.get(spec.name, 0)
        body = nlencode.set_link(
            idx,
            alias=spec.alias,
            master=index.get(spec.master, 0) if spec.master else 0,
            mtu=spec.mtu,
            info=_linkinfo(spec, index) if spec.kind == "bridge" else b"",
        )
        out = [Request(body, RTM_NEWLINK, 0)]
        if "addr_gen_mode" in op.changes:
            # A link made before IPv6 support: the kernel stops making addresses of its own on
            # it (those it made stay until the link goes down; the diff ignores them).
            out.append(Request(nlencode.set_addr_gen_mode(idx), RTM_NEWLINK, 0, ok=_NO_IPV6))
        return out

    def _addr(self, op: AddAddress | DeleteAddress, index: dict[str, int]) -> Request:
        if isinstance(op, AddAddress):
            body = nlencode.addr(
                index.get(op.spec.interface, 0), op.spec.address, op.spec.broadcast
            )
            return Request(body, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ok=(errno.EEXIST,))
        body = nlencode.addr(index.get(op.interface, 0), op.address)
        return Request(body, RTM_DELADDR, 0, ok=(errno.EADDRNOTAVAIL, errno.ENODEV))

    def _fdb(self, op: AddFdb | DeleteFdb, index: dict[str, int]) -> Request:
        iface, dst = (
            (op.spec.interface, op.spec.dst) if isinstance(op, AddFdb) else (op.interface, op.dst)
        )
        body = nlencode.flood(index.get(iface, 0), dst, FLOOD_MAC)
        if isinstance(op, AddFdb):
            return Request(body, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND, ok=(errno.EEXIST,))
        return Request(body, RTM_DELNEIGH, 0, ok=(errno.ENOENT, errno.ENODEV))


#: The interface indexes of links the executor creates count down from the top of the kernel's
#: range, far from those the kernel hands out itself (counting up from 1, cyclically over 2^31).
#: A CreateLink and the requests after it in the same batch (its alias, addresses, ports) name
#: the link by the index chosen here: taken from just above the highest index in use, it went
#: to a link another process (a hypervisor's tap) created meanwhile, whose create then
#: succeeded instead — the alias marked that link as ours and a later pass deleted it.
OWN_INDEX_TOP = 2**31 - 1
OWN_INDEX_FLOOR = 2**30


def own_index_below(in_use: Iterable[int]) -> int:
    """The index for the next link the executor creates: below every one it made (those in
    the high range), so never one in use."""
    return min((i for i in in_use if i >= OWN_INDEX_FLOOR), default=OWN_INDEX_TOP + 1) - 1


def links_from(raw: list[nlparse.Link], names: dict[int, str] | None = None) -> list[LinkState]:
    """Links as the executor models them: indexes resolved to names (``names``: of every
    link, when ``raw`` is a part of them), sorted."""
    if names is None:
        names = {x.ifindex: x.name or "" for x in raw}
    out = []
    for x in raw:
        kind = x.kind
        out.append(
            LinkState(
                name=x.name or "",
                index=x.ifindex,
                kind=kind,
                alias=x.alias,
                master=names.get(x.master) if x.master else None,
                up=bool(x.flags & IFF_UP),
                mtu=x.mtu,
                vni=x.vni,
                vlan=x.vlan,
                # Only vxlan / vlan links have a parent that is part of their identity.
                parent=names.get(x.parent) if x.parent and kind in ("vxlan", "vlan") else None,
                local=x.local,
                port=x.port,
                stp=x.stp,
                forward_delay=x.forward_delay,
                addr_gen_mode=x.addr_gen_mode,
                accept_ra=x.accept_ra,
            )
        )
    return sorted(out)


#: errnos of a link that has no IPv6 (EAFNOSUPPORT: IPv6 disabled on it or on the host)
_NO_IPV6 = (errno.EAFNOSUPPORT,)


def bridge_mac() -> str:
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02  # locally administered, unicast
    return ":".join(f"{x:02x}" for x in b)


def _linkinfo(spec: LinkSpec, index: dict[str, int]) -> bytes:
    if spec.kind == "bridge":
        data = nlencode.bridge_data()
    elif spec.kind == "vxlan":
        lower = index.get(spec.parent, 0) if spec.parent else None
        data = nlencode.vxlan_data(spec.vni or 0, spec.local, lower, spec.port)
    elif spec.kind == "vlan":
        data = nlencode.vlan_data(spec.vlan or 0)
    else:
        data = []
    return nlencode.linkinfo(spec.kind, data)


IFA_F_DADFAILED, IFA_F_DEPRECATED = 0x08, 0x20


def _link_local_v6(address: str) -> bool:
    import ipaddress

    ip = ipaddress.IPv6Address(address)
    return ip.is_link_local or ip.is_loopback or ip.is_multicast


def _strerror(code: int) -> str:
    import os

    try:
        return os.strerror(code)
    except ValueError:
        return f"errno {code}"
