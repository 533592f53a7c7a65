"""IPv6 end to end on real network namespaces (issue 14): two hosts of a VXLAN network, the
executor's dnsmasq announcing the /64 from the router's ``fe80::1``, instance stand-ins that
configure themselves from it — by SLAAC (the kernel's own, EUI-64 of the MAC) or by DHCPv6 (a
small client below: busybox has none) — and ``ping -6`` each other and the gateway.

Namespaces are ``nld-<tag>-<role>``, deleted at the end with every dnsmasq a test started, even
when it fails (tests/executor/dhcp_helpers.py: DhcpLab).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from netledger.executor.netlink import in_netns
from netledger.journal.stream import Connection
from netledger.service.client import Client

from .dhcp_helpers import DhcpLab, dhcp_lab, wait_for_event
from .test_executor_lab import links, ns_exec, ping, sh

pytestmark = pytest.mark.netns

DEADLINE = 60.0  # generous: only ever waited out when something is broken


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def addresses6(ns: str, dev: str, scope: str = "global") -> list[str]:
    """Usable addresses: not still tentative (duplicate address detection takes a second)."""
    p = sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev, "scope", scope, check=False)
    if p.returncode != 0:
        return []
    out = json.loads(p.stdout)
    return sorted(
        f"{a['local']}/{a['prefixlen']}"
        for link in out
        for a in link.get("addr_info", [])
        if "local" in a and not a.get("tentative")
    )


def all_addresses6(ns: str, dev: str) -> list[str]:
    p = sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev, check=False)
    if p.returncode != 0:
        return []
    out = json.loads(p.stdout)
    return sorted(
        f"{a['local']}/{a['prefixlen']}"
        for link in out
        for a in link.get("addr_info", [])
        if "local" in a
    )


def ping6(ns: str, address: str) -> bool:
    return ping(ns, address, "-6")


def sysctl(ns: str, key: str) -> str:
    return ns_exec(ns, "sysctl", "-n", key).stdout.strip()


def guest(world: DhcpLab, host_ns: str, bridge: str, name: str, mac: str, dad: bool) -> str:
    """An instance stand-in on ``bridge``: its MAC set before its link comes up, so its
    link-local address, router solicitations and SLAAC address all follow that MAC."""
    ns = world.ns(name)
    tap = f"tap{uuid.uuid4().hex[:6]}"
    world.wire(host_ns, tap, ns, "eth0")
    sh("ip", "-n", host_ns, "link", "set", tap, "master", bridge)
    sh("ip", "-n", ns, "link", "set", "eth0", "down")
    sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
    if not dad:  # the DHCPv6 client sends from its link-local address at once
        ns_exec(ns, "sysctl", "-q", "-w", "net.ipv6.conf.eth0.accept_dad=0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    if not dad:
        # Sending to the DHCPv6 servers' group needs the link's IPv6 configured, which waits
        # for its carrier (the tap's end in the bridge): until then sendto said ENETUNREACH
        # (seen once in CI, Dec 7). The link-local address is made at that moment.
        wait_until(f"{name}'s link-local address", lambda: link_local(ns, "eth0"))
    return ns


def link_local(ns: str, dev: str) -> str | None:
    out = json.loads(sh("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev).stdout)
    for link in out:
        for a in link.get("addr_info", []):
            if a.get("scope") == "link" and not a.get("tentative"):
                return str(a["local"])
    return None


def wait_until(what: str, fn: Any) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.1)


def default_router(ns: str) -> str | None:
    out = json.loads(sh("ip", "-n", ns, "-j", "-6", "route", "show", "default").stdout)
    return out[0].get("gateway") if out else None


def nft6(ns: str) -> dict[str, Any] | None:
    p = ns_exec(ns, "nft", "-j", "list", "table", "ip6", "netledger", check=False)
    if p.returncode != 0:
        return None
    out: dict[str, Any] = {}
    for o in json.loads(p.stdout)["nftables"]:
        if "set" in o:
            out[o["set"]["name"]] = o["set"].get("elem", [])
    return out


# --- a DHCPv6 client (RFC 8415), just enough: Solicit with Rapid Commit, Request, Release ---

SOLICIT, ADVERTISE, REQUEST, REPLY, RELEASE = 1, 2, 3, 7, 8
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_IAADDR, OPT_ELAPSED, OPT_RAPID = 1, 2, 3, 5, 8, 14
IAID = 1


def _opt(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def _opts(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while len(data) >= 4:
        code, length = struct.unpack_from("!HH", data)
        out.setdefault(code, data[4 : 4 + length])
        data = data[4 + length :]
    return out


class Dhcp6Client:
    def __init__(self, ns: str, mac: str) -> None:
        self.ns = ns
        self.duid = struct.pack("!HH", 3, 1) + bytes(int(x, 16) for x in mac.split(":"))
        self.server: bytes | None = None
        self.address: str | None = None

    def _exchange(self, mtype: int, options: bytes, want: tuple[int, ...]) -> tuple[int, bytes]:
        def run() -> tuple[int, bytes]:
            ifindex = socket.if_nametoindex("eth0")
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("::", 546))
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
                s.settimeout(1.0)
                deadline = time.monotonic() + DEADLINE
                while time.monotonic() < deadline:
                    xid = os.urandom(3)
                    msg = bytes([mtype]) + xid + options
                    s.sendto(msg, ("ff02::1:2", 547, 0, ifindex))
                    try:
                        while True:
                            data, _ = s.recvfrom(4096)
                            if data[1:4] == xid and data[0] in want:
                                return data[0], data[4:]
                    except TimeoutError:
                        continue  # the first may be lost to neighbour discovery: again
                raise AssertionError(f"no DHCPv6 answer to message type {mtype}")
            finally:
                s.close()

        return in_netns(self.ns, run)

    def _ia(self, address: str | None = None) -> bytes:
        sub = b""
        if address is not None:
            sub = _opt(OPT_IAADDR, socket.inet_pton(socket.AF_INET6, address) + bytes(8))
        return _opt(OPT_IA_NA, struct.pack("!III", IAID, 0, 0) + sub)

    def _base(self) -> bytes:
        return _opt(OPT_CLIENTID, self.duid) + _opt(OPT_ELAPSED, bytes(2))

    def lease(self) -> str:
        """The address the server hands out, configured on eth0 (/128: the prefix is on-link
        from the router advertisement)."""
        mtype, body = self._exchange(
            SOLICIT, self._base() + self._ia() + _opt(OPT_RAPID, b""), (ADVERTISE, REPLY)
        )
        opts = _opts(body)
        self.server = opts[OPT_SERVERID]
        if mtype == ADVERTISE:  # no rapid commit: request what was advertised
            ask = self._base() + _opt(OPT_SERVERID, self.server) + _opt(OPT_IA_NA, opts[OPT_IA_NA])
            _, body = self._exchange(REQUEST, ask, (REPLY,))
            opts = _opts(body)
        ia = _opts(opts[OPT_IA_NA][12:])
        assert OPT_IAADDR in ia, f"no address in the DHCPv6 reply: {opts!r}"
        self.address = socket.inet_ntop(socket.AF_INET6, ia[OPT_IAADDR][:16])
        sh("ip", "-n", self.ns, "addr", "add", f"{self.address}/128", "dev", "eth0", "nodad")
        return self.address

    def release(self) -> None:
        assert self.server is not None and self.address is not None
        msg = self._base() + _opt(OPT_SERVERID, self.server) + self._ia(self.address)
        self._exchange(RELEASE, msg, (REPLY,))
        sh("ip", "-n", self.ns, "addr", "del", f"{self.address}/128", "dev", "eth0")


class TwoHosts:
    """Network host ``ha`` and compute host ``hb`` joined by a link (the VXLAN underlay), one
    network of project p1 served by ``ha``, instance vm-a on each of them (vm-b on ``hb``)."""

    def __init__(self, world: DhcpLab, conn: Connection, nats_url: str, subnet: int) -> None:
        self.world, self.nats_url = world, nats_url
        self.ha, self.hb = world.ns("ha"), world.ns("hb")
        world.wire(self.ha, "eth0", self.hb, "eth0", f"192.168.{subnet}.1/24",
                   f"192.168.{subnet}.2/24")  # fmt: skip
        self.c = Client(conn)

    async def create(self, **network: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The network and the two allocations (vm-a on ha, vm-b on hb)."""
        [net] = await self.c.create_networks(
            mode="vxlan", network_host="ha", project="p1", **network
        )
        ia = await self.c.allocate_fixed_ip("vm-a", project="p1", host="ha")
        ib = await self.c.allocate_fixed_ip("vm-b", project="p1", host="hb")
        return net, ia, ib

    def apply(self, *hosts: str) -> None:
        """Run each host's executor once (``--once``), in order."""
        for h in hosts:
            self.world.run(self.nats_url, h, getattr(self, h), "--physical-interface", "eth0")


