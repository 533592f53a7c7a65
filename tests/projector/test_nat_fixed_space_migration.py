"""Migration 0005_nat_fixed_space on a projection written before it: a host whose last NAT
record listed its ranges (every HostNatApplied then) holds ``nat_fixed_space`` 0, as a rebuild
of the same log says (schema.md: "0: snat_ranges lists them (older events…)"). The migration
left it NULL ("no table"), so ``verify`` of every upgraded projection with a NAT host failed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from netledger.events.host_events import HostNatApplied
from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.replay.verify import verify
from tests.projector.stream_helpers import publish_event, rows


def _as_before_0005(db: Path) -> None:
    """The projection as the code before migration 0005 left it."""
    c = sqlite3.connect(db)
    try:
        c.execute("ALTER TABLE hosts DROP COLUMN nat_fixed_space")
        c.execute("DELETE FROM _sqlite_migrations WHERE name = '0005_nat_fixed_space'")
        c.execute("UPDATE projection_state SET schema_version = 4 WHERE id = 1")
        c.commit()
    finally:
        c.close()


async def test_an_upgraded_projection_of_a_listed_nat_record_verifies(
    conn: Connection, tmp_path: Path
) -> None:
    old = HostNatApplied(
        host="h1", floating={}, snat_ranges=["10.0.0.0/24"], drift=False, snat_to="192.0.2.1"
    )
    seq = await publish_event(conn, old)
    db = tmp_path / "p.db"
    await project_until(conn, db, to_seq=seq)
    _as_before_0005(db)
    await project_until(conn, db, to_seq=seq)  # opened: migrated
    assert rows(db, "SELECT name FROM _sqlite_migrations ORDER BY id")[-1] == (
        "0005_nat_fixed_space",
    )
    report = await verify(conn, db, show_progress=False)
    assert report["equal"], report["differences"]
    assert rows(db, "SELECT snat_ranges, nat_fixed_space FROM hosts WHERE host = 'h1'") == [
        ('["10.0.0.0/24"]', 0)
    ]
