"""Review hrev19: the DHCP lease and release deciders (pure).

A dual-stack dhcpv6 address deallocated while both its leases are out is held until both are
released, and dnsmasq keeps serving it meanwhile (docs/executor.md "DHCP": "the client may renew
meanwhile"). Its IPv4 lease released and taken again while the IPv6 one still holds the address,
the new IPv4 lease must count: the IPv6 release must not free an address dnsmasq has leased.
"""

from __future__ import annotations

from tests.events.decider_helpers import Ledger


def test_a_held_dual_stack_address_leased_again_is_not_freed_by_its_other_release() -> None:
    led = Ledger()
    (net,) = led.networks(
        cidr="10.0.0.0/24", cidr_v6="fd00::/64", ipv6_mode="dhcpv6", mode="flat_dhcp"
    )
    a = led.allocate("vm-a", network_id=net["id"], host="h1")
    led.run("fixed_ip.lease", address=a["address"], mac=a["mac"])
    led.run("fixed_ip.lease", address=a["address_v6"], mac=a["mac"])
    assert led.deallocate("vm-a").result["deallocated"][0]["freed"] is False
    r = led.run("fixed_ip.release", address=a["address"], mac=a["mac"])
    assert r.result["freed"] is False  # the IPv6 lease still holds it
    # The client asks again; dnsmasq (still serving the held address) leases it.
    led.run("fixed_ip.lease", address=a["address"], mac=a["mac"])
    ip = led.state.networks[net["id"]].fixed[str(a["address"])]
    assert ip.leased, "dnsmasq's new IPv4 lease of the held address is not recorded"
    r = led.run("fixed_ip.release", address=a["address_v6"], mac=a["mac"])
    assert r.result["freed"] is False, "freed while its IPv4 lease is out"
    b = led.allocate("vm-b", network_id=net["id"], host="h1")
    assert b["address"] != a["address"]
    r = led.run("fixed_ip.release", address=a["address"], mac=a["mac"])
    assert r.result["freed"] is True  # its last lease: back to the pool
