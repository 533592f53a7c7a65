"""Domain rules a review found unkept (each test failed before its fix).

* A bridge may not take the name the executors give a segment link (``vx<VNI>``,
  ``vlan<N>``): on a host serving both networks the two were one link.
* A range no instance can use (loopback, link-local, multicast, 'this network', reserved) is
  refused for a network or a floating pool: ``fe80::/64`` made the IPv6 gateway ``fe80::1``,
  the router's own link-local address on every serving bridge.
* A VLAN/VXLAN network an admin allocated on by network id while no project held it is never
  handed to a project's first use: its instance would be on that project's VLAN.
* A dual-stack dhcpv6 allocation holds two DHCP leases that end apart: a deallocated address is
  held until both are released, and neither release frees what the other lease still holds.
"""

from __future__ import annotations

import pytest

from netledger.events import errors as E
from tests.events.decider_helpers import Ledger, member


@pytest.mark.parametrize(
    "args",
    [
        {"mode": "flat_dhcp", "bridge": "vx1000"},
        {"mode": "flat_dhcp", "bridge": "vlan100"},
        {"mode": "vlan", "vlan_start": 100, "bridge": "vlan100"},
    ],
)
def test_a_bridge_named_like_a_segment_link_is_refused(args: dict[str, object]) -> None:
    err = Ledger().refuse(E.InvalidField, "network.create", label="x", cidr="10.0.0.0/24", **args)
    assert err.details["field"] == "bridge" and "VXLAN or VLAN link" in str(err)


@pytest.mark.parametrize(
    "args",
    [
        {"cidr_v6": "fe80::/64"},
        {"cidr_v6": "ff02::/64"},
        {"cidr_v6": "::/64"},
        {"cidr": "127.0.0.0/24"},
        {"cidr": "224.0.0.0/24"},
        {"cidr": "169.254.0.0/24"},
        {"cidr": "0.0.0.0/24"},
        {"cidr": "240.0.0.0/24"},
        {"cidr": "64.0.0.0/2"},  # holds 127.0.0.0/8
    ],
)
def test_a_range_no_instance_can_use_is_refused(args: dict[str, object]) -> None:
    with pytest.raises(E.InvalidCidr, match="no instance can use it"):  # when parsed
        Ledger().run("network.create", label="x", **args)


def test_a_floating_pool_in_such_a_range_is_refused() -> None:
    with pytest.raises(E.InvalidCidr, match="loopback"):
        Ledger().run("floating_ip.pool_create", pool="p", cidr="127.0.0.0/29")


def test_a_segment_with_an_instance_on_it_is_not_handed_to_a_project() -> None:
    led = Ledger()
    first, second = led.networks(cidr="10.0.0.0/23", num_networks=2, network_size=256)
    led.allocate("stray", network_id=first["id"], host="h1")  # an admin's choice, no project
    got = led.allocate("vm-p", project="p", host="h1")
    assert got["network_id"] == second["id"]  # the lowest free segment without instances
    n = led.state.networks[got["network_id"]]
    assert sorted(ip.instance for ip in n.fixed.values()) == ["vm-p"]


def _dual_stack_leased() -> tuple[Ledger, dict[str, object], dict[str, object]]:
    led = Ledger()
    (net,) = led.networks(
        cidr="10.0.0.0/24", cidr_v6="fd00::/64", ipv6_mode="dhcpv6", mode="flat_dhcp"
    )
    a = led.allocate("vm-a", network_id=net["id"], host="h1")
    led.run("fixed_ip.lease", address=a["address"], mac=a["mac"])
    led.run("fixed_ip.lease", address=a["address_v6"], mac=a["mac"])
    ip = led.state.networks[net["id"]].fixed[str(a["address"])]
    assert ip.leased and ip.leased_v6
    return led, net, a


def test_the_ipv6_release_leaves_the_ipv4_lease_holding_the_address() -> None:
    led, net, a = _dual_stack_leased()
    led.run("fixed_ip.release", address=a["address_v6"], mac=a["mac"])
    d = led.deallocate("vm-a")
    assert d.result["deallocated"][0]["freed"] is False  # the IPv4 lease is still out
    b = led.allocate("vm-b", network_id=net["id"], host="h1")
    assert b["address"] != a["address"]
    r = led.run("fixed_ip.release", address=a["address"], mac=a["mac"])
    assert r.result["freed"] is True  # the last lease: back to the pool


def test_the_ipv4_release_after_deallocation_keeps_the_leased_ipv6_held() -> None:
    led, net, a = _dual_stack_leased()
    led.deallocate("vm-a")
    r = led.run("fixed_ip.release", address=a["address"], mac=a["mac"])
    assert r.result["freed"] is False
    b = led.allocate("vm-b", network_id=net["id"], host="h1")
    assert b["address_v6"] != a["address_v6"] and b["address"] != a["address"]
    r = led.run("fixed_ip.release", address=a["address_v6"], mac=a["mac"])
    assert r.result["freed"] is True
    assert str(a["address"]) not in led.state.networks[net["id"]].fixed


def test_a_lease_of_either_address_is_idempotent() -> None:
    led, _net, a = _dual_stack_leased()
    assert led.run("fixed_ip.lease", address=a["address_v6"], mac=a["mac"]).events == []
    assert led.run("fixed_ip.lease", address=a["address"], mac=a["mac"]).events == []


def test_a_member_sees_its_projects_networks_and_the_unowned_ones() -> None:
    """nova's ``project_only="allow_none"``: found by review, any member listed (and showed)
    every project's networks — their ranges, VLANs and use."""
    led = Ledger()
    mine, theirs = led.networks(cidr="10.0.0.0/23", num_networks=2, network_size=256)
    (flat,) = led.networks(cidr="10.9.0.0/24", mode="flat_dhcp", bridge="brflat")
    led.allocate("a", project="p1", host="h1")
    led.allocate("b", project="p2", host="h1")
    p1 = member("p1")
    listed = led.run("network.list", p1).result["networks"]
    assert [n["id"] for n in listed] == [mine["id"], flat["id"]]
    assert led.run("network.list").result["networks"][1]["id"] == theirs["id"]  # admin: all
    assert led.run("network.show", p1, network_id=mine["id"]).result["network"]["project"] == "p1"
    led.refuse(E.NetworkNotFound, "network.show", p1, network_id=theirs["id"])
    led.refuse(E.Forbidden, "network.list", p1, project="p2")
