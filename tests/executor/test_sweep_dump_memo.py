"""The sweep's dump decodes only the links, addresses and flood entries whose messages changed
(executor/dumpmemo.py), and still reads every change.

* What ``nlparse.link`` notes as ``cut`` (counters, timers, the rest of a bridge's data) is
  never read by it: a real dump's messages with those spans overwritten parse the same.
* A cache that gets no notifications (the dump is all it reads) kept each link from its last
  dump; after each kind of change the executor reads — MTU, flags, master, alias, name, a
  bridge's STP and forward delay, IPv6 address generation and ``accept_ra`` beside the IPv6
  counters cut, a VXLAN link deleted and made again with the same index and another VNI; an
  address's broadcast, a flood entry's peer, both of the same length — its next dump is
  exactly what a fresh decode of the kernel gives; with nothing changed, it decodes nothing
  again.
* A running executor that reads the kernel by its dumps alone finds a drift in a bridge kept
  from its last dump (``accept_ra`` written through /proc, beside the IPv6 counters the memo
  cuts), and repairs it.

Real namespaces (root; deleted at the end), real nats-server and command service.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from functools import partial

import pytest

from netledger.executor import nlencode, nlparse
from netledger.executor.cache import KernelCache, _up_only
from netledger.executor.daemon import Executor
from netledger.executor.desired import HostConfig
from netledger.executor.dumpmemo import FloodMemo, LinkMemo
from netledger.executor.kernel import address_kept
from netledger.executor.model import FLOOD_MAC
from netledger.executor.netlink import RtSocket
from netledger.executor.options import Options
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_incremental import settled, stop
from tests.executor.test_executor_lab import Lab, ns_exec, sh
from tests.executor.test_executor_lab import world as world

pytestmark = pytest.mark.netns


def _messages(ns: str) -> list[bytes]:
    """Every link's message of a dump, as its own bytes (payload only)."""
    with RtSocket(ns) as sock:
        return [
            bytes(data[a:b])
            for data, a, b in sock.dump_raw(nlencode.link_dump(), nlencode.RTM_GETLINK)
        ]


def _fresh(ns: str) -> dict[int, nlparse.Link]:
    """The links a dump decoded without a memo, as the cache keeps them."""
    out = {}
    for msg in _messages(ns):
        x = _up_only(nlparse.link(msg, 0, len(msg)))
        out[x.ifindex] = x
    return out


def _fresh_all(ns: str) -> tuple[dict[int, nlparse.Link], dict[object, object], set[object]]:
    """Links, addresses and flood entries as a dump decoded without a memo gives them."""
    addrs: dict[object, object] = {}
    fdb: set[object] = set()
    with RtSocket(ns) as sock:
        for data, a, b in sock.dump_raw(nlencode.addr_dump(), nlencode.RTM_GETADDR):
            ad = nlparse.addr(data, a, b)
            if address_kept(ad):
                addrs[(ad.ifindex, f"{ad.address}/{ad.prefixlen}")] = ad
        for data, a, b in sock.dump_raw(nlencode.neigh_dump(7), nlencode.RTM_GETNEIGH):
            n = nlparse.flood(data, a, b)
            if n is not None and n.dst and n.lladdr == FLOOD_MAC:
                fdb.add((n.ifindex, n.dst))
    return _fresh(ns), addrs, fdb


def _held(cache: KernelCache) -> tuple[dict[int, nlparse.Link], dict[object, object], set[object]]:
    return dict(cache.links), dict(cache.addrs), set(cache.fdb)


def _decoded(cache: KernelCache) -> tuple[int, int, int]:
    return cache.memo.decoded, cache._addr_memo.decoded, cache._flood_memo.decoded


def _sysctl(ns: str, key: str, value: str | None = None) -> str:
    if value is not None:
        ns_exec(ns, "sysctl", "-qw", f"{key}={value}")
    return ns_exec(ns, "sysctl", "-n", key).stdout.strip()


