"""Review hrev14: snapshots of the command service's fold on a real nats-server.

* a snapshot taken after this replica folded its own append from the ack *before* its reader
  delivered an earlier message of another writer (a host's sighting report) is not the fold of
  the log up to its sequence: the service's fold took the two in ack order, not log order
  (fixed: what an event folded ahead changes across subjects — the MACs allocated per host, so
  the sightings, and ``event_time`` — waits until the reader reaches it: events/fold_ahead.py);
* an upload cut short (cancelled by the service's close, or killed) leaves its chunks in the
  bucket for good: pruning only deletes objects, never chunks no object names (fixed: the
  pruning purges chunks no object names once they are ``ORPHAN_GRACE_S`` old; so for the loser
  of two replicas uploading one sequence).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import HostInstancesSeen
from netledger.events.ids import host_subject
from netledger.events.snapshot import state_to_wire
from netledger.journal import snapshot_purge, snapshot_store
from netledger.journal.snapshot_store import BUCKET, SnapshotStore, write_forked
from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

EXECUTOR = Actor(role="system", user="executor:test")
#: snapshots only when write() is called
ON_CALL = SnapshotPolicy(every_events=5, min_interval=3600.0, check_interval=3600.0)


async def _report(conn: Connection, host: str, macs: list[str], nets: list[str]) -> int:
    """A sighting report, published as an executor publishes it."""
    ev = HostInstancesSeen(host=host, macs=macs, networks=nets, reason="change")
    env = Envelope(ev, uuid.uuid4().hex, uuid.uuid4().hex, time.time(), EXECUTOR)
    ack = await conn.js.publish(
        host_subject(host), encode(env), stream=conn.stream, headers={"Nats-Msg-Id": env.event_id}
    )
    return int(ack.seq)


async def test_a_snapshot_after_an_own_append_overtook_the_reader_is_the_fold_of_the_log(
    conn: Connection,
) -> None:
    svc = CommandService(conn, snapshots=ON_CALL)
    await svc.start()
    c = Client(conn)
    try:
        [net] = await c.create_networks(label="n", cidr="10.41.0.0/24", mode="flat_dhcp")
        nid = net["id"]
        await c.allocate_fixed_ip("i-1", network_id=nid, host="h1")
        await svc.follower.catch_up()
        [mac] = [ip.mac for ip in svc.state.networks[nid].fixed.values()]
        # The reader lags (its ordered consumer is being recreated, or it simply has not been
        # delivered the message yet): the host's report is stored before the deallocation...
        await svc.follower._unsubscribe()
        report_seq = await _report(conn, "h1", [mac.lower()], [nid])
        await c.deallocate_fixed_ip("i-1", network_id=nid)  # ...which is folded from its ack
        assert svc.state.last_seq > report_seq
        await svc.follower._subscribe(svc.follower.applied_seq + 1)
        end = await svc.follower.catch_up()
        assert svc.snapshotter is not None
        stored = await svc.snapshotter.write()
        assert stored is not None and stored.seq == end
        result = await verify_snapshots(conn)
        mine = state_to_wire(svc.state)
        theirs = state_to_wire(await fold_to(conn, end))
    finally:
        await svc.close()
    # verify --snapshots finds the snapshot the log's fold (it found sightings, event_time)...
    assert result["equal"], result["snapshots"][0]["differences"]
    # ...and so is the service's own fold at that seq (fixed: it was not)
    assert {k: v for k, v in mine.items() if mine[k] != theirs[k]} == {}


class _StallingReader(io.RawIOBase):
    """A snapshot file read by the upload: its first chunk at once, then nothing until released
    (an upload under way when the service stops)."""

    def __init__(self, path: str) -> None:
        self._f = open(path, "rb")
        self.first_read = threading.Event()
        self.release = threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.first_read.is_set():
            self.release.wait(30)
            if self._f.closed:
                return 0
        n = self._f.readinto(b)
        self.first_read.set()
        return n or 0

    def close(self) -> None:
        self.release.set()
        self._f.close()
        super().close()


async def _chunk_subjects(conn: Connection) -> dict[str, int]:
    info = await conn.js.stream_info(f"OBJ_{BUCKET}", subjects_filter=f"$O.{BUCKET}.C.>")
    return dict(info.state.subjects or {})


async def test_an_upload_cut_short_leaves_no_chunks_behind_after_pruning(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    svc = CommandService(conn, snapshots=ON_CALL)
    await svc.start()
    c = Client(conn)
    try:
        [net] = await c.create_networks(label="n", cidr="10.42.0.0/24", mode="flat")
        for i in range(3):
            await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"], host="h1")
        await svc.follower.catch_up()
        assert svc.snapshotter is not None
        first = await svc.snapshotter.write()
        assert first is not None
        # An upload of a bigger body is under way when the service stops (its task cancelled).
        store = SnapshotStore(conn)
        big = tmp_path / "body"
        big.write_bytes(os.urandom(3 * 128 * 1024))
        readers: list[_StallingReader] = []

        def stalling(path: str) -> Any:
            readers.append(_StallingReader(path))
            return readers[-1]

        monkeypatch.setattr(snapshot_store, "_open_read", stalling)
        upload = asyncio.create_task(store.put(str(big), first.seq + 1, "0" * 64, "x"))
        while not readers or not readers[0].first_read.is_set():
            await asyncio.sleep(0.01)
        while not set(await _chunk_subjects(conn)) - {
            f"$O.{BUCKET}.C.{s.nuid}" for s in await store.snapshots()
        }:
            await asyncio.sleep(0.01)  # its first chunk is stored
        upload.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upload
        readers[0].release.set()
        monkeypatch.undo()
        # Fixed: the pruning purges chunks no object names once they are older than the
        # grace (an upload may be under way elsewhere); here the grace has passed.
        monkeypatch.setattr(snapshot_purge, "ORPHAN_GRACE_S", 0.0)
        # The service goes on: more snapshots, each followed by pruning.
        for k in range(3):
            for i in range(ON_CALL.every_events):
                await c.allocate_fixed_ip(f"j-{k}-{i}", network_id=net["id"], host="h1")
            await svc.follower.catch_up()
            assert await svc.snapshotter.write() is not None
        stored = await SnapshotStore(conn).snapshots()
        chunks = await _chunk_subjects(conn)
    finally:
        await svc.close()
    assert len(stored) == ON_CALL.keep
    named = {f"$O.{BUCKET}.C.{s.nuid}" for s in stored}
    assert set(chunks) == named, f"chunks no object names: {set(chunks) - named}"


async def test_two_replicas_writing_the_same_seq_leave_no_chunks_behind(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await svc.start()
    c = Client(conn)
    try:
        [net] = await c.create_networks(label="n", cidr="10.43.0.0/24", mode="flat")
        for i in range(3):
            await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"], host="h1")
        seq = await svc.follower.catch_up()
        created = (await conn.js.stream_info(conn.stream)).created.isoformat()
        path, sha = await write_forked(
            svc.state, svc.seen, seq=seq, stream=conn.stream, created=created
        )
    finally:
        await svc.close()
    try:
        anchor = await SnapshotStore(conn).anchor(seq)
        readers: list[_StallingReader] = []

        def stalling(p: str) -> Any:
            readers.append(_StallingReader(p))
            return readers[-1]

        # Replica A's upload has begun (no object of that name yet) and is slow...
        monkeypatch.setattr(snapshot_store, "_open_read", stalling)
        a = asyncio.create_task(SnapshotStore(conn).put(path, seq, sha, anchor))
        while not readers or not readers[0].first_read.is_set():
            await asyncio.sleep(0.01)
        monkeypatch.undo()
        # ...replica B uploads the same seq meanwhile, whole...
        await SnapshotStore(conn).put(path, seq, sha, anchor)
        # ...then A ends its upload.
        readers[0].release.set()
        await a
    finally:
        os.unlink(path)
    stored = await SnapshotStore(conn).snapshots()
    assert [s.seq for s in stored] == [seq]
    assert (await SnapshotStore(conn).load()) is not None
    named = {f"$O.{BUCKET}.C.{s.nuid}" for s in stored}
    # Within the grace the loser's chunks stay (they may be an upload under way elsewhere)...
    assert len(set(await _chunk_subjects(conn)) - named) == 1
    # ...and the first pruning after it purges them (fixed: the grace made to have passed).
    monkeypatch.setattr(snapshot_purge, "ORPHAN_GRACE_S", 0.0)
    await SnapshotStore(conn).prune()
    chunks = await _chunk_subjects(conn)
    assert set(chunks) == named, f"chunks no object names: {set(chunks) - named}"
