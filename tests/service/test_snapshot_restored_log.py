"""A log restored from an older backup and written past a snapshot's sequence: the snapshot is
refused, by the command service and by an executor's view alike.

What only the anchor catches: the restored stream keeps its name and its creation time (they
live in the stream's own files), and it is as long as before or longer once written to — so
every other check passes. A service starting from its snapshot would hold allocations the log
no longer has, and miss the ones it has. Real parts: one nats-server whose NETLEDGER stream
directory is swapped for a copy taken earlier (the snapshot bucket, another stream, stays as
it is — as after ``nats stream restore`` of the log alone), a command service, an executor's
view of one host.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.snapshot import state_to_wire
from netledger.executor.snapshot import ViewSnapshots
from netledger.journal.snapshot_store import SnapshotStore
from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.replay.verify_snapshot import fold_to, verify_snapshots
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

from ..executor.test_view_snapshot import fold_of, kind_of, snapshot, start_view

REFUSED = "is not the one it was taken after"


async def _allocate(conn: Connection, prefix: str, n: int) -> None:
    c = Client(conn)
    for i in range(n):
        await c.allocate_fixed_ip(f"{prefix}-{i}", network_id="1", host="h1")


async def test_a_log_restored_from_an_older_backup_refuses_the_newer_snapshots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port(), sync_interval="default")
    server.start()
    log_dir = server.store_dir / "jetstream" / "$G" / "streams" / "NETLEDGER"
    backup = tmp_path / "backup"
    view_path = tmp_path / "view.snapshot"
    try:
        conn = await connect(server.url, name="test")
        await ensure_stream(conn)
        svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
        await svc.start()
        try:
            await Client(conn).request(
                "network.create",
                {"label": "n", "cidr": "10.30.0.0/16", "num_networks": 1, "network_size": 256,
                 "mode": "vxlan", "vni_start": 700, "multi_host": True},
            )  # fmt: skip
            await _allocate(conn, "before", 5)
        finally:
            await svc.close()
            await conn.close()
        # The backup: the log as it is now (the server stopped, its files whole).
        server.stop()
        shutil.copytree(log_dir, backup)
        server.start()

        conn = await connect(server.url, name="test")
        svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
        await svc.start()
        try:
            await _allocate(conn, "lost", 10)
            seq = await svc.follower.catch_up()
            assert svc.snapshotter is not None
            stored = await svc.snapshotter.write()
            assert stored is not None and stored.seq == seq and stored.anchor
            view = await start_view(conn, "h1")
            try:
                view_seq = await snapshot(view, ViewSnapshots(conn, str(view_path), kind_of("h1")))
            finally:
                await view.close()
            assert view_seq == seq
            created = (await conn.js.stream_info(conn.stream)).created
        finally:
            await svc.close()
            await conn.close()

        # The log restored from the backup, then written past both snapshots' sequence.
        server.stop()
        shutil.rmtree(log_dir)
        shutil.copytree(backup, log_dir)
        server.start()
        conn = await connect(server.url, name="test")
        try:
            info = await conn.js.stream_info(conn.stream)
            # What makes the anchor needed: nothing else about the stream tells.
            assert info.created == created and info.state.last_seq < seq
            writer = CommandService(conn, snapshots=SnapshotPolicy(every_events=0, load=False))
            await writer.start()
            try:
                await _allocate(conn, "after", 15)
            finally:
                await writer.close()
            end = (await conn.js.stream_info(conn.stream)).state.last_seq
            assert end > seq

            caplog.set_level(logging.WARNING)
            again = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
            await again.start()
            try:
                assert again.snapshotter is not None
                assert again.snapshotter.stats.loaded_seq is None
                assert REFUSED in caplog.text
                assert state_to_wire(again.state) == state_to_wire(await fold_to(conn, end))
                held = {
                    ip.instance for n in again.state.networks.values() for ip in n.fixed.values()
                }
                assert {f"after-{i}" for i in range(15)} <= held
                assert not {i for i in held if i.startswith("lost-")}, "the snapshot's allocations"
            finally:
                await again.close()

            snaps = ViewSnapshots(conn, str(view_path), kind_of("h1"))
            restored = await start_view(conn, "h1", snaps)
            full = await start_view(conn, "h1")
            try:
                assert snaps.stats.loaded_seq is None
                assert snaps.stats.refused is not None and REFUSED in snaps.stats.refused
                assert fold_of(restored) == fold_of(full)
            finally:
                await restored.close()
                await full.close()

            report = await verify_snapshots(conn)
            assert [r["usable"] for r in report["snapshots"]] == [False]
            assert REFUSED in report["snapshots"][0]["reason"]
            assert (await SnapshotStore(conn).snapshots())[0].seq == seq
        finally:
            await conn.close()
    finally:
        server.stop()
