"""Addresses as offsets in their range, and the free ones of a range (:class:`OffsetPool`).

The fold keeps every network's and every floating pool's free addresses as offsets from the
range's first address: taking the lowest free one costs O(log n) however many are in use (a
high-water mark plus a sorted list of the offsets freed below it), and :func:`ip_int` turns the
address of every folded event into its integer without building a netaddr object.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import netaddr
from sortedcontainers import SortedList


class OffsetPool:
    """Free offsets in ``[first, last]`` minus ``reserved``: lowest-free in O(log n).

    Below the high-water mark ``next_unused`` an offset is free if it is in ``freed``; from it
    up, free unless it is in ``ahead`` — offsets taken beyond the mark (an explicit address).
    Taking one far beyond the mark costs O(log n), not the gap: an explicit IPv6 address deep
    in a dhcpv6 /64 made the fold add every offset skipped over to ``freed`` (fd00::40:0 took
    2 s and 4 M entries; fd00::1:0:0 would have taken hours and all the memory, on every start).
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
        self.reserved = reserved
        self.next_unused = first
        self.freed: SortedList = SortedList()
        self.ahead: SortedList = SortedList()
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
                self.ahead.add(offset)
        else:
            self.freed.discard(offset)
        self.used += 1

    def release(self, offset: int) -> None:
        if offset < self.next_unused:
            if offset not in self.freed:
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


def ip_int(address: str) -> int:
    """An address as an integer. The fold does this for every event: a dotted quad goes through
    the C parser (strict: four decimal parts), which is ~20x faster than building a netaddr
    object; anything else (IPv6) through netaddr."""
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    except OSError:
        return int(netaddr.IPAddress(address))
