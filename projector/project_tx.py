"""What the projection handlers work with: the outcome types and one event's transaction.

:class:`View` (read the rows as they stand), :class:`Change` and :class:`Outcome` (what
``project`` returns), :class:`Rejected` / :func:`reject` (an event that cannot be applied) and
:class:`Tx` (the changes of one event, readable while they are built), plus the small pure
helpers several handler modules share (CIDR tests, compact JSON, event field names). Kept apart
from the handlers so the domain and host handler modules depend on this one, never on each
other or on the ``project`` entry point.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, Protocol

import orjson

from netledger.events.codec import Envelope
from netledger.events.state_offsets import overlap, parse_cidr
from netledger.events.types import Event

from .tables import PROJECTS, REJECTED_EVENTS, Key, Row, Table

#: Raw bytes kept of a rejected message (enough to debug it, not enough to bloat the file).
MAX_RAW = 64 * 1024


class View(Protocol):
    """Read access to the projection as it stands before the event (no writes)."""

    def get(self, table: str, key: Key) -> Row | None: ...

    def select(self, table: str, column: str, value: Any) -> list[Row]: ...

    def rows(self, table: str) -> list[Row]:
        """Every row of a small table (the floating pools)."""
        ...


@dataclass(frozen=True, slots=True)
class Change:
    """Set the row at ``key`` of ``table`` to ``row``; ``row is None`` deletes it."""

    table: str
    key: Key
    row: Row | None


@dataclass(frozen=True, slots=True)
class Outcome:
    changes: tuple[Change, ...] = ()
    event: Row | None = None
    rejected: Row | None = None


class Rejected(Exception):
    """Raised inside a handler to turn the event into a ``rejected_events`` row."""


def rejected_row(
    seq: int,
    subject: str,
    reason: str,
    *,
    type_name: str | None = None,
    stream_time: float | None = None,
    raw: bytes | None = None,
) -> Row:
    """The ``rejected_events`` row of a message that could not be decoded or applied."""
    return REJECTED_EVENTS.blank(
        seq=seq,
        subject=subject,
        type=type_name,
        reason=reason[:1000],
        stream_time=stream_time,
        raw=raw[:MAX_RAW] if raw is not None else None,
    )


def reject(
    seq: int,
    subject: str,
    reason: str,
    *,
    type_name: str | None = None,
    stream_time: float | None = None,
    raw: bytes | None = None,
) -> Outcome:
    """The outcome for a message that could not be decoded or applied."""
    return Outcome(
        rejected=rejected_row(
            seq, subject, reason, type_name=type_name, stream_time=stream_time, raw=raw
        )
    )


# --- the handlers' working context ---------------------------------------------------------


#: The ``events`` columns that say what an event concerns (set by handlers in ``Tx.index``).
INDEX_COLUMNS = (
    "network_id", "address", "fixed_address", "instance", "project", "host", "pool", "address_v6",
)  # fmt: skip
_BLANK_INDEX: dict[str, Any] = dict.fromkeys(INDEX_COLUMNS)
#: What a lookup in :attr:`Tx.changes` that found nothing gives (a change may be None: deleted).
_ABSENT: Any = object()


class Tx:
    """Changes of one event, readable by the handler that is building them."""

    __slots__ = ("changes", "env", "index", "seq", "view")

    def __init__(self, seq: int, env: Envelope, view: View) -> None:
        self.seq = seq
        self.env = env
        self.view = view
        # Keyed (table name, primary key), in the order first written: the writer merges this
        # into its batch as it is.
        self.changes: dict[tuple[str, Key], Row | None] = {}
        # What the events index says this event concerns (filled in by handlers; every
        # column present, None until set).
        self.index: dict[str, Any] = _BLANK_INDEX.copy()

    def get(self, table: Table, key: Key) -> Row | None:
        row = self.changes.get((table.name, key), _ABSENT)
        if row is _ABSENT:
            row = self.view.get(table.name, key)
        return None if row is None else dict(row)

    def peek(self, table: Table, key: Key) -> Row | None:
        """The row as it stands, not a copy: only to read (a handler that changes a row gets
        its own copy with :meth:`get`). Most events only look at their network."""
        row = self.changes.get((table.name, key), _ABSENT)
        if row is _ABSENT:
            return self.view.get(table.name, key)
        return row  # type: ignore[no-any-return]

    def put(self, table: Table, row: Row) -> None:
        self.changes[(table.name, table.key_of(row))] = row

    def delete(self, table: Table, key: Key) -> None:
        self.changes[(table.name, key)] = None

    def stamp(self, row: Row, prefix: str = "updated") -> Row:
        names = _STAMPS.get(prefix) or _stamp_names(prefix)
        row[names[0]] = self.seq
        row[names[1]] = self.env.time
        return row

    def touch_project(
        self, project: str | None, network_id: str | None = None, set_network: bool = False
    ) -> None:
        """Record that ``project`` was seen; with ``set_network``, its network becomes that."""
        if not project:
            return
        row = self.get(PROJECTS, (project,))
        if row is None:
            row = PROJECTS.blank(project=project, first_seq=self.seq, first_at=self.env.time)
        row["last_seq"] = self.seq
        row["last_at"] = self.env.time
        if set_network:
            row["network_id"] = network_id
        self.put(PROJECTS, row)


_STAMPS: dict[str, tuple[str, str]] = {}


def _stamp_names(prefix: str) -> tuple[str, str]:
    names = _STAMPS[prefix] = (f"{prefix}_seq", f"{prefix}_at")
    return names


# --- small pure helpers the handlers share --------------------------------------------------


@lru_cache(maxsize=4096)
def _ip_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr, strict=False)


@lru_cache(maxsize=4096)
def _net_bits(cidr: str) -> tuple[int, int, int]:
    """(address family, network as int, netmask as int) of a CIDR."""
    n = _ip_network(cidr)
    family = socket.AF_INET if n.version == 4 else socket.AF_INET6
    return family, int(n.network_address), int(n.netmask)


def in_cidr(address: str, cidr: str) -> bool:
    # inet_pton instead of ipaddress: this runs for every allocation (5x faster).
    try:
        family, network, mask = _net_bits(cidr)
        value = int.from_bytes(socket.inet_pton(family, address), "big")
    except (ValueError, TypeError, OSError):
        return False
    return value & mask == network


def is_cidr(cidr: str) -> bool:
    """Whether the fold takes ``cidr`` as a network or pool (one parser for both readers)."""
    try:
        parse_cidr(cidr)
    except ValueError:
        return False
    return True


def cidrs_overlap(a: str, b: str) -> bool:
    """Whether two CIDRs the fold takes share an address (one that does not parse: no)."""
    try:
        return overlap(parse_cidr(a), parse_cidr(b))
    except ValueError:
        return False


def bare(address: str) -> str:
    """``10.0.0.1/24`` -> ``10.0.0.1`` (the index is searched by plain address)."""
    return address.split("/", 1)[0]


_FIELDS: dict[type[Event], tuple[str, ...]] = {}


def field_names(cls: type[Event]) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls))
    return names


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def _fast_encoder() -> Callable[[Any], str] | None:
    """``_ENCODER.encode`` without what it redoes on every call (building the C encoder, the
    circular-reference bookkeeping: event data from msgpack has no cycles); same output."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    chunks = make(
        None, str, json.encoder.encode_basestring_ascii, None, ":", ",", True, False, True
    )
    return lambda value: "".join(chunks(value, 0))


