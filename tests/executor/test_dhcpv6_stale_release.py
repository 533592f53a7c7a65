"""A DHCPv6 lease of an address freed without its client's release (the reaper) is dropped
(``dhcp_release6``), as the IPv4 one is (``dhcp_release``, test_dhcp_lease_review19.py).

Before, only IPv4 leases were: dnsmasq kept the old client's IPv6 lease for the lease time (a
day by default) and would not hand the address to the next instance allocated it. dnsmasq's
lease file keeps no MAC for an IPv6 lease: a lease is stale when no entry gives its address,
or when its client's DUID names a MAC (DUID-LL, DUID-LLT) other than the entry's
(executor/leasefile.py ``stale_leases6``).

Real namespaces, dnsmasq, dhcp_release6, nats-server and command service; the DHCPv6 client of
test_ipv6_netns.py, whose DUID is a DUID-LL (root; every namespace and dnsmasq is removed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, leases6, wait_for_event
from .test_ipv6_netns import Dhcp6Client, TwoHosts, guest

pytestmark = pytest.mark.netns


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def leases(world: DhcpLab, bridge: str) -> str:
    return leases6(Path(world.dhcp_dir("ha"), f"{bridge}.leases"))


def mark(world: DhcpLab, address: str) -> str | None:
    path = Path(world.dhcp_dir("ha"), "reported", address)
    return path.read_text() if path.exists() else None


async def gone_from_leases(world: DhcpLab, bridge: str, address: str) -> None:
    """dnsmasq has dropped the address's lease (it takes the release asynchronously)."""
    deadline = time.monotonic() + DEADLINE
    while any(line.split()[2:3] == [address] for line in leases(world, bridge).splitlines()):
        assert time.monotonic() < deadline, leases(world, bridge)
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("same_pass", [False, True], ids=["freed-then-reallocated", "one-pass"])
async def test_a_freed_dhcpv6_address_is_served_to_its_next_instance(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str, same_pass: bool
) -> None:
    """``freed-then-reallocated``: an executor pass between the free and the next allocation
    (no entry gives the address); ``one-pass``: both in one pass (the address's entry names
    the new MAC, the lease's DUID the old one)."""
    two = TwoHosts(world, conn, nats_url, 75 + same_pass)
    ha, c = two.ha, two.c
    net, ia, _ = await two.create(label=f"v6s{int(same_pass)}",
                                  cidr_v6=f"fd00:{75 + same_pass}::/64", ipv6_mode="dhcpv6",
                                  vni_start=7500 + 10 * same_pass)  # fmt: skip
    bridge, address = net["bridge"], ia["address_v6"]
    two.apply("ha")
    va = guest(world, ha, bridge, "va", ia["mac"], dad=False)
    assert await asyncio.to_thread(Dhcp6Client(va, ia["mac"]).lease) == address
    await wait_for_event(
        conn,
        f"netledger.evt.network.{net['id']}",
        lambda e: e.TYPE == "FixedIpLeased" and e.address == ia["address"],
    )
    # reported: marked with the client's DUID and the expiry, as the lease file holds them
    # (what a restarted dnsmasq's 'old' gives: no netledger for it, executor/leasemarks.py)
    [line] = [x.split() for x in leases(world, bridge).splitlines() if f" {address} " in x]
    deadline = time.monotonic() + DEADLINE
    while mark(world, address) is None:  # written once dhcp-event has returned
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert mark(world, address) == f"{line[4]} {line[0]}\n"
    dealloc = await c.deallocate_fixed_ip("vm-a", network_id=net["id"])
    assert dealloc["deallocated"][0]["freed"] is False  # held until its release
    # No release comes (the VM is gone): the reaper frees it.
    assert await service.reap(now=time.time() + service.release_timeout + 1) == [ia["address"]]

    if not same_pass:
        await asyncio.to_thread(two.apply, "ha")  # its entry out: SIGHUP, its lease dropped
        await gone_from_leases(world, bridge, address)
    again = await c.allocate_fixed_ip("vm-c", project="p1", host="ha")
    assert again["address_v6"] == address and again["mac"] != ia["mac"]
    await asyncio.to_thread(two.apply, "ha")
    await gone_from_leases(world, bridge, address)
    vc = guest(world, ha, bridge, "vc", again["mac"], dad=False)
    got = await asyncio.to_thread(Dhcp6Client(vc, again["mac"]).lease)
    assert got == address, leases(world, bridge)
