"""Review hrev19: the DHCP lease path end to end, on real namespaces, dnsmasq and udhcpc.

Real namespace, dnsmasq, busybox udhcpc, nats-server and command service (root; every namespace
and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, wait_for_event

pytestmark = pytest.mark.netns


async def text(path: Path) -> str:
    """A file's text (dnsmasq's log), read off the event loop."""
    return await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")


@pytest.fixture
def dhcp_world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


async def test_an_address_the_reaper_freed_is_served_to_its_next_instance(
    dhcp_world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """An instance deallocated while leased (its VM gone without a DHCPRELEASE: the usual case)
    holds its address until the reaper frees it, ``--release-timeout`` (600 s) after the
    deallocation. dnsmasq's lease of it runs on for the lease time (86400 s by default). The
    address is the lowest free one, so the next allocation gets it, with a new MAC: the hosts
    file now names the new MAC, and dnsmasq must hand the address out to it."""
    world = dhcp_world
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="rp", cidr="10.64.0.0/24", mode="flat_dhcp", bridge="brrp", network_host="h"
    )
    nid, bridge = net["id"], net["bridge"]
    a = await c.allocate_fixed_ip("vm-a", network_id=nid, host="h")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    va = world.guest(h, bridge, "va", a["mac"])
    got = await asyncio.to_thread(world.dhcp, va)  # -q: quits holding its lease, no release
    assert got is not None and got["ip"] == a["address"]
    subject = f"netledger.evt.network.{nid}"
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == a["address"]
    )
    dealloc = await c.deallocate_fixed_ip("vm-a")
    assert dealloc["deallocated"][0]["freed"] is False  # held until its release

    # No release comes (the VM is gone): the reaper frees it once the timeout has passed.
    freed = await service.reap(now=time.time() + service.release_timeout + 1)
    assert freed == [a["address"]]

    b = await c.allocate_fixed_ip("vm-b", network_id=nid, host="h")
    assert b["address"] == a["address"] and b["mac"] != a["mac"]
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.hosts_file("h", bridge) == f"{b['mac']},vm-b,{b['address']}\n"
    vb = world.guest(h, bridge, "vb", b["mac"])
    got_b = await asyncio.to_thread(world.dhcp, vb)
    log = Path(world.dhcp_dir("h"), f"{bridge}.log")
    assert got_b is not None, await text(log)
    assert got_b["ip"] == b["address"]


async def test_a_lease_made_while_the_service_was_down_reaches_the_log(  # fixed: --script-on-renewal
    dhcp_world: DhcpLab, conn: Connection, nats_url: str
) -> None:
    """dnsmasq runs the lease script once per new lease (``add``); ``dhcp-event`` asks the
    command service for 15 s, then gives up (exit 1, dnsmasq moves on). A lease made while no
    command service runs (a restart, an upgrade) never reaches the log: not when the service is
    back, not when the client renews it (dnsmasq runs no script for a renewal). The instance's
    deallocation then frees its address at once though its lease runs on, and the next
    instance on that address gets no DHCP (the test above)."""
    world = dhcp_world
    h = world.ns("h")
    svc = CommandService(conn)
    await svc.start()
    c = Client(conn)
    try:
        [net] = await c.create_networks(
            label="dn", cidr="10.65.0.0/24", mode="flat_dhcp", bridge="brdn", network_host="h"
        )
        nid, bridge = net["id"], net["bridge"]
        a = await c.allocate_fixed_ip("vm-a", network_id=nid, host="h")
        b = await c.allocate_fixed_ip("vm-b", network_id=nid, host="h")
        await asyncio.to_thread(world.run, nats_url, "h", h)
    finally:
        await svc.close()
    # The service is down while the instance boots and takes its lease; its DHCP client runs
    # on, holding the lease.
    va = world.guest(h, bridge, "va", a["mac"])
    client = subprocess.Popen(
        ["ip", "netns", "exec", va, "busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T",
         "1", "-s", world.script],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _lease_while_down(world, conn, c, h, bridge, nid, a, b, va, client)
    finally:
        client.terminate()
        client.wait()


async def _lease_while_down(
    world: DhcpLab, conn: Connection, c: Client, h: str, bridge: str, nid: str,
    a: dict[str, Any], b: dict[str, Any], va: str, client: subprocess.Popen[bytes],
) -> None:  # fmt: skip
    log = Path(world.dhcp_dir("h"), f"{bridge}.log")
    deadline = time.monotonic() + DEADLINE
    while "script process exited with status 1" not in await text(log):
        assert client.poll() is None, "udhcpc gave up"
        assert time.monotonic() < deadline, await text(log)
        await asyncio.sleep(0.2)
    svc = CommandService(conn)
    await svc.start()
    try:
        # The service is back; the client renews its lease (SIGUSR1), dnsmasq acks it: the
        # client's event script records the lease again (dnsmasq logs no DHCPACK: --quiet-dhcp).
        acked = Path(world.state_dir, f"eth0-{va}.json")
        while not await asyncio.to_thread(acked.exists):  # (bound: written once, at first)
            assert time.monotonic() < deadline, "udhcpc recorded no lease"
            await asyncio.sleep(0.2)
        await asyncio.to_thread(acked.unlink)
        os.kill(client.pid, signal.SIGUSR1)
        while not await asyncio.to_thread(acked.exists):
            assert client.poll() is None, "udhcpc gave up"
            assert time.monotonic() < deadline, await text(log)
            await asyncio.sleep(0.2)
        # dnsmasq runs its script for one event after the other: once a later lease (another
        # instance's, already in the hosts file: no reload) is in the log, whatever the renewal
        # made the script send is too.
        vb = world.guest(h, bridge, "vb", b["mac"])
        got = await asyncio.to_thread(world.dhcp, vb)
        assert got is not None and got["ip"] == b["address"]
        await wait_for_event(
            conn,
            f"netledger.evt.network.{nid}",
            lambda e: e.TYPE == "FixedIpLeased" and e.address == b["address"],
        )
        dealloc = await c.deallocate_fixed_ip("vm-a")
        assert dealloc["deallocated"][0]["freed"] is False, (
            "freed at once although dnsmasq holds its lease: " + await text(log)
        )
    finally:
        await svc.close()


async def test_a_hosts_reload_runs_no_lease_script_for_the_unchanged_leases(  # fixed: hostsdir
    dhcp_world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """Every reload of the hosts file (SIGHUP, at each allocation and deallocation on the
    bridge) made dnsmasq run the lease script (``old``) for every lease of the bridge: N
    netledger processes and service requests, one after the other, ahead of the next real
    lease. An entry added now goes to dnsmasq's host directory, which it reads unasked."""
    world = dhcp_world
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="sh", cidr="10.66.0.0/24", mode="flat_dhcp", bridge="brsh", network_host="h"
    )
    nid, bridge = net["id"], net["bridge"]
    subject = f"netledger.evt.network.{nid}"
    leased = []
    for i in range(3):
        ip = await c.allocate_fixed_ip(f"vm-{i}", network_id=nid, host="h")
        await asyncio.to_thread(world.run, nats_url, "h", h)
        g = world.guest(h, bridge, f"g{i}", ip["mac"])
        got = await asyncio.to_thread(world.dhcp, g)
        assert got is not None and got["ip"] == ip["address"]
        await wait_for_event(
            conn, subject, lambda e, ip=ip: e.TYPE == "FixedIpLeased" and e.address == ip["address"]
        )
        leased.append(ip)
    log = Path(world.dhcp_dir("h"), f"{bridge}.log")
    before = len((await text(log)).splitlines())

    # One more instance: its hosts line, a SIGHUP; then its lease (the script runs one event
    # after the other: once its lease is in the log, whatever the reload made it send is too).
    x = await c.allocate_fixed_ip("vm-x", network_id=nid, host="h")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    gx = world.guest(h, bridge, "gx", x["mac"])
    got = await asyncio.to_thread(world.dhcp, gx)
    assert got is not None and got["ip"] == x["address"]
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == x["address"]
    )
    runs = [
        line
        for line in (await text(log)).splitlines()[before:]
        if "dnsmasq-script" in line and any(f"{ip['address']} " in line for ip in leased)
    ]
    assert runs == [], "\n".join(runs)
