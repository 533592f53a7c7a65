"""Snapshots of the fold: :class:`State` (and the service's memory of recent commands) as bytes.

A snapshot is the fold of the log up to stream sequence ``seq``, written so that a reader can
start from it and read only the tail (DESIGN.md, "Years and thousands of hosts"). It is a
msgpack map::

    {"format": 1, "fold": FOLD_VERSION, "stream": "NETLEDGER", "created": "<stream created>",
     "seq": N, "state": {...}, "seen": [[command id, packed events], ...]}

and it is never trusted blindly: :func:`loads` refuses a body whose SHA-256 is not the one
recorded beside it, whose format or fold version is not this code's, or that belongs to another
stream (or to a stream recreated under the same name). Every field of the fold is written
explicitly (no pickling): a change to :class:`State` must change this codec and bump
:data:`FOLD_VERSION`, and the round-trip property test (tests/events/test_snapshot_codec.py) fails
until it does.

Pure: no I/O. Writing and loading them is :mod:`netledger.journal.snapshot_store`.
"""

from __future__ import annotations

import gc
import hashlib
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import msgpack
import msgspec
import netaddr
from sortedcontainers import SortedList

from .codec import _build, decode
from .errors import DecodeError
from .reclaim_events import HostSightings, Report
from .state import (
    FOLD_VERSION,
    FixedIp,
    FloatingIp,
    NetworkState,
    OffsetPool,
    PoolState,
    State,
)
from .state_network import NO_JOINS
from .state_offsets import NO_OFFSETS, shared_reserved
from .types import Event, FloatingPoolCreated, NetworkCreated
from .wire_fast import compact

#: The layout of the snapshot map itself (not of the fold: that is FOLD_VERSION). 3: a host's
#: sighting reports name their network set by index. 4: and say whether each is a start (an
#: absence reaches back across none). 5: a fixed IP says whether its IPv6 address is leased.
#: 6: no deleted networks (and no ``deleted`` field); a network lists the hosts joined to it;
#: ``v4_ranges``, the ranges of every network ever created; ``legacy_announced``. 7:
#: ``unretired``, the deletions without a retirement on the registry. 8: no ``v4_ranges`` (the
#: NAT set is the live networks' ranges: executor/fragments.py ``fixed_space``). 9:
#: ``recreated``, the networks created under an id seen before; no ``subject_seq`` entry a
#: deleted network no longer needs (events/prune.py).
SNAPSHOT_FORMAT = 9

#: A command's events as the service remembers them: their envelopes as stored in the log
#: (decoded only when a retry asks: most never are; raw bytes are the smallest form). A tuple:
#: a tuple of bytes is untracked by the cyclic GC once a collection has seen it, a list stayed
#: one object more (of up to ``SEEN_COMMANDS``) for every full collection to walk.
SeenEvents = tuple[bytes, ...]


class SnapshotInvalid(Exception):
    """This snapshot cannot be used; ``reason`` says why (the caller warns and folds the log)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Snapshot:
    seq: int
    stream: str
    created: str
    state: State
    seen: OrderedDict[str, SeenEvents] = field(default_factory=OrderedDict)
    #: what a reader keeps beside the fold (an executor's view: executor/snapshot.py), as
    #: msgpack values; checked and decoded by that reader
    extra: dict[str, Any] = field(default_factory=dict)


def digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def anchor_of(subject: str, data: bytes) -> str:
    """The *anchor* of a snapshot at sequence N: the SHA-256 of the stored message N (its
    subject and payload). The stream's name, creation time and length cannot tell a log
    restored from an older backup and written past N since (a restore keeps the creation
    time): its message N is another. Recorded beside the body when the snapshot is written,
    compared with the stream's message N when it is loaded."""
    return hashlib.sha256(subject.encode() + b"\n" + data).hexdigest()


# --- the fold's pieces ------------------------------------------------------------------------


def _pool_to(p: OffsetPool) -> list[Any]:
    w = [p.first, p.last, sorted(p.reserved), p.next_unused, list(p.freed), p.used]
    if p.ahead:
        # Offsets taken beyond the mark (since Dec 5) as a 7th part, only when there are any:
        # a snapshot without them reads as before, and code from before cannot misread one
        # with them (it expects 6 parts: "undecodable state", it folds the log instead).
        w.append(list(p.ahead))
    return w


def _pool_from(w: list[Any]) -> OffsetPool:
    first, last, reserved, next_unused, freed, used, *rest = w
    (ahead,) = rest or ([],)
    p = OffsetPool.__new__(OffsetPool)
    p.first, p.last, p.reserved = first, last, shared_reserved(frozenset(reserved))
    # (empty: most networks' ``freed`` and nearly every ``ahead``: kept as OffsetPool does)
    p.next_unused, p.used = next_unused, used
    p.freed = SortedList(freed) if freed else NO_OFFSETS
    p.ahead = SortedList(ahead) if ahead else NO_OFFSETS
    return p


def _fixed_to(ip: FixedIp) -> list[Any]:
    return [
        ip.address, ip.instance, ip.mac, ip.host, ip.project, ip.allocated, ip.leased,
        ip.deallocated_at, ip.allocated_seq, ip.address_v6, ip.leased_v6,
    ]  # fmt: skip


