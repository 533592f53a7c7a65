"""The executor end to end on real network namespaces: two hosts, VXLAN, a floating IP.

Everything goes through the command service (the ``service`` fixture) and ``netledger executor
run`` processes; the test only wires the underlay, the outside world and the instance stand-ins
(as a hypervisor would).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import pytest
from nats.js.api import ConsumerConfig

from netledger.events.codec import decode
from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import Lab, addresses, flood, links, nat_table, ping, sh

pytestmark = pytest.mark.netns


async def host_events(conn: Connection, host: str) -> list[Any]:
    """Every event the host's executor wrote (netledger.evt.host.<host> and its announcements
    on netledger.evt.announce.<host>), in order."""
    return [env.event for env in await host_envelopes(conn, host)]


async def host_envelopes(conn: Connection, host: str) -> list[Any]:
    """The envelopes of :func:`host_events`, in order."""
    sub = await conn.js.subscribe(
        "",
        ordered_consumer=True,
        stream=conn.stream,
        config=ConsumerConfig(
            filter_subjects=[f"netledger.evt.host.{host}", f"netledger.evt.announce.{host}"]
        ),
    )
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            out.append(decode(msg.data))
    finally:
        await sub.unsubscribe()
    return out


def types(events: list[Any]) -> list[str]:
    return [e.TYPE for e in events]


async def run(lab_: Lab, url: str, host: str, ns: str, *extra: str) -> None:
    await asyncio.to_thread(lab_.executor, url, host, ns, *extra)


async def test_two_hosts_vxlan_ping_and_floating_ip(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    ha, hb, out = world.ns("ha"), world.ns("hb"), world.ns("out")
    world.wire(ha, "eth0", hb, "eth0", "192.168.50.1/24", "192.168.50.2/24")
    world.wire(ha, "pub0", out, "eth0", "198.51.100.1/24", "198.51.100.100/24")
    a_args = ("--physical-interface", "eth0", "--public-interface", "pub0")
    b_args = ("--physical-interface", "eth0")

    c = Client(conn)
    [net] = await c.create_networks(
        label="web",
        cidr="10.20.0.0/24",
        mode="vxlan",
        vni_start=4242,
        network_host="ha",
        project="p1",
    )
    bridge = net["bridge"]
    ia = await c.allocate_fixed_ip("vm-a", project="p1", host="ha")
    ib = await c.allocate_fixed_ip("vm-b", project="p1", host="hb")

    # A first (B not announced yet), then B (floods to A), then A again (learns B's VTEP).
    await run(world, nats_url, "ha", ha, *a_args)
    await run(world, nats_url, "hb", hb, *b_args)
    await run(world, nats_url, "ha", ha, *a_args)

    la, lb = links(ha), links(hb)
    for ls in (la, lb):
        assert ls[bridge]["ifalias"] == f"netledger:{net['id']}"
        assert ls["vx4242"]["master"] == bridge
        assert ls["vx4242"]["linkinfo"]["info_data"]["id"] == 4242
        assert ls[bridge]["linkinfo"]["info_data"]["stp_state"] == 0
        assert ls[bridge]["linkinfo"]["info_data"]["forward_delay"] == 0
    assert addresses(ha, bridge) == ["10.20.0.1/24"]
    assert addresses(hb, bridge) == []  # compute-only host: no address on its bridge
    assert flood(ha, "vx4242") == {"192.168.50.2"}
    assert flood(hb, "vx4242") == {"192.168.50.1"}

    va = world.instance(ha, bridge, "va", f"{ia['address']}/24", "10.20.0.1", ia["mac"])
    vb = world.instance(hb, bridge, "vb", f"{ib['address']}/24", "10.20.0.1", ib["mac"])
    assert ping(va, ib["address"]), "instances on two hosts cannot reach each other over VXLAN"
    assert ping(vb, "10.20.0.1"), "the instance on the compute host cannot reach the gateway"
    assert ping(va, "198.51.100.100"), "no SNAT of the fixed range to the outside"

    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.64/28"})
    fip = (await c.request("floating_ip.allocate", {"project": "p1", "pool": "pub"}))["address"]
    await c.request(
        "floating_ip.associate", {"address": fip, "fixed_address": ib["address"], "project": "p1"}
    )
    await run(world, nats_url, "ha", ha, *a_args)
    assert f"{fip}/32" in addresses(ha, "pub0")
    assert nat_table(ha)["fip_dnat"] == [(fip, ib["address"])]
    assert ping(out, fip), "the floating IP does not answer from outside through DNAT"
    # A restart's full pass reads the NAT table back and checks the log's record of it (and of
    # forwarding) against it: the same, so nothing is appended.
    told = types(await host_events(conn, "ha"))
    await run(world, nats_url, "ha", ha, *a_args)
    assert types(await host_events(conn, "ha")) == told

    # Disassociated: NAT mapping and /32 go; the range is still SNATed (network still served).
    await c.request("floating_ip.disassociate", {"address": fip, "project": "p1"})
    await run(world, nats_url, "ha", ha, *a_args)
    assert f"{fip}/32" not in addresses(ha, "pub0")
    assert nat_table(ha)["fip_dnat"] == []
    assert not ping(out, fip)

    # The last instance leaves host B: B's bridge and VXLAN link go, A stops flooding to B.
    await c.deallocate_fixed_ip("vm-b")
    await run(world, nats_url, "hb", hb, *b_args)
    await run(world, nats_url, "ha", ha, *a_args)
    lb = links(hb)
    assert bridge not in lb and "vx4242" not in lb
    assert any(name.startswith("tap") for name in lb), "the hypervisor's tap was touched"
    assert flood(ha, "vx4242") == set()

    # And the last one anywhere: nothing of ours is left on A (NAT table included).
    await c.deallocate_fixed_ip("vm-a")
    await run(world, nats_url, "ha", ha, *a_args)
    la = links(ha)
    assert bridge not in la and "vx4242" not in la
    assert nat_table(ha) is None
    assert addresses(ha, "pub0") == ["198.51.100.1/24"]

    evs = await host_events(conn, "hb")
    assert types(evs)[0] == "HostAnnounced"
    created = {e.name for e in evs if e.TYPE == "HostLinkCreated"}
    removed = {e.name for e in evs if e.TYPE == "HostLinkRemoved"}
    assert created == removed == {bridge, "vx4242"}
    assert [e.dst for e in evs if e.TYPE == "HostFdbAdded"] == ["192.168.50.1"]
    assert evs[-1].TYPE == "HostReconciled"
    a_types = types(await host_events(conn, "ha"))
    for t in (
        "HostNatApplied",
        "HostAddressAdded",
        "HostAddressRemoved",
        "HostNatRemoved",
        "HostForwardingSet",
        "HostFdbRemoved",
    ):
        assert t in a_types, t
    # A network leaving a host is no damage: the addresses on its bridge went with the bridge,
    # and the report says so — nothing was "found gone" by the end of the pass.
    for h in ("ha", "hb"):
        evs = await host_events(conn, h)
        assert [e for e in evs if getattr(e, "reason", None) == "found-gone"] == [], h
    went = [e for e in await host_events(conn, "ha") if getattr(e, "reason", None) == "with-link"]
    assert {e.interface for e in went if e.TYPE == "HostAddressRemoved"} == {bridge}, went


async def test_ipv6_underlay_vteps_found_by_themselves(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    """Two hosts whose underlay has IPv6 only, no --vtep-address: each executor announces the
    physical interface's global IPv6 address (not its link-local one), the VXLAN links take it
    as their local address, the flood entries point at the other host's, and instances on the
    two hosts reach each other over it."""
    ha, hb = world.ns("ha"), world.ns("hb")
    world.wire(ha, "eth0", hb, "eth0")
    for ns, addr in ((ha, "fd00:50::1/64"), (hb, "fd00:50::2/64")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0", "nodad")
    args = ("--physical-interface", "eth0")
    c = Client(conn)
    [net] = await c.create_networks(
        label="v6u", cidr="10.21.0.0/24", mode="vxlan", vni_start=4343, network_host="ha",
        project="p1",
    )  # fmt: skip
    bridge = net["bridge"]
    ia = await c.allocate_fixed_ip("vm-a", project="p1", host="ha")
    ib = await c.allocate_fixed_ip("vm-b", project="p1", host="hb")
    await run(world, nats_url, "ha", ha, *args)
    await run(world, nats_url, "hb", hb, *args)
    await run(world, nats_url, "ha", ha, *args)

    announced = {
        h: next(e for e in await host_events(conn, h) if e.TYPE == "HostAnnounced").vtep_address
        for h in ("ha", "hb")
    }
    assert announced == {"ha": "fd00:50::1", "hb": "fd00:50::2"}
    assert links(ha)["vx4343"]["linkinfo"]["info_data"]["local6"] == "fd00:50::1"
    assert links(hb)["vx4343"]["linkinfo"]["info_data"]["local6"] == "fd00:50::2"
    assert flood(ha, "vx4343") == {"fd00:50::2"}
    assert flood(hb, "vx4343") == {"fd00:50::1"}
    va = world.instance(ha, bridge, "va", f"{ia['address']}/24", "10.21.0.1", ia["mac"])
    vb = world.instance(hb, bridge, "vb", f"{ib['address']}/24", "10.21.0.1", ib["mac"])
    assert ping(va, ib["address"]), "instances on two hosts cannot reach each other over IPv6"
    assert ping(vb, "10.21.0.1"), "the compute host's instance cannot reach the gateway"


async def test_restart_after_kill_and_drift_repair(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    h = world.ns("h")
    peer = world.ns("peer")
    world.wire(h, "eth0", peer, "eth0", "192.168.60.1/24", "192.168.60.2/24")
    args = ("--physical-interface", "eth0", "--network-host")
    c = Client(conn)
    nets = await c.create_networks(
        label="n",
        cidr="10.30.0.0/22",
        mode="vxlan",
        vni_start=700,
        num_networks=4,
        network_size=256,
    )
    for i, n in enumerate(nets):
        await c.allocate_fixed_ip(f"vm{i}", network_id=n["id"], host="h")
    bridges = [n["bridge"] for n in nets]

    # Slow motion: two netlink requests per batch, a pause between batches; killed mid-apply.
    proc = world.executor(
        nats_url, "h", h, *args, "--batch-size", "2", "--pause-between-batches", "0.3", once=False
    )
    assert not isinstance(proc, type(None))
    while not any(b in links(h) for b in bridges):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        await asyncio.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = links(h)
    assert not all(f"vx{700 + i}" in partial for i in range(4)), "the apply was not interrupted"

    # Damage: a bridge deleted by hand (if it was made), a foreign link, a removed address.
    sh("ip", "-n", h, "link", "add", "brforeign", "type", "bridge")
    sh("ip", "-n", h, "link", "set", "brforeign", "alias", "someone-else")
    await run(world, nats_url, "h", h, *args)
    for i, b in enumerate(bridges):
        assert b in links(h) and f"vx{700 + i}" in links(h)
        assert addresses(h, b) == [f"10.30.{i}.1/24"]

    sh("ip", "-n", h, "link", "del", bridges[0])
    sh("ip", "-n", h, "addr", "del", "10.30.1.1/24", "dev", bridges[1])
    sh("ip", "-n", h, "link", "set", "vx702", "down")
    await run(world, nats_url, "h", h, *args)
    now = links(h)
    assert bridges[0] in now and now["vx700"]["master"] == bridges[0]
    assert addresses(h, bridges[1]) == ["10.30.1.1/24"]
    assert "UP" in now["vx702"]["flags"]
    assert now["brforeign"]["ifalias"] == "someone-else"

    evs = await host_events(conn, "h")
    repaired = [e for e in evs if getattr(e, "drift", False)]
    assert {(e.TYPE, getattr(e, "name", getattr(e, "address", None))) for e in repaired} >= {
        ("HostLinkCreated", bridges[0]),
        ("HostAddressAdded", "10.30.1.1/24"),
        ("HostAddressAdded", "10.30.0.1/24"),
    }
    assert any(e.TYPE == "HostLinkRepaired" and e.name == "vx702" for e in evs)
    # Everything of ours in the kernel is in the log (adopted after the kill if need be).
    created = {e.name for e in evs if e.TYPE == "HostLinkCreated"}
    removed = [e.name for e in evs if e.TYPE == "HostLinkRemoved"]
    assert created >= set(bridges) | {f"vx{700 + i}" for i in range(4)}
    assert "brforeign" not in created and "brforeign" not in removed
    last = [e for e in evs if e.TYPE == "HostReconciled"][-1]
    assert last.drift_repairs >= 3

    # A running daemon repairs drift by itself (periodic pass) and logs it.
    proc = world.executor(nats_url, "h", h, *args, once=False)
    n_before = len(evs)
    sh("ip", "-n", h, "link", "del", bridges[3])
    deadline = time.monotonic() + 60
    while (
        bridges[3] not in links(h)
        or "vx703" not in links(h)
        or links(h)["vx703"].get("master") != bridges[3]
    ):
        assert proc.poll() is None
        assert time.monotonic() < deadline, "the daemon did not repair the deleted bridge"
        await asyncio.sleep(0.2)
    while True:
        evs = await host_events(conn, "h")
        if any(
            e.TYPE == "HostLinkCreated" and e.name == bridges[3] and e.drift for e in evs[n_before:]
        ):
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


async def test_flat_mode_enslaves_the_physical_interface(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    h, other = world.ns("fh"), world.ns("fo")
    world.wire(h, "eth1", other, "eth1")
    c = Client(conn)
    [net] = await c.create_networks(
        label="flat", cidr="10.40.0.0/24", mode="flat_dhcp", bridge="brflat", network_host="fh"
    )
    ip = await c.allocate_fixed_ip("vm", network_id=net["id"], host="fh")
    await run(world, nats_url, "fh", h, "--physical-interface", "eth1")
    ls = links(h)
    assert ls["eth1"]["master"] == "brflat"
    assert "ifalias" not in ls["eth1"]  # not ours: enslaved, never marked or removed
    assert addresses(h, "brflat") == ["10.40.0.1/24"]
    sh("ip", "-n", other, "addr", "add", "10.40.0.200/24", "dev", "eth1")
    assert ping(other, "10.40.0.1")
    await c.deallocate_fixed_ip("vm")
    await run(world, nats_url, "fh", h, "--physical-interface", "eth1")
    ls = links(h)
    assert "brflat" not in ls and "eth1" in ls and ls["eth1"].get("master") is None
    assert ip["address"].startswith("10.40.0.")


def test_missing_namespace_is_refused_and_not_created(nats_url: str) -> None:
    name = "nlx-does-not-exist"
    from .test_executor_lab import NETLEDGER

    p = sh(
        NETLEDGER,
        "--nats",
        nats_url,
        "--json",
        "executor",
        "run",
        "--host",
        "x",
        "--netns",
        name,
        "--once",
        check=False,
    )
    assert p.returncode == 1
    assert '"netns_not_found"' in p.stdout
    assert not os.path.exists(f"/var/run/netns/{name}")
    # its error alone: no warning first about DHCP in the namespace it lacks (review h130)
    assert "DHCP is off" not in p.stderr, p.stderr


def test_without_root_it_says_so(nats_url: str) -> None:
    from .test_executor_lab import NETLEDGER

    # A non-root user: uid 65534 in a user namespace of its own. (setpriv to nobody would also
    # need every folder above the checkout to be open to nobody, which a mktemp -d is not.)
    p = sh(
        "unshare",
        "--user",
        NETLEDGER,
        "--nats",
        nats_url,
        "executor",
        "run",
        "--host",
        "x",
        "--once",
        check=False,
    )
    assert p.returncode == 1
    assert "executor_not_permitted" in p.stderr and "root" in p.stderr


def test_a_vtep_is_never_a_link_local_or_multicast_ipv6_address() -> None:
    from netledger.executor.kernel import _link_local_v6

    assert _link_local_v6("fe80::1") and _link_local_v6("::1") and _link_local_v6("ff02::1")
    assert not _link_local_v6("fd00:50::1") and not _link_local_v6("2001:db8::7")


async def test_a_first_pass_reported_in_parts_is_one_pass(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    """A full pass appends each round's events while it reads the kernel back, the rest after:
    on the log it is still one pass — one id, its events numbered 0..n-1 in stream order,
    HostReconciled last and counting every change — and what it records is the kernel."""
    h = world.ns("h")
    peer = world.ns("peer")
    world.wire(h, "eth0", peer, "eth0", "192.168.61.1/24", "192.168.61.2/24")
    c = Client(conn)
    nets = await c.create_networks(
        label="p", cidr="10.31.0.0/22", mode="vxlan", vni_start=800, num_networks=4,
        network_size=256,
    )  # fmt: skip
    for i, n in enumerate(nets):
        await c.allocate_fixed_ip(f"vm{i}", network_id=n["id"], host="h")
    await run(world, nats_url, "h", h, "--physical-interface", "eth0", "--network-host")
    envs = [e for e in await host_envelopes(conn, "h") if e.event.TYPE != "HostAnnounced"]
    [pass_id] = {e.command_id for e in envs}
    assert [e.event_id for e in envs] == [f"{pass_id}:{i}" for i in range(len(envs))]
    *changes, last = [e.event for e in envs]
    assert last.TYPE == "HostReconciled" and last.changes == len(changes)
    created = {e.name for e in changes if e.TYPE == "HostLinkCreated"}
    assert created == {n["bridge"] for n in nets} | {f"vx{800 + i}" for i in range(4)}
    assert created <= set(links(h))
    added = {e.address for e in changes if e.TYPE == "HostAddressAdded"}
    assert {f"10.31.{i}.1/24" for i in range(4)} <= added
