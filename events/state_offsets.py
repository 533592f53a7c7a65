"""Addresses as offsets in their range, and the free ones of a range (:class:`OffsetPool`).

The fold keeps every network's and every floating pool's free addresses as offsets from the
range's first address: taking the lowest free one costs O(log n) however many are in use (a
high-water mark plus a sorted list of the offsets freed below it), and :func:`ip_int_of` turns the
address of every folded event into its integer without building a netaddr object.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterator

import netaddr
from sortedcontainers import SortedList

#: ``freed`` or ``ahead`` of a pool while empty (:class:`OffsetPool`): typed as the SortedList it
#: stands for, which it reads as (``in``, iteration, ``len``, truth); immutable.
NO_OFFSETS: SortedList = ()

#: The reserved offsets of the pools folded, each value kept once: a cloud's networks are mostly
#: of a few sizes and reserve the same offsets (a /26 with the gateway below ``dhcp_start``:
#: {63}), a frozenset of 216 bytes each. Bounded: past it, a pool keeps its own.
_RESERVED: dict[frozenset[int], frozenset[int]] = {}
_RESERVED_MAX = 1024


def shared_reserved(reserved: frozenset[int]) -> frozenset[int]:
    """``reserved``, or the equal frozenset already kept (immutable: sharing changes nothing)."""
    kept = _RESERVED.get(reserved)
    if kept is not None:
        return kept
    if len(_RESERVED) < _RESERVED_MAX:
        _RESERVED[reserved] = reserved
    return reserved


class OffsetPool:
    """Free offsets in ``[first, last]`` minus ``reserved``: lowest-free in O(log n).

    Below the high-water mark ``next_unused`` an offset is free if it is in ``freed``; from it
    up, free unless it is in ``ahead`` — offsets taken beyond the mark (an explicit address).
    Taking one far beyond the mark costs O(log n), not the gap: an explicit IPv6 address deep
    in a dhcpv6 /64 made the fold add every offset skipped over to ``freed`` (fd00::40:0 took
    2 s and 4 M entries; fd00::1:0:0 would have taken hours and all the memory, on every start).

    Most pools never free an address nor take one ahead (a host's view holds every network of
    the cloud, and allocates in none): ``freed`` and ``ahead`` are the shared empty tuple
    :data:`NO_OFFSETS` until the first offset goes in (reading it is reading an empty
    SortedList; it cannot be changed by mistake). Two SortedLists were 8 of a network's 13
    objects in the fold, ~590 bytes, and half its fold CPU went to the collector (bench/RESULTS.md
    "fleet").
    """

    __slots__ = ("ahead", "first", "freed", "last", "next_unused", "reserved", "used")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, OffsetPool):
            return NotImplemented
        return (
            self.first == other.first
            and self.last == other.last
            and self.reserved == other.reserved
            and self.next_unused == other.next_unused
            and list(self.freed) == list(other.freed)
            and list(self.ahead) == list(other.ahead)
            and self.used == other.used
        )

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, first: int, last: int, reserved: frozenset[int]) -> None:
        self.first = first
        self.last = last
        self.reserved = shared_reserved(reserved)
        self.next_unused = first
        self.freed: SortedList = NO_OFFSETS
        self.ahead: SortedList = NO_OFFSETS
        self.used = 0
        self._advance()

    def _advance(self) -> None:
        """Move the mark past reserved offsets and offsets taken ahead of it."""
        ahead, reserved, o = self.ahead, self.reserved, self.next_unused
        while o <= self.last:
            while ahead and ahead[0] < o:
                ahead.pop(0)
            if o in reserved or (ahead and ahead[0] == o):
                o += 1
            else:
                break
        self.next_unused = o

    def iter_free(self) -> Iterator[int]:
        """Free offsets in increasing order (lazily)."""
        yield from self.freed
        taken = iter(self.ahead)
        nxt = next(taken, None)
        o = self.next_unused
        while o <= self.last:
            if nxt is not None and nxt <= o:
                if nxt == o:
                    o += 1
                nxt = next(taken, None)
                continue
            if o not in self.reserved:
                yield o
            o += 1

    def is_free(self, offset: int) -> bool:
        if offset < self.first or offset > self.last or offset in self.reserved:
            return False
        if offset >= self.next_unused:
            return offset not in self.ahead
        return offset in self.freed

    def take(self, offset: int) -> None:
        if offset == self.next_unused:
            self.next_unused += 1
            self._advance()
        elif offset > self.next_unused:
            if offset not in self.ahead:
                if self.ahead is NO_OFFSETS:
                    self.ahead = SortedList()
                self.ahead.add(offset)
        elif self.freed:
            self.freed.discard(offset)
        self.used += 1

    def release(self, offset: int) -> None:
        if offset < self.next_unused:
            if offset not in self.freed:
                if self.freed is NO_OFFSETS:
                    self.freed = SortedList()
                self.freed.add(offset)
                self.used -= 1
        elif offset in self.ahead:
            self.ahead.remove(offset)
            self.used -= 1

    @property
    def capacity(self) -> int:
        return (
            self.last
            - self.first
            + 1
            - len([r for r in self.reserved if self.first <= r <= self.last])
        )


def ip_int_of(address: str, version: int) -> int:
    """An address of this IP version as an integer, by the C parser (strict; ~20x faster than
    building a netaddr object: the fold does this for every event); ValueError for anything
    else (netaddr read ``::10.0.0.5`` as the integer of ``10.0.0.5``)."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        return int.from_bytes(socket.inet_pton(family, address), "big")
    except (OSError, TypeError):
        raise ValueError(f"{address!r} is not an IPv{version} address") from None