def _network_to(n: NetworkState) -> list[Any]:
    return [
        n.net.to_data(),
        _pool_to(n.pool),
        n.seq,
        n.project,
        [_fixed_to(ip) for ip in n.fixed.values()],
        n.by_instance,
        n.macs,
        [[f, fixed, pool] for f, (fixed, pool) in n.floating.items()],
        None if n.pool6 is None else _pool_to(n.pool6),
        n.v6,
        sorted(n.joined),
    ]


def _network_from(w: list[Any]) -> NetworkState:
    data, pool, seq, project, fixed, by_instance, macs, floating, pool6, v6, joined = w
    # from_data, without __init__ when data is its fields; kept as the fold keeps it
    net = compact(_build(NetworkCreated, data))
    assert isinstance(net, NetworkCreated)
    n = NetworkState(
        net=net,
        # derived from the network as created (events/state_network.py: network_state)
        ipnet=netaddr.IPNetwork(net.cidr) if net.cidr is not None else None,
        ipnet6=netaddr.IPNetwork(net.cidr_v6) if net.v6_served else None,
        pool6=None if pool6 is None else _pool_from(pool6),
        v6=v6,
        pool=_pool_from(pool),
        seq=seq,
        project=project,
        fixed={f[0]: FixedIp(*f) for f in fixed},
        by_instance=by_instance,
        macs=macs,
        floating={f: (fixed, pool) for f, fixed, pool in floating},
        joined=set(joined) if joined else NO_JOINS,
    )
    for ip in n.fixed.values():  # derived: not stored
        if ip.allocated:
            n.count_host(ip, +1)
    return n


def _floating_pool_to(p: PoolState) -> list[Any]:
    return [
        p.created.to_data(),
        _pool_to(p.pool),
        p.seq,
        [
            [f.address, f.pool, f.project, f.fixed_address, f.network_id, f.instance]
            for f in p.floating.values()
        ],
    ]


def _floating_pool_from(w: list[Any]) -> PoolState:
    data, pool, seq, floating = w
    created = _build(FloatingPoolCreated, data)
    assert isinstance(created, FloatingPoolCreated)
    return PoolState(
        created=created,
        ipnet=netaddr.IPNetwork(created.cidr),
        pool=_pool_from(pool),
        seq=seq,
        floating={f[0]: FloatingIp(*f) for f in floating},
    )


def _sightings_to(h: HostSightings) -> list[Any]:
    """A host's sightings; each distinct network set once, the reports naming it by index (a
    host keeps up to 64 reports and most cover the same networks: listing each report's
    networks made an old cloud's snapshot 40% larger than a young one's for the same state)."""
    sets: dict[frozenset[str], int] = {}
    reports = [[r.seq, r.time, sets.setdefault(r.networks, len(sets)), r.start] for r in h.reports]
    return [[sorted(x) for x in sets], reports, h.seen, sorted(h.last_macs), h.limit]


def _sightings_from(w: list[Any]) -> HostSightings:
    sets, reports, seen, last_macs, limit = w
    shared = [frozenset(x) for x in sets]
    out = [Report(seq, time, shared[i], start) for seq, time, i, start in reports]
    return HostSightings.from_seen(out, seen, frozenset(last_macs), limit)


def state_to_wire(s: State) -> dict[str, Any]:
    """Every field of the fold, as msgpack-ready values."""
    return {
        "networks": [_network_to(n) for n in s.networks.values()],
        "pools": [_floating_pool_to(p) for p in s.pools.values()],
        "project_networks": s.project_networks,
        "instance_ips": {i: sorted(list(x) for x in v) for i, v in s.instance_ips.items()},
        "subject_seq": s.subject_seq,
        "last_seq": s.last_seq,
        "next_network_number": s.next_network_number,
        "awaiting_release": [[n, a, t] for (n, a), t in s.awaiting_release.items()],
        "event_time": s.event_time,
        "sightings": {h: _sightings_to(x) for h, x in s.sightings.items()},
        "network_hosts": sorted(s.network_hosts),
        "legacy_announced": s.legacy_announced,
        "unretired": s.unretired,
        "recreated": s.recreated,
    }


def state_from_wire(w: dict[str, Any]) -> State:
    networks = [_network_from(x) for x in w["networks"]]
    pools = [_floating_pool_from(x) for x in w["pools"]]
    s = State(
        networks={n.network_id: n for n in networks},
        pools={p.name: p for p in pools},
        project_networks=dict(w["project_networks"]),
        instance_ips={
            i: tuple(sorted({(a, b) for a, b in v})) for i, v in w["instance_ips"].items() if v
        },
        subject_seq=dict(w["subject_seq"]),
        last_seq=int(w["last_seq"]),
        next_network_number=int(w["next_network_number"]),
        awaiting_release={(n, a): t for n, a, t in w["awaiting_release"]},
        event_time=float(w["event_time"]),
        sightings={h: _sightings_from(x) for h, x in w["sightings"].items()},
        network_hosts=set(w["network_hosts"]),
        legacy_announced=dict(w["legacy_announced"]),
        unretired=dict(w["unretired"]),
        recreated=dict(w["recreated"]),
    )
    s.rebuild_host_macs()
    return s


