"""``verify --snapshots`` reads the log once for all the snapshots kept, not once each (issue 13:
the check's cost follows the newest snapshot's sequence, not the number kept times it).

Real nats-server, the real command service writing real snapshots; the read is measured by the
messages the report says it read (``log_messages_read``)."""

from __future__ import annotations

from netledger.events.snapshot import loads, state_to_wire
from netledger.journal.snapshot_store import SnapshotStore
from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.service.test_revert import cli

#: snapshots written when asked (Snapshotter.write), in the event loop; three kept
POLICY = SnapshotPolicy(every_events=0, fork=False, keep=3)


async def test_the_log_is_read_once_up_to_the_newest_snapshot(
    conn: Connection, nats_url: str
) -> None:
    c = Client(conn)
    svc = CommandService(conn, snapshots=POLICY)
    await svc.start()
    written = []
    try:
        assert svc.snapshotter is not None
        (keep,) = await c.create_networks(label="k", cidr="10.70.0.0/24", mode="flat")
        (gone,) = await c.create_networks(label="g", cidr="10.71.0.0/24", mode="flat")
        for i in range(20):
            await c.allocate_fixed_ip(f"i-{i}", network_id=keep["id"], host="h1")
        await c.allocate_fixed_ip("g-1", network_id=gone["id"], host="h2")
        await svc.follower.catch_up()
        written.append(await svc.snapshotter.write())
        # A deletion between two snapshots: the fold read on is pruned at each (as the
        # service's reader prunes as it reads), and must still equal the next one.
        await c.deallocate_fixed_ip("g-1", network_id=gone["id"])
        await c.request("network.delete", {"network_id": gone["id"]})
        for i in range(20, 30):
            await c.allocate_fixed_ip(f"i-{i}", network_id=keep["id"], host="h1")
        await svc.follower.catch_up()
        written.append(await svc.snapshotter.write())
        await c.deallocate_fixed_ip("i-0", network_id=keep["id"])
        await svc.follower.catch_up()
        written.append(await svc.snapshotter.write())
    finally:
        await svc.close()
    seqs = sorted(s.seq for s in written if s is not None)
    assert len(set(seqs)) == 3
    assert sorted(s.seq for s in await SnapshotStore(conn).snapshots()) == seqs

    report = await verify_snapshots(conn)
    assert report["equal"], report
    assert sorted(r["seq"] for r in report["snapshots"]) == seqs
    assert all(r["usable"] and r["equal"] for r in report["snapshots"])
    # One read up to the newest: not the sum of the three sequences.
    assert report["log_messages_read"] == seqs[-1]
    # The fold read on from snapshot to snapshot is the fold of the log from 1 for each.
    store = SnapshotStore(conn)
    created, last = await store.stream_identity()
    for s in await store.snapshots():
        body = await store.read(s)
        kw = {"stream": conn.stream, "created": created, "stream_last_seq": last}
        snap = loads(body, sha256=s.sha256, encoding=s.encoding, **kw)
        assert state_to_wire(snap.state) == state_to_wire(await fold_to(conn, s.seq))

    rc, out, err = await cli(nats_url, "verify", "--snapshots")
    assert rc == 0, err
    assert f"read {seqs[-1]} messages of the log" in out
