"""A dump of the kernel decoded only where it may have changed since the last dump.

The periodic sweep dumps every link of the host (executor/cache.py ``resync``): ~2,400 at
1,200 networks, each decoded in Python in a worker thread that holds the interpreter meanwhile
— the passes of changes that overlap it ran 1.5-2x slower (bench/README.md, "Where its tail
goes"). Most links are as the last dump found them; what differs in their messages without a
change of configuration is counters and running timers, which :func:`.nlparse.link` does not
read. So each link's message is kept from the dump that decoded it, less those spans (its
``cut``), and the next dump's message of the same link decodes again only if it has another
length or other bytes outside them. Outside them it is the message link() read: each byte it
reads lies outside the spans, at the same offset of a message of the same length (each is
read from the start of its own copy), so it reads the same bytes and takes the same way — the
kept link is what decoding would give. Nothing is guessed: a counter this module does not
know of only costs a decode.

The same for addresses (:class:`SameBytes`: a permanent address's message comes again byte
for byte, its lifetimes infinite, its timestamps those of its making) and for VXLAN flood
entries (:class:`FloodMemo`: the message but for its last attribute, the entry's ages).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from . import nlparse
from .netlink import Dump

T = TypeVar("T")
_MISS: object = object()


class _Kept(NamedTuple):
    size: int
    #: the message's bytes outside its cut spans, as slices of the message (C, one call)
    outside: Callable[[bytes], tuple[bytes, ...]]
    rest: bytes
    link: nlparse.Link


def _outside(cut: list[int], size: int) -> Callable[[bytes], tuple[bytes, ...]]:
    """The slices of a message of ``size`` bytes around ``cut`` (absolute to the message)."""
    spans = sorted(zip(cut[::2], cut[1::2], strict=True))
    slices, at = [], 0
    for a, b in spans:
        slices.append(slice(at, a))
        at = b
    slices.append(slice(at, size))
    if len(slices) == 1:
        only = slices[0]
        return lambda m: (m[only],)
    return operator.itemgetter(*slices)


class LinkMemo:
    """The links of the last complete dump with what they were decoded from. ``shape`` makes
    the link the cache keeps of the decoded one (it must depend on the link alone)."""

    def __init__(self, shape: Callable[[nlparse.Link], nlparse.Link]) -> None:
        self._shape = shape
        self._kept: dict[int, _Kept] = {}
        self._next: dict[int, _Kept] = {}
        #: the slicers of the layouts seen (dropped with the links that had them: :meth:`done`)
        self._layouts: dict[tuple[int, ...], Callable[[bytes], tuple[bytes, ...]]] = {}
        #: links decoded and links reused, over every dump (the bench's and the tests' look)
        self.decoded = 0
        self.reused = 0

    def begin(self) -> None:
        """A dump starts: what it reads replaces the memo once it is :meth:`done`."""
        self._next = {}

    def link(self, data: bytes, a: int, end: int) -> nlparse.Link:
        """The link of the ``ifinfomsg`` at ``data[a:end]`` (a dump's message payload)."""
        index = nlparse.IFINFO.unpack_from(data, a)[2]
        kept = self._kept.get(index)
        msg = data[a:end]
        if kept is not None and kept.size == len(msg) and b"".join(kept.outside(msg)) == kept.rest:
            self._next[index] = kept
            self.reused += 1
            return kept.link
        cut: list[int] = []
        x = self._shape(nlparse.link(msg, 0, len(msg), cut))
        layout = (len(msg), *cut)  # links of a kind with names of a length share theirs
        outside = self._layouts.get(layout)
        if outside is None:
            outside = self._layouts[layout] = _outside(cut, len(msg))
        self._next[index] = _Kept(len(msg), outside, b"".join(outside(msg)), x)
        self.decoded += 1
        return x

    def links(self, dump: Dump) -> dict[int, nlparse.Link]:
        """Every link of ``dump`` by index, the memo then that dump's (a reader for
        :meth:`.netlink.RtSocket.read_raw`: a dump the kernel marks interrupted raises at its
        end, before :meth:`done` — the memo keeps the last whole dump's, and the next call
        begins afresh)."""
        self.begin()
        out = {}
        for data, a, b in dump:
            x = self.link(data, a, b)
            out[x.ifindex] = x
        self.done()
        return out

    def done(self) -> None:
        """The dump read every link: only those it read are kept."""
        self._kept, self._next = self._next, {}
        if len(self._layouts) > 2 * len(self._kept) + 64:  # many gone: keep those still used
            kept = {id(k.outside) for k in self._kept.values()}
            self._layouts = {k: v for k, v in self._layouts.items() if id(v) in kept}


def kept_address(data: bytes, a: int, end: int) -> tuple[tuple[int, str], nlparse.Addr] | None:
    """An ``ifaddrmsg`` the executor models, with its key in the cache (None: not one)."""
    from .kernel import address_kept  # when first used, as the cache imported it

    ad = nlparse.addr(data, a, end)
    return ((ad.ifindex, f"{ad.address}/{ad.prefixlen}"), ad) if address_kept(ad) else None


class SameBytes(Generic[T]):
    """What ``decode`` made of each message of the last complete dump, by its bytes: a
    message that comes again byte for byte is not decoded again."""

    def __init__(self, decode: Callable[[bytes, int, int], T]) -> None:
        self._decode = decode
        self._kept: dict[bytes, T] = {}
        self._next: dict[bytes, T] = {}
        self.decoded = 0
        self.reused = 0

    def begin(self) -> None:
        self._next = {}

    def read(self, dump: Dump) -> list[T]:
        """What ``decode`` makes of each message of ``dump`` (as :meth:`LinkMemo.links`)."""
        self.begin()
        out = [self.get(data, a, b) for data, a, b in dump]
        self.done()
        return out

    def get(self, data: bytes, a: int, end: int) -> T:
        msg = data[a:end]
        got = self._kept.get(msg, _MISS)
        if got is _MISS:
            got = self._next[msg] = self._decode(msg, 0, len(msg))
            self.decoded += 1
        else:
            self._next[msg] = got  # type: ignore[assignment]
            self.reused += 1
        return got  # type: ignore[return-value]

    def done(self) -> None:
        self._kept, self._next = self._next, {}


class FloodMemo:
    """:func:`.nlparse.flood` over a dump, an entry decoded once: kept by its message less the
    last 16 bytes, when its decode found them to be its last attribute's payload, NDA_CACHEINFO
    (the entry's ages, not read). A message equal to that one but there, of the same length,
    is walked the same way up to that attribute's header — the same bytes — and ends there."""

    def __init__(self) -> None:
        self._kept: dict[bytes, nlparse.Neigh] = {}
        self._next: dict[bytes, nlparse.Neigh] = {}
        self.decoded = 0
        self.reused = 0

    def begin(self) -> None:
        self._next = {}

    def read(self, dump: Dump) -> list[nlparse.Neigh]:
        """The flood entries of ``dump`` that may be one (as :meth:`LinkMemo.links`)."""
        self.begin()
        out = [n for data, a, b in dump if (n := self.get(data, a, b)) is not None]
        self.done()
        return out

    def get(self, data: bytes, a: int, end: int) -> nlparse.Neigh | None:
        if not nlparse.may_be_flood(data, a, end):
            return None  # a port's own MAC (as flood() says)
        key = data[a : end - 16]
        n = self._kept.get(key)
        if n is not None:
            self._next[key] = n
            self.reused += 1
            return n
        cut: list[int] = []
        n = nlparse.neigh(data, a, end, cut)
        self.decoded += 1
        if cut == [end - 16, end]:
            self._next[key] = n
        return n

    def done(self) -> None:
        self._kept, self._next = self._next, {}
