"""A long catch-up builds the secondary indexes once, at its end, instead of row by row.

Every ``events`` row goes into up to eight partial indexes (:data:`~.schema.EVENTS_INDEXES`:
by address, instance, host, network...). Kept up to date row by row, they are most of what a
catch-up costs: each batch dirties a leaf page per host, network and instance it names, and each
dirty page is written to the WAL and again at the checkpoint. Measured on a 1,000,000-event
history (bench/history.py), inserting the projector's events rows 2,000 per transaction: 32.7 us
a row with the indexes, 4.8 us without them plus 3.1 s to build them afterwards (one sort each).
The domain tables' secondary indexes (:data:`~.schema.DOMAIN_INDEXES`: a fixed IP is in five,
by address, instance, project, host and IPv6 address) are deferred with them: the projector
never reads through them (it looks rows up by primary key), and kept row by row they were a
third of the committing process's work (Dec 2026, 100,000 events of the projection bench,
committing 16.3-17.4 -> 10.4-11.4 us an event, 0.13-0.18 s to build them at the end).

So a writer that starts far behind (:func:`worth_it`: a backlog of at least :data:`BULK_MIN`
messages and at least half of what it applied already, since building sorts every row)
drops them, projects, and creates them again once it has committed the stream's last sequence
as of its start, or when it stops. The rows and the checkpoint commit together as always; the
indexes are derived data, so a writer that dies in between leaves a consistent projection that
only lacks them, and the next writer creates them (or carries on without them if it is again
far behind). Meanwhile queries give the same answers, slower.
"""

from __future__ import annotations

import sqlite3

from .schema import DEFERRED_INDEXES

#: Fewest messages behind for which dropping and rebuilding the indexes pays.
BULK_MIN = 20_000
#: ... and the backlog must be at least 1/BULK_SHARE of what is applied (the build sorts all:
#: ~3 us a row, against ~10 us or more a row kept up to date in indexes of some 100,000 rows).
BULK_SHARE = 2
#: WAL pages between checkpoints while the indexes are off (the default is 1,000): a catch-up
#: appends, and each checkpoint syncs the WAL and the database file.
BULK_WAL_PAGES = 16_384
WAL_PAGES = 1_000


def worth_it(applied: int, backlog: int, minimum: int = BULK_MIN) -> bool:
    """Whether a writer at ``applied`` with ``backlog`` messages to go should defer indexes."""
    return backlog >= minimum and backlog * BULK_SHARE >= applied


def present(conn: sqlite3.Connection) -> set[str]:
    """The deferred indexes the database has now."""
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {r[0] for r in rows} & set(DEFERRED_INDEXES)


def drop(conn: sqlite3.Connection) -> None:
    """Drop the deferred indexes (in one transaction) and space the checkpoints out."""
    _in_one_transaction(conn, [f"DROP INDEX {name}" for name in sorted(present(conn))])
    conn.execute(f"PRAGMA wal_autocheckpoint={BULK_WAL_PAGES}")


def build(conn: sqlite3.Connection) -> None:
    """Create the deferred indexes that are missing (in one transaction: a reader sees all of
    them or none) and checkpoint as usual again."""
    have = present(conn)
    _in_one_transaction(conn, [sql for name, sql in DEFERRED_INDEXES.items() if name not in have])
    conn.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")


def _in_one_transaction(conn: sqlite3.Connection, statements: list[str]) -> None:
    if not statements:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in statements:
            conn.execute(sql)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
