"""Review hrev9: a dnsmasq restarted for a changed command line forgets its leases.

An address deallocated while leased is *held* until dnsmasq reports its release (the lease
script's ``del``: docs/executor.md "DHCP"). When the dnsmasq's command line changes (here the
lease time; also a DNS server, or a flat network joining a shared bridge, which changes its
ranges and ``--dhcp-lease-max``), the executor stops and starts it (``StopDhcp`` "replaced",
executor/dhcp.py ``plan``) — and ``Dnsmasq._stop`` deletes the bridge's ``.leases`` file with
the others, as for a bridge no longer served. The new dnsmasq knows no lease: the client's
DHCPRELEASE is for an unknown lease, no ``del`` is run, the release never reaches the log, and
the held address waits for the reaper (what holding it was meant to avoid).

Real namespace, dnsmasq, busybox udhcpc, nats-server and command service (root; every namespace
and dnsmasq is removed).
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

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, wait_for_event
from .test_executor_lab import addresses

pytestmark = pytest.mark.netns


@pytest.fixture
def dhcp_world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


async def test_a_held_address_is_released_after_its_dnsmasq_was_replaced(
    dhcp_world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    world = dhcp_world
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="rl", cidr="10.63.0.0/24", mode="flat_dhcp", bridge="brrl", network_host="h"
    )
    nid, bridge = net["id"], net["bridge"]
    a = await c.allocate_fixed_ip("vm-a", network_id=nid, host="h")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    va = world.guest(h, bridge, "va", a["mac"])
    # The instance's DHCP client runs on (holding its lease) across what follows.
    result = Path(world.state_dir, f"eth0-{va}.json")
    client = subprocess.Popen(
        ["ip", "netns", "exec", va, "busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T",
         "1", "-s", world.script],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _released_after_replacement(
            world, conn, c, nats_url, h, a, nid, bridge, va, result, client
        )
    finally:
        client.terminate()
        client.wait()


async def _released_after_replacement(
    world: DhcpLab, conn: Connection, c: Client, nats_url: str, h: str, a: dict[str, Any], nid: str,
    bridge: str, va: str, result: Path, client: subprocess.Popen[bytes],
) -> None:  # fmt: skip
    deadline = time.monotonic() + DEADLINE
    while not await asyncio.to_thread(result.exists):
        assert client.poll() is None, "udhcpc gave up"
        assert time.monotonic() < deadline, "udhcpc got no lease"
        await asyncio.sleep(0.05)
    subject = f"netledger.evt.network.{nid}"
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == a["address"]
    )
    pid = world.pid("h", bridge)
    dealloc = await c.deallocate_fixed_ip("vm-a")
    assert dealloc["deallocated"][0]["freed"] is False  # held until its release

    # The operator changes the lease time: dnsmasq's command line changes, it is replaced.
    await asyncio.to_thread(world.run, nats_url, "h", h, "--dhcp-lease-time", "7200")
    assert world.pid("h", bridge) not in (None, pid), "dnsmasq was not replaced"
    assert f"{a['mac']},vm-a,{a['address']}" in world.hosts_file("h", bridge)

    os.kill(client.pid, signal.SIGUSR2)  # DHCPRELEASE of the lease it holds
    deadline = time.monotonic() + DEADLINE
    while addresses(va, "eth0"):  # deconfigured once the release is sent
        assert time.monotonic() < deadline, "udhcpc did not release"
        await asyncio.sleep(0.05)
    freed = await wait_for_event(
        conn,
        subject,
        lambda e: e.TYPE == "FixedIpReleased" and e.address == a["address"] and e.freed,
    )
    assert freed.instance == "vm-a"