def test_what_link_cuts_it_never_reads(world: Lab) -> None:
    ns, other = world.ns("mc"), world.ns("mco")
    world.wire(ns, "eth1", other, "eth1", "192.0.2.10/24")  # a veth: its peer elsewhere
    batch = "".join(
        [
            "link add brc type bridge forward_delay 0 stp_state 0\n",
            "link set brc alias netledger:c up\n",
            "link add brx type bridge\n",  # STP and delay left default
            "link set brx addrgenmode none\n",
            "link add vxc type vxlan id 77 dstport 4789 local 192.0.2.10 dev eth1\n",
            "link set vxc master brc up\n",
            "link add vxd type vxlan id 78 dstport 4789\n",
        ]
    )
    sh("ip", "-n", ns, "-batch", "-", input=batch)
    msgs = _messages(ns)
    assert len(msgs) >= 6
    kinds = set()
    for msg in msgs:
        cut: list[int] = []
        x = nlparse.link(msg, 0, len(msg), cut)
        assert x == nlparse.link(msg, 0, len(msg))  # the cut changes nothing of the link
        kinds.add(x.kind)
        spans = sorted(zip(cut[::2], cut[1::2], strict=True))
        assert spans, x.name  # every link has counters
        for (a, b), (c, _d) in itertools.pairwise(spans):
            assert a <= b <= c  # apart, in the message
        assert spans[-1][1] <= len(msg)
        for fill in (0x00, 0xFF, 0x5A):
            other_bytes = bytearray(msg)
            for a, b in spans:
                other_bytes[a:b] = bytes([fill]) * (b - a)
            assert nlparse.link(bytes(other_bytes), 0, len(msg)) == x, (x.name, fill)
    assert {"bridge", "vxlan", "veth"} <= kinds
    # Every single-byte change of every message: what the memo answers is what a decode gives.
    for msg in msgs:
        _every_byte_changed(msg)


def _outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except Exception as exc:  # a garbled length may make either fail: then both the same way
        return type(exc)


def _every_byte_changed(msg: bytes) -> None:
    memo = LinkMemo(lambda x: x)
    memo.begin()
    memo.link(msg, 0, len(msg))
    memo.done()
    reused = 0
    for i in range(len(msg)):
        other = bytearray(msg)
        other[i] ^= 0xFF
        b = bytes(other)
        before = memo.reused
        memo.begin()
        got = _outcome(partial(memo.link, b, 0, len(b)))
        assert got == _outcome(partial(nlparse.link, b, 0, len(b))), i
        reused += memo.reused - before
    assert reused  # some changed bytes were counters: the kept link was answered


