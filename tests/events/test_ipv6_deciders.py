"""IPv6 in the deciders (issue 14), pure: the split of a prefix into one /64 per network, the
refusals (each appends nothing), EUI-64 addresses for given MACs (slaac), the lowest free
address (dhcpv6), IPv6-only networks, and over random histories no IPv6 address twice."""

from __future__ import annotations

from typing import Any

import netaddr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events import errors as E
from netledger.events.decide import decide
from netledger.events.decide_fixed import eui64
from tests.events.decider_helpers import Ledger, fingerprint


def dual(led: Ledger, **args: Any) -> list[dict[str, Any]]:
    args.setdefault("mode", "vxlan")
    args.setdefault("network_size", 256)
    return led.networks(**args)


def test_a_48_is_split_into_consecutive_64s_each_with_gateway_1() -> None:
    nets = dual(Ledger(), cidr="10.0.0.0/16", num_networks=4, cidr_v6="2001:db8:7::/48")
    assert [n["cidr_v6"] for n in nets] == [
        "2001:db8:7::/64",
        "2001:db8:7:1::/64",
        "2001:db8:7:2::/64",
        "2001:db8:7:3::/64",
    ]
    assert [n["gateway_v6"] for n in nets] == [
        "2001:db8:7::1",
        "2001:db8:7:1::1",
        "2001:db8:7:2::1",
        "2001:db8:7:3::1",
    ]
    assert {n["ipv6_mode"] for n in nets} == {"slaac"}  # the default, as nova's rfc2462
    assert [n["cidr"] for n in nets][:2] == ["10.0.0.0/24", "10.0.1.0/24"]  # v4 split unchanged


def test_64s_in_use_are_skipped_as_nova_skipped_used_subnets() -> None:
    led = Ledger()
    dual(led, cidr="10.0.0.0/24", cidr_v6="fd00:1:0:1::/64", vni_start=100)
    nets = dual(led, cidr="10.1.0.0/16", num_networks=3, cidr_v6="fd00:1::/62", vni_start=200)
    assert [n["cidr_v6"] for n in nets] == ["fd00:1::/64", "fd00:1:0:2::/64", "fd00:1:0:3::/64"]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"cidr_v6": "fd00:4::/72"}, E.InvalidCidr),  # longer than /64
        ({"cidr_v6": "fd00:5::/63", "num_networks": 3}, E.RangeTooSmall),  # holds 2 /64s
        ({"cidr_v6": "fd00:1::/64"}, E.NetworkOverlap),  # the prefix of network 1
        ({"cidr_v6": "fd00:1::/63", "num_networks": 2}, E.RangeExhausted),  # 1 free of 2
    ],
)
def test_refusals_name_the_cause_and_append_nothing(
    args: dict[str, Any], error: type[E.NetledgerError]
) -> None:
    led = Ledger()
    dual(led, cidr="10.0.0.0/24", cidr_v6="fd00:1::/64", vni_start=100)
    before, log = fingerprint(led.state), len(led.log)
    with pytest.raises(E.NetledgerError) as info:  # when parsing (the /72) or deciding
        req = led.request(
            "network.create",
            label="x",
            cidr="10.9.0.0/16",
            mode="vxlan",
            network_size=256,
            vni_start=300,
            **{"num_networks": 1} | args,
        )
        decide(led.state, req)
    assert type(info.value) is error and info.value.code == error.code
    assert args["cidr_v6"] in info.value.message
    assert fingerprint(led.state) == before and len(led.log) == log


