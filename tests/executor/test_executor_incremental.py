"""The kernel path at the kernel's speed, and still right: real namespaces.

* differential: a running executor applying random histories with incremental passes only (no
  periodic sweep) leaves the kernel exactly as a full pass wants it — after every burst, a full
  diff of a fresh dump against the whole desired state finds nothing to do;
* a change made behind its back (a link deleted, an address removed, a foreign link added) is
  seen by notification and repaired — or left alone — as the sweep would, without a sweep;
* a notification overrun makes the cache read the kernel again and end equal to it.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from netledger.events.errors import NetledgerError
from netledger.executor.cache import KernelCache
from netledger.executor.daemon import Executor
from netledger.executor.desired import HostConfig, build
from netledger.executor.diff import diff
from netledger.executor.incremental import Scope, narrow
from netledger.executor.kernel import Kernel
from netledger.executor.model import HostActual
from netledger.executor.options import Options
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import Lab, sh

pytestmark = pytest.mark.netns

HOST = "hi"


async def settled(ex: Executor, conn: Connection, timeout: float = 30.0) -> None:
    """The executor folded the whole log and its last pass started after that."""
    assert ex.follower is not None
    await ex.view.sync()  # everything of its share folded (and the share itself current)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not ex._dirty.is_set() and not ex._in_pass:
            await asyncio.sleep(0.15)  # a pass triggered by the last event may just be starting
            if not ex._dirty.is_set() and not ex._in_pass:
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the executor did not settle")


def full_diff(ex: Executor, ns: str) -> tuple[Any, ...]:
    with Kernel(ns) as k:
        actual = k.read()
    return diff(build(ex.state, ex.book, ex.cfg), actual).ops


async def running(conn: Connection, ns: str, **opts: Any) -> tuple[Executor, asyncio.Task[None]]:
    cfg = HostConfig(
        host=HOST, physical_interface="eth1", public_interface="pub0", dhcp=False,
        vtep_address="192.0.2.1",
    )  # fmt: skip
    ex = Executor(conn, cfg, Options(netns=ns, interval=3600.0, sightings_poll=None, **opts))
    await ex.start()
    return ex, asyncio.create_task(ex.run_forever())


async def stop(ex: Executor, task: asyncio.Task[None]) -> None:
    ex.stop()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 60)
    await asyncio.wait_for(ex.close(), 30)


@pytest.mark.parametrize("seed", [1, 2])
async def test_incremental_passes_leave_what_a_full_pass_wants(
    world: Lab, conn: Connection, service: CommandService, seed: int
) -> None:
    rnd = random.Random(seed)
    ns, other = world.ns(f"inc{seed}"), world.ns(f"ino{seed}")
    world.wire(ns, "eth1", other, "eth1")
    sh("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "eth1")
    world.wire(ns, "pub0", other, "pub1")
    c = Client(conn)
    nets: list[str] = []
    for i, (mode, extra) in enumerate(
        [("vxlan", {"vni_start": 700}), ("vxlan", {"vni_start": 710, "network_host": "elsewhere"}),
         ("flat_dhcp", {"bridge": "brfi"}), ("vxlan", {"vni_start": 720, "multi_host": True})]
    ):  # fmt: skip
        r = await c.request(
            "network.create",
            {"label": f"n{i}", "cidr": f"10.{70 + i}.0.0/24", "mode": mode, **extra},
        )
        nets += [n["id"] for n in r["networks"]]
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/27"})
    ex, task = await running(conn, ns)
    held: list[tuple[str, str]] = []
    floating: list[str] = []
    try:
        for burst in range(12):
            for _ in range(rnd.randint(1, 4)):
                kind = rnd.choice(["alloc", "alloc", "alloc", "dealloc", "float", "unfloat"])
                try:
                    if kind == "alloc":
                        inst = f"i{seed}-{burst}-{rnd.randrange(1000)}"
                        host = rnd.choice([HOST, HOST, "other"])
                        a = await c.allocate_fixed_ip(inst, network_id=rnd.choice(nets), host=host)
                        held.append((inst, a["address"]))
                    elif kind == "dealloc" and held:
                        inst, _ = held.pop(rnd.randrange(len(held)))
                        await c.request("fixed_ip.deallocate", {"instance": inst})
                    elif kind == "float" and held:
                        f = await c.request("floating_ip.allocate", {"project": "p1"})
                        floating.append(f["address"])
                        await c.request(
                            "floating_ip.associate",
                            {"address": f["address"], "project": "p1",
                             "fixed_address": rnd.choice(held)[1]},
                        )  # fmt: skip
                    elif kind == "unfloat" and floating:
                        await c.request(
                            "floating_ip.disassociate",
                            {"address": floating.pop(), "project": "p1"},
                        )
                except NetledgerError:
                    pass
            await settled(ex, conn)
            ops = await asyncio.to_thread(full_diff, ex, ns)
            assert ops == (), f"burst {burst}: a full pass would still do {ops}"
        assert ex.passes > 5
    finally:
        await stop(ex, task)


async def test_drift_is_seen_by_notification_and_repaired(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    ns, other = world.ns("drift"), world.ns("drifto")
    world.wire(ns, "eth1", other, "eth1")
    c = Client(conn)
    [net] = await c.create_networks(
        label="d", cidr="10.79.0.0/24", mode="vxlan", vni_start=790, network_host=HOST
    )
    await c.allocate_fixed_ip("vm", network_id=net["id"], host=HOST)
    ex, task = await running(conn, ns)
    try:
        await settled(ex, conn)
        assert sh("ip", "-n", ns, "link", "show", "vx790", check=False).returncode == 0
        sweeps = ex.cache.resyncs if ex.cache else 0

        async def until(what: str, pred: Any) -> None:
            deadline = time.monotonic() + 20
            while not await asyncio.to_thread(pred):
                assert time.monotonic() < deadline, what
                await asyncio.sleep(0.05)

        sh("ip", "-n", ns, "link", "del", "vx790")
        await until("the VXLAN link re-made", lambda: sh("ip", "-n", ns, "link", "show", "vx790",
                                                          check=False).returncode == 0)  # fmt: skip
        gw = "10.79.0.1/24"
        sh("ip", "-n", ns, "addr", "del", gw, "dev", net["bridge"])
        await until("the gateway re-added", lambda: gw in sh("ip", "-n", ns, "addr", "show",
                                                             net["bridge"]).stdout)  # fmt: skip
        # A link that is not ours, even in our bridge's neighbourhood: left alone.
        sh("ip", "-n", ns, "link", "add", "foreign0", "type", "bridge")
        await asyncio.sleep(0.5)
        await settled(ex, conn)
        assert sh("ip", "-n", ns, "link", "show", "foreign0", check=False).returncode == 0
        # Repaired by notification, not by a sweep: the cache never dumped again.
        assert ex.cache is not None and ex.cache.resyncs == sweeps
        assert await asyncio.to_thread(full_diff, ex, ns) == ()
    finally:
        await stop(ex, task)


async def test_links_not_ours_call_for_no_pass_unless_the_host_names_them(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    """A hypervisor's taps come and go on a compute host, plugged into our bridges: each change
    of a link not ours made the executor diff the whole host (~30 ms of CPU at 300 networks, a
    pass per tap). They change nothing it makes: no pass. A link not ours that the host does
    look at (its public interface appearing, a name a network wants) still calls for one, and
    damage to our own links is repaired as before."""
    ns, other = world.ns("taps"), world.ns("tapso")
    world.wire(ns, "eth1", other, "eth1")
    c = Client(conn)
    [net] = await c.create_networks(
        label="t", cidr="10.76.0.0/24", mode="vxlan", vni_start=760, network_host=HOST
    )
    await c.allocate_fixed_ip("vm", network_id=net["id"], host=HOST)
    ex, task = await running(conn, ns)
    try:
        await settled(ex, conn)
        passes = ex.passes
        for k in range(5):  # taps: made, plugged into our bridge, up; one deleted
            sh("ip", "-n", ns, "link", "add", f"tap{k}", "type", "veth", "peer", "name", f"tp{k}")
            sh("ip", "-n", ns, "link", "set", f"tap{k}", "master", net["bridge"], "up")
        sh("ip", "-n", ns, "link", "del", "tap0")
        await asyncio.sleep(0.5)
        await settled(ex, conn)
        assert ex.passes == passes, "no pass for links that nothing of the host names"
        # The host's public interface appears (a link not ours taking a name it looks at).
        sh("ip", "-n", ns, "link", "set", "tp1", "name", "pub0")
        deadline = time.monotonic() + 20
        while ex.passes == passes:
            assert time.monotonic() < deadline, "no pass for the public interface appearing"
            await asyncio.sleep(0.05)
        await settled(ex, conn)
        passes = ex.passes
        sh("ip", "-n", ns, "link", "del", "vx760")  # ours, damaged: repaired by notification
        while sh("ip", "-n", ns, "link", "show", "vx760", check=False).returncode != 0:
            assert time.monotonic() < deadline + 20, "the VXLAN link was not re-made"
            await asyncio.sleep(0.05)
        assert ex.passes > passes
        await settled(ex, conn)
        assert await asyncio.to_thread(full_diff, ex, ns) == ()
    finally:
        await stop(ex, task)


def test_the_names_of_the_fragments_follow_incremental_updates() -> None:
    """``Fragments.names`` (what a change of a link not ours must touch to matter) stays what
    the fragments name after updates, as a recount would give it."""
    from collections import Counter

    from netledger.executor.fragments import Fragment
    from netledger.executor.incremental import Fragments, Watched, link_names
    from netledger.executor.model import AddrSpec, EnslaveSpec, LinkSpec

    def frag(nid: str, vni: int, parent: str = "eth1") -> Fragment:
        return Fragment(
            nid,
            LinkSpec(f"br{nid}", "bridge", nid),
            LinkSpec(f"vx{vni}", "vxlan", nid, master=f"br{nid}", vni=vni, parent=parent),
            floating_addresses=(AddrSpec("pub0", f"198.51.100.{vni % 200}/32", network_id=nid),),
        )

    frags = Fragments({"1": frag("1", 1), "2": frag("2", 2)})
    frags.update({"2": None, "3": frag("3", 3, parent="eth9"), "1": frag("1", 11)})
    flat = Fragment("4", LinkSpec("brf", "bridge", "4"), enslaved=EnslaveSpec("eth7", "brf", "4"))
    frags.update({"4": flat})
    recount = Counter(n for f in frags.frags.values() for n in link_names(f))
    assert frags.names == recount
    assert {"br1", "vx11", "br3", "vx3", "eth9", "eth1", "pub0", "brf", "eth7"} == set(recount)
    watched = Watched(
        HostConfig(host=HOST, physical_interface="eth0", public_interface="pub9"), frags
    )
    assert "eth0" in watched and "pub9" in watched and "eth9" in watched
    assert "vx2" not in watched and "br2" not in watched and "tap1" not in watched


async def test_ipv6_followed_by_notification_and_incremental_passes(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    """IPv6 through the running executor's path (cache, incremental passes): the v6 gateway
    removed by hand comes back by notification, a kernel-made link-local on one of our links is
    ignored, and a full pass afterwards finds nothing to do."""
    ns, other = world.ns("v6"), world.ns("v6o")
    world.wire(ns, "eth1", other, "eth1")
    c = Client(conn)
    [net] = await c.create_networks(
        label="d6", cidr="10.78.0.0/24", cidr_v6="fd00:78::/64", mode="vxlan", vni_start=780,
        network_host=HOST,
    )  # fmt: skip
    [only6] = await c.create_networks(
        label="o6", cidr_v6="fd00:77::/64", mode="vxlan", vni_start=770, network_host=HOST
    )
    await c.allocate_fixed_ip("vm", network_id=net["id"], host=HOST)
    ex, task = await running(conn, ns)
    try:
        await settled(ex, conn)
        br = net["bridge"]

        def v6(dev: str) -> str:
            return sh("ip", "-n", ns, "-6", "addr", "show", "dev", dev).stdout

        assert "fd00:78::1/64" in v6(br) and "fe80::1/64" in v6(br)
        sweeps = ex.cache.resyncs if ex.cache else 0
        # joined later: an incremental pass
        await c.allocate_fixed_ip("vm6", network_id=only6["id"], host=HOST)
        await settled(ex, conn)
        assert "fd00:77::1/64" in v6(only6["bridge"])
        assert "10.78" not in sh("ip", "-n", ns, "addr", "show", only6["bridge"]).stdout

        sh("ip", "-n", ns, "addr", "del", "fd00:78::1/64", "dev", br)
        deadline = time.monotonic() + 20
        while "fd00:78::1/64" not in await asyncio.to_thread(v6, br):
            assert time.monotonic() < deadline, "the IPv6 gateway was not re-added"
            await asyncio.sleep(0.05)
        # an address the kernel would make for itself: not ours to remove, nor to want
        sh("ip", "-n", ns, "addr", "add", "fe80::abcd/64", "dev", br)
        await asyncio.sleep(0.3)
        await settled(ex, conn)
        assert "fe80::abcd/64" in v6(br)
        assert ex.cache is not None and ex.cache.resyncs == sweeps
        assert await asyncio.to_thread(full_diff, ex, ns) == ()
        fwd = sh("ip", "netns", "exec", ns, "sysctl", "-n", "net.ipv6.conf.all.forwarding")
        assert fwd.stdout.strip() == "1"
    finally:
        await stop(ex, task)


def test_an_overrun_makes_the_cache_read_the_kernel_again(world: Lab) -> None:
    ns = world.ns("ovr")
    cache = KernelCache(ns, rcvbuf=4096)  # a tiny buffer: a burst overruns it
    cache.start()
    try:
        lines = [f"link add brov{i} type bridge" for i in range(300)]
        # The reader held up (as a busy host would) while the kernel sends a burst.
        with cache._lock:
            sh("ip", "-n", ns, "-batch", "-", input="\n".join(lines) + "\n")
        deadline = time.monotonic() + 20
        # the overrun is counted before the dump that follows it: wait for both
        while (cache.overruns == 0 or cache.resyncs < 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.overruns >= 1 and cache.resyncs >= 2
        assert cache.settle()
        time.sleep(0.3)
        assert cache.settle()
        with Kernel(ns) as k:
            fresh = {link.name for link in k.read_links()}
        links = cache.state().links
        assert {link.name for link in links} == fresh
        assert len(fresh) >= 301
    finally:
        cache.close()


async def test_a_once_pass_applies_the_log_as_of_its_sync_and_stores_its_report(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    """``executor run --once``: the share is folded, then no longer read — neither what others
    append during the pass nor the pass's own report, whose acks prove it stored. The kernel
    has the network; the log has the whole report."""
    from netledger.events.ids import host_subject
    from netledger.journal.follow import iter_subject
    from netledger.journal.stream import last_seq

    ns = world.ns("once")
    c = Client(conn)
    r = await c.request(
        "network.create", {"label": "o", "cidr": "10.90.0.0/24", "mode": "vxlan", "vni_start": 790}
    )
    net = r["networks"][0]
    await c.allocate_fixed_ip("o1", network_id=net["id"], host=HOST)
    cfg = HostConfig(host=HOST, dhcp=False, vtep_address="192.0.2.1")
    ex = Executor(conn, cfg, Options(netns=ns, sightings_poll=None, live_kernel=False))
    ex.read_back_own = False  # as run_executor sets it for --once
    try:
        await ex.start()
        before = await last_seq(conn)
        report = await ex.run_once()
        assert ex.follower is not None
        read = ex.follower.handled
        assert report.changes > 0 and not report.failures
        assert report.applied_seq == before
        # Others append meanwhile: not read any more.
        await c.allocate_fixed_ip("o2", network_id=net["id"], host=HOST)
        await asyncio.sleep(0.3)
        assert ex.follower.handled == read, "nothing is read after the sync"
    finally:
        await ex.close()
    assert sh("ip", "-n", ns, "link", "show", net["bridge"]).returncode == 0
    end = await last_seq(conn)
    own = [m async for m in iter_subject(conn, host_subject(HOST), before + 1, end)]
    assert len(own) == report.events > 0, "every event of the pass's report is in the log"


def test_a_scoped_read_of_the_cache_is_the_full_read_narrowed(world: Lab) -> None:
    """The cache finds a scope's links through its indexes (by name, by the network in the
    alias, addresses and flood entries by link): whatever the host went through — links
    renamed, re-marked, deleted, addresses and flood entries added and removed — a scoped read
    equals the full read cut down by :func:`narrow`, the rule it replaces."""
    ns = world.ns("scp")
    cache = KernelCache(ns)
    cache.start()
    rng = random.Random(7)
    nets = [f"n{i}" for i in range(6)]
    cmds = ["link add eth1 type bridge", "link add pub0 type bridge", "link add fgn0 type bridge"]
    for i, n in enumerate(nets):
        cmds += [
            f"link add br{i} type bridge",
            f"link set br{i} alias netledger:{n}",
            f"link add vx{i} type vxlan id {100 + i} dstport 4789 local 192.0.2.1",
            f"link set vx{i} alias netledger:{n} master br{i}",
            f"addr add 10.{i}.0.1/24 dev br{i}",
        ]
    cmds.append("addr add 10.99.0.1/24 dev fgn0")
    steps = [
        ["link set br1 name brx1", "link set vx2 alias netledger:n3"],
        ["link del vx4", "addr del 10.0.0.1/24 dev br0", "addr add 10.0.1.1/24 dev br0"],
        ["link set fgn0 alias netledger:n5", "link set br5 alias something-else"],
        ["link del br3", "link add br3 type bridge", "link set br3 alias netledger:n3"],
    ]
    try:
        sh("ip", "-n", ns, "-batch", "-", input="\n".join(cmds) + "\n")
        for i in (0, 1, 2):
            sh("bridge", "-n", ns, "fdb", "append", "00:00:00:00:00:00", "dev", f"vx{i}",
               "dst", f"192.0.2.{10 + i}")  # fmt: skip
        for step in [[], *steps]:
            if step:
                sh("ip", "-n", ns, "-batch", "-", input="\n".join(step) + "\n")
            time.sleep(0.1)
            assert cache.settle()
            full = cache.state()
            actual = HostActual(
                links=tuple(full.links), addresses=tuple(full.addresses), fdb=tuple(full.fdb)
            )
            names = [link.name for link in full.links] + ["gone0", "br1"]
            cidrs = [a.key for a in full.addresses] + [("fgn0", "10.98.0.1/24")]
            for _ in range(25):
                scope = Scope(
                    networks=frozenset(rng.sample(nets, rng.randint(0, 3))),
                    links=frozenset(rng.sample(names, rng.randint(0, 4))),
                    addresses=frozenset(rng.sample(cidrs, rng.randint(0, 2))),
                    support=frozenset(rng.sample(["eth1", "pub0", "nothere"], rng.randint(0, 2))),
                )
                part = cache.state(scope)
                want = narrow(actual, scope)
                assert tuple(part.links) == tuple(sorted(want.links)), scope
                assert tuple(part.addresses) == tuple(sorted(want.addresses)), scope
                assert tuple(part.fdb) == tuple(sorted(set(want.fdb))), scope
                assert part.by_name == full.by_name
    finally:
        cache.close()