# --- tests ------------------------------------------------------------------------------------


async def test_dual_stack_vxlan_slaac_two_hosts(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    two = TwoHosts(world, conn, nats_url, 71)
    ha, hb, c = two.ha, two.hb, two.c
    net, ia, ib = await two.create(label="ds", cidr="10.71.0.0/24", cidr_v6="fd00:71::/48",
                                   vni_start=7100)  # fmt: skip
    bridge, gw6 = net["bridge"], net["gateway_v6"]
    assert net["cidr_v6"] == "fd00:71::/64" and gw6 == "fd00:71::1"
    two.apply("ha", "hb", "ha")  # the second pass on ha learns hb's VTEP

    # The network host: gateway and router link-local, nothing of the kernel's own; routing.
    assert all_addresses6(ha, bridge) == sorted([f"{gw6}/64", "fe80::1/64"])
    assert sysctl(ha, "net.ipv6.conf.all.forwarding") == "1"
    assert links(ha)[bridge]["inet6_addr_gen_mode"] == "none"
    assert links(ha)["vx7100"]["inet6_addr_gen_mode"] == "none"
    table = nft6(ha)
    assert table is not None and table["bridges"] == [bridge]
    # The compute host: no IPv6 address at all on the tenant's segment (no SLAAC from the RA).
    assert all_addresses6(hb, bridge) == [] and all_addresses6(hb, "vx7100") == []
    # addr_gen_mode none alone would still let the RA configure one: our links take no RA
    assert sysctl(hb, f"net.ipv6.conf.{bridge}.accept_ra") == "0"
    assert nft6(hb) is None
    pid = world.pid("ha", bridge)
    argv = open(f"/proc/{pid}/cmdline").read().split("\0")
    assert (
        "--enable-ra" in argv
        and f"--dhcp-range=set:net{net['id']},fd00:71::,ra-only,64,86400s" in argv
    )

    va = guest(world, ha, bridge, "va", ia["mac"], dad=True)
    vb = guest(world, hb, bridge, "vb", ib["mac"], dad=True)
    for ns, ip in ((va, ia), (vb, ib)):
        got = wait_until(f"a SLAAC address in {ns}", lambda ns=ns: addresses6(ns, "eth0"))
        assert got == [f"{ip['address_v6']}/64"], "not the EUI-64 address netledger allocated"
        assert default_router(ns) == "fe80::1"
    assert ping6(va, ib["address_v6"]), "instances on two hosts cannot reach each other"
    assert ping6(vb, gw6), "the instance on the compute host cannot reach the gateway"
    assert ping6(va, gw6)

    # Routed, not NATed: the outside reaches the instance by its own address; a source outside
    # its /64 is not let out (table ip6 netledger).
    out = world.ns("out")
    world.wire(ha, "pub0", out, "eth0")
    sh("ip", "-n", ha, "addr", "add", "fd00:ff::1/64", "dev", "pub0", "nodad")
    sh("ip", "-n", out, "addr", "add", "fd00:ff::2/64", "dev", "eth0", "nodad")
    sh("ip", "-n", out, "route", "add", "fd00:71::/64", "via", "fd00:ff::1")
    # (the uplink was wired a moment ago: its links come up, and its neighbours are found,
    # within the deadline — CI under load once missed the 3 probes' 3 s)
    wait_until("the instance's own prefix routed out", lambda: ping6(vb, "fd00:ff::2"))
    assert ping6(out, ib["address_v6"]), "the outside does not reach the instance"
    sh("ip", "-n", vb, "addr", "add", "fd00:99::5/128", "dev", "eth0", "nodad")
    sh("ip", "-n", out, "route", "add", "fd00:99::/64", "via", "fd00:ff::1")
    spoofed = ns_exec(
        vb, "busybox", "ping", "-6", "-c", "2", "-W", "1", "-I", "fd00:99::5", "fd00:ff::2",
        check=False,
    )  # fmt: skip
    assert spoofed.returncode != 0, "a source outside the network's /64 was let out"

    # Deallocated: the compute host drops the network; then the network host too.
    await c.deallocate_fixed_ip("vm-b", network_id=net["id"])
    two.apply("hb")
    assert bridge not in links(hb) and "vx7100" not in links(hb)
    two.apply("ha")
    assert bridge in links(ha) and all_addresses6(ha, bridge) == sorted([f"{gw6}/64", "fe80::1/64"])
    await c.deallocate_fixed_ip("vm-a", network_id=net["id"])
    two.apply("ha")
    assert bridge not in links(ha) and nft6(ha) is None
    assert world.pid("ha", bridge) is None


async def test_ipv6_only_network_dhcpv6_lease_and_release(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    two = TwoHosts(world, conn, nats_url, 72)
    ha, hb, c = two.ha, two.hb, two.c
    net, ia, ib = await two.create(label="v6", cidr_v6="fd00:72::/64", ipv6_mode="dhcpv6",
                                   vni_start=7200)  # fmt: skip
    bridge, gw6 = net["bridge"], net["gateway_v6"]
    assert ia["address"] == ia["address_v6"]  # IPv6-only: it names the allocation
    two.apply("ha", "hb", "ha")
    assert all_addresses6(ha, bridge) == sorted([f"{gw6}/64", "fe80::1/64"])
    hosts = world.hosts_file("ha", bridge)
    assert f"{ia['mac']},vm-a,[{ia['address_v6']}]\n" in hosts

    va = guest(world, ha, bridge, "va", ia["mac"], dad=False)
    vb = guest(world, hb, bridge, "vb", ib["mac"], dad=False)
    clients = {}
    for ns, ip in ((va, ia), (vb, ib)):
        clients[ns] = Dhcp6Client(ns, ip["mac"])
        assert clients[ns].lease() == ip["address_v6"]
        wait_until(f"the default route of {ns}", lambda ns=ns: default_router(ns))
        assert default_router(ns) == "fe80::1"
        assert addresses6(ns, "eth0") == [f"{ip['address_v6']}/128"], "SLAAC in dhcpv6 mode"
    assert ping6(va, ib["address_v6"]), "instances on two hosts cannot reach each other"
    assert ping6(vb, gw6), "the instance on the compute host cannot reach the gateway"

    subject = f"netledger.evt.network.{net['id']}"
    leased = await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == ib["address"]
    )
    assert leased.mac.lower() == ib["mac"].lower()

    # Deallocated while leased: held until the release, then freed.
    await c.deallocate_fixed_ip("vm-b", network_id=net["id"])
    clients[vb].release()
    released = await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpReleased" and e.address == ib["address"]
    )
    assert released.freed
    two.apply("ha")
    two.apply("hb")
    assert bridge not in links(hb)
    assert f"[{ib['address_v6']}]" not in world.hosts_file("ha", bridge)


