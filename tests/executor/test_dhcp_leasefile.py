"""dnsmasq's lease file, read (executor/leasefile.py): the DHCPv6 leases the executor has
dnsmasq drop with ``dhcp_release6`` (the IPv4 ones: test_executor_dhcp_plan.py). Pure; what
dnsmasq does with the release is in test_dhcpv6_stale_release.py (real dnsmasq)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netledger.executor.leasefile import duid_mac, stale_leases6
from netledger.executor.model import DhcpHost, DhcpSpec, DhcpSubnet

SERVER = "00:01:00:01:2c:5f:aa:bb:02:00:00:00:00:01"
SPEC = DhcpSpec(
    bridge="br1",
    network_id="1",
    subnets=(DhcpSubnet("1", None, None, None, 256, prefix6="fd00::/64", mode6="dhcpv6"),),
    hosts=(
        DhcpHost("02:00:00:00:00:0b", "b", "10.0.1.2", "fd00::b"),
        DhcpHost("02:00:00:00:00:0C", "c", None, "fd00::c"),
        DhcpHost("02:00:00:00:00:0d", "d", "10.0.1.4"),
    ),
)


def test_stale_dhcpv6_leases() -> None:
    ll_b = "00:03:00:01:02:00:00:00:00:0b"  # DUID-LL of the entry's MAC
    llt_a = "00:01:00:01:2c:5f:aa:bb:02:00:00:00:00:0a"  # DUID-LLT of another MAC
    en = "00:02:00:00:ab:11:01:02:03:04"  # DUID-EN: no MAC in it
    leases = (
        "1900000000 02:00:00:00:00:0b 10.0.1.2 b *\n"  # IPv4: dhcp_release's
        f"duid {SERVER}\n"
        f"1900000000 7 fd00::b b {ll_b}\n"  # its entry's client: kept
        f"1900000000 7 fd00:0::c c {llt_a}\n"  # reallocated to another MAC: stale
        f"1900000000 9 fd00::c c {en}\n"  # no MAC to compare: kept
        f"1900000000 4 fd00::99 x {en}\n"  # freed, no entry: stale
        "1900000000 T5 fd00::98 x 00:03:00:01:02:00:00:00:00:0e\n"  # temporary: not releasable
        "1900000000 6 fd00::97 x *\n"  # no client id: not releasable
        "garbage\n"
    )
    assert stale_leases6(leases, SPEC) == [
        (SERVER, llt_a, "7", "fd00:0::c"),
        (SERVER, en, "4", "fd00::99"),
    ]
    # without the server's DUID line dnsmasq would not take a release: none
    assert stale_leases6(leases.replace(f"duid {SERVER}\n", ""), SPEC) == []
    assert stale_leases6("", SPEC) == []


def test_a_client_dnsmasq_saw_with_the_entrys_mac_keeps_its_lease() -> None:
    """One DUID on all of a device's interfaces (RFC 8415 11.2): a DUID-LLT naming another
    NIC's MAC is the entry's client when dnsmasq saw it with the entry's MAC (review hrev71)."""
    llt_a = "00:01:00:01:2c:5f:aa:bb:02:00:00:00:00:0a"  # made from another NIC's MAC
    leases = f"duid {SERVER}\n1900000000 7 fd00::b b {llt_a}\n1900000000 8 fd00::c c {llt_a}\n"
    saw = {("fd00::b", llt_a): "02:00:00:00:00:0b", ("fd00::c", llt_a): "02:00:00:00:00:0a"}
    asked = []

    def seen(address: str, duid: str) -> str | None:
        asked.append(address)
        return saw.get((address, duid))

    # fd00::b: seen with its entry's MAC, kept; fd00::c: seen with the MAC its DUID names
    assert stale_leases6(leases, SPEC, seen) == [(SERVER, llt_a, "8", "fd00::c")]
    assert stale_leases6(leases, SPEC) == [
        (SERVER, llt_a, "7", "fd00::b"),
        (SERVER, llt_a, "8", "fd00::c"),
    ]
    # asked only of a lease its DUID would make stale: no file read for the others
    asked.clear()
    ll_b = "00:03:00:01:02:00:00:00:00:0b"
    stale_leases6(f"duid {SERVER}\n1900000000 7 fd00::b b {ll_b}\n", SPEC, seen)
    assert asked == []


def test_the_mac_in_a_duid() -> None:
    assert duid_mac("00:03:00:01:02:16:3E:0a:ad:f1") == "02:16:3e:0a:ad:f1"  # DUID-LL
    assert duid_mac("00:01:00:01:2c:5f:aa:bb:02:00:00:00:00:0a") == "02:00:00:00:00:0a"  # LLT
    assert duid_mac("00:02:00:00:ab:11:01:02:03:04") is None  # DUID-EN
    assert duid_mac("00:03:00:06:02:16:3e:0a:ad:f1") is None  # not Ethernet
    assert duid_mac("00:03:00:01:02:16") is None  # short
    assert duid_mac("zz") is None


@given(st.binary(max_size=24))
def test_any_duid_reads_without_error(raw: bytes) -> None:
    mac = duid_mac(":".join(f"{b:02x}" for b in raw))
    assert mac is None or len(mac) == 17
