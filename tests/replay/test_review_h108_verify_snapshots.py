"""Review h108: ``verify --snapshots`` reading the log once, the snapshots in the order of their
sequences, the fold pruned at each — does it still catch every snapshot that is not the fold?

A bucket as an operator may find it: a wrong fold in the middle (its hash and anchor right:
usable), one that is unusable in the middle (its body corrupt), two at the same sequence (one
wrong), objects whose names do not sort as their sequences. Each wrong one is reported unequal,
each right one equal (the fold read on past a wrong or unusable one is still the log's).

Real nats-server, the real command service writing real snapshots; the wrong ones are real
snapshot bodies of an altered fold, stored as the snapshot store stores them.
"""

from __future__ import annotations

from pathlib import Path

from nats.js.api import ObjectMeta

from netledger.events.snapshot import ENCODING, digest, dumps, encode_body
from netledger.events.state import FOLD_VERSION, State
from netledger.journal.snapshot_store import (
    H_ANCHOR,
    H_ENCODING,
    H_FOLD,
    H_FORMAT,
    H_SEQ,
    H_SHA,
    SNAPSHOT_FORMAT,
    SnapshotStore,
)
from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

#: snapshots written when asked, in the event loop; all kept
POLICY = SnapshotPolicy(every_events=0, fork=False, keep=20)


async def history(conn: Connection) -> list[int]:
    """A log with a deletion in it and three real snapshots along it; their sequences."""
    c = Client(conn)
    svc = CommandService(conn, snapshots=POLICY)
    await svc.start()
    seqs: list[int] = []
    try:
        assert svc.snapshotter is not None
        (keep,) = await c.create_networks(label="k", cidr="10.90.0.0/24", mode="flat")
        (gone,) = await c.create_networks(label="g", cidr="10.91.0.0/24", mode="flat")
        for step in range(3):
            for i in range(4):
                await c.allocate_fixed_ip(f"i-{step}-{i}", network_id=keep["id"], host="h1")
            if step == 1:
                await c.request("network.delete", {"network_id": gone["id"]})
            await svc.follower.catch_up()
            written = await svc.snapshotter.write()
            assert written is not None
            seqs.append(written.seq)
    finally:
        await svc.close()
    assert seqs == sorted(set(seqs))
    return seqs


async def put(
    conn: Connection, tmp_path: Path, name: str, seq: int, state: State, *, corrupt: bool = False
) -> None:
    """Store ``state`` as the snapshot ``name`` at ``seq`` (its hash of the body as stored and
    the anchor of ``seq``: usable unless ``corrupt``, whose body is cut after its hash)."""
    store = SnapshotStore(conn, keep=20)
    created, _ = await store.stream_identity()
    body = encode_body(dumps(state, None, seq=seq, stream=conn.stream, created=created))
    sha = digest(body)
    path = tmp_path / name
    path.write_bytes(body[: len(body) // 2] if corrupt else body)
    obs = await store._store(create=True)
    meta = ObjectMeta(
        name=name,
        headers={
            H_SEQ: [str(seq)],
            H_SHA: [sha],
            H_FORMAT: [str(SNAPSHOT_FORMAT)],
            H_FOLD: [str(FOLD_VERSION)],
            H_ENCODING: [ENCODING],
            H_ANCHOR: [await store.anchor(seq)],
        },
    )
    with path.open("rb") as f:
        await obs.put(name, f, meta=meta)


async def wrong(conn: Connection, seq: int) -> State:
    """The log's fold at ``seq``, altered."""
    state = await fold_to(conn, seq)
    state.next_network_number += 7
    return state


async def test_every_wrong_snapshot_is_caught(conn: Connection, tmp_path: Path) -> None:
    first, middle, last = await history(conn)
    # the middle one replaced by a wrong fold (same name: the real one is gone)
    await put(conn, tmp_path, f"service-{middle:012d}", middle, await wrong(conn, middle))
    # a wrong twin of the first, a right twin of the last, a corrupt one in the middle
    await put(conn, tmp_path, "service-twin-a", first, await wrong(conn, first))
    await put(conn, tmp_path, "service-twin-b", last, await fold_to(conn, last))
    await put(
        conn, tmp_path, "service-cut", middle + 1, await fold_to(conn, middle + 1), corrupt=True
    )
    # names that sort against their sequences: the lowest name holds the newest fold (wrong),
    # the highest the oldest (right)
    await put(conn, tmp_path, "service-000000000000", last, await wrong(conn, last))
    await put(conn, tmp_path, "service-zzz", first, await fold_to(conn, first))

    report = await verify_snapshots(conn)
    got = {r["name"]: (r["seq"], r["usable"], r["equal"]) for r in report["snapshots"]}
    assert got == {
        f"service-{first:012d}": (first, True, True),
        f"service-{middle:012d}": (middle, True, False),
        f"service-{last:012d}": (last, True, True),
        "service-twin-a": (first, True, False),
        "service-twin-b": (last, True, True),
        "service-cut": (middle + 1, False, False),
        "service-000000000000": (last, True, False),
        "service-zzz": (first, True, True),
    }, report
    assert not report["equal"]
    assert report["log_messages_read"] == last
