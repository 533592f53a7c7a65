"""``verify --snapshots``: does each stored snapshot equal the fold of the log up to its sequence?

A snapshot is a promise — "this is what folding sequences 1..N gives" — that a service starting
from it takes on trust once its hash, format and fold version check out. This check keeps the
promise honest: it folds the log from 1 to N with this code (:class:`State`, the same fold the
service runs) and compares the result with the snapshot, part by part. A snapshot that cannot be
used at all (hash, format, another stream) is reported with the reason a service would give.

The log is read once for all the snapshots: they are checked in the order of their sequences,
the fold read on from one to the next (pruned at each as a snapshot is: the service's reader
prunes as it reads, and its fold read on is the same), so the check costs one read up to the
newest, not one per snapshot kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from netledger.events.codec import Envelope
from netledger.events.errors import DecodeError
from netledger.events.prune import prune_all
from netledger.events.snapshot import SnapshotInvalid, loads, state_to_wire
from netledger.events.state import State
from netledger.events.wire_fast import decode_fast
from netledger.journal.snapshot_store import SnapshotStore
from netledger.journal.stream import Connection

from .reader import read_range


async def fold_to(
    conn: Connection, seq: int, advance: Callable[[int], None] | None = None
) -> State:
    """The service's fold of the log from sequence 1 through ``seq``, read through: what it
    no longer needs of the deleted networks forgotten (events/prune.py), as the service's
    reader forgets it and its snapshots hold it."""
    state = State()
    await fold_on(conn, state, 1, seq, advance)
    return state


async def fold_on(
    conn: Connection,
    state: State,
    start: int,
    seq: int,
    advance: Callable[[int], None] | None = None,
) -> int:
    """Read ``state`` (the fold of the log before ``start``) on from ``start`` through
    ``seq``, as :func:`fold_to`; the messages read."""
    read = 0
    if seq >= start:
        async for m in read_range(conn, start, seq):
            read += 1
            try:
                env: Envelope | None = decode_fast(m.data)
            except DecodeError:
                env = None
            state.fold_message(m.seq, m.subject, env)  # what it refuses, the service recorded
            if advance is not None and m.seq % 5000 == 0:
                advance(m.seq)
    if seq >= 1:
        prune_all(state, seq)
    return read


def differences(a: dict[str, Any], b: dict[str, Any], limit: int = 5) -> list[str]:
    """Where two wire forms of the fold differ (the part, and for networks which ones)."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key):
            continue
        if key in ("networks", "pools"):
            mine = {str(x[0]): x for x in a.get(key, [])}
            theirs = {str(x[0]): x for x in b.get(key, [])}
            for k in sorted(set(mine) | set(theirs)):
                if mine.get(k) != theirs.get(k) and len(out) < limit:
                    out.append(f"{key}: {k}")
        elif len(out) < limit:
            out.append(key)
    return out


async def verify_snapshots(
    conn: Connection, kind: str = "service", progress: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Check every stored snapshot of ``kind``; ``equal`` is true when all of them match."""
    store = SnapshotStore(conn, kind)
    created, last = await store.stream_identity()
    listed = await store.snapshots()
    results: list[dict[str, Any]] = [{} for _ in listed]
    state = State()  # the log's fold, read on from one snapshot's sequence to the next
    folded = read = 0
    for i in sorted(range(len(listed)), key=lambda i: listed[i].seq):
        s = listed[i]
        r: dict[str, Any] = {**s.as_dict(), "usable": False, "equal": False, "differences": []}
        try:
            body = await store.read(s)
            snap = loads(
                body,
                sha256=s.sha256,
                stream=conn.stream,
                created=created,
                stream_last_seq=last,
                encoding=s.encoding,
            )
            if snap.seq != s.seq:  # as a start refuses it (store.load): the anchor is of s.seq
                raise SnapshotInvalid(f"holds the fold at seq {snap.seq}, stored as {s.seq}")
            await store.check_anchor(snap.seq, s.anchor)
        except SnapshotInvalid as exc:
            r["reason"] = exc.reason
            results[i] = r
            continue
        r["usable"] = True
        mine = _normal(state_to_wire(snap.state))
        read += await fold_on(conn, state, folded + 1, snap.seq, progress)
        folded = max(folded, snap.seq)
        theirs = _normal(state_to_wire(state))
        r["equal"] = mine == theirs
        r["differences"] = differences(mine, theirs)
        results[i] = r
    return {
        "stream": conn.stream,
        "stream_last_seq": last,
        "snapshots": results,
        "equal": all(r["equal"] for r in results),
        "log_messages_read": read,
    }


def _normal(w: dict[str, Any]) -> dict[str, Any]:
    """Order-independent form: dict iteration order is the fold's history, not its meaning."""
    out = dict(w)
    out["awaiting_release"] = sorted(w["awaiting_release"])
    out["networks"] = sorted(w["networks"], key=lambda x: str(x[0].get("network_id")))
    for n in out["networks"]:
        n[5] = sorted(n[5])
    out["networks"] = [[x[0]["network_id"], *x] for x in out["networks"]]
    out["pools"] = sorted(
        ([x[0]["pool"], *x[:3], sorted(x[3])] for x in w["pools"]), key=lambda x: str(x[0])
    )
    return out