#: an IPv4 address as a dotted quad of decimal numbers without leading zeros (ASCII digits:
#: ``\d`` takes any Unicode digit), and a CIDR of one with a prefix length written alike
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
PLAIN_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")
_PLAIN_IPV4_CIDR = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}/(?:3[0-2]|[12]?[0-9])")


def parse_cidr(text: object) -> netaddr.IPNetwork:
    """A network's or a pool's CIDR as every reader takes it: text that Python's ``ipaddress``
    and netaddr both read, as the same network (ValueError otherwise). netaddr alone took
    ``"10.9.0.0/24 "`` and ``"/+24"``, ``ipaddress`` alone a scope id (``fe80::1%eth0/64``):
    the fold and the projector disagreed on what a NetworkCreated holds.

    The usual CIDR (``10.0.0.0/26``: :data:`_PLAIN_IPV4_CIDR`) both read alike by their
    definition, so netaddr alone reads it (the check cost three quarters of a NetworkCreated's
    fold, ~15 of 44 us; tests/events/test_parse_cidr_plain.py holds it to the check)."""
    if type(text) is not str:
        raise ValueError(f"bad cidr {text!r}")
    if _PLAIN_IPV4_CIDR.fullmatch(text) is not None:
        return netaddr.IPNetwork(text)
    return checked_cidr(text)


def checked_cidr(text: str) -> netaddr.IPNetwork:
    """:func:`parse_cidr` of any text: read by both parsers and compared."""
    try:
        py = ipaddress.ip_network(text, strict=False)
        net = netaddr.IPNetwork(text)
    except (ValueError, TypeError, netaddr.AddrFormatError):
        raise ValueError(f"bad cidr {text!r}") from None
    if (net.version, int(net.network), net.prefixlen) != (
        py.version,
        int(py.network_address),
        py.prefixlen,
    ):
        raise ValueError(f"bad cidr {text!r}")
    return net


def ipv4_int(address: str) -> int:
    """``int(netaddr.IPAddress(address))`` (the same integer, the same errors), without the
    object for a plain dotted quad (:data:`PLAIN_IPV4`), which both read alike."""
    if PLAIN_IPV4.fullmatch(address) is not None:
        return int.from_bytes(socket.inet_aton(address), "big")
    return int(netaddr.IPAddress(address))


def overlap(a: netaddr.IPNetwork, b: netaddr.IPNetwork) -> bool:
    """Whether two networks share an address."""
    return bool(a.version == b.version and a.first <= b.last and b.first <= a.last)
