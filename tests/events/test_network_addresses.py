"""A network's offsets and addresses are netaddr's: the fast int-to-text path the deciders use
gives exactly what ``str(netaddr.IPAddress(...))`` gives, and offsets round-trip."""

from __future__ import annotations

import netaddr
from hypothesis import given
from hypothesis import strategies as st

from netledger.events.state_network import NetworkState
from netledger.events.state_offsets import OffsetPool


def _network(cidr: str | None, cidr6: str | None) -> NetworkState:
    ipnet = None if cidr is None else netaddr.IPNetwork(cidr)
    ipnet6 = None if cidr6 is None else netaddr.IPNetwork(cidr6)
    return NetworkState(
        net=None,  # type: ignore[arg-type]  # not read by the address math
        ipnet=ipnet,
        pool=OffsetPool(0, 0, frozenset()),
        ipnet6=ipnet6,
    )


@given(st.integers(0, (1 << 32) - 1), st.integers(8, 32), st.integers(0, (1 << 24) - 1))
def test_ipv4_address_at_an_offset_is_netaddrs(value: int, prefix: int, offset: int) -> None:
    ipnet = netaddr.IPNetwork(f"{netaddr.IPAddress(value, 4)}/{prefix}").cidr
    offset %= ipnet.size
    n = _network(str(ipnet), None)
    address = n.address(offset)
    assert address == str(netaddr.IPAddress(int(ipnet.network) + offset, 4))
    assert n.offset(address) == offset


@given(st.integers(0, (1 << 128) - 1), st.integers(0, (1 << 64) - 1))
def test_ipv6_address_at_an_offset_is_netaddrs(value: int, offset: int) -> None:
    ipnet6 = netaddr.IPNetwork(f"{netaddr.IPAddress(value, 6)}/64").cidr
    n = _network("10.0.0.0/24", str(ipnet6))
    address = n.address6(offset)
    assert address == str(netaddr.IPAddress(int(ipnet6.network) + offset, 6))
    assert n.offset6(address) == offset
