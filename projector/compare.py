"""Comparing projections: a canonical dump and checksum of a projection database.

Two projections of the same stream must be identical row for row (they carry no wall-clock
values); ``dump`` reads every projected table in primary-key order so they can be compared,
and ``checksum`` condenses that to one hash (what a verifier compares with a fresh rebuild).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from .tables import ALL_TABLES

#: Tables compared: everything the projection writes (migration bookkeeping is not included).
COMPARED = (*ALL_TABLES, "projection_state")


def dump(path: str | Path, tables: tuple[str, ...] = COMPARED) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of ``tables`` in primary-key order, as tuples in column order."""
    conn = sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        out: dict[str, list[tuple[Any, ...]]] = {}
        for name in tables:
            if name == "projection_state":
                cols = "id, last_seq, schema_version, stream, stream_created"
                order = "id"
            else:
                t = ALL_TABLES[name]
                cols, order = ", ".join(t.columns), ", ".join(t.pk)
            out[name] = [
                tuple(r) for r in conn.execute(f"SELECT {cols} FROM {name} ORDER BY {order}")
            ]
        return out
    finally:
        conn.close()


def checksum(path: str | Path, tables: tuple[str, ...] = COMPARED) -> str:
    """A SHA-256 over :func:`dump` (stable across runs and machines)."""
    h = hashlib.sha256()
    for name, rows in dump(path, tables).items():
        h.update(name.encode())
        for row in rows:
            h.update(json.dumps(row, default=lambda b: b.hex()).encode())
    return h.hexdigest()
