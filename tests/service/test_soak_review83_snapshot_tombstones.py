"""Review hrev83 (issue 13: costs follow change, not age): every snapshot ever written left a
message in the object store's stream for good, and every listing read them all. Now the
pruning purges each delete marker (tests/service/test_snapshot_markers.py).

``SnapshotStore.prune`` keeps 2 snapshots and deletes the rest with ``ObjectStore.delete``:
the chunks are purged, but the object's metadata subject (``$O.NETLEDGER_SNAPSHOTS.M.<name>``)
keeps a delete marker. Each snapshot has a name of its own (``service-<seq>``), so one marker
per snapshot ever written stays in ``OBJ_NETLEDGER_SNAPSHOTS``, and ``snapshots()`` —
called by every start (load), before every write and by every prune — lists the bucket with
``obs.list``, which reads the newest message of every metadata subject: its cost grows with
the number of snapshots the cloud ever wrote, not with the 2 kept. Measured in a churn soak
(serve --snapshot-every 100): the stream held 4 messages after 10 cycles, 22 after 100, 63
after 300, for 2 live snapshots (and the soak's own listing returned 61 entries).
Real nats-server, real command service and snapshot writer."""

from __future__ import annotations

from netledger.journal.snapshot_store import BUCKET, SnapshotStore
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

FIRST, THEN = 3, 15


async def _stream_messages(conn: Connection) -> int:
    return int((await conn.js.stream_info(f"OBJ_{BUCKET}")).state.messages)


async def _listed(conn: Connection) -> int:
    """What a listing of the bucket reads (deleted entries included, as obs.list gets them)."""
    obs = await conn.js.object_store(BUCKET)
    return len(await obs.list(ignore_deletes=False))


async def test_snapshots_written_and_pruned_leave_nothing_behind(conn: Connection) -> None:
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))  # written by hand
    await svc.start()
    client = Client(conn)
    snapshotter = svc.snapshotter
    assert snapshotter is not None
    try:
        await client.create_networks(label="n", cidr="10.83.0.0/20", mode="flat", bridge="br83")
        points: dict[int, tuple[int, int]] = {}
        for i in range(THEN):
            await client.request(
                "fixed_ip.allocate", {"instance": f"vm{i}", "project": None, "network_id": "1",
                                      "host": "h1"},
            )  # fmt: skip
            await svc.follower.catch_up()
            assert await snapshotter.write() is not None
            if i + 1 in (FIRST, THEN):
                points[i + 1] = (await _stream_messages(conn), await _listed(conn))
        assert len(await SnapshotStore(conn).snapshots()) == 2  # pruned to `keep`
    finally:
        await svc.close()
    (msgs_a, listed_a), (msgs_b, listed_b) = points[FIRST], points[THEN]
    # Two snapshots are kept throughout; before the fix each write added one message (+12).
    assert msgs_b - msgs_a < (THEN - FIRST) // 2, f"stream messages {msgs_a} -> {msgs_b}"
    assert listed_b - listed_a < (THEN - FIRST) // 2, f"entries listed {listed_a} -> {listed_b}"
