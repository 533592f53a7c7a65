"""A projection whose path holds ``#``, ``?`` or ``%`` (a folder a person named: `cloud #1`).
The resume's check of the projection's newest row against the log (projector/anchor.py)
opened it as ``file:{path}?mode=ro``: SQLite read the rest of the path after ``#`` as a URI
fragment — it opened (and created, empty and writable) the shortened path, and every resume
of such a projection failed ("no such table: events"). Real nats-server, real SQLite."""

from __future__ import annotations

from pathlib import Path

from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from tests.projector.stream_helpers import publish_event, rows
from tests.projector.test_projector_unit import net


async def test_a_projection_under_a_path_with_uri_characters_resumes(
    conn: Connection, tmp_path: Path
) -> None:
    top = tmp_path / "data"  # (tmp_path also holds the nats-server's store)
    folder = top / "cloud #1 ?a=b %41"
    folder.mkdir(parents=True)
    db = folder / "p.db"
    await publish_event(conn, net("1"))
    assert await project_until(conn, db) == 1
    await publish_event(conn, net("2", cidr="10.1.0.0/24"), 1)
    assert await project_until(conn, db) == 2  # the resume checks its newest row first
    assert rows(db, "SELECT network_id FROM networks ORDER BY network_id") == [("1",), ("2",)]
    assert sorted(p.name for p in top.iterdir()) == [folder.name]  # nothing made beside it
