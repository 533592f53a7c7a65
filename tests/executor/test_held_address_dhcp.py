"""An address deallocated while leased is held until its DHCP release (NOVA_NETWORK.md) — and
the serving host keeps what the release needs: the bridge, the gateway and the dnsmasq with the
address in its hosts file. The executor stopped that dnsmasq as soon as the network had no
*allocated* address left, so the release was never reported and the address waited for the
reaper (nova kept serving). A held address makes no compute host join. Pure: the desired
state (executor/fragments.py) and the share of the log (executor/share.py); then on a real
namespace with dnsmasq and a DHCP client (root; every namespace and dnsmasq is removed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from netledger.executor.desired import HostConfig, build, network_hosts
from netledger.executor.hosts import HostBook
from netledger.executor.share import Share
from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.events.decider_helpers import Ledger

from .dhcp_helpers import DhcpLab, dhcp_lab, wait_for_event
from .test_executor_dhcp_netns import alive, wait_gone
from .test_executor_lab import addresses, links


@pytest.fixture
def dhcp_world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def dhcp_hosts(led: Ledger, host: str) -> list[str | None]:
    d = build(led.state, HostBook(host), HostConfig(host=host))
    return [h.address for s in d.dhcp for h in s.hosts]


def test_a_held_address_keeps_the_serving_hosts_gateway_and_dnsmasq_until_released() -> None:
    led = Ledger()
    (net,) = led.networks(cidr="10.0.0.0/24", mode="flat_dhcp", network_host="h1", bridge="bra")
    a = led.allocate("vm-a", network_id=net["id"], host="c1")
    led.run("fixed_ip.lease", address=a["address"], mac=a["mac"])
    served = build(led.state, HostBook("h1"), HostConfig(host="h1"))
    d = led.deallocate("vm-a")
    assert d.result["deallocated"][0]["freed"] is False  # held until the DHCP release

    held = build(led.state, HostBook("h1"), HostConfig(host="h1"))
    assert dhcp_hosts(led, "h1") == [a["address"]]
    assert held.addresses == served.addresses  # the gateway the dnsmasq listens on
    assert held.links == served.links and held.nat == served.nat
    # the compute host leaves: nothing of it runs there any more
    assert build(led.state, HostBook("c1"), HostConfig(host="c1")).links == ()
    assert network_hosts(led.state.networks[net["id"]], HostBook("c1")) == {"h1"}

    led.run("fixed_ip.release", address=a["address"], mac=a["mac"])
    gone = build(led.state, HostBook("h1"), HostConfig(host="h1"))
    assert (gone.links, gone.addresses, gone.dhcp) == ((), (), ())


def test_multi_host_the_held_addresses_own_host_keeps_serving_and_reading_it() -> None:
    led = Ledger()
    (net,) = led.networks(cidr="10.0.0.0/24", mode="vxlan", vni_start=7, multi_host=True)
    a = led.allocate("vm-a", network_id=net["id"], host="c1")
    b = led.allocate("vm-b", network_id=net["id"], host="c2")
    led.run("fixed_ip.lease", address=a["address"], mac=a["mac"])
    led.deallocate("vm-a")
    assert dhcp_hosts(led, "c1") == [a["address"]]  # c1 answers its own, until the release
    assert dhcp_hosts(led, "c2") == [b["address"]]
    # c1 still follows the network's subject, where the release will be
    assert net["id"] in Share("c1").networks_needed(led.state)
    assert net["id"] in Share("c1").serving(led.state, {net["id"]})
    led.run("fixed_ip.release", address=a["address"], mac=a["mac"])
    assert build(led.state, HostBook("c1"), HostConfig(host="c1")).links == ()
    assert net["id"] not in Share("c1").networks_needed(led.state)


def test_an_unleased_deallocation_frees_at_once_and_keeps_nothing() -> None:
    led = Ledger()
    (net,) = led.networks(cidr="10.0.0.0/24", mode="vlan", network_host="h1")
    led.allocate("vm-a", network_id=net["id"], host="c1")
    led.deallocate("vm-a")
    assert build(led.state, HostBook("h1"), HostConfig(host="h1")).links == ()


@pytest.mark.netns
async def test_the_last_instance_deallocated_while_leased_is_released_through_dnsmasq(
    dhcp_world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """On a real namespace with a real client: the network's only instance is deallocated
    while leased; its host keeps the gateway and the dnsmasq with its line, the client's
    release reaches the log and frees the address, and then the host lets the network go."""
    world = dhcp_world
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="held", cidr="10.62.0.0/24", mode="flat_dhcp", bridge="brheld", network_host="h"
    )
    nid, bridge = net["id"], net["bridge"]
    a = await c.allocate_fixed_ip("vm-a", network_id=nid, host="h")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    va = world.guest(h, bridge, "va", a["mac"])
    got = await asyncio.to_thread(world.dhcp, va)
    assert got is not None and got["ip"] == a["address"], got
    subject = f"netledger.evt.network.{nid}"
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == a["address"]
    )
    pid = world.pid("h", bridge)

    dealloc = await c.deallocate_fixed_ip("vm-a")
    assert dealloc["deallocated"][0]["freed"] is False  # held until its release
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.pid("h", bridge) == pid and alive(pid), "the held address lost its dnsmasq"
    assert f"{a['mac']},vm-a,{a['address']}" in world.hosts_file("h", bridge)
    assert addresses(h, bridge) == ["10.62.0.1/24"]

    await asyncio.to_thread(world.release, va)
    freed = await wait_for_event(
        conn,
        subject,
        lambda e: e.TYPE == "FixedIpReleased" and e.address == a["address"] and e.freed,
    )
    assert freed.instance == "vm-a"
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert pid is not None
    wait_gone(pid)
    assert bridge not in links(h)


def test_a_dual_stack_address_held_by_its_ipv6_lease_alone_is_still_served() -> None:
    """The two leases of a dual-stack dhcpv6 allocation end apart (events: ``leased_v6``): an
    address whose IPv4 lease was released but whose DHCPv6 lease is out stays held — and served
    — until that one is released too."""
    led = Ledger()
    (net,) = led.networks(
        cidr="10.0.0.0/24", cidr_v6="fd00:1::/64", ipv6_mode="dhcpv6", mode="flat_dhcp",
        network_host="h1", bridge="bra",
    )  # fmt: skip
    a = led.allocate("vm-a", network_id=net["id"], host="c1")
    led.run("fixed_ip.lease", address=a["address"], mac=a["mac"])
    led.run("fixed_ip.lease", address=a["address_v6"], mac=a["mac"])
    led.run("fixed_ip.release", address=a["address"], mac=a["mac"])  # IPv4 lease ended
    assert led.deallocate("vm-a").result["deallocated"][0]["freed"] is False
    assert dhcp_hosts(led, "h1") == [a["address"]]
    assert led.run("fixed_ip.release", address=a["address_v6"], mac=a["mac"]).result["freed"]
    assert dhcp_hosts(led, "h1") == []
