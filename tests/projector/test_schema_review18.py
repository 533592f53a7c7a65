"""Review hrev18: the projection's migrations need sqlite-utils 4.

``projector/schema.py`` builds its migrations with ``sqlite_utils.migrations.Migrations`` and
commits each with ``Database.atomic()``: both arrived in sqlite-utils 4.0. pyproject.toml asked
for ``sqlite-utils>=3.36``, so an environment holding sqlite-utils 3.x satisfied netledger's
requirements (``pip check``: "No broken requirements found") and every projector died on its
first file (``ModuleNotFoundError: No module named 'sqlite_utils.migrations'``; ``serve``
exited with ``projector_error``) — seen with sqlite-utils 3.36 in a fresh venv.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import sqlite_utils

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
