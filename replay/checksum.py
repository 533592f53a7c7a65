"""Stable checksums of a projection database, table by table, and the rows where two differ.

Two projections of the same log prefix must be equal row for row: rows carry stream sequences
and the events' own times, never the wall clock (projector/project.py). Every column derived
from the log is compared. Left out on purpose:

* ``projection_state.highest_seq``: the highest sequence the projector knew *existed* when it
  read a batch (for the lag); it depends on when the reading happened, not on the log;
* ``_sqlite_migrations`` (when the schema was migrated) and SQLite's own tables.

With ``portable=True`` (comparing projections of two streams holding the same messages, e.g.
before and after ``export`` / ``import``), the columns that name the stream instance are left
out too: ``events.stream_time`` and ``rejected_events.stream_time`` (the server stamps a message
when it stores it, so an imported copy has the import's times) and
``projection_state.stream_created``.

Rows are read in primary-key order from one read transaction (a consistent snapshot even while
a projector writes the file) and streamed, so memory stays flat on a large projection.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netledger.projector.query import open_readonly
from netledger.projector.tables import ALL_TABLES

STATE_COLUMNS = ("id", "last_seq", "schema_version", "stream", "stream_created")
PORTABLE_EXCLUDED = {
    "events": {"stream_time"},
    "rejected_events": {"stream_time"},
    "projection_state": {"stream_created"},
}
TABLES = (*ALL_TABLES, "projection_state")


def columns(table: str, portable: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(compared columns, primary key) of ``table``."""
    cols: tuple[str, ...]
    pk: tuple[str, ...]
    if table == "projection_state":
        cols, pk = STATE_COLUMNS, ("id",)
    else:
        t = ALL_TABLES[table]
        cols, pk = t.columns, t.pk
    if portable:
        cols = tuple(c for c in cols if c not in PORTABLE_EXCLUDED.get(table, ()))
    return cols, pk


@contextmanager
def snapshot(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction: every query sees the same state."""
    with open_readonly(path) as conn:
        conn.row_factory = None
        conn.execute("BEGIN")
        conn.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
        try:
            yield conn
        finally:
            conn.execute("COMMIT")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode()}
    return value


def _rows(conn: sqlite3.Connection, table: str, portable: bool) -> Iterator[tuple[Any, ...]]:
    cols, pk = columns(table, portable)
    yield from conn.execute(f"SELECT {', '.join(cols)} FROM {table} ORDER BY {', '.join(pk)}")


@dataclass(frozen=True)
class TableSum:
    table: str
    rows: int
    sha256: str


def table_sum(conn: sqlite3.Connection, table: str, portable: bool = False) -> TableSum:
    h = hashlib.sha256()
    cols, _ = columns(table, portable)
    h.update(json.dumps([table, cols]).encode())
    n = 0
    for row in _rows(conn, table, portable):
        h.update(json.dumps([_plain(v) for v in row], separators=(",", ":")).encode())
        h.update(b"\n")
        n += 1
    return TableSum(table, n, h.hexdigest())


def checksums(conn: sqlite3.Connection, portable: bool = False) -> dict[str, TableSum]:
    return {t: table_sum(conn, t, portable) for t in TABLES}


def overall(sums: dict[str, TableSum]) -> str:
    """One hash over the per-table ones (for a single line in a report)."""
    h = hashlib.sha256()
    for name in sorted(sums):
        h.update(f"{name}:{sums[name].sha256}\n".encode())
    return h.hexdigest()


def file_checksums(path: str | Path, portable: bool = False) -> dict[str, TableSum]:
    with snapshot(path) as conn:
        return checksums(conn, portable)


def _order(value: Any) -> tuple[int, Any]:
    """SQLite's ORDER BY across storage classes: NULL < numbers < text < blobs."""
    if value is None:
        return (0, 0)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (3, value)


def first_differences(
    a: sqlite3.Connection,
    b: sqlite3.Connection,
    table: str,
    limit: int = 5,
    portable: bool = False,
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows where ``a`` and ``b`` differ, in key order (a merge of the two
    ordered scans: flat memory). Each names the key, both rows (None where missing) and the
    columns that differ."""
    cols, pk = columns(table, portable)
    idx = [cols.index(c) for c in pk]

    def key(row: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
        return tuple(_order(row[i]) for i in idx)

    def as_dict(row: tuple[Any, ...] | None) -> dict[str, Any] | None:
        return None if row is None else {c: _plain(v) for c, v in zip(cols, row, strict=True)}

    out: list[dict[str, Any]] = []
    ia, ib = _rows(a, table, portable), _rows(b, table, portable)
    ra, rb = next(ia, None), next(ib, None)
    while (ra is not None or rb is not None) and len(out) < limit:
        if rb is None or (ra is not None and key(ra) < key(rb)):
            left, right = ra, None
            ra = next(ia, None)
        elif ra is None or key(rb) < key(ra):
            left, right = None, rb
            rb = next(ib, None)
        else:
            left, right = ra, rb
            ra, rb = next(ia, None), next(ib, None)
            if left == right:
                continue
        some = left if left is not None else right
        assert some is not None
        out.append(
            {
                "table": table,
                "key": {c: _plain(some[cols.index(c)]) for c in pk},
                "projection": as_dict(left),
                "rebuilt": as_dict(right),
                "columns": [
                    c
                    for i, c in enumerate(cols)
                    if left is None or right is None or left[i] != right[i]
                ],
            }
        )
    return out
