"""A network's offsets and addresses are netaddr's: the fast int-to-text path the deciders use
gives exactly what ``str(netaddr.IPAddress(...))`` gives, and offsets round-trip."""

from __future__ import annotations

import types

import netaddr
from hypothesis import given
from hypothesis import strategies as st

from netledger.events.state_network import NetworkState
from netledger.events.state_offsets import OffsetPool

#: what a NetworkState reads of its NetworkCreated when built (its id)
_NET = types.SimpleNamespace(network_id="1")


def _network(cidr: str | None, cidr6: str | None) -> NetworkState:
    ipnet = None if cidr is None else netaddr.IPNetwork(cidr)
    ipnet6 = None if cidr6 is None else netaddr.IPNetwork(cidr6)
    return NetworkState(
        net=_NET,  # type: ignore[arg-type]  # only its id is read (not by the address math)
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


@given(st.sampled_from([4, 6]), st.integers(0, (1 << 128) - 1), st.integers(0, 128))
def test_size_and_base_are_netaddrs(version: int, value: int, prefix: int) -> None:
    """Computed once per network, from its prefix length (the fold's first touch of each network
    after a snapshot), as netaddr computes them — whatever address the CIDR was written with."""
    width = 32 if version == 4 else 128
    ipnet = netaddr.IPNetwork(
        f"{netaddr.IPAddress(value % (1 << width), version)}/{prefix % (width + 1)}"
    )
    n = NetworkState(net=_NET, ipnet=ipnet, pool=OffsetPool(0, 0, frozenset()))  # type: ignore[arg-type]
    assert (n.size, n.base) == (ipnet.size, int(ipnet.first))
    assert (n.size, n.base) == (ipnet.size, int(ipnet.first))  # kept
    assert vars(n)["size"] == ipnet.size and vars(n)["base"] == int(ipnet.first)