def test_a_dump_decodes_again_every_link_that_changed_and_only_those(world: Lab) -> None:
    ns, other = world.ns("md"), world.ns("mdo")
    world.wire(ns, "eth1", other, "eth1", "192.0.2.10/24")
    batch = "".join(
        [
            "link add brm type bridge forward_delay 0 stp_state 0\n",
            "link set brm alias netledger:n1\n",
            "link add vxm type vxlan id 10 dstport 4789 local 192.0.2.10 dev eth1\n",
            "link set vxm master brm alias netledger:n1\n",
            "link add brf type bridge\n",
        ]
    )
    sh("ip", "-n", ns, "-batch", "-", input=batch)
    sh("ip", "-n", ns, "addr", "add", "10.9.0.1/24", "broadcast", "10.9.0.255", "dev", "brm")
    sh("bridge", "-n", ns, "fdb", "append", FLOOD_MAC, "dev", "vxm", "dst", "192.0.2.20")
    cache = KernelCache(ns, live=False)  # no notifications: what it reads is the dump
    cache.start()
    try:
        assert _held(cache) == _fresh_all(ns)
        assert cache.addrs and cache.fdb
        # Nothing changed: nothing is decoded again (every link here is idle).
        decoded = _decoded(cache)
        cache.resync()
        assert _decoded(cache) == decoded and cache.memo.reused >= len(cache.links)
        assert _held(cache) == _fresh_all(ns)

        vx = next(i for i, x in cache.links.items() if x.name == "vxm")
        changes = [
            # an address and a flood entry: the same length, another broadcast, another peer
            ("sh", "-c", f"ip -n {ns} addr del 10.9.0.1/24 dev brm && ip -n {ns} addr add"
             " 10.9.0.1/24 broadcast 10.9.0.254 dev brm"),
            ("ip", "-n", ns, "addr", "replace", "10.9.0.1/24", "broadcast", "10.9.0.254",
             "dev", "brm", "valid_lft", "3600", "preferred_lft", "3600"),  # not permanent
            ("sh", "-c", f"bridge -n {ns} fdb del {FLOOD_MAC} dev vxm dst 192.0.2.20 && bridge"
             f" -n {ns} fdb append {FLOOD_MAC} dev vxm dst 192.0.2.21"),
            ("ip", "-n", ns, "addr", "add", "10.9.1.1/24", "dev", "brm"),
            ("ip", "-n", ns, "addr", "del", "10.9.0.1/24", "dev", "brm"),
            ("ip", "-n", ns, "link", "set", "vxm", "mtu", "1400"),
            ("ip", "-n", ns, "link", "set", "brm", "type", "bridge", "stp_state", "1"),
            ("ip", "-n", ns, "link", "set", "brm", "type", "bridge", "forward_delay", "400"),
            ("ip", "-n", ns, "link", "set", "vxm", "nomaster"),
            ("ip", "-n", ns, "link", "set", "vxm", "master", "brf"),
            ("ip", "-n", ns, "link", "set", "brm", "alias", "netledger:n2"),
            ("ip", "-n", ns, "link", "set", "brm", "up"),
            ("ip", "-n", ns, "link", "set", "brm", "addrgenmode", "none"),
            ("ip", "-n", ns, "link", "set", "brf", "name", "brg"),
            ("ip", "-n", ns, "link", "del", "vxm"),
            # the same index, the same name and length: another VNI
            ("ip", "-n", ns, "link", "add", "vxm", "index", str(vx), "type", "vxlan", "id",
             "11", "dstport", "4789", "local", "192.0.2.10", "dev", "eth1"),
        ]  # fmt: skip
        for argv in changes:
            before = _held(cache)
            sh(*argv)
            cache.resync()
            assert _held(cache) == _fresh_all(ns), argv
            assert _held(cache) != before, argv  # the change was seen, not only the same
        assert cache.links[vx].vni == 11
        key = "net.ipv6.conf.brm.accept_ra"
        for value in ("2", "0"):  # in the IPv6 nest, beside its counters and timestamps
            _sysctl(ns, key, value)
            cache.resync()
            assert cache.links == _fresh(ns)
            assert next(x for x in cache.links.values() if x.name == "brm").accept_ra == int(value)
    finally:
        cache.close()


