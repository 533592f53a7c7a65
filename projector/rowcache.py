"""The writer's copy of the state rows as committed, so that projecting seldom reads the file.

Reading a row through SQLite costs the projecting thread a statement, a read transaction and,
after every commit, pages the connection must read again; most events read one to three rows
(the network, the project, the host). :class:`RowCache` keeps each row once read, and each
batch's changes once that batch is committed (:meth:`RowCache.merge`): it never holds what is
not committed, so a batch reads through its own changes, then those of the batch being
committed (:class:`~.store.Batch` ``base``), then this. Past :data:`CACHE_ROWS` it forgets
everything and reads again: memory stays bounded whatever the size of the cloud.

A table the projection selects from by the first column of its key (:data:`PREFIXED`: a host's
NAT rules) also has the keys of each loaded value, complete, so that such a select reads the
database once per value.

A table that held no row when the cache began (:meth:`RowCache.starting_from`: a new
projection's every table) is *complete* in it until it forgets: each of its committed rows came
in through :meth:`~RowCache.merge`, so a key it lacks is a row that does not exist, and nothing
is read from the file for it. On a new projection of a 200,000-event cloud the projecting
process asked the file ~12,000 times (each new network, project, host and host's NAT rules),
each a statement, a read transaction and its locks: ~0.7 us an event.

The cache lives in the projecting process (:mod:`.writer_proc`), the only one that reads or
changes it: a batch is diffed against it (:meth:`~.store.Batch.plan`: only the columns that
changed are updated) once the batch before it is merged, and the committing process gets the
plan, not the cache.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol

from .tables import ALL_TABLES, HOST_NAT, STATE_TABLES, Key, Row, Table

#: Rows kept (live state: ~60,000 rows in a cloud of 1,000 hosts and 20,000 instances).
CACHE_ROWS = 200_000

#: Tables selected from by the first column of their key, and that column.
PREFIXED: dict[str, str] = {HOST_NAT.name: HOST_NAT.pk[0]}


class Changes(Protocol):
    """What :meth:`RowCache.merge` takes in: a committed batch's changes per table."""

    overlay: dict[str, dict[Key, Row | None]]


class RowCache:
    """State rows as committed (``None``: no such row), by table and key."""

    def __init__(self, limit: int = CACHE_ROWS) -> None:
        self.limit = limit
        self.tables: dict[str, dict[Key, Row | None]] = {}
        #: table -> first key value -> every key with it (for the values loaded)
        self.prefixes: dict[str, dict[object, set[Key]]] = {}
        #: entries held (rows, absent rows, loaded prefix values): forgets all at ``limit``
        self.size = 0
        #: tables whose every committed row is here: a key not here is no row
        self.complete: set[str] = set()

    @classmethod
    def starting_from(cls, conn: sqlite3.Connection, limit: int = CACHE_ROWS) -> RowCache:
        """A cache for batches projected on top of the database as ``conn`` reads it now (and
        merged into it as they commit): the state tables that hold no row are complete."""
        cache = cls(limit)
        for name in STATE_TABLES:
            if conn.execute(f"SELECT 1 FROM {name} LIMIT 1").fetchone() is None:
                cache.complete.add(name)
        return cache

    def _room(self) -> None:
        if self.size >= self.limit:
            self.tables = {}
            self.prefixes = {}
            self.size = 0
            self.complete = set()

    def put(self, table: str, key: Key, row: Row | None) -> None:
        """A row as read from the database."""
        self._room()
        t = self.tables.get(table)
        if t is None:
            t = self.tables[table] = {}
        if key not in t:
            self.size += 1
        t[key] = row

    def with_prefix(self, conn: sqlite3.Connection, t: Table, value: object) -> dict[Key, Row]:
        """The committed rows of ``t`` whose first key column is ``value``."""
        keys = self.prefixes.get(t.name, {}).get(value)
        if keys is None:
            self._room()
            rows = self.tables.setdefault(t.name, {})
            keys = set()
            if t.name not in self.complete:  # else none: merge keeps every value's keys
                cur = conn.execute(
                    f"SELECT {', '.join(t.columns)} FROM {t.name} WHERE {t.pk[0]} = ?", [value]
                )
                for values in cur:
                    row = dict(zip(t.columns, values, strict=True))
                    key = t.key_of(row)
                    rows[key] = row
                    keys.add(key)
            self.size += len(keys) + 1
            self.prefixes.setdefault(t.name, {})[value] = keys
            return {k: rows[k] for k in keys}  # type: ignore[misc]
        rows = self.tables[t.name]
        return {k: rows[k] for k in keys}  # type: ignore[misc]

    def merge(self, batch: Changes) -> None:
        """Take in the changes of ``batch``, just committed."""
        self._room()
        for table, changed in batch.overlay.items():
            t = self.tables.get(table)
            if t is None:
                t = self.tables[table] = {}
            held = len(t)
            complete = table in self.complete
            if complete:
                # A row deleted is no row: not kept (a long churn deletes and creates rows under
                # ever new keys, which would fill the cache up to its limit).
                for key, row in changed.items():
                    if row is None:
                        t.pop(key, None)
                    else:
                        t[key] = row
            else:
                t.update(changed)  # None: known not to be in the file
            self.size += len(t) - held
            if table not in PREFIXED:
                continue
            loaded = self.prefixes.get(table)
            if loaded is None:
                if not complete:
                    continue
                loaded = self.prefixes[table] = {}
            for key, row in changed.items():
                keys = loaded.get(key[0])
                if keys is None:
                    if not complete or row is None:
                        continue
                    keys = loaded[key[0]] = set()
                    self.size += 1
                if row is None:
                    keys.discard(key)
                else:
                    keys.add(key)


def prefixed(table: str, column: str) -> Table | None:
    """The table if a select of ``column`` = value can use the cache's keys by prefix."""
    return ALL_TABLES[table] if PREFIXED.get(table) == column else None
