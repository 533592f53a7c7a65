"""Review 11: serve's storage watcher supervising its embedded nats-server (ops/storage.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.journal.loghealth import GAVE_UP, LogHealth
from netledger.journal.stream import connect, ensure_stream
from netledger.ops.storage import PROBATION_S, StorageWatcher, parse_reserve


async def test_a_server_dying_again_right_after_its_restart_counts_towards_the_bound(
    tmp_path: Path,
) -> None:
    """A nats-server that dies again within PROBATION_S of the restart that healed it is the
    same trouble (ops/storage.py: an append unanswered in that time is "another restart,
    towards the bound"). Each death started a new episode at "attempt 1", immediately: a
    server that keeps dying right after its restart was restarted forever, never with the
    backoff, never ``gave_up`` — the restart loop without backoff --nats-restarts bounds."""
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    await asyncio.to_thread(server.start)
    conn = await connect(server.url)
    watcher: StorageWatcher | None = None
    try:
        await ensure_stream(conn)
        health = LogHealth()
        watcher = StorageWatcher(
            health, conn, reserve=parse_reserve("0"), server=server, max_restarts=2
        )
        # Three deaths in a row, each right after the restart before it was verified (the
        # test runs in seconds, far inside PROBATION_S).
        assert PROBATION_S >= 30
        for _ in range(3):
            await asyncio.to_thread(server.kill)
            await watcher.tick()
        steps = [s["message"] for s in health.steps]
        assert health.restarts <= 2, steps
        assert health.state == GAVE_UP, steps
        assert sum("attempt 1 of 2" in s for s in steps) == 1, steps
    finally:
        if watcher is not None:
            await watcher.close()
        await conn.close()
        await asyncio.to_thread(server.stop)