_FAST_ENCODE = _fast_encoder()

# orjson writes the same text as the stdlib encoder above for most values, in a fifth of the
# time (the ``data`` column is written for every event): str keys and values (its escapes of
# ASCII controls are the stdlib's; what it writes as is instead — beyond ASCII, DEL — the
# check of its output below sends back to the stdlib), ints, bools, None, and lists and maps
# of those. Floats only in the range where both write the shortest round-trip digits without
# an exponent (equal over 2 M random floats; tests/projector/test_projector_json.py): outside
# it they write exponents differently (``1e-05`` / ``0.00001``), NaN and infinities not at all
# alike. Anything else (other types, ints beyond 64 bits, a map key that is not a str) takes
# the stdlib encoder as before.
_SCALARS = frozenset({str, int, bool, type(None)})
_STR = frozenset({str})
_orjson_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS
#: DEL, which orjson writes as it is and the stdlib escapes. Looked for as an int: ``bytes in
#: bytes`` first tries its argument as an int and raises (and clears) a TypeError — ~1,800
#: instructions an event, measured (cachegrind), for a one-byte search.
DEL_BYTE = 0x7F


def same_in_orjson(value: Any) -> bool:
    """Whether orjson encodes ``value`` as the stdlib encoder does (text beyond ASCII aside:
    :func:`to_json` looks for it in orjson's output). A list or map of scalars only (a host's
    MACs, a NAT table) is checked by one set test over its types, not a call per item."""
    t = type(value)
    if t in _SCALARS:
        return True
    if t is float:
        return bool(value == 0.0 or 1e-4 <= abs(value) < 1e16)
    if not value and (t is list or t is dict):  # [] / {} (a link's detail): 3x faster
        return True
    if t is list:
        return _SCALARS.issuperset(map(type, value)) or all(map(same_in_orjson, value))
    if t is dict:
        return _STR.issuperset(map(type, value)) and (
            _SCALARS.issuperset(map(type, value.values()))
            or all(map(same_in_orjson, value.values()))
        )
    return False


def to_json(value: Any) -> str:
    """Compact JSON with sorted keys (the ``data``/``detail`` columns)."""
    t = type(value)
    if (t is dict and _SCALARS.issuperset(map(type, value.values()))) or (
        (t is dict or t is list) and same_in_orjson(value)
    ):
        try:
            out = _orjson_dumps(value, option=_SORTED)
        except TypeError:  # a key that is not a str, an int beyond 64 bits, deep nesting
            pass
        else:
            if out.isascii() and DEL_BYTE not in out:
                return out.decode("ascii")
    if _FAST_ENCODE is not None and t is dict:
        return _FAST_ENCODE(value)
    return _ENCODER.encode(value)
