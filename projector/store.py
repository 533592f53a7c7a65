"""The SQLite side of the projector: batches of outcomes written in one transaction each.

A :class:`Writer` owns the database connection. For each batch of raw messages it decodes,
projects (reading through an overlay of the batch's own changes), and commits every changed
row, the events-index rows, the rejections and ``projection_state.last_seq`` together. A crash
before ``COMMIT`` leaves the previous batch's state and checkpoint; after it, the new ones:
never half, never twice.

The work is split in two steps so that a caller can overlap them (see :mod:`.writer_proc`):
:meth:`Writer.project` fills a :class:`Batch` (Python: decode, project) and :meth:`Writer.commit`
writes it (SQLite) — or, across processes, :meth:`Batch.plan` turns it into plain data and
:meth:`Writer.commit_plan` writes that. A batch may be projected on top of one still being written (``base``): it
reads that batch's changes before the database, so it sees exactly what the committed state will
be; below both, the rows as committed come from the writer's :class:`~.rowcache.RowCache`
before the file. New rows are written with multi-row ``INSERT ... VALUES (...), (...)``
statements: one ``sqlite3_step`` for hundreds of rows, which is cheaper than ``executemany`` and
holds the GIL only while binding, not while SQLite works (NULLs are bound as NaN, which SQLite
stores as NULL: Python's sqlite3 binds ``None`` 10x slower than a float). A row that exists is
written as an ``UPDATE`` of the columns that changed against the cached committed row (only the
indexes on those columns change). A writer far behind defers the secondary indexes (:mod:`.bulk`).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from netledger.events.errors import DecodeError
from netledger.events.wire_fast import decode_fast as decode

from . import bulk
from .anchor import check_stream
from .errors import ProjectorError, not_a_projection
from .project import apply_event
from .project_tx import rejected_row
from .rowcache import PREFIXED, RowCache, prefixed
from .schema import open_connection
from .tables import ALL_TABLES, EVENTS, REJECTED_EVENTS, Key, Row, Table

#: What a dict lookup that found nothing gives (a row may be None: deleted).
_ABSENT: Any = object()

#: A message as the reader sends it to the writer: the fields of :class:`Raw`, in a plain tuple.
RawTuple = tuple[int, str, bytes, float, int]


class Raw(NamedTuple):
    """One message as read from the stream, not yet decoded."""

    seq: int
    subject: str
    data: bytes
    stream_time: float
    pending: int  # messages after this one in the stream when it was delivered


def _where(t: Table) -> str:
    return " AND ".join(f"{c} = ?" for c in t.pk)


_DELETE = {name: f"DELETE FROM {name} WHERE {_where(t)}" for name, t in ALL_TABLES.items()}
_UPDATES: dict[tuple[str, tuple[str, ...]], str] = {}


def _update(t: Table, columns: tuple[str, ...]) -> str:
    """``UPDATE`` of ``columns`` of the row at a key (the key's values last)."""
    sql = _UPDATES.get((t.name, columns))
    if sql is None:
        sets = ", ".join(f"{c} = ?" for c in columns)
        sql = _UPDATES[(t.name, columns)] = f"UPDATE {t.name} SET {sets} WHERE {_where(t)}"
    return sql


_GET = {
    name: f"SELECT {', '.join(t.columns)} FROM {name} WHERE {_where(t)}"
    for name, t in ALL_TABLES.items()
}
#: Rows per multi-row INSERT, largest first (at most 32 columns x 1024 rows: SQLite's usual 32,766
#: variables). A batch is cut into these sizes so that only a few
#: statements per table are ever prepared (the connection caches them).
_CHUNKS = (1024, 128, 16, 1)


#: Python's sqlite3 binds ``None`` (and any type but exact int, float, str, bytearray) through
#: its adaptation protocol: ~280 ns a value against ~30 for an int, measured, and a projection
#: row holds a dozen NULLs, all bound while holding the GIL. A float NaN binds as a plain double,
#: and SQLite stores a NaN as NULL (``sqlite3VdbeMemSetDouble``); so NULLs are bound as NaN
#: (:func:`nulls_as_nan` checks that the library does so, else ``None`` stays). Nothing else
#: changes: no other value equals ``None``, and a NaN in a row was stored as NULL already.
_NAN = float("nan")
#: what a NULL is bound as: NaN, or None where SQLite would not store a NaN as NULL
_null: Any = _NAN


def nulls_as_nan(conn: sqlite3.Connection) -> bool:
    """Whether this SQLite stores a bound NaN as NULL (then NULLs are bound as NaN)."""
    global _null
    ok = bool(conn.execute("SELECT ? IS NULL", (_NAN,)).fetchone()[0])
    _null = _NAN if ok else None
    return ok


def _params(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The values of ``rows``, flat, ready to bind (``None`` as NaN: see :data:`_NAN`). An
    identity test, not a dict lookup: that would hash every new string of the batch (half the
    time of this, measured)."""
    null = _null
    return [null if v is None else v for v in itertools.chain.from_iterable(rows)]


def _insert(conn: sqlite3.Connection, verb: str, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """``verb INTO table VALUES (..), (..)`` for ``rows`` (tuples in column order), in order."""
    one = "(" + ",".join("?" * len(table.columns)) + ")"
    head = f"{verb} INTO {table.name} ({', '.join(table.columns)}) VALUES "
    i, n = 0, len(rows)
    for size in _CHUNKS:
        if n - i < size:
            continue
        sql = head + ",".join([one] * size)
        while n - i >= size:
            conn.execute(sql, _params(rows[i : i + size]))
            i += size


#: SQLite's page cache of the writer's connection, KiB.
CACHE_KIB = 64 << 10


class Batch:
    """The changes of one batch, readable before they are committed (a :class:`View`)."""

    def __init__(
        self, conn: sqlite3.Connection, base: Batch | None = None, cache: RowCache | None = None
    ) -> None:
        self.conn = conn  # used for reads only
        self.base = base  # a batch being committed meanwhile: its changes come before the file
        self.overlay: dict[str, dict[Key, Row | None]] = {}
        # Rows as committed, read from the database (the rows a base batch changes are found in
        # its overlay first, so these do not depend on whether it committed yet): the writer's
        # cache, shared by its batches, or this batch's own.
        self.read = cache if cache is not None else RowCache()
        # The keys this batch changed in the PREFIXED tables, by their first column.
        self.prefixes: dict[str, dict[Any, list[Key]]] = {}
        self.events: list[tuple[Any, ...]] = []
        self.rejected: list[Row] = []
        self.first_seq = 0
        self.last_seq = 0
        self.highest_seq = 0

    def __len__(self) -> int:
        return len(self.events) + len(self.rejected)

    def _oldest_first(self) -> list[Batch]:
        """The batches this one reads through, oldest changes first, this batch's last."""
        chain: list[Batch] = []
        b: Batch | None = self
        while b is not None:
            chain.append(b)
            b = b.base
        chain.reverse()
        return chain

    def get(self, table: str, key: Key) -> Row | None:
        # The batches' changes, newest first, then the cache: one lookup each (nearly every
        # event reads a row or two).
        b: Batch | None = self
        while b is not None:
            t = b.overlay.get(table)
            if t is not None:
                row = t.get(key, _ABSENT)
                if row is not _ABSENT:
                    return row  # type: ignore[no-any-return]
            b = b.base
        read = self.read
        rows = read.tables.get(table)
        if rows is not None:
            row = rows.get(key, _ABSENT)
            if row is not _ABSENT:
                return row  # type: ignore[no-any-return]
        if table in read.complete:
            return None
        values = self.conn.execute(_GET[table], key).fetchone()
        row = None if values is None else dict(zip(ALL_TABLES[table].columns, values, strict=True))
        self.read.put(table, key, row)
        return row

    def select(self, table: str, column: str, value: Any) -> list[Row]:
        t = ALL_TABLES[table]
        if column not in t.columns:
            raise KeyError(f"{table} has no column {column}")
        if prefixed(table, column) is not None:
            return self._with_prefix(t, value)
        cur = self.conn.execute(
            f"SELECT {', '.join(t.columns)} FROM {table} WHERE {column} = ?", [value]
        )
        found: dict[Key, Row] = {}
        for values in cur:
            row = dict(zip(t.columns, values, strict=True))
            found[t.key_of(row)] = row
        for b in self._oldest_first():
            for key, ov in b.overlay.get(table, {}).items():
                if ov is None or ov.get(column) != value:
                    found.pop(key, None)
                else:
                    found[key] = ov
        return list(found.values())

    def rows(self, table: str) -> list[Row]:
        """Every row of ``table`` as it stands (for small tables: a pool checked against all)."""
        t = ALL_TABLES[table]
        found: dict[Key, Row] = {}
        if table in self.read.complete:  # every committed row is in the cache
            for key, row in self.read.tables.get(table, {}).items():
                if row is not None:
                    found[key] = row
        else:
            for values in self.conn.execute(f"SELECT {', '.join(t.columns)} FROM {table}"):
                row = dict(zip(t.columns, values, strict=True))
                found[t.key_of(row)] = row
        for b in self._oldest_first():
            for key, ov in b.overlay.get(table, {}).items():
                if ov is None:
                    found.pop(key, None)
                else:
                    found[key] = ov
        return list(found.values())

    def _with_prefix(self, t: Table, value: Any) -> list[Row]:
        """``select`` by the first key column: the cache's committed rows, then the changes of
        the batches above them, found through their keys by prefix (not by scanning them)."""
        found: dict[Key, Row] = self.read.with_prefix(self.conn, t, value)
        for b in self._oldest_first():
            keys = b.prefixes.get(t.name, {}).get(value)
            if keys:
                rows = b.overlay[t.name]
                for key in keys:
                    row = rows[key]
                    if row is None:
                        found.pop(key, None)
                    else:
                        found[key] = row
        return list(found.values())

    def add(self, seq: int, subject: str, data: bytes, stream_time: float, pending: int) -> bool:
        """Decode and project one message into the batch; False if it was rejected."""
        try:
            env = decode(data)
        except DecodeError as exc:
            self.rejected.append(
                rejected_row(seq, subject, str(exc), stream_time=stream_time, raw=data)
            )
            ok = False
        else:
            tx, row = apply_event(seq, subject, env, self, stream_time)
            if tx is None:
                self.rejected.append(row)  # type: ignore[arg-type]
                ok = False
            else:
                overlay = self.overlay
                for (table, key), changed in tx.changes.items():
                    t = overlay.get(table)
                    if t is None:
                        t = overlay[table] = {}
                    if table in PREFIXED and key not in t:
                        self.prefixes.setdefault(table, {}).setdefault(key[0], []).append(key)
                    t[key] = changed
                self.events.append(row)  # type: ignore[arg-type]
                ok = True
        if not self.first_seq:
            self.first_seq = seq
        self.last_seq = seq
        if seq + pending > self.highest_seq:
            self.highest_seq = seq + pending
        return ok

    def _split(
        self, t: Table, rows: dict[Key, Row | None]
    ) -> tuple[list[Key], dict[tuple[str, ...], list[list[Any]]], list[tuple[Any, ...]]]:
        """A table's changes as keys to delete, updates of the columns that changed in rows as
        committed (grouped by those columns), and whole rows to insert or replace."""
        deletes: list[Key] = []
        updates: dict[tuple[str, ...], list[list[Any]]] = {}
        upserts: list[tuple[Any, ...]] = []
        committed = self.read.tables.get(t.name, {})
        values_of, others = t.values_of, t.others
        for key, row in rows.items():
            if row is None:
                deletes.append(key)
                continue
            old = committed.get(key)
            if old is None:  # not there, or not known to be: the whole row
                upserts.append(values_of(row))
                continue
            # Only the columns that changed: SQLite then rewrites only the indexes on them
            # (a lease, a host's last_seq: none), where a REPLACE deletes and inserts the row
            # in the table and every index. Same type too: 1 == 1.0 == True, not in the file.
            changed = tuple(
                c for c in others if (v := row[c]) != (o := old[c]) or type(v) is not type(o)
            )
            if changed:
                params = [row[c] for c in changed]
                params += key
                group = updates.get(changed)
                if group is None:
                    updates[changed] = [params]
                else:
                    group.append(params)
        return deletes, updates, upserts

    def plan(self) -> Plan:
        """What writing this batch takes, as plain data (no rows of the cache, no connection):
        the rows diffed against the committed ones in the cache, so it must be called once the
        batches before this one are merged into it. A plan crosses a pipe as a pickle
        (:mod:`.writer_proc`: the committing process has no cache)."""
        steps = [
            (name, *self._split(ALL_TABLES[name], rows)) for name, rows in self.overlay.items()
        ]
        return Plan(
            self.last_seq,
            self.highest_seq,
            steps,
            self.events,
            list(map(REJECTED_EVENTS.values_of, self.rejected)),
        )

    def write(self, conn: sqlite3.Connection) -> None:
        """Write everything and the checkpoint in one transaction (on ``conn``, the writer's)."""
        write_plan(conn, self.plan())


class Plan(NamedTuple):
    """A batch as the statements that write it (:meth:`Batch.plan`)."""

    last_seq: int
    highest_seq: int
    #: per changed table: (name, keys to delete, updates by changed columns, rows to upsert)
    steps: list[
        tuple[str, list[Key], dict[tuple[str, ...], list[list[Any]]], list[tuple[Any, ...]]]
    ]
    events: list[tuple[Any, ...]]
    rejected: list[tuple[Any, ...]]


def write_plan(conn: sqlite3.Connection, plan: Plan) -> None:
    """Write a batch's plan and its checkpoint in one transaction (on the writer's ``conn``)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for name, deletes, updates, upserts in plan.steps:
            t = ALL_TABLES[name]
            if deletes:
                conn.executemany(_DELETE[name], deletes)
            for columns, params in updates.items():
                conn.executemany(_update(t, columns), [_params((p,)) for p in params])
            if upserts:
                _insert(conn, "INSERT OR REPLACE", t, upserts)
        # Append-only, and every seq here is above the checkpoint committed with these rows,
        # so no row can be there already: plain INSERT (an existing one is an error).
        if plan.events:
            _insert(conn, "INSERT", EVENTS, plan.events)
        if plan.rejected:
            _insert(conn, "INSERT", REJECTED_EVENTS, plan.rejected)
        conn.execute(
            "UPDATE projection_state SET last_seq = ?, highest_seq = max(highest_seq, ?)"
            " WHERE id = 1",
            (plan.last_seq, plan.highest_seq),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def project_into(batch: Batch, raws: Sequence[RawTuple], applied: int) -> int:
    """Decode and project ``raws`` into ``batch``, skipping every message at or below
    ``applied`` or the batch's own last one (a redelivery after a consumer reset); the last
    sequence projected."""
    last = max(applied, batch.last_seq)
    for seq, subject, data, stream_time, pending in raws:
        if seq <= last:
            continue
        batch.add(seq, subject, data, stream_time, pending)
        last = seq
    return last


@dataclass
class Applied:
    last_seq: int
    events: int
    rejected: int


class Writer:
    """Owns the projection database; used from one thread at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.conn = open_connection(self.path)
        except sqlite3.OperationalError as exc:  # cannot open or write it at all
            raise ProjectorError(
                f"cannot open the projection {self.path}: {exc}", db=str(self.path)
            ) from None
        except sqlite3.DatabaseError as exc:  # a file, but no SQLite database
            raise not_a_projection(self.path, exc) from None
        # The B-trees a batch touches stay in memory between batches (SQLite's default: 2 MB).
        self.conn.execute(f"PRAGMA cache_size={-CACHE_KIB}")
        self.last_seq, self.highest_seq = self._checkpoint()
        self.cache = RowCache.starting_from(self.conn)
        nulls_as_nan(self.conn)
        #: While the secondary indexes are off (:mod:`.bulk`): the seq after which they are built.
        self.bulk_until: int | None = None

    def prepare(self, stream_last_seq: int, bulk_min: int | None = None) -> None:
        """Before projecting towards ``stream_last_seq``: defer the secondary indexes if that is a
        long way (:func:`.bulk.worth_it`), else make sure they are all there (a writer that
        deferred them may have died before building them)."""
        minimum = bulk.BULK_MIN if bulk_min is None else bulk_min
        if bulk.worth_it(self.last_seq, stream_last_seq - self.last_seq, minimum):
            bulk.drop(self.conn)
            self.bulk_until = stream_last_seq
        else:
            self.end_bulk()

    def end_bulk(self) -> None:
        """Build the deferred indexes that are missing."""
        bulk.build(self.conn)
        self.bulk_until = None

    def _checkpoint(self) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT last_seq, highest_seq FROM projection_state WHERE id = 1"
        ).fetchone()
        return int(row[0]), int(row[1] or 0)

    def check_stream(self, stream: str, created: str, stream_last_seq: int) -> None:
        """Refuse a stream that is not the one this projection was built from."""
        row = self.conn.execute(
            "SELECT stream, stream_created FROM projection_state WHERE id = 1"
        ).fetchone()
        check_stream(self.path, (row[0], row[1]), self.last_seq, stream, created, stream_last_seq)
        if row[0] is None:
            with self.conn:
                self.conn.execute(
                    "UPDATE projection_state SET stream = ?, stream_created = ? WHERE id = 1",
                    (stream, created),
                )

    def project(
        self,
        raws: Sequence[RawTuple],
        batch: Batch | None = None,
        conn: sqlite3.Connection | None = None,
    ) -> Batch:
        """Decode and project ``raws`` into ``batch`` (a new one reading through ``conn``, the
        writer's connection by default); messages at or below the checkpoint are skipped."""
        if batch is None:
            batch = Batch(conn or self.conn, cache=self.cache)
        project_into(batch, raws, self.last_seq)
        return batch

    def commit_plan(self, plan: Plan) -> Applied:
        """:meth:`commit` of a batch's :class:`Plan` (its rows merged into a cache elsewhere:
        :mod:`.writer_proc`'s projecting process)."""
        if plan.last_seq > self.last_seq:
            highest = max(plan.highest_seq, self.highest_seq)
            # Rows written behind the back of this writer's own cache: none of its tables is
            # known to be complete any more.
            self.cache.complete.clear()
            write_plan(self.conn, plan._replace(highest_seq=highest))
            self.last_seq, self.highest_seq = plan.last_seq, highest
            if self.bulk_until is not None and self.last_seq >= self.bulk_until:
                self.end_bulk()
        return Applied(self.last_seq, len(plan.events), len(plan.rejected))

    def commit(self, batch: Batch, merge: bool = True) -> Applied:
        """Write ``batch`` with the checkpoint in one transaction; what was applied. Its
        changes go into the row cache unless ``merge`` is false: then the caller merges them
        (:mod:`.writer_proc`: the projecting thread, the only one that changes the cache)."""
        if batch.last_seq > self.last_seq:
            batch.highest_seq = max(batch.highest_seq, self.highest_seq)
            batch.write(self.conn)
            self.last_seq, self.highest_seq = batch.last_seq, batch.highest_seq
            if merge:
                self.cache.merge(batch)
            if self.bulk_until is not None and self.last_seq >= self.bulk_until:
                self.end_bulk()
        return Applied(self.last_seq, len(batch.events), len(batch.rejected))

    def apply(self, raws: Sequence[RawTuple]) -> Applied:
        """Decode, project and commit one batch (messages at or below the checkpoint are skipped)."""
        return self.commit(self.project(raws))

    def close(self) -> None:
        """Build the deferred indexes if they were deferred, and close the database."""
        try:
            if self.bulk_until is not None:
                self.end_bulk()
        finally:
            self.conn.close()
