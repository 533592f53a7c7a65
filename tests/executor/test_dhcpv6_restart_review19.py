"""Review hrev19: a DHCPv6 release reported by a dnsmasq that was restarted since the lease.

For a DHCPv6 lease dnsmasq passes the client's DUID where the MAC goes, and the MAC in
``DNSMASQ_MAC`` "when it knows it" (netledger/domain_cli.py ``dhcp_event``). Its lease file keeps
no MAC for an IPv6 lease, so a dnsmasq started again (a drift repair after it died, a changed
command line, a host reboot) reads the lease back without one; the client's release then runs
the script with the DUID as the MAC and no ``DNSMASQ_MAC``: ``invalid_mac``, no release in the
log, and a deallocated address stays held until the reaper. Fixed: ``dhcp-event`` takes the MAC
of the executor's host entry giving the address (executor/hostsdir.py ``mac_of``).

Real namespaces, dnsmasq, nats-server and command service; the DHCPv6 client of
test_ipv6_netns.py (root; every namespace and dnsmasq is removed).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection

from .dhcp_helpers import DhcpLab, dhcp_lab, read_events, wait_for_event
from .test_executor_dhcp_netns import alive, wait_gone
from .test_ipv6_netns import Dhcp6Client, TwoHosts, guest

pytestmark = pytest.mark.netns


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


async def test_a_dhcpv6_release_after_dnsmasq_restarted_frees_the_held_address(  # fixed
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    two = TwoHosts(world, conn, nats_url, 74)
    ha, c = two.ha, two.c
    net, ia, ib = await two.create(label="v6r", cidr_v6="fd00:74::/64", ipv6_mode="dhcpv6",
                                   vni_start=7400)  # fmt: skip
    bridge = net["bridge"]
    two.apply("ha", "ha")
    va = guest(world, ha, bridge, "va", ia["mac"], dad=False)
    client = Dhcp6Client(va, ia["mac"])
    assert await asyncio.to_thread(client.lease) == ia["address_v6"]
    subject = f"netledger.evt.network.{net['id']}"
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == ia["address"]
    )
    dealloc = await c.deallocate_fixed_ip("vm-a", network_id=net["id"])
    assert dealloc["deallocated"][0]["freed"] is False  # held until its release

    # dnsmasq dies; the executor's next pass starts it again (its lease file kept).
    pid = world.pid("ha", bridge)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    await asyncio.to_thread(two.apply, "ha")
    assert alive(world.pid("ha", bridge)) and world.pid("ha", bridge) != pid

    await asyncio.to_thread(client.release)
    # dnsmasq runs its script for one event after the other: once a later lease (vm-b's, its
    # stand-in on this bridge too) is in the log, the release's is too.
    vb = guest(world, ha, bridge, "vb", ib["mac"], dad=False)
    assert await asyncio.to_thread(Dhcp6Client(vb, ib["mac"]).lease) == ib["address_v6"]
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == ib["address"]
    )
    log = await asyncio.to_thread(Path(world.dhcp_dir("ha"), f"{bridge}.log").read_text)
    released = [
        e
        for e in await read_events(conn, subject)
        if e.TYPE == "FixedIpReleased" and e.address == ia["address"]
    ]
    assert released and released[0].freed, log
