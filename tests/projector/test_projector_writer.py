"""The projector's writer process and its pipelined batches (``projector/writer_proc.py``).

* Batches projected on top of one not yet committed (what the writer's two threads do) end with
  exactly the rows of the in-memory projection, wherever the commit of the one below lands.
* The writer process killed at random moments leaves a checkpoint that matches its rows, the
  projector reports it, and a restart ends identical to a clean run.
* The writer dies with the process that started it.
* What is in flight between the reader and the writer stays under ``queue_size``.
* A batch grows while the committing process is busy (up to ``max_batch``), same rows.
* A database this process already has open is written by a spawned (not forked) writer.
* The reply-subject parsing gives what nats-py's ``Msg.metadata`` gives.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from netledger.common.natsserver import EmbeddedNats
from netledger.events.codec import encode
from netledger.journal.stream import Connection
from netledger.projector import bulk, store
from netledger.projector.bench import publish, synthetic
from netledger.projector.compare import dump
from netledger.projector.errors import ProjectorStopped
from netledger.projector.frames import ack_numbers, stream_time
from netledger.projector.runner import Projector, project_until, stream_seq
from netledger.projector.store import Batch, Raw, Writer
from netledger.projector.tables import ALL_TABLES
from tests.projector.test_projector_crash import checkpoint
from tests.projector.test_projector_props import _run_commands
from tests.projector.test_projector_unit import _memory_rows, _normalise, _raws, _sample_log

NETLEDGER = str(Path(sys.executable).with_name("netledger"))

# --- pipelined batches (pure: no NATS) ----------------------------------------------------------


def _pipelined(path: Path, raws: list[Raw], cuts: list[int], rng: random.Random) -> None:
    """Project as the writer process does: each batch through a read-only connection, on top of
    the previous batch, which is committed at a random point while the next one is projected."""
    w = Writer(path)
    reads = sqlite3.connect(path, check_same_thread=False)
    try:
        below: Batch | None = None
        i = 0
        sizes = iter(cuts * (len(raws) + 1))
        while i < len(raws):
            n = next(sizes)
            cur = Batch(reads, base=below)
            part = raws[i : i + n]
            split = rng.randint(0, len(part))
            w.project(part[:split], cur)
            if below is not None:
                w.commit(below)  # lands between two messages of the batch above it
            w.project(part[split:], cur)
            cur.base = None  # what the writer does once the batch below is committed
            below = cur
            i += n
        if below is not None:
            w.commit(below)
        assert w.last_seq == raws[-1].seq
    finally:
        reads.close()
        w.close()


@pytest.mark.parametrize("cut", [1, 2, 5, 13, 1000])
def test_pipelined_batches_match_the_memory_projection(tmp_path: Path, cut: int) -> None:
    log = _sample_log()  # includes NAT tables read with select() across batches
    _pipelined(tmp_path / "p.db", _raws(log), [cut], random.Random(cut))
    assert _normalise(dump(tmp_path / "p.db")) == _normalise(_memory_rows(log))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(st.integers(1, 9), min_size=1, max_size=20), st.integers(0, 1 << 30))
def test_pipelined_batches_of_any_history_match_the_memory_projection(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject, cuts: list[int], seed: int
) -> None:
    _, log = _run_commands(data, 30)
    if not log:
        return
    raws = [Raw(seq, subj, encode(env), 2000.0 + seq, 0) for seq, subj, env in log]
    path = tmp_path_factory.mktemp("pipe") / "p.db"
    _pipelined(path, raws, cuts, random.Random(seed))
    assert _normalise(dump(path)) == _normalise(_memory_rows(log))


# --- reply subjects -----------------------------------------------------------------------------


#: ack reply subjects as the server sends them (the last two: with a domain and an account
#: hash, and a trailing token); tests/projector/test_projector_reply.py reads them too
REPLIES = [
    "$JS.ACK.NETLEDGER.Xy7abc.1.4711.4711.1764262800123456789.52",
    "$JS.ACK.NETLEDGER.Xy7abc.3.9.8.1764262800000000500.0",
    "$JS.ACK.hub.ACCHASH.NETLEDGER.Xy7abc.1.4711.4711.1764262800123456789.52.rnd",
    "$JS.ACK._.ACCHASH.NETLEDGER.Xy7abc.1.4711.4711.1764262800999999500.52.rnd",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_reply_subjects_read_as_nats_py_reads_them(reply: str) -> None:
    md = Msg.Metadata._from_reply(reply)
    seq, ts, pending = ack_numbers(reply)
    assert (seq, pending) == (md.sequence.stream, md.num_pending)
    assert stream_seq(reply) == md.sequence.stream
    assert stream_time(ts) == md.timestamp.timestamp()


# --- the process, against a real nats-server ----------------------------------------------------


def _consistent(db: Path) -> int:
    """The checkpoint, after checking that exactly the messages up to it have rows."""
    conn = sqlite3.connect(db)
    try:
        (last,) = conn.execute("SELECT last_seq FROM projection_state").fetchone()
        seqs = [
            r[0]
            for r in conn.execute(
                "SELECT seq FROM events UNION SELECT seq FROM rejected_events ORDER BY 1"
            )
        ]
    finally:
        conn.close()
    assert seqs == list(range(1, last + 1))
    return int(last)


async def _killed_at_random_moments(
    conn: Connection, tmp_path: Path, data_seed: int, committing: bool
) -> None:
    """Projectors each SIGKILLed (their writer, or with ``committing`` the writer's committing
    child) a little after a random checkpoint: every one fails loudly with ProjectorStopped,
    leaves a consistent checkpoint that never goes back, and the last resumes to the same
    projection as a clean run."""
    end = await publish(conn, synthetic(12_000, seed=data_seed))
    clean = tmp_path / "clean.db"
    assert await project_until(conn, clean) == end
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    db = tmp_path / "killed.db"
    checkpoints = [0]
    mid = 0
    for _ in range(6):
        target = checkpoints[-1] + rng.randint(200, 2500)
        if target >= end:
            break
        p = Projector(conn, db, batch_size=rng.choice([50, 300, 2000]))
        await p.start()
        assert p._writer is not None
        victim = p._writer.pid
        if committing:
            [victim] = _children(victim)
        await p.wait_for(target, 30)  # then a few ms more: mid-batch, mid-commit or between
        await asyncio.sleep(rng.uniform(0, 0.02))
        os.kill(victim, signal.SIGKILL)
        failure = await asyncio.wait_for(p.wait_failed(), 30)
        assert isinstance(failure, ProjectorStopped), (seed, failure)
        if committing:
            assert "committing process" in str(failure), (seed, failure)
        with pytest.raises(ProjectorStopped):
            await p.done()
        await p.close()
        checkpoints.append(_consistent(db))
        assert checkpoints[-1] >= checkpoints[-2], (seed, checkpoints)
        mid += checkpoints[-1] < end
    print(f"seed {seed}: checkpoints {checkpoints}")
    assert mid >= 2, (seed, checkpoints)
    assert await project_until(conn, db) == end
    assert dump(db) == dump(clean), (seed, checkpoints)


async def test_writer_killed_at_random_moments_leaves_its_checkpoint(
    conn: Connection, tmp_path: Path
) -> None:
    await _killed_at_random_moments(conn, tmp_path, 11, committing=False)


async def test_committing_process_killed_at_random_moments_is_reported_and_resumed(
    conn: Connection, tmp_path: Path
) -> None:
    """The writer is two processes (projecting, committing: projector/writer_proc.py): the
    committing one SIGKILLed mid-run fails the projector loudly, never silently stalls it, and
    leaves a consistent checkpoint the next projector resumes from."""
    await _killed_at_random_moments(conn, tmp_path, 12, committing=True)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # a zombie waiting for its (new) parent to collect it


async def test_the_writer_dies_with_the_projector(
    nats_server: EmbeddedNats, conn: Connection, tmp_path: Path
) -> None:
    end = await publish(conn, synthetic(500, seed=2))
    db = tmp_path / "p.db"
    p = subprocess.Popen(
        [NETLEDGER, "--nats", nats_server.url, "projector", "run", "--db", str(db)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        writers: list[int] = []
        while not writers or checkpoint(db) < end:
            assert p.poll() is None and time.monotonic() < deadline
            await asyncio.sleep(0.05)
            writers = _children(p.pid)
        [writer] = writers
        [committing] = _children(writer)  # the writer's own child writes the database
        p.send_signal(signal.SIGKILL)
        await asyncio.to_thread(p.wait)
        while not _gone(writer):
            assert time.monotonic() < deadline, "the writer outlived the projector"
            await asyncio.sleep(0.05)
        while not _gone(committing):
            assert time.monotonic() < deadline, "the committing process outlived the projector"
            await asyncio.sleep(0.05)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


async def test_what_is_in_flight_stays_under_the_queue_size(
    conn: Connection, tmp_path: Path
) -> None:
    end = await publish(conn, synthetic(4000, seed=4))
    p = Projector(conn, tmp_path / "p.db", batch_size=20, queue_size=200, to_seq=end)
    seen: list[int] = []
    await p.start()
    assert p._writer is not None
    send = p._writer.send

    def watched(msgs: list[Any]) -> None:
        seen.append(p._enqueued - p.last_seq)
        send(msgs)

    p._writer.send = watched  # type: ignore[method-assign]
    assert await p.done() == end
    await p.close()
    assert seen and max(seen) <= 200
    assert p.pauses > 0 and p.events == end and p.rejected == 0


async def test_a_busy_committer_gets_larger_transactions_with_the_same_rows(
    conn: Connection, tmp_path: Path
) -> None:
    """While the committing process writes one batch, the next grows past ``batch_size`` (up to
    ``max_batch``, a quarter of the queue) instead of waiting: fewer, larger transactions when
    committing is the slower part (a resume on a long history: writer_proc._project_loop). The
    projection is row for row the one of fixed batches, and no transaction exceeds the cap."""
    end = await publish(conn, synthetic(3000, seed=8))

    async def commits(db: Path, batch_size: int, queue_size: int) -> list[int]:
        return [n for _, n in await _commits(conn, db, batch_size, queue_size, end)]

    # max_batch = max(batch_size, queue_size // 4): 50 (fixed batches), then 100 (growing ones)
    fixed = await commits(tmp_path / "fixed.db", 50, 200)
    grown = await commits(tmp_path / "grown.db", 1, 400)
    assert sum(fixed) == sum(grown) == end
    assert max(fixed) <= 50
    assert max(grown) <= 100
    assert max(grown) > 1, grown  # a batch of one grew while the one before it was committed
    assert len(grown) < end
    assert dump(tmp_path / "grown.db") == dump(tmp_path / "fixed.db")


async def _commits(
    conn: Connection, db: Path, batch_size: int, queue_size: int, end: int
) -> list[tuple[int, int]]:
    """Project the stream up to ``end`` into ``db``: each commit's (last seq, messages)."""
    sizes: list[tuple[int, int]] = []
    done = 0

    def progress(seq: int, _to: int | None, events: int, rejected: int) -> None:
        nonlocal done
        sizes.append((seq, events + rejected - done))
        done = events + rejected

    p = Projector(
        conn, db, batch_size=batch_size, queue_size=queue_size, to_seq=end, progress=progress
    )
    await p.start()
    try:
        assert await p.done() == end
    finally:
        await p.close()
    return sizes


