"""Review hrev14: ``verify --snapshots`` judges a snapshot as a starting service does.

A snapshot object whose headers name one sequence (and the anchor of another) while its body
holds the fold at that other sequence is refused by every start (store.load: the anchor is
checked at the header's sequence, and the body must be at it); verify must not call it good.
"""

from __future__ import annotations

import io

from nats.js.api import ObjectMeta

from netledger.events.snapshot import digest, dumps
from netledger.journal.snapshot_store import (
    H_ANCHOR,
    H_SEQ,
    H_SHA,
    SnapshotStore,
    object_name,
)
from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy


async def test_verify_refuses_a_snapshot_a_start_refuses(conn: Connection) -> None:
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await svc.start()
    c = Client(conn)
    try:
        [net] = await c.create_networks(label="n", cidr="10.44.0.0/24", mode="flat")
        early = await svc.follower.catch_up()
        for i in range(3):
            await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"], host="h1")
        end = await svc.follower.catch_up()
    finally:
        await svc.close()
    store = SnapshotStore(conn)
    created, _ = await store.stream_identity()
    # The fold at `early`, stored under the name and sequence header of `end`.
    body = dumps(await fold_to(conn, early), None, seq=early, stream=conn.stream, created=created)
    obs = await store._store(create=True)
    name = object_name("service", end)
    headers = {H_SEQ: [str(end)], H_SHA: [digest(body)], H_ANCHOR: [await store.anchor(early)]}
    await obs.put(name, io.BytesIO(body), meta=ObjectMeta(name=name, headers=headers))

    assert await SnapshotStore(conn).load() is None  # a start refuses it
    report = await verify_snapshots(conn)
    [r] = report["snapshots"]
    assert r["seq"] == end
    assert not r["usable"], r  # verify said "equals the fold of the log up to seq <end>"
    assert not report["equal"]
