"""Pruning snapshots purges the delete marker each deletion leaves on the object's metadata
subject (journal/snapshot_store.py ``prune``, ``purge_marker``; review hrev83): the bucket's
stream holds the kept snapshots' metadata and chunks, nothing per snapshot ever written —
markers an older pruning left go at the next one, a name stored again after its deletion is
never purged, and the service's own credentials allow it. Real nats-server (with per-role auth
in the last test), real command service and snapshot writer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from netledger.journal.snapshot_store import BUCKET, SnapshotStore, meta_subject
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.ops.test_auth import Secured
from tests.ops.test_auth import secured as secured  # the fixtures: real nats-server, auth on
from tests.ops.test_auth import svc as svc

STREAM = f"OBJ_{BUCKET}"


async def _meta(conn: Connection) -> dict[str, int]:
    """Messages per metadata subject of the bucket's stream."""
    info = await conn.js.stream_info(STREAM, subjects_filter=f"$O.{BUCKET}.M.>")
    return dict(info.state.subjects or {})


async def _write(svc: CommandService, client: Client, i: int, nid: str) -> str:
    """A new event, then a snapshot of the fold at it; its object's name."""
    await client.allocate_fixed_ip(f"vm{i}", network_id=nid, host="h1")
    await svc.follower.catch_up()
    assert svc.snapshotter is not None
    stored = await svc.snapshotter.write()
    assert stored is not None
    return stored.name


@pytest.fixture
async def writer(conn: Connection) -> AsyncIterator[tuple[CommandService, Client, str]]:
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))  # written by hand
    await svc.start()
    try:
        c = Client(conn)
        [net] = await c.create_networks(label="m", cidr="10.85.0.0/24", mode="flat")
        yield svc, c, str(net["id"])
    finally:
        await svc.close()


async def test_pruning_leaves_only_the_kept_snapshots_metadata(
    conn: Connection, writer: tuple[CommandService, Client, str]
) -> None:
    svc, c, nid = writer
    names = [await _write(svc, c, i, nid) for i in range(5)]
    # Exactly the two kept, one message each: the subjects are nats-py's (meta_subject).
    assert await _meta(conn) == {meta_subject(n): 1 for n in names[-2:]}
    kept = await SnapshotStore(conn).snapshots()
    assert [s.name for s in kept] == names[::-1][:2]
    chunks = await conn.js.stream_info(STREAM, subjects_filter=f"$O.{BUCKET}.C.>")
    assert set(chunks.state.subjects or {}) == {f"$O.{BUCKET}.C.{s.nuid}" for s in kept}


async def test_markers_an_older_pruning_left_go_at_the_next(
    conn: Connection, writer: tuple[CommandService, Client, str]
) -> None:
    svc, c, nid = writer
    names = [await _write(svc, c, i, nid) for i in range(2)]
    obs = await conn.js.object_store(BUCKET)
    for n in ("service-000000000001", "service-000000000002", "other-000000000003"):
        await obs.put(n, b"an old snapshot")
        await obs.delete(n)  # as netledger's pruning did before: the marker stays
    markers = {meta_subject(n) for n in ("service-000000000001", "service-000000000002")}
    assert markers <= set(await _meta(conn))
    names.append(await _write(svc, c, 9, nid))
    # This kind's markers purged; another kind's is not this store's to touch.
    assert await _meta(conn) == {
        **{meta_subject(n): 1 for n in names[-2:]},
        meta_subject("other-000000000003"): 1,
    }


async def test_a_name_stored_again_after_its_deletion_is_not_purged(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(conn)
    obs = await store._store(create=True)
    name = "service-000000000007"
    await obs.put(name, b"first")
    await obs.delete(name)
    real = conn.js.get_last_msg

    async def then_stored_again(stream: str, subject: str, *a: Any, **kw: Any) -> Any:
        got = await real(stream, subject, *a, **kw)
        if subject == meta_subject(name):
            # Another replica stores the name again between the look and the purge.
            monkeypatch.setattr(conn.js, "get_last_msg", real)
            await obs.put(name, b"second")
        return got

    monkeypatch.setattr(conn.js, "get_last_msg", then_stored_again)
    assert await store.purge_marker(name)  # the marker it saw is purged ...
    info = await obs.get_info(name)  # ... the newer metadata is not
    assert not info.deleted and info.size == len(b"second")
    assert (await _meta(conn))[meta_subject(name)] == 1
    assert not await store.purge_marker(name)  # not deleted: nothing to purge


async def test_pruning_under_the_service_credentials_purges_the_markers(
    secured: Secured, svc: Any
) -> None:
    conn, _ = svc  # connected with the service's credentials (docs/security.md)
    writer = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await writer.start()
    admin = await Client.connect(secured.url, **secured.creds["admin"])
    try:
        [net] = await admin.create_networks(label="a", cidr="10.86.0.0/24", mode="flat")
        names = [await _write(writer, admin, i, str(net["id"])) for i in range(4)]
    finally:
        await admin.close()
        await writer.close()
    assert await _meta(conn) == {meta_subject(n): 1 for n in names[-2:]}
