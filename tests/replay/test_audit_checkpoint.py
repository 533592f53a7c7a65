"""``audit`` says the last log sequence its answer covers: the projection's checkpoint (read in
the same read transaction as the rows), or with --from-log the log's end — an event missing
from the answer may be one the projection has not reached yet."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import project_until
from netledger.replay import audit
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.replay.test_replay_helpers import build_history, cli_json, invoke


async def test_audit_says_the_checkpoint_its_answer_is_based_on(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    h = await build_history(conn)
    db = tmp_path / "p.db"
    await project_until(conn, db)
    projected = await last_seq(conn)
    # The log moves on; the projection does not follow it here.
    await Client(conn).allocate_fixed_ip("i-later", network_id=h.network_id, host="c1")
    end = await last_seq(conn)
    assert end > projected

    rows, checkpoint = audit.answer_from_index(db, "address", h.x)
    assert checkpoint == projected
    assert rows == audit.from_index(db, "address", h.x)  # the old call answers as before

    shown = await cli_json("audit", "address", h.x, "--db", str(db))
    assert shown and {p["checkpoint"] for p in shown} == {projected}
    assert all("seq" in p and "summary" in p for p in shown)  # the fields it had stay
    logged = await cli_json("--nats", nats_url, "audit", "address", h.x, "--from-log")
    assert {p["checkpoint"] for p in logged} == {end}

    r = await asyncio.to_thread(invoke, "audit", "instance", "i-none", "--db", str(db))
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0] == f"instance i-none: 0 events (projection at seq {projected})"
    r = await asyncio.to_thread(
        invoke, "--nats", nats_url, "audit", "instance", "i-none", "--from-log"
    )
    assert r.stdout.splitlines()[0] == f"instance i-none: 0 events (the log read to seq {end})"


def test_a_projection_that_has_applied_nothing_answers_at_seq_0(tmp_path: Path) -> None:
    from netledger.projector.store import Writer

    db = tmp_path / "empty.db"
    Writer(db).close()
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT last_seq FROM projection_state").fetchone()[0] in (0, None)
    assert audit.answer_from_index(db, "host", "h1") == ([], 0)
