"""A DHCPv6 client whose DUID was made from another MAC than its NIC's keeps its lease.

RFC 8415 11.2: a device uses one DUID on all its interfaces, made from any one of their
link-layer addresses, and keeps it when that hardware is gone. So an instance with two NICs
(or a cloned image that kept its DUID) leases the address of one NIC under a DUID-LLT/DUID-LL
naming another MAC. dnsmasq gives it the address all the same: it matches the host entry by the
MAC it sees on the wire. The executor's stale-lease sweep (executor/leasefile.py
``stale_leases6``) took such a lease for the previous holder's and had dnsmasq drop it at every
reload (found by review hrev71): the release reached the log though the client never sent one,
and a deallocation then freed the address at once under a live lease (nothing held it).

Real namespaces, dnsmasq, dhcp_release6, nats-server and command service (root; every
namespace and dnsmasq is removed).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection

from .dhcp_helpers import DhcpLab, dhcp_lab, leases6, read_events, wait_for_event
from .test_ipv6_netns import Dhcp6Client, TwoHosts, guest

pytestmark = pytest.mark.netns

#: the instance's other NIC, whose MAC its DUID was made from
OTHER_NIC = "02:16:3e:77:77:77"


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def leases(world: DhcpLab, bridge: str) -> str:
    return leases6(Path(world.dhcp_dir("ha"), f"{bridge}.leases"))


async def test_a_lease_under_a_duid_made_from_another_nic_is_kept(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    two = TwoHosts(world, conn, nats_url, 79)
    net, ia, _ = await two.create(label="v6duid", cidr_v6="fd00:79::/64", ipv6_mode="dhcpv6",
                                  vni_start=7900)  # fmt: skip
    bridge, address, subject = net["bridge"], ia["address_v6"], f"netledger.evt.network.{net['id']}"
    two.apply("ha")
    va = guest(world, two.ha, bridge, "va", ia["mac"], dad=False)
    client = Dhcp6Client(va, ia["mac"])
    client.duid = struct.pack("!HH", 3, 1) + bytes(int(x, 16) for x in OTHER_NIC.split(":"))
    assert await asyncio.to_thread(client.lease) == address  # dnsmasq matched the NIC's MAC
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == ia["address"]
    )

    # Another instance on the bridge: its entry added, a reload (and the stale-lease sweep).
    ic = await two.c.allocate_fixed_ip("vm-c", project="p1", host="ha")
    await asyncio.to_thread(two.apply, "ha")
    # ... which leases too: every script run queued before its lease's has run
    vc = guest(world, two.ha, bridge, "vc", ic["mac"], dad=False)
    assert await asyncio.to_thread(Dhcp6Client(vc, ic["mac"]).lease) == ic["address_v6"]
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == ic["address"]
    )

    assert f" {address} " in leases(world, bridge), "dnsmasq dropped a live lease"
    released = [e for e in await read_events(conn, subject) if e.TYPE == "FixedIpReleased"]
    assert released == [], "a release the client never sent reached the log"
    dealloc = await two.c.deallocate_fixed_ip("vm-a", network_id=net["id"])
    assert dealloc["deallocated"][0]["freed"] is False  # held: its client still has it
