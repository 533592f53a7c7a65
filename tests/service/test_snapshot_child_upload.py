"""The command service's snapshot is uploaded by the child that encoded it, on a connection of
its own (journal/snapshot_upload.py): the service's connection — the clients' requests, its
appends and their acks — carries none of its chunks, and what a start loads stays what it was.

- the child's upload is the snapshot a start loads (the whole fold, equal to the log's);
- a child killed mid-upload (its chunks stored, its metadata not yet) leaves no snapshot a start
  would load: the start takes the newest valid one before it; a write given up (the service
  closing) kills and reaps the child and removes its files;
- the child connects as the service did: user and password given as options or in the URL;
- a child that cannot connect (the server's connection limit) leaves the upload to the parent.

Which connection carried the body is told by the service connection's own count of bytes
published (nats-py's ``stats["out_bytes"]``): less than the snapshot's size, it did not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.client import JetStreamContext

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.snapshot import state_to_wire
from netledger.journal.snapshot_store import BUCKET, SnapshotStore, StoredSnapshot
from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.replay.verify_snapshot import fold_to as fold_from_log
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.journal.test_snapshot_writer_cancel import _gone, record_forks
from tests.service.test_snapshots import _network

AUTH = "authorization { users = [ {user: app, password: right} ] }\n"
#: Allocations before a snapshot: enough that its body outweighs the service's own traffic
#: during a write (the listing, the anchor, the pruning).
ALLOCATIONS = 150


def _policy(tmp_path: Path) -> SnapshotPolicy:
    tmp = tmp_path / "snapshot-tmp"
    tmp.mkdir(exist_ok=True)
    return SnapshotPolicy(every_events=0, tmpdir=str(tmp))


async def _fill(client: Client, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await client.request(
            "fixed_ip.allocate",
            {"instance": f"i-{i}", "project": "p1", "host": "h1"},
            command_id=f"alloc-{i}",
        )


async def _started(conn: Connection, policy: SnapshotPolicy) -> CommandService:
    svc = CommandService(conn, snapshots=policy)
    await svc.start()
    return svc


async def _write_measured(svc: CommandService) -> tuple[Any, int]:
    """(the snapshot written, bytes the service's own connection published meanwhile)."""
    assert svc.snapshotter is not None
    await svc.follower.catch_up()
    before = svc.conn.nc.stats["out_bytes"]
    stored = await svc.snapshotter.write()
    return stored, svc.conn.nc.stats["out_bytes"] - before


async def _a_start_loads(conn: Connection, expected_seq: int | None) -> None:
    """A service started now loads the snapshot at ``expected_seq`` (None: none) and holds the
    log's fold."""
    again = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await again.start()
    try:
        assert again.snapshotter is not None
        assert again.snapshotter.stats.loaded_seq == expected_seq
        end = await again.follower.catch_up()
        assert state_to_wire(again.state) == state_to_wire(await fold_from_log(conn, end))
    finally:
        await again.close()


async def test_the_childs_upload_is_the_snapshot_a_start_loads(
    conn: Connection, tmp_path: Path
) -> None:
    stored, published, written = await _written(conn, tmp_path)
    assert written == 1
    assert published < stored.size, (published, stored)  # the body went another way
    [listed] = await SnapshotStore(conn).snapshots()
    assert (listed.name, listed.seq, listed.sha256, listed.size) == (
        stored.name,
        stored.seq,
        stored.sha256,
        stored.size,
    )
    assert os.listdir(tmp_path / "snapshot-tmp") == []
    await _a_start_loads(conn, stored.seq)


def _in_the_child_at_the_metadata(monkeypatch: pytest.MonkeyPatch, act: Any) -> None:
    """``act()`` runs in a forked child when it is about to publish an object's metadata, every
    chunk stored (inherited through the fork: this process publishes none)."""
    real = JetStreamContext.publish
    me = os.getpid()

    async def publish(self: Any, subject: str, *args: Any, **kwargs: Any) -> Any:
        if os.getpid() != me and subject.startswith(f"$O.{BUCKET}.M."):
            act()
        return await real(self, subject, *args, **kwargs)

    monkeypatch.setattr(JetStreamContext, "publish", publish)


async def _chunks_stored(conn: Connection) -> int:
    info = await conn.js.stream_info(f"OBJ_{BUCKET}")
    return int(info.state.messages)


async def test_a_child_killed_mid_upload_leaves_no_snapshot_a_start_loads(
    conn: Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = await _started(conn, _policy(tmp_path))
    try:
        client = Client(conn)
        await _network(client)
        await _fill(client, ALLOCATIONS)
        first, _ = await _write_measured(svc)  # a valid one before
        assert first is not None
        await _fill(client, 20, start=ALLOCATIONS)
        held = await _chunks_stored(conn)
        _in_the_child_at_the_metadata(monkeypatch, lambda: os.kill(os.getpid(), signal.SIGKILL))
        with pytest.raises(RuntimeError, match=r"exit -9"):
            await _write_measured(svc)
        monkeypatch.undo()
        assert svc.snapshotter is not None and svc.snapshotter.stats.written == 1
    finally:
        await svc.close()
    assert await _chunks_stored(conn) > held, "killed before its chunks were stored"
    assert [s.name for s in await SnapshotStore(conn).snapshots()] == [first.name]
    assert os.listdir(tmp_path / "snapshot-tmp") == []
    await _a_start_loads(conn, first.seq)


async def test_a_write_given_up_mid_upload_kills_and_reaps_its_child(
    conn: Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "at-the-metadata"

    def hold() -> None:
        marker.touch()
        time.sleep(3600)

    svc = await _started(conn, _policy(tmp_path))
    try:
        client = Client(conn)
        await _network(client)
        await _fill(client, 20)
        await svc.follower.catch_up()
        _in_the_child_at_the_metadata(monkeypatch, hold)
        forked = record_forks(monkeypatch)
        assert svc.snapshotter is not None
        write = asyncio.create_task(svc.snapshotter.write())
        for _ in range(1200):  # the child encodes, connects and stores its chunks
            if marker.exists() or write.done():
                break
            await asyncio.sleep(0.05)
        assert marker.exists(), write
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
        monkeypatch.undo()
    finally:
        await svc.close()
    assert len(forked) == 1
    assert await _gone(forked[0], within=30.0), "the child still runs (or was never reaped)"
    assert await SnapshotStore(conn).snapshots() == []
    assert os.listdir(tmp_path / "snapshot-tmp") == []
    await _a_start_loads(conn, None)


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "nats", port=free_port(), extra_config=AUTH)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["options", "url"])
async def secured_conn(request: Any, secured: EmbeddedNats) -> AsyncIterator[Connection]:
    """The service's connection to a server that wants a password: given as options, or in the
    URL the service was started with."""
    if request.param == "options":
        conn = await connect(secured.url, user="app", password="right")
    else:
        conn = await connect(secured.url.replace("nats://", "nats://app:right@"))
    try:
        await ensure_stream(conn)
        yield conn
    finally:
        await conn.close()


async def test_the_child_connects_with_the_services_credentials(
    secured_conn: Connection, tmp_path: Path
) -> None:
    # Refused, the child would have left the body to the service's connection (below).
    await uploaded_by_the_child(secured_conn, tmp_path)


async def uploaded_by_the_child(conn: Connection, tmp_path: Path) -> None:
    """A service on ``conn`` writes a snapshot of ``ALLOCATIONS`` allocations: its body went
    over the child's own connection (the service's published fewer bytes than its size), and
    a start loads it."""
    stored, published, _ = await _written(conn, tmp_path)
    assert published < stored.size, (published, stored)
    await _a_start_loads(conn, stored.seq)


async def _written(conn: Connection, tmp_path: Path) -> tuple[StoredSnapshot, int, int]:
    """A service on ``conn`` with ``ALLOCATIONS`` allocations writes a snapshot: what it
    stored, the bytes its own connection published meanwhile, the snapshots it wrote."""
    svc = await _started(conn, _policy(tmp_path))
    try:
        client = Client(conn)
        await _network(client)
        await _fill(client, ALLOCATIONS)
        stored, published = await _write_measured(svc)
        assert stored is not None and svc.snapshotter is not None
        return stored, published, svc.snapshotter.stats.written
    finally:
        await svc.close()


@pytest.fixture
async def one_connection(tmp_path: Path) -> AsyncIterator[Connection]:
    """A server that takes one client connection: the service's."""
    server = EmbeddedNats(tmp_path / "nats", port=free_port(), extra_config="max_connections: 1\n")
    server.start()
    try:
        conn = await connect(server.url)
        try:
            await ensure_stream(conn)
            yield conn
        finally:
            await conn.close()
    finally:
        server.stop()


async def test_a_child_that_cannot_connect_leaves_the_upload_to_the_service(
    one_connection: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conn = one_connection
    svc = await _started(conn, _policy(tmp_path))
    try:
        client = Client(conn)
        await _network(client)
        await _fill(client, ALLOCATIONS)
        with caplog.at_level(logging.WARNING, logger="netledger.snapshot"):
            stored, published = await _write_measured(svc)
        assert stored is not None
    finally:
        await svc.close()
    assert published >= stored.size, (published, stored)
    assert "could not connect" in caplog.text
    assert os.listdir(tmp_path / "snapshot-tmp") == []
    await _a_start_loads(conn, stored.seq)