# --- the recent commands the service remembers ----------------------------------------------


def seen_events(value: SeenEvents) -> list[Event]:
    """The events of a remembered command, decoded (undecodable ones left out)."""
    out = []
    for raw in value:
        try:
            out.append(decode(raw).event)
        except DecodeError:
            continue
    return out


# --- the whole snapshot -----------------------------------------------------------------------


def dumps(
    state: State,
    seen: OrderedDict[str, SeenEvents] | None,
    *,
    seq: int,
    stream: str,
    created: str,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """The snapshot body of ``state`` as folded up to stream sequence ``seq`` (``extra``:
    a reader's own bookkeeping at the same point, msgpack-ready)."""
    w: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "fold": FOLD_VERSION,
        "stream": stream,
        "created": created,
        "seq": seq,
        "state": state_to_wire(state),
        "seen": [[cid, v] for cid, v in (seen or {}).items()],
    }
    if extra is not None:
        w["extra"] = extra
    body: bytes = msgpack.packb(w, use_bin_type=True)
    return body


#: How a body is stored: zlib (level 1, in the forked writer) makes it ~3x smaller to upload and
#: read back for ~0.1 s of decompression at start.
ENCODING = "zlib"
MAX_BODY = 4 << 30  # a decompressed body above this is refused (a zip bomb is not unpacked)


def encode_body(raw: bytes) -> bytes:
    return zlib.compress(raw, 1)


def decode_body(stored: bytes, encoding: str | None) -> bytes:
    if encoding is None:
        return stored
    if encoding != ENCODING:
        raise SnapshotInvalid(f"unknown encoding {encoding!r}")
    d = zlib.decompressobj()
    try:
        raw = d.decompress(stored, MAX_BODY)
    except zlib.error as exc:
        raise SnapshotInvalid(f"not {encoding}: {exc}") from None
    if d.unconsumed_tail:
        raise SnapshotInvalid(f"decompresses to more than {MAX_BODY} bytes")
    return raw


def loads(
    body: bytes,
    *,
    sha256: str | None,
    stream: str,
    created: str,
    stream_last_seq: int | None = None,
    encoding: str | None = None,
) -> Snapshot:
    """Check and decode a snapshot body (as stored: ``encoding``); raise
    :class:`SnapshotInvalid` with the reason."""
    if sha256 is None:
        raise SnapshotInvalid("no content hash recorded")
    if digest(body) != sha256:
        raise SnapshotInvalid("content hash mismatch (corrupt or truncated)")
    # Millions of small objects at once: the cyclic GC would walk them again and again (it
    # more than doubled the load time); none of them is part of a cycle.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _loads(decode_body(body, encoding), stream, created, stream_last_seq)
    finally:
        if enabled:
            gc.enable()


_decode_body = msgspec.msgpack.Decoder().decode


def _loads(body: bytes, stream: str, created: str, stream_last_seq: int | None) -> Snapshot:
    try:
        # msgspec's decoder: the same values as msgpack.unpackb(raw=False,
        # strict_map_key=False) for what dumps writes, in ~2/3 of the time (12 MB: ~0.12 s).
        w = _decode_body(body)
    except Exception as exc:
        raise SnapshotInvalid(f"not msgpack: {exc.__class__.__name__}") from None
    if not isinstance(w, dict):
        raise SnapshotInvalid("not a map")
    if w.get("format") != SNAPSHOT_FORMAT:
        raise SnapshotInvalid(f"format {w.get('format')!r}, this code reads {SNAPSHOT_FORMAT}")
    if w.get("fold") != FOLD_VERSION:
        raise SnapshotInvalid(f"fold version {w.get('fold')!r}, this code folds {FOLD_VERSION}")
    if w.get("stream") != stream or w.get("created") != created:
        raise SnapshotInvalid(
            f"taken of stream {w.get('stream')} created {w.get('created')},"
            f" not {stream} created {created}"
        )
    seq = w.get("seq")
    if not isinstance(seq, int) or seq < 0:
        raise SnapshotInvalid(f"bad sequence {seq!r}")
    if stream_last_seq is not None and seq > stream_last_seq:
        raise SnapshotInvalid(
            f"taken at seq {seq}, beyond the stream's last sequence {stream_last_seq}"
        )
    try:
        state = state_from_wire(w["state"])
        seen: OrderedDict[str, SeenEvents] = OrderedDict(
            (c, tuple(bytes(x) for x in v)) for c, v in w["seen"]
        )
        extra = w.get("extra", {})
        if not isinstance(extra, dict):
            raise TypeError(f"extra is a {type(extra).__name__}")
    except Exception as exc:
        raise SnapshotInvalid(f"undecodable state: {exc.__class__.__name__}: {exc}") from None
    if state.last_seq > seq:
        raise SnapshotInvalid(f"state folded up to {state.last_seq}, beyond its seq {seq}")
    return Snapshot(seq=seq, stream=stream, created=created, state=state, seen=seen, extra=extra)
