"""Crash safety: ``netledger projector run`` SIGKILLed at random moments while it catches up,
restarted each time, ends identical to one clean run; SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from netledger.common.natsserver import EmbeddedNats
from netledger.journal.stream import Connection
from netledger.projector.bench import publish, synthetic
from netledger.projector.compare import dump
from netledger.projector.runner import project_until

EVENTS = 20_000
NETLEDGER = str(Path(sys.executable).with_name("netledger"))


def checkpoint(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT last_seq FROM projection_state").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # not created yet (killed before the first migration committed)
        return 0


def projector(url: str, db: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [NETLEDGER, "--nats", url, "--json", "projector", "run", "--db", str(db), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


async def test_sigkill_at_random_moments_leaves_no_trace(
    nats_server: EmbeddedNats, conn: Connection, tmp_path: Path
) -> None:
    end = await publish(conn, synthetic(EVENTS, seed=7))
    assert end == EVENTS
    clean = tmp_path / "clean.db"
    assert await project_until(conn, clean) == end

    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    db = tmp_path / "crashed.db"
    kills = mid_catch_up = 0
    progress = [0]
    for _ in range(40):
        p = projector(nats_server.url, db, "--once", "--batch-size", "250")
        # The first kills land at random times in start-up (connecting, migrating: ~0.1-0.2 s
        # with the package byte-compiled; a window of 0.6 s let one kill take most of the log
        # and leave too few for the rest); the later ones once the checkpoint has passed a
        # random point, plus a random few ms: mid-batch.
        target = progress[-1] + rng.randint(300, 3000)
        if kills < 10 and target < end:
            deadline = time.monotonic() + (rng.uniform(0.02, 0.25) if kills < 3 else 30.0)
            while p.poll() is None and time.monotonic() < deadline:
                if kills >= 3 and checkpoint(db) >= target:
                    await asyncio.sleep(rng.uniform(0, 0.03))
                    break
                await asyncio.sleep(0.005)
        if kills < 10 and target < end and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            await asyncio.to_thread(p.wait)
            kills += 1
            seq = checkpoint(db)
            if progress[-1] < seq < end:
                mid_catch_up += 1
            assert seq >= progress[-1], "a checkpoint went backwards"
            progress.append(seq)
            continue
        out, err = await asyncio.to_thread(p.communicate, timeout=120)
        assert p.returncode == 0, err.decode()
        assert json.loads(out)["last_seq"] == end
        break
    else:
        raise AssertionError(f"never finished (seed {seed}, checkpoints {progress})")
    print(f"seed {seed}: {kills} kills, checkpoints {progress}")
    assert kills >= 5 and mid_catch_up >= 3, f"seed {seed}: kills {kills}, checkpoints {progress}"
    assert dump(db) == dump(clean), f"seed {seed}, checkpoints {progress}"
    assert checkpoint(db) == end


async def test_sigterm_stops_a_following_projector_cleanly(
    nats_server: EmbeddedNats, conn: Connection, tmp_path: Path
) -> None:
    end = await publish(conn, synthetic(2000, seed=3))
    db = tmp_path / "p.db"
    p = projector(nats_server.url, db)
    try:
        deadline = time.monotonic() + 60
        while checkpoint(db) < end:
            assert p.poll() is None, p.stderr.read().decode() if p.stderr else ""
            assert time.monotonic() < deadline, "projector did not catch up"
            await asyncio.sleep(0.1)
        # it keeps following: the next 50 events of the same synthetic history
        more = await publish(conn, itertools.islice(synthetic(2050, seed=3), 2000, None))
        while checkpoint(db) < more:
            assert time.monotonic() < deadline, "projector did not follow"
            await asyncio.sleep(0.1)
        p.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(p.communicate, timeout=30)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, err.decode()
    result = json.loads(out)
    assert result["last_seq"] == more and result["rejected"] == 0
    assert checkpoint(db) == more
