"""The projector on a full disk (issue 16): SQLite on a small tmpfs runs out of space while
allocations go on; the projector stops at its last commit (never half a batch), says so, and
catches up by itself once space returns — ending identical to a projection built afresh."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from netledger.journal.stream import Connection, connect, last_seq
from netledger.projector.compare import dump
from netledger.projector.runner import Projector, disk_full, project_until
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.ops.test_storage_fs import fill, tmpfs


async def allocate(conn: Connection, network_id: str, n: int, prefix: str) -> None:
    c = Client(conn)

    async def worker(w: int) -> None:
        for k in range(w, n, 8):
            await c.allocate_fixed_ip(f"{prefix}-{k}", network_id=network_id, host="h1")

    await asyncio.gather(*(worker(w) for w in range(8)))


async def test_projector_pauses_on_a_full_disk_and_catches_up(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    with tmpfs(tmp_path / "mnt", 6) as mnt:
        db = mnt / "projection.db"
        [net] = await Client(conn).create_networks(
            label="n", cidr="10.50.0.0/16", mode="flat", network_size=65536
        )
        await allocate(conn, net["id"], 200, "a")
        p = Projector(conn, db, batch_size=500)
        p.resume_check = 0.2
        p.resume_free = 1 << 20
        await p.start()
        # As serve watches it: a waiter for a failure must sleep through the pause, not spin
        # (the pause once left the progress event set and this froze the event loop).
        failed = asyncio.ensure_future(p.wait_failed())
        try:
            await p.catch_up(timeout=30)
            ballast = await asyncio.to_thread(fill, mnt, 64 << 10)
            await allocate(conn, net["id"], 3000, "b")
            end = time.monotonic() + 30
            while p.paused is None:
                assert p.failure is None, p.failure
                assert time.monotonic() < end, "the projector never noticed the full disk"
                await asyncio.sleep(0.05)
            stopped_at = p.last_seq
            assert stopped_at < await last_seq(conn)
            assert "disk is full" in p.paused or "no space" in p.paused
            assert p.failure is None and p.disk_full_pauses == 1
            await asyncio.sleep(0.5)  # stays stopped while the disk is full
            assert p.paused is not None and p.failure is None

            ballast.unlink()
            t_free = time.monotonic()
            target = await last_seq(conn)
            while p.last_seq < target:
                assert p.failure is None, p.failure
                assert time.monotonic() < t_free + 30, "the projector did not catch up"
                await asyncio.sleep(0.05)
            print(
                f"\nprojector stopped at seq {stopped_at}, caught up to {target}"
                f" {time.monotonic() - t_free:.2f}s after space was freed"
            )
            assert p.paused is None and p.failure is None
            assert not failed.done()
        finally:
            failed.cancel()
            await p.close()
        # Never half-written: identical, row for row, to a projection built in one go.
        fresh = tmp_path / "fresh.db"
        await project_until(conn, fresh)
        assert dump(db) == dump(fresh)


def test_disk_full_is_recognised() -> None:
    import errno
    import sqlite3

    assert disk_full(sqlite3.OperationalError("database or disk is full"))
    assert disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert disk_full(RuntimeError("OperationalError: database or disk is full"))  # over the pipe
    assert not disk_full(sqlite3.OperationalError("database is locked"))
    assert not disk_full(ValueError("x"))


@pytest.mark.parametrize("owns", [False, True])
async def test_a_full_disk_during_a_back_pressure_pause_resumes(
    conn: Connection, nats_url: str, tmp_path: Path, owns: bool
) -> None:
    """The writer's "disk is full" read just as reading pauses for back-pressure (the pause's
    own first step reads the writer's pipe): the disk-full wait cancelled the pause's task,
    the only one to clear the pause, and once space was back the projector subscribed again
    and took nothing, for good, without an error (found by review)."""
    from netledger.projector.bench import publish, synthetic

    end = await publish(conn, synthetic(3000, seed=3))
    use = await connect(nats_url, name="own") if owns else conn
    p = Projector(use, tmp_path / "p.db", batch_size=16, queue_size=64, owns_connection=owns)
    p.resume_check = 0.05
    p.resume_free = 1
    await p.start()
    w = p._writer
    assert w is not None
    real_restart = p._restart_reading
    fired = False

    def restart_reading(pause: bool) -> None:
        # _restart_reading's first step is _send(), whose writer.poll() reads the writer's
        # acknowledgements: the writer's "failed: database or disk is full" is read there
        # when it is waiting in the pipe as the reader hits the back-pressure bound.
        nonlocal fired
        if pause and not fired:
            fired = True
            w._received(("failed", sqlite3.OperationalError("database or disk is full")))
        real_restart(pause)

    p._restart_reading = restart_reading  # type: ignore[method-assign]
    try:
        for _ in range(200):
            if p.disk_full_pauses:
                break
            await asyncio.sleep(0.01)
        assert p.disk_full_pauses == 1
        for _ in range(300):  # space is "back" at once (resume_free=1): it reopens
            if p.paused is None and p._writer is not None:
                break
            await asyncio.sleep(0.01)
        await p.catch_up(timeout=10)
        assert p.last_seq == end
    finally:
        await p.close()
        if owns:
            await use.close()
