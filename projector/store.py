"""The SQLite side of the projector: batches of outcomes written in one transaction each.

A :class:`Writer` owns the database connection and is used from one thread only (the
projector's writer thread; SQLite work releases the GIL, so it overlaps the NATS reading on the
event loop). For each batch of raw messages it decodes, projects (reading through an overlay of
the batch's own changes), and commits every changed row, the events-index rows, the rejections
and ``projection_state.last_seq`` together. A crash before ``COMMIT`` leaves the previous batch's
state and checkpoint; after it, the new ones: never half, never twice.
"""

from __future__ import annotations

import operator
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from netledger.events.codec import decode
from netledger.events.errors import DecodeError

from .errors import ProjectionAhead, StreamMismatch
from .project import Outcome, project, reject
from .schema import open_db
from .tables import ALL_TABLES, EVENTS, REJECTED_EVENTS, Key, Row, Table


class Raw(NamedTuple):
    """One message as read from the stream, not yet decoded."""

    seq: int
    subject: str
    data: bytes
    stream_time: float
    pending: int  # messages after this one in the stream when it was delivered


def _upsert_sql(t: Table) -> str:
    cols = ", ".join(t.columns)
    marks = ", ".join("?" for _ in t.columns)
    return f"INSERT OR REPLACE INTO {t.name} ({cols}) VALUES ({marks})"


def _where(t: Table) -> str:
    return " AND ".join(f"{c} = ?" for c in t.pk)


_UPSERT = {name: _upsert_sql(t) for name, t in ALL_TABLES.items()}
#: Row dict -> tuple in column order (itemgetter: several times faster than a generator).
_VALUES = {name: operator.itemgetter(*t.columns) for name, t in ALL_TABLES.items()}
_DELETE = {name: f"DELETE FROM {name} WHERE {_where(t)}" for name, t in ALL_TABLES.items()}
_GET = {
    name: f"SELECT {', '.join(t.columns)} FROM {name} WHERE {_where(t)}"
    for name, t in ALL_TABLES.items()
}


class Batch:
    """The changes of one batch, readable before they are committed (a :class:`View`)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.overlay: dict[str, dict[Key, Row | None]] = {}
        # Rows read from the database during this batch: it does not change until we commit.
        self.read: dict[tuple[str, Key], Row | None] = {}
        self.events: list[Row] = []
        self.rejected: list[Row] = []

    def get(self, table: str, key: Key) -> Row | None:
        t = self.overlay.get(table)
        if t is not None and key in t:
            return t[key]
        k = (table, key)
        if k in self.read:
            return self.read[k]
        cur = self.conn.execute(_GET[table], key)
        found = cur.fetchone()
        row = None if found is None else dict(zip(ALL_TABLES[table].columns, found, strict=True))
        self.read[k] = row
        return row

    def select(self, table: str, column: str, value: Any) -> list[Row]:
        t = ALL_TABLES[table]
        if column not in t.columns:
            raise KeyError(f"{table} has no column {column}")
        cur = self.conn.execute(
            f"SELECT {', '.join(t.columns)} FROM {table} WHERE {column} = ?", [value]
        )
        found: dict[Key, Row] = {}
        for values in cur:
            row = dict(zip(t.columns, values, strict=True))
            found[t.key(row)] = row
        for key, ov in self.overlay.get(table, {}).items():
            if ov is None or ov.get(column) != value:
                found.pop(key, None)
            else:
                found[key] = ov
        return list(found.values())

    def add(self, outcome: Outcome) -> None:
        for ch in outcome.changes:
            self.overlay.setdefault(ch.table, {})[ch.key] = ch.row
        if outcome.event is not None:
            self.events.append(outcome.event)
        if outcome.rejected is not None:
            self.rejected.append(outcome.rejected)

    def commit(self, last_seq: int, highest_seq: int) -> None:
        """Write everything and the checkpoint in one transaction."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            for name, rows in self.overlay.items():
                t = ALL_TABLES[name]
                deletes = [k for k, r in rows.items() if r is None]
                upserts = list(map(_VALUES[name], filter(None, rows.values())))
                if deletes:
                    c.executemany(_DELETE[name], deletes)
                if upserts:
                    c.executemany(_UPSERT[name], upserts)
            for t, rows_ in ((EVENTS, self.events), (REJECTED_EVENTS, self.rejected)):
                if rows_:
                    c.executemany(_UPSERT[t.name], list(map(_VALUES[t.name], rows_)))
            c.execute(
                "UPDATE projection_state SET last_seq = ?, highest_seq = max(highest_seq, ?)"
                " WHERE id = 1",
                (last_seq, highest_seq),
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise


@dataclass
class Applied:
    last_seq: int
    events: int
    rejected: int


class Writer:
    """Owns the projection database; every method runs on the projector's writer thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = open_db(self.path)
        self.conn = self.db.conn
        self.last_seq, self.highest_seq = self._checkpoint()

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
        if row[0] is not None and (row[0], row[1]) != (stream, created):
            raise StreamMismatch(
                f"{self.path} was built from stream {row[0]} created {row[1]}, not {stream}"
                f" created {created}: project into a new file",
                db=str(self.path),
            )
        if stream_last_seq < self.last_seq:
            raise ProjectionAhead(
                f"{self.path} has applied up to seq {self.last_seq} but stream {stream} ends at"
                f" {stream_last_seq}: the stream lost data or is another one",
                last_seq=self.last_seq,
                stream_last_seq=stream_last_seq,
            )
        if row[0] is None:
            with self.db.atomic():
                self.conn.execute(
                    "UPDATE projection_state SET stream = ?, stream_created = ? WHERE id = 1",
                    (stream, created),
                )

    def apply(self, raws: list[Raw]) -> Applied:
        """Decode, project and commit one batch (messages at or below the checkpoint are skipped)."""
        batch = Batch(self.conn)
        last = self.last_seq
        highest = self.highest_seq
        events = rejected = 0
        for seq, subject, data, stream_time, pending in raws:
            if seq <= last:
                continue  # already applied (a redelivery after a consumer reset)
            try:
                env = decode(data)
            except DecodeError as exc:
                out = reject(seq, subject, str(exc), stream_time=stream_time, raw=data)
            else:
                out = project(seq, subject, env, batch, stream_time)
            batch.add(out)
            if out.rejected is not None:
                rejected += 1
            else:
                events += 1
            last = seq
            highest = max(highest, seq + pending)
        if last > self.last_seq:
            batch.commit(last, highest)
            self.last_seq, self.highest_seq = last, highest
        return Applied(self.last_seq, events, rejected)

    def close(self) -> None:
        self.conn.close()
