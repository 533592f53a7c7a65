"""Review h120: a service killed (SIGKILL: nothing of it runs its clean-up) while its forked
snapshot writer uploads takes the writer with it (journal/forked.py ``die_with_parent``,
PR_SET_PDEATHSIG) — no orphan goes on uploading, or holding a connection, for a service that
is gone — and what it stored names no snapshot a start would load (the metadata is published
last). The service runs in a process of its own (the test kills it); its writer is held when
it is about to publish the object's metadata, every chunk stored. A real nats-server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from netledger.journal.snapshot_store import SnapshotStore
from netledger.journal.stream import Connection

SERVICE = """
import asyncio, os, sys, time
from nats.js.client import JetStreamContext
from netledger.journal.snapshot_store import BUCKET
from netledger.journal.stream import connect, ensure_stream
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy

url, tmpdir, marker = sys.argv[1:4]
real, me = JetStreamContext.publish, os.getpid()

async def publish(self, subject, *args, **kwargs):
    if os.getpid() != me and subject.startswith(f"$O.{BUCKET}.M."):
        with open(marker + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
        time.sleep(3600)
    return await real(self, subject, *args, **kwargs)

JetStreamContext.publish = publish

async def main():
    conn = await connect(url, name="killed")
    await ensure_stream(conn)
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0, tmpdir=tmpdir))
    await svc.start()
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat")
    for i in range(20):
        await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"])
    await svc.follower.catch_up()
    await svc.snapshotter.write()  # held in the child: this never returns

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie left for init to reap does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


async def _until(check: Callable[[], bool], tries: int = 600) -> bool:
    for _ in range(tries):
        if await asyncio.to_thread(check):
            return True
        await asyncio.sleep(0.05)
    return False


async def test_a_service_killed_mid_upload_takes_its_writer_with_it(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    marker = tmp_path / "writer-pid"
    tmpdir = tmp_path / "snapshot-tmp"
    tmpdir.mkdir()
    parent = subprocess.Popen(
        [sys.executable, "-c", SERVICE, nats_url, str(tmpdir), str(marker)],
        stderr=subprocess.PIPE,
    )
    writer = 0
    try:
        # The writer encodes, connects and stores its chunks (bounded: 30 s).
        held = await _until(lambda: marker.exists() or parent.poll() is not None)
        if not marker.exists():
            why = parent.stderr.read() if held and parent.stderr is not None else b"no writer yet"
            raise AssertionError(f"no writer held (service exit {parent.poll()}): {why!r}")
        writer = int(marker.read_text())
        assert _alive(writer)
        parent.kill()  # SIGKILL: no clean-up of its own runs
        await asyncio.to_thread(parent.wait)
        assert await _until(lambda: not _alive(writer)), "the writer outlived its service"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if writer and _alive(writer):
            os.kill(writer, signal.SIGKILL)
        if parent.stderr is not None:
            parent.stderr.close()
    assert await SnapshotStore(conn).snapshots() == []
