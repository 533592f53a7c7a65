"""Opening the projection: a file this code already migrated opens without sqlite-utils (its
import was a third of a resume's start), with the same settings as the full path; any other
file (new, older, migrated by newer code, not a projection) takes the full path as before."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from netledger.projector.errors import SchemaTooNew
from netledger.projector.schema import (
    MIGRATION_NAMES,
    MIGRATION_SET,
    _migrations,
    open_connection,
    open_db,
    schema_version,
)
from netledger.projector.store import Writer

SETTINGS = ("journal_mode", "synchronous", "busy_timeout", "recursive_triggers")


def settings(conn: sqlite3.Connection) -> dict[str, object]:
    return {p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in SETTINGS}


def applied(path: Path) -> list[str]:
    c = sqlite3.connect(path)
    try:
        return [
            r[0]
            for r in c.execute(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY rowid",
                [MIGRATION_SET],
            )
        ]
    finally:
        c.close()


def test_an_up_to_date_file_opens_without_sqlite_utils(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    open_db(path).close()
    code = (
        "import sys\n"
        "from netledger.projector.store import Writer\n"
        f"w = Writer({str(path)!r})\n"
        "assert 'sqlite_utils' not in sys.modules, 'sqlite-utils imported'\n"
        "print(w.last_seq)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"


def test_the_fast_open_has_the_full_paths_settings(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    db = open_db(path)
    full = settings(db.conn)
    db.close()
    conn = open_connection(path)
    try:
        assert (
            settings(conn)
            == full
            == {
                "journal_mode": "wal",
                "synchronous": 1,  # NORMAL
                "busy_timeout": 5000,
                "recursive_triggers": 1,
            }
        )
    finally:
        conn.close()


def test_a_new_file_is_created_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    conn = open_connection(path)
    conn.close()
    assert applied(path) == MIGRATION_NAMES
    w = Writer(path)
    try:
        assert w.last_seq == 0
    finally:
        w.close()


def test_an_older_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    import sqlite_utils

    db = sqlite_utils.Database(sqlite3.connect(path))
    _migrations().apply(db, stop_before=MIGRATION_NAMES[-1])  # what the release before made
    db.close()
    assert applied(path) == MIGRATION_NAMES[:-1]
    open_connection(path).close()
    assert applied(path) == MIGRATION_NAMES
    c = sqlite3.connect(path)
    try:
        assert c.execute("SELECT schema_version FROM projection_state").fetchone()[0] == (
            schema_version()
        )
    finally:
        c.close()


def test_a_file_of_newer_code_is_refused_as_before(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    db = open_db(path)
    db.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
        " VALUES (?, '9999_future', 'x')",
        [MIGRATION_SET],
    )
    db.conn.commit()
    db.close()
    with pytest.raises(SchemaTooNew):
        open_connection(path)


def test_a_file_that_is_no_projection_takes_the_full_path(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE projection_state (id INTEGER PRIMARY KEY)")  # not ours
    c.commit()
    c.close()
    with pytest.raises(sqlite3.Error):  # the full path's own error, as before
        open_connection(path)
