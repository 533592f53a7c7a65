"""The plain IPv4 CIDRs and addresses the fold reads without its full check are read alike.

``parse_cidr`` takes a CIDR written as a plain dotted quad (``10.0.0.0/26``) from netaddr alone,
and ``ipv4_int`` a plain dotted quad from ``inet_aton``: for any text, they give what the full
check (``checked_cidr``: ``ipaddress`` and netaddr, compared) and ``netaddr.IPAddress`` give —
the same network, the same integer, or an error where those give one. Texts are drawn near the
pattern: numbers with and without leading zeros, beyond 255 and 32, other separators, spaces,
signs, non-ASCII digits, IPv6.
"""

from __future__ import annotations

from typing import Any

import netaddr
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.state_offsets import (
    _PLAIN_IPV4_CIDR,
    PLAIN_IPV4,
    checked_cidr,
    ipv4_int,
    parse_cidr,
)

_numbers = st.one_of(
    st.integers(0, 300).map(str),
    st.sampled_from(["00", "01", "010", "0x1", "+1", "-1", " 1", "1 ", "\uff11", "٣", "", "256"]),
)
_seps = st.sampled_from([".", ".", ".", ".", ",", ":", ".."])


@st.composite
def _quads(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_numbers, min_size=1, max_size=5))
    out = parts[0]
    for p in parts[1:]:
        out += draw(_seps) + p
    return out


@st.composite
def _cidrs(draw: st.DrawFn) -> str:
    prefix = draw(st.one_of(st.integers(-1, 40).map(str), st.sampled_from(["08", "+8", " 8"])))
    tail = draw(st.sampled_from(["", "", "", " ", "\n", "%eth0"]))
    text = f"{draw(_quads())}/{prefix}{tail}"
    return draw(st.sampled_from([text, text, "fd00::/64", "10.0.0.0", "::10.0.0.0/104"]))


def _outcome(fn: Any, text: str) -> Any:
    try:
        net = fn(text)
    except (ValueError, netaddr.AddrFormatError) as exc:
        return type(exc)
    return (str(net), net.version, net.first, net.last, net.prefixlen) if fn is not int else net


@settings(max_examples=1500, deadline=None)
@given(_cidrs())
def test_a_cidr_is_read_as_the_full_check_reads_it(text: str) -> None:
    assert _outcome(parse_cidr, text) == _outcome(checked_cidr, text)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_quads(), st.sampled_from(["fd00::1", "::10.0.0.1", "10.1", "1.2.3.4 "])))
def test_an_address_is_read_as_netaddr_reads_it(text: str) -> None:
    def by_netaddr(t: str) -> int:
        return int(netaddr.IPAddress(t))

    def outcome(fn: Any) -> Any:
        try:
            return fn(text)
        except (ValueError, netaddr.AddrFormatError) as exc:
            return type(exc)

    assert outcome(ipv4_int) == outcome(by_netaddr)


def test_the_plain_patterns_take_what_they_should() -> None:
    for text in ("10.0.0.0/26", "0.0.0.0/0", "255.255.255.255/32", "192.168.1.7/24"):
        assert _PLAIN_IPV4_CIDR.fullmatch(text)
        assert parse_cidr(text) == checked_cidr(text)
    for text in ("010.0.0.0/8", "10.0.0.0/08", "10.0.0.0/33", "10.0.0.256/8", "10.0.0.0/8\n"):
        assert not _PLAIN_IPV4_CIDR.fullmatch(text)
    for text in ("10.0.0.1", "0.0.0.0", "255.255.255.255"):
        assert PLAIN_IPV4.fullmatch(text)
        assert ipv4_int(text) == int(netaddr.IPAddress(text))
    for text in ("10.0.0.01", "10.1", "\uff110.0.0.1", "10.0.0.1\n"):
        assert not PLAIN_IPV4.fullmatch(text)
