"""A stored snapshot a start refuses is no snapshot to the writer or to the pruning either.

* the service writes a new snapshot although the bucket holds a newer one by sequence that it
  cannot start from — another fold version (left by the code before an upgrade), beyond the
  stream's end or with another anchor (a log restored from an older backup, or re-created), a
  corrupt body — instead of counting it as "recent" and folding the whole log at every start;
* pruning after a write keeps the snapshot just written and the newest usable one, and deletes
  the unusable ones first, however high their sequences.

Real parts: a nats-server, a command service, the snapshot bucket with objects put as older
code or a restored log would leave them.
"""

from __future__ import annotations

import io
import os

import pytest
from nats.js.api import ObjectMeta

from netledger.events.snapshot import dumps, encode_body
from netledger.events.state import FOLD_VERSION
from netledger.journal.snapshot_store import (
    H_ANCHOR,
    H_FOLD,
    H_SEQ,
    H_SHA,
    SnapshotStore,
    object_name,
    write_forked,
)
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

#: snapshots only when write() is called (the background task never finds one due in a test)
ON_CALL = SnapshotPolicy(every_events=5, min_interval=3600.0, check_interval=3600.0, keep=2)


async def _fill(conn: Connection, start: int, n: int) -> None:
    client = Client(conn)
    if start == 0:
        await client.request(
            "network.create",
            {"label": "n", "cidr": "10.20.0.0/16", "num_networks": 2, "network_size": 256,
             "mode": "vxlan", "vni_start": 500},
        )  # fmt: skip
    for i in range(start, start + n):
        await client.request(
            "fixed_ip.allocate", {"instance": f"i-{i}", "project": "p1", "host": "h1"}
        )


async def _put(conn: Connection, seq: int, body: bytes, **headers: str) -> str:
    """An object as another writer left it (headers: Netledger-* by their constants)."""
    obs = await SnapshotStore(conn)._store(create=True)
    name = object_name("service", seq)
    meta = ObjectMeta(name=name, headers={k: [v] for k, v in headers.items()})
    await obs.put(name, io.BytesIO(body), meta=meta)
    return name


@pytest.mark.parametrize("kind", ["older_fold", "beyond_the_end", "other_anchor", "corrupt"])
async def test_a_newer_unusable_snapshot_does_not_stop_new_ones(
    conn: Connection, kind: str
) -> None:
    """Before: write() compared with the newest by sequence alone and wrote nothing."""
    first = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await first.start()
    try:
        await _fill(conn, 0, 20)
        seq = await first.follower.catch_up()
        created = (await conn.js.stream_info(conn.stream)).created.isoformat()
        good = encode_body(
            dumps(first.state, first.seen, seq=seq, stream=conn.stream, created=created)
        )
    finally:
        await first.close()
    end = await last_seq(conn)
    assert end == seq
    store = SnapshotStore(conn)
    anchor = await store.anchor(end)
    sha = "0" * 64
    if kind == "older_fold":  # the code before an upgrade stopped at the log's end
        await _put(
            conn, end, b"old", **{H_SEQ: str(end), H_SHA: sha, H_FOLD: str(FOLD_VERSION - 1)}
        )
    elif kind == "beyond_the_end":  # written before the log was restored from an older backup
        await _put(
            conn, end + 100, b"lost", **{H_SEQ: str(end + 100), H_SHA: sha, H_ANCHOR: anchor}
        )
    elif kind == "other_anchor":  # the log's message at its seq is another one now
        other = await store.anchor(end - 1)
        await _put(conn, end, b"other", **{H_SEQ: str(end), H_SHA: sha, H_ANCHOR: other})
    else:  # headers that pass; the body does not (only load() can tell)
        from netledger.events.snapshot import digest

        bad = good[:50] + bytes([good[50] ^ 0xFF]) + good[51:]
        await _put(conn, end, bad, **{H_SEQ: str(end), H_SHA: digest(good), H_ANCHOR: anchor})

    svc = CommandService(conn, snapshots=ON_CALL)
    await svc.start()
    try:
        assert svc.snapshotter is not None
        assert svc.snapshotter.stats.loaded_seq is None  # refused: the whole log folded
        assert svc.snapshotter.stats.skipped
        written = await svc.snapshotter.write()
        assert written is not None, "no snapshot written: the unusable one counted as recent"
        assert written.seq == end
    finally:
        await svc.close()
    again = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await again.start()
    try:
        assert again.snapshotter is not None
        assert again.snapshotter.stats.loaded_seq == end
    finally:
        await again.close()


async def test_pruning_keeps_the_one_just_written_and_drops_unusable_ones_first(
    conn: Connection,
) -> None:
    """Before: the newest ``keep`` by sequence were kept — here the two beyond the end, so the
    snapshot just written and the older usable one were deleted."""
    svc = CommandService(conn, snapshots=ON_CALL)
    await svc.start()
    try:
        assert svc.snapshotter is not None
        await _fill(conn, 0, 10)
        await svc.follower.catch_up()
        older = await svc.snapshotter.write()
        assert older is not None
        await _fill(conn, 10, 10)
        end = await svc.follower.catch_up()
        created, _ = await SnapshotStore(conn).stream_identity()
        sha = "0" * 64
        anchor = await SnapshotStore(conn).anchor(end)
        unusable = {
            await _put(
                conn, end + 100, b"x", **{H_SEQ: str(end + 100), H_SHA: sha, H_ANCHOR: anchor}
            ),
            await _put(
                conn, end + 200, b"x", **{H_SEQ: str(end + 200), H_SHA: sha, H_ANCHOR: anchor}
            ),
            await _put(
                conn,
                end - 1,
                b"x",
                **{H_SEQ: str(end - 1), H_SHA: sha, H_FOLD: str(FOLD_VERSION - 1)},
            ),
        }
        # Stored as write() stores it (put prunes), whether or not write() would skip.
        path, digest = await write_forked(
            svc.state, svc.seen, seq=end, stream=conn.stream, created=created, fork=False
        )
        try:
            written = await SnapshotStore(conn, keep=ON_CALL.keep).put(path, end, digest, anchor)
        finally:
            os.unlink(path)
    finally:
        await svc.close()
    left = [s.name for s in await SnapshotStore(conn).snapshots()]
    assert left == [written.name, older.name]
    assert not unusable & set(left)