async def test_a_running_executor_finds_a_drift_in_a_kept_link_by_its_dump(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    ns, other = world.ns("ms"), world.ns("mso")
    world.wire(ns, "eth1", other, "eth1", "192.0.2.1/24")
    c = Client(conn)
    nets = await c.create_networks(
        label="ms", cidr="10.57.0.0/23", mode="vxlan", vni_start=5700, num_networks=2,
        network_size=256, network_host="elsewhere",
    )  # fmt: skip
    for i, n in enumerate(nets):
        await c.allocate_fixed_ip(f"vm{i}", network_id=n["id"], host="hm")
    cfg = HostConfig(host="hm", physical_interface="eth1", dhcp=False, vtep_address="192.0.2.1")
    # Without notifications (they could tell of a link's change, its accept_ra with it): what
    # the executor knows of the kernel is what its dumps read; the periodic pass dumps.
    opts = Options(netns=ns, interval=0.3, heartbeat=5.0, sightings_poll=None, live_kernel=False)
    ex = Executor(conn, cfg, opts)
    await ex.start()
    task = asyncio.create_task(ex.run_forever())
    try:
        await settled(ex, conn)
        cache = ex.cache
        assert cache is not None
        bridge = str(nets[0]["bridge"])
        key = f"net.ipv6.conf.{bridge}.accept_ra"
        deadline = time.monotonic() + 60
        while cache.memo.reused == 0:  # a dump after the first: the links are kept
            assert time.monotonic() < deadline, "no periodic pass"
            await asyncio.sleep(0.05)
        assert await asyncio.to_thread(_sysctl, ns, key) == "0"
        dumps, reused = cache.resyncs, cache.memo.reused
        await asyncio.to_thread(_sysctl, ns, key, "1")
        while await asyncio.to_thread(_sysctl, ns, key) != "0":
            assert time.monotonic() < deadline, "the periodic pass did not repair accept_ra"
            await asyncio.sleep(0.05)
        assert cache.resyncs > dumps and cache.memo.reused > reused
    finally:
        await stop(ex, task)


def test_a_flood_entry_kept_is_answered_only_for_its_own_bytes() -> None:
    """A flood entry as the kernel reports it (ndmsg, NDA_LLADDR all zeros, NDA_DST, its ages
    last), kept; then every single-byte change of it: the memo answers what flood() says."""
    body = nlparse.NDMSG.pack(7, 4, 0x80, 0x02, 0)
    body += nlparse.NLA_HDR.pack(10, nlparse.NDA_LLADDR) + bytes(6) + bytes(2)
    body += nlparse.NLA_HDR.pack(8, nlparse.NDA_DST) + bytes([192, 0, 2, 20])
    body += nlparse.NLA_HDR.pack(20, nlparse.NDA_CACHEINFO) + bytes(range(16))
    memo = FloodMemo()
    memo.begin()
    first = memo.get(body, 0, len(body))
    memo.done()
    assert first == nlparse.flood(body, 0, len(body)) and first is not None
    assert first.dst == "192.0.2.20"
    reused = 0
    for i in range(len(body)):
        other = bytearray(body)
        other[i] ^= 0xFF
        b = bytes(other)
        before = memo.reused
        memo.begin()
        got = _outcome(partial(memo.get, b, 0, len(b)))
        assert got == _outcome(partial(nlparse.flood, b, 0, len(b))), i
        reused += memo.reused - before
    assert reused == 16  # the ages, and only they


def _bridge_message(info_data: bytes) -> bytes:
    """A bridge's ``ifinfomsg`` payload: its name, then IFLA_LINKINFO holding ``info_data``."""

    def nla(t: int, payload: bytes) -> bytes:
        out = nlparse.NLA_HDR.pack(4 + len(payload), t) + payload
        return out + bytes(-len(out) % 4)

    kind = nla(nlparse.IFLA_INFO_KIND, b"bridge\0") + nla(nlparse.IFLA_INFO_DATA, info_data)
    return (
        nlparse.IFINFO.pack(0, 1, 5, 0, 0)
        + nla(nlparse.IFLA_IFNAME, b"brz\0")
        + nla(nlparse.IFLA_LINKINFO, kind)
    )


def test_a_bridge_walk_that_stopped_short_cuts_nothing_it_read() -> None:
    """A bridge's data whose walk stops at an attribute too short to be one (its length below
    a header's) before both values read: the header that stopped it was read, so it is not in
    a cut span — a message with a real attribute there is decoded again, not answered with
    the kept link (found by review: the rest of the data was cut from where the walk stood,
    that header included). The kernel writes no such attribute: the bytes are made here."""
    u32 = nlparse.U32.pack
    hdr = nlparse.NLA_HDR.pack
    stp, fd = nlparse.IFLA_BR_STP_STATE, nlparse.IFLA_BR_FORWARD_DELAY
    stopped = _bridge_message(hdr(0, 0) + hdr(8, fd) + u32(1500) + hdr(8, stp) + u32(0))
    read = _bridge_message(hdr(8, stp) + u32(1) + hdr(8, fd) + u32(1500) + hdr(4, 99))
    assert len(read) == len(stopped)
    kept = nlparse.link(stopped, 0, len(stopped))
    assert (kept.kind, kept.stp, kept.forward_delay) == ("bridge", None, None)
    memo = LinkMemo(lambda x: x)
    memo.begin()
    assert memo.link(stopped, 0, len(stopped)) == kept
    memo.done()
    memo.begin()
    got = memo.link(read, 0, len(read))
    assert got == nlparse.link(read, 0, len(read))
    assert (got.stp, got.forward_delay) == (1, 1500)
