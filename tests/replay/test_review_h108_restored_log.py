"""Review h108: a revert finding a command through a projection of the log *before* a restore.

A log restored from an older backup (its files, or ``nats stream restore``) keeps the stream's
name and creation time, and once written past the projection's checkpoint it is as long as
before: ``projection_of`` took such a projection — a running serve's that had not noticed yet,
a stopped one's — for one of this stream. Its index names the lost log's messages, and the log
read after its checkpoint starts inside a command straddling it: half the command reverted under
its marker, the rest never revertible (docs/revert.md). An explicit ``--db`` was not checked at
all. Both must refuse the projection as the projector does (``projection_log_diverged``).

Real nats-server (its store copied and put back, as an operator restores one), the real
command service, a real projection file and the CLI process.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.codec import decode
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.projector.errors import LogDiverged, ProjectionAhead, StreamMismatch
from netledger.projector.runner import project_until
from netledger.replay.reader import read_range
from netledger.replay.revert_reads import events_of_command, projection_of
from netledger.revert_cli import revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.replay.test_revert_found_projection import cli


@asynccontextmanager
async def running(url: str) -> AsyncIterator[tuple[Connection, Client]]:
    """A connection and a command service on the log as the server holds it now."""
    conn = await connect(url, name="test")
    await ensure_stream(conn)
    svc = CommandService(conn)
    await svc.start()
    try:
        yield conn, Client(conn)
    finally:
        await svc.close()
        await conn.close()


async def seqs_of(conn: Connection, command_id: str) -> list[int]:
    return [m.seq async for m in read_range(conn, 1) if decode(m.data).command_id == command_id]


async def allocate(c: Client, network_id: str, n: int, prefix: str) -> None:
    for i in range(n):
        await c.allocate_fixed_ip(f"{prefix}-{i}", network_id=network_id, host="h1")


async def test_a_projection_of_the_log_before_a_restore_is_not_used(tmp_path: Path) -> None:
    server = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port(), sync_interval="default")
    log_dir = server.store_dir / "jetstream" / "$G" / "streams" / "NETLEDGER"
    here = tmp_path / "data"
    here.mkdir()
    db = here / "projection.db"
    server.start()
    try:
        async with running(server.url) as (conn, c):
            (net,) = await c.create_networks(label="r", cidr="10.80.0.0/24", mode="flat")
            await allocate(c, net["id"], 1, "first")  # (a host's first allocation: its join)
            backup_seq = await last_seq(conn)
        server.stop()
        shutil.copytree(log_dir, tmp_path / "backup")
        server.start()
        async with running(server.url) as (conn, c):
            await allocate(c, net["id"], 6, "lost")  # written after the backup: lost
            checkpoint = await project_until(conn, db)
            created = (await conn.js.stream_info(conn.stream)).created
        per_allocation, rest = divmod(checkpoint - backup_seq, 6)
        assert rest == 0 and per_allocation >= 1
        server.stop()
        shutil.rmtree(log_dir)
        shutil.copytree(tmp_path / "backup", log_dir)
        server.start()

        async with running(server.url) as (conn, c):
            assert await last_seq(conn) == backup_seq
            # The restored log written to again: its last message before the command one
            # before the projection's checkpoint, then a command of several messages (one
            # atomic batch) straddling it.
            await allocate(c, net["id"], 5, "new")
            while await last_seq(conn) < checkpoint - 1:
                await conn.js.publish("netledger.evt.host.h9", b"filler", stream=conn.stream)
            assert await last_seq(conn) == checkpoint - 1
            await c.request(
                "network.create",
                {"label": "s", "cidr": "10.81.0.0/24", "num_networks": 2, "mode": "flat"},
                command_id="straddling",
            )
            seqs = await seqs_of(conn, "straddling")
            assert len(seqs) >= 2 and seqs[0] <= checkpoint < seqs[-1]
            info = await conn.js.stream_info(conn.stream)
            assert info.created == created  # name, creation time, length: nothing else tells

            # Read from the whole log, the command is whole.
            whole, _ = await events_of_command(conn, "straddling")
            assert [s.seq for s in whole] == seqs

            # The projection names the lost log's messages: not of this log.
            assert not await projection_of(conn, db)
            # Given as --db, it is refused as the projector refuses it, before anything is read.
            with pytest.raises(LogDiverged):
                await revert(conn, c, command_id="straddling", db=db, dry_run=True)

            # The CLI finding it on this machine reads the log instead: the whole command.
            argv = ("revert", "--command-id", "straddling", "--dry-run", "--json")
            rc, out, err = await cli(server.url, here, *argv)
            assert rc == 0, err
            got = json.loads(out)
            assert sorted(got["reverted_seqs"] + got["skipped_seqs"]) == seqs, got
            # ... and says why (review h108: it said "not of this stream" for a diverged one)
            assert f"not using {here}" in err and "restored from an older backup" in err
    finally:
        server.stop()


async def test_a_db_of_another_stream_or_ahead_is_refused_before_anything_is_read(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    """An explicit ``--db`` is checked as a found one is: another stream's (same name, another
    creation time) and one ahead of the log are refused with the projector's codes."""
    c = Client(conn)
    (net,) = await c.create_networks(label="d", cidr="10.79.0.0/24", mode="flat")
    await c.allocate_fixed_ip("i-d", network_id=net["id"], command_id="d")
    db = tmp_path / "projection.db"
    end = await project_until(conn, db)
    assert await projection_of(conn, db)
    other = tmp_path / "other.db"
    shutil.copy(db, other)
    with sqlite3.connect(other) as s:
        s.execute("UPDATE projection_state SET stream_created = '2000-01-01T00:00:00+00:00'")
    ahead = tmp_path / "ahead.db"
    shutil.copy(db, ahead)
    with sqlite3.connect(ahead) as s:
        s.execute("UPDATE projection_state SET last_seq = ?", (end + 5,))
    for path, error in ((other, StreamMismatch), (ahead, ProjectionAhead)):
        assert not await projection_of(conn, path)
        with pytest.raises(error):
            await revert(conn, c, command_id="d", db=path, dry_run=True)
    assert await last_seq(conn) == end  # nothing appended
    r = await revert(conn, c, command_id="d", db=db, dry_run=True)
    assert r["events_found_by"] == "index"
