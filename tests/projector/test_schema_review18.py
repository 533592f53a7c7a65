"""Review hrev18: the projection across versions (sqlite-utils 4; a file of an older schema read).

The sqlite-utils floor. ``projector/schema.py`` builds its migrations with ``sqlite_utils.migrations.Migrations`` and
commits each with ``Database.atomic()``: both arrived in sqlite-utils 4.0. pyproject.toml asked
for ``sqlite-utils>=3.36``, so an environment holding sqlite-utils 3.x satisfied netledger's
requirements (``pip check``: "No broken requirements found") and every projector died on its
first file (``ModuleNotFoundError: No module named 'sqlite_utils.migrations'``; ``serve``
exited with ``projector_error``) — seen with sqlite-utils 3.36 in a fresh venv.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import tomllib
from pathlib import Path

import sqlite_utils

from netledger.projector.schema import MIGRATION_NAMES, _migrations

ROOT = Path(__file__).resolve().parent.parent.parent


def _floor(requirement: str) -> tuple[int, ...]:
    m = re.search(r">=\s*([0-9][0-9.]*)", requirement)
    assert m, requirement
    return tuple(int(x) for x in m.group(1).split("."))


def test_the_sqlite_utils_floor_has_the_migrations_the_schema_uses() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [req] = [d for d in deps if re.match(r"sqlite-utils\b", d)]
    schema = (ROOT / "projector" / "schema.py").read_text()
    assert "from sqlite_utils.migrations import Migrations" in schema
    assert "db.atomic()" in schema
    # What the code uses is what 4.0 added (the installed version has it)...
    assert hasattr(sqlite_utils.Database, "atomic")
    # ...so the requirement must not admit a 3.x.
    assert _floor(req) >= (4, 0), f"pyproject.toml: {req!r} admits sqlite-utils without them"


# --- a projection of an older schema, read by this code ------------------------------------
#
# Found by review: the readers (`show`, `audit`, `verify`) open the projection read-only and
# name the columns this code's schema has, so a file an older netledger wrote — the old serve
# still running while the package is upgraded, a projector elsewhere not yet upgraded, a copy
# kept aside — made them die with a Python traceback (`sqlite3.OperationalError: no such
# column: h.nat_fixed_space`), exit 1 without a code, nothing on stdout with --json.

NETLEDGER = str(Path(sys.executable).parent / "netledger")


def _older_file(path: Path, before: str) -> Path:
    """A projection as the release whose last migration came before ``before`` left it."""
    db = sqlite_utils.Database(sqlite3.connect(path))
    _migrations().apply(db, stop_before=before)
    db.execute(
        "UPDATE projection_state SET schema_version = ? WHERE id = 1",
        [MIGRATION_NAMES.index(before)],
    )
    db.conn.commit()
    db.close()
    return path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([NETLEDGER, *args], capture_output=True, text=True, timeout=60)


def test_reading_a_projection_of_an_older_schema_is_a_clear_error(tmp_path: Path) -> None:
    old = _older_file(tmp_path / "old.db", MIGRATION_NAMES[-1])
    for cmd in (["show", "hosts"], ["show", "fixed-ips"], ["audit", "address", "10.0.0.3"]):
        r = _cli("--json", *cmd, "--db", str(old))
        assert r.returncode == 1, (cmd, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr, (cmd, r.stderr[-400:])
        err = json.loads(r.stdout)["error"]
        assert err["code"] == "projection_schema_too_old", (cmd, err)
        assert str(old) in err["message"]
    r = _cli("show", "fixed-ips", "--db", str(_older_file(tmp_path / "o4.db", "0004_leased_v6")))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-400:]
    assert "error [projection_schema_too_old]" in r.stderr
    # Its checkpoint and schema version can still be read.
    r = _cli("--json", "projector", "status", "--db", str(old))
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["schema_version"] == len(MIGRATION_NAMES) - 1