async def test_batches_do_not_grow_while_the_indexes_are_deferred(
    conn: Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long catch-up (indexes deferred: projector/bulk.py) appends rows, where larger
    transactions save little and grew all along (its wall went up): its batches stay at
    ``batch_size`` until the last deferred message has arrived (then they may grow)."""
    end = await publish(conn, synthetic(1500, seed=9))
    monkeypatch.setattr(bulk, "BULK_MIN", 10)  # the writer is forked: it sees this
    got = await _commits(conn, tmp_path / "bulk.db", 1, 400, end)
    # The last deferred message (the stream's end at the start) comes in the last frame, at
    # most a chunk of a quarter of the queue: every commit before that frame holds one.
    chunk = 400 // 4
    early = [n for seq, n in got if seq <= end - chunk]
    assert early and set(early) == {1}, got
    assert sum(n for _, n in got) == end
    assert await project_until(conn, tmp_path / "plain.db") == end
    assert dump(tmp_path / "bulk.db") == dump(tmp_path / "plain.db")


async def test_a_database_open_here_gets_a_spawned_writer(conn: Connection, tmp_path: Path) -> None:
    end = await publish(conn, synthetic(1500, seed=6))
    db = tmp_path / "p.db"
    first = Projector(conn, db, to_seq=700)
    await first.start()
    assert first._writer is not None and first._writer.forked
    assert await first.done() == 700
    await first.close()
    held = sqlite3.connect(db)  # a reader in this process keeps the file open
    try:
        assert held.execute("SELECT last_seq FROM projection_state").fetchone() == (700,)
        second = Projector(conn, db, to_seq=end)
        await second.start()
        assert second._writer is not None and not second._writer.forked
        assert await second.done() == end
        await second.close()
        assert held.execute("SELECT count(*) FROM events").fetchone() == (end,)
    finally:
        held.close()
    assert await project_until(conn, tmp_path / "clean.db") == end
    assert dump(db) == dump(tmp_path / "clean.db")


# --- NULLs bound as NaN ---------------------------------------------------------------------------


def test_nulls_bound_as_nan_are_stored_as_null(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer binds ``None`` as a float NaN (Python's sqlite3 binds a NaN 10x faster than
    ``None``), which SQLite stores as NULL: the file is the one binding ``None`` gives, with
    updates (leases, NAT tables) and deletes, and no column anywhere holds a NaN."""
    log = _sample_log()
    fast = tmp_path / "nan.db"
    w = Writer(fast)
    assert store.nulls_as_nan(w.conn)  # this SQLite stores a bound NaN as NULL
    _pipelined_into(w, _raws(log))
    plain = tmp_path / "none.db"
    plain_writer = Writer(plain)  # (its check sets what NULLs are bound as: after it, None)
    monkeypatch.setattr(store, "_null", None)  # the fallback: bind None itself
    _pipelined_into(plain_writer, _raws(log))
    assert dump(fast) == dump(plain)
    assert _normalise(dump(fast)) == _normalise(_memory_rows(log))
    conn = sqlite3.connect(fast)
    try:  # NULLs were written (as NaN), in inserts and in updates
        assert conn.execute("SELECT count(*) FROM events WHERE pool IS NULL").fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM fixed_ips WHERE address_v6 IS NULL").fetchone()[0]
        for name in ALL_TABLES:
            for (col,) in conn.execute(f"SELECT name FROM pragma_table_info('{name}')"):
                assert not conn.execute(
                    f"SELECT count(*) FROM {name} WHERE typeof({col}) = 'real' AND {col} != {col}"
                ).fetchone()[0]
    finally:
        conn.close()


def _pipelined_into(w: Writer, raws: list[Raw]) -> None:
    try:
        for i in range(0, len(raws), 7):
            w.apply(raws[i : i + 7])
    finally:
        w.close()