async def test_ipv6_only_network_slaac_two_hosts(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """IPv6-only in the default mode: no DHCP at all, the instances take the EUI-64 address
    netledger allocated from the network host's advertisement; deallocating frees it at once
    (no lease to wait for)."""
    two = TwoHosts(world, conn, nats_url, 73)
    ha, hb, c = two.ha, two.hb, two.c
    net, ia, ib = await two.create(label="v6s", cidr_v6="fd00:73::/64", vni_start=7300)
    assert net["cidr"] is None and net["ipv6_mode"] == "slaac"
    bridge, gw6 = net["bridge"], net["gateway_v6"]
    two.apply("ha", "hb", "ha")
    assert all_addresses6(ha, bridge) == sorted([f"{gw6}/64", "fe80::1/64"])
    assert all_addresses6(hb, bridge) == []
    argv = open(f"/proc/{world.pid('ha', bridge)}/cmdline").read().split("\0")
    assert f"--dhcp-range=set:net{net['id']},fd00:73::,ra-only,64,86400s" in argv
    assert not any(a.startswith("--dhcp-range=") and "." in a for a in argv)  # no IPv4

    va = guest(world, ha, bridge, "va", ia["mac"], dad=True)
    vb = guest(world, hb, bridge, "vb", ib["mac"], dad=True)
    for ns, ip in ((va, ia), (vb, ib)):
        got = wait_until(f"a SLAAC address in {ns}", lambda ns=ns: addresses6(ns, "eth0"))
        assert got == [f"{ip['address']}/64"], "not the EUI-64 address netledger allocated"
        assert default_router(ns) == "fe80::1"
    assert ping6(va, ib["address"]) and ping6(vb, gw6)

    await c.deallocate_fixed_ip("vm-b", network_id=net["id"])
    again = await c.allocate_fixed_ip("vm-c", project="p1", host="hb", mac=ib["mac"])
    assert again["address"] == ib["address"]  # freed at once: SLAAC has no lease
    two.apply("hb")
    assert bridge in links(hb)