@pytest.mark.parametrize(
    ("mac", "expected"),
    [
        # RFC 4291 appendix A: the U/L bit flipped, ff:fe in the middle
        ("00:16:3e:33:44:55", "2001:db8::216:3eff:fe33:4455"),
        ("02:16:3e:22:c1:41", "2001:db8::16:3eff:fe22:c141"),
        ("52:54:00:12:34:56", "2001:db8::5054:ff:fe12:3456"),
        ("FA:16:3E:00:00:01", "2001:db8::f816:3eff:fe00:1"),
    ],
)
def test_slaac_addresses_are_the_eui64_of_the_mac(mac: str, expected: str) -> None:
    led = Ledger()
    [net] = dual(led, cidr="10.0.0.0/24", cidr_v6="2001:db8::/64")
    got = led.allocate("vm", network_id=net["id"], mac=mac)
    assert got["address_v6"] == expected
    assert eui64(mac, netaddr.IPNetwork("2001:db8::/64")) == expected


def test_dhcpv6_hands_out_the_lowest_free_and_reuses_a_freed_one() -> None:
    led = Ledger()
    [net] = dual(led, cidr="10.0.0.0/24", cidr_v6="fd00:2::/64", ipv6_mode="dhcpv6")
    got = [led.allocate(f"d{k}", network_id=net["id"])["address_v6"] for k in range(3)]
    assert got == ["fd00:2::2", "fd00:2::3", "fd00:2::4"]  # ::1 is the gateway
    led.deallocate("d1")
    again = led.allocate("d9", network_id=net["id"])
    assert (again["address"], again["address_v6"]) == ("10.0.0.3", "fd00:2::3")


def test_an_ipv6_only_network_names_allocations_by_their_ipv6_address() -> None:
    led = Ledger()
    [net] = led.networks(label="v6", cidr=None, mode="vxlan", cidr_v6="fd00:3::/64")
    assert (net["cidr"], net["gateway"], net["cidr_v6"]) == (None, None, "fd00:3::/64")
    got = led.allocate("o1", network_id=net["id"], mac="02:16:3e:22:c1:41")
    assert got["address"] == got["address_v6"] == "fd00:3::16:3eff:fe22:c141"
    led.deallocate("o1")
    assert not led.state.networks[net["id"]].fixed


def test_a_v4_only_network_answers_no_ipv6_address() -> None:
    led = Ledger()
    [net] = dual(led, cidr="10.0.0.0/24")
    assert led.allocate("vm", network_id=net["id"])["address_v6"] is None


OPS = st.lists(
    st.tuples(st.sampled_from(["alloc", "alloc", "dealloc"]), st.integers(0, 11), st.booleans()),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, mode=st.sampled_from(["slaac", "dhcpv6"]), v4=st.booleans())
def test_no_ipv6_address_twice_and_refusals_change_nothing(
    ops: list[tuple[str, int, bool]], mode: str, v4: bool
) -> None:
    led = Ledger()
    [net] = led.networks(
        label="p",
        cidr="10.0.0.0/28" if v4 else None,
        network_size=16 if v4 else None,
        mode="vxlan",
        cidr_v6="fd00:9::/64",
        ipv6_mode=mode,
    )
    prefix = netaddr.IPNetwork("fd00:9::/64")
    macs = [f"02:00:00:00:00:{k:02x}" for k in range(12)]
    for op, k, own_mac in ops:
        args: dict[str, Any] = {"instance": f"i{k}", "network_id": net["id"]}
        if op == "alloc" and own_mac:
            args["mac"] = macs[k]
        name = "fixed_ip.allocate" if op == "alloc" else "fixed_ip.deallocate"
        if op == "dealloc":
            args.pop("network_id")
        req = led.request(name, **args)
        before = fingerprint(led.state)
        try:
            d = decide(led.state, req)
        except E.NetledgerError:
            assert fingerprint(led.state) == before
            continue
        led.fold(req, d.events)
        live = list(led.state.networks[net["id"]].fixed.values())
        v6 = [ip.address_v6 for ip in live]
        assert len(v6) == len(set(v6)), v6
        for ip in live:
            assert ip.address_v6 is not None
            a = netaddr.IPAddress(ip.address_v6)
            assert a in prefix and str(a) != "fd00:9::1"
            if mode == "slaac":
                assert ip.address_v6 == eui64(ip.mac, prefix)
            if not v4:
                assert ip.address == ip.address_v6
