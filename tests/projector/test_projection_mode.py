"""A new projection file is not for every local user (review hrev12's note): it holds every
project's allocations. Created 0640 whatever the umask (its -wal and -shm files take the
database's mode from SQLite); an existing file's mode is left as the operator set it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.service.client import Client
from netledger.service.service import CommandService


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


async def test_a_new_projection_is_not_world_readable(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    await c.create_networks(label="m", cidr="10.13.0.0/24", mode="flat", bridge="brm")
    db = tmp_path / "p.db"
    old = os.umask(0o022)
    try:
        await project_until(conn, db)
    finally:
        os.umask(old)
    assert _mode(db) == 0o640
    for extra in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        if extra.exists():
            assert _mode(extra) & 0o007 == 0, extra


async def test_an_existing_projection_keeps_its_mode(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    await project_until(conn, db)
    db.chmod(0o644)
    await project_until(conn, db)
    assert _mode(db) == 0o644
