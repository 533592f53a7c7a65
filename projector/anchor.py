"""Is the log still the one the projection was built from, up to its checkpoint?

The checkpoint names the stream and its creation time, and a stream that ends before it is
refused (:meth:`~.store.Writer.check_stream`). One case passes both: a log **restored from an
older backup** (its files, or ``nats stream restore``) keeps its name and creation time, and once
written to again it is as long as before — but its messages after the backup are others. A
projection resuming there would keep rows of events the log no longer has and skip the new
ones at the same sequences. So on every open the newest row the projection holds (an event, or
a message it rejected) is compared with the log's message at that sequence: the same subject,
event id and time (a message that did not decode: the same bytes, of which the row keeps the
first MAX_RAW; an event the projection rejected, whose row keeps no bytes: the same type and
stored time), or :class:`~.errors.LogDiverged`.
"""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
from pathlib import Path
from typing import NamedTuple

from netledger.events.codec import decode
from netledger.events.errors import DecodeError
from netledger.journal.stream import Connection, message_at

from .errors import LogDiverged, ProjectionAhead, StreamMismatch
from .project_tx import MAX_RAW

#: the stored time a rejected row records is rounded to the microsecond, nats-py's answer to
#: a message get truncated to it: the same message's differ by at most 1 us
STORED_TIME_SLACK_S = 0.001


class NewestRow(NamedTuple):
    seq: int
    subject: str
    #: an event's id and its envelope's time (None for a rejected message)
    event_id: str | None
    time: float | None
    #: a rejected message's bytes (None for an event, and for a rejected event that decoded:
    #: those keep no bytes); at most MAX_RAW of them
    raw: bytes | None
    #: a rejected event that decoded: its type and stored time (what is left to compare)
    type: str | None = None
    stream_time: float | None = None


def newest_row(db_path: Path, last_seq: int) -> NewestRow | None:
    """The projection's newest event or rejected message at or below ``last_seq`` (None: it
    holds neither yet). A short read-only connection, closed before returning: the writer is
    forked later only if this process has the database open nowhere."""
    # By its absolute file URI: ``file:{path}`` read a ``#``, ``?`` or ``%`` in the path as URI
    # syntax (SQLite opened, and created, the shortened path).
    conn = sqlite3.connect(Path(db_path).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        ev = conn.execute(
            "SELECT seq, subject, event_id, time FROM events WHERE seq <= ?"
            " ORDER BY seq DESC LIMIT 1",
            (last_seq,),
        ).fetchone()
        rej = conn.execute(
            "SELECT seq, subject, raw, type, stream_time FROM rejected_events WHERE seq <= ?"
            " ORDER BY seq DESC LIMIT 1",
            (last_seq,),
        ).fetchone()
    finally:
        conn.close()
    if rej is not None and (ev is None or rej[0] > ev[0]):
        raw = None if rej[2] is None else bytes(rej[2])
        st = None if rej[4] is None else float(rej[4])
        return NewestRow(int(rej[0]), str(rej[1] or ""), None, None, raw, rej[3], st)
    if ev is not None:
        t = None if ev[3] is None else float(ev[3])
        return NewestRow(int(ev[0]), str(ev[1] or ""), str(ev[2] or ""), t, None)
    return None


def same(
    row: NewestRow, subject: str, data: bytes, stored: datetime.datetime | None = None
) -> bool:
    """Whether the log's message (``subject``, ``data``, stored at ``stored``) is the one
    ``row`` was made from."""
    if subject != row.subject:
        return False
    if row.raw is not None:
        if len(row.raw) >= MAX_RAW:  # only its beginning was kept
            return data[: len(row.raw)] == row.raw
        return data == row.raw
    try:
        env = decode(data)
    except DecodeError:  # it was an event when it was projected
        return False
    if row.event_id is None:
        # a rejected event that decoded: no id or bytes kept, but its type and stored time
        if env.event.TYPE != row.type:
            return False
        if row.stream_time is None or stored is None:
            return True
        return abs(stored.timestamp() - row.stream_time) < STORED_TIME_SLACK_S
    # the id alone is not enough: a command retried after the restore may be decided again
    # (another decision, at another time) under the same event ids
    return env.event_id == row.event_id and (row.time is None or env.time == row.time)


def check_stream(
    db_path: Path,
    built_from: tuple[str | None, str | None],
    last_seq: int,
    stream: str,
    created: str,
    stream_last_seq: int,
    *,
    mismatch: str = "project into a new file",
    ahead: str = "the stream lost data or is another one",
) -> None:
    """Refuse a log that is not the one the projection at ``db_path`` was built from: another
    stream (``built_from``: its name and creation time; (None, None): not yet known) or one
    ending before the projection's checkpoint ``last_seq``. ``mismatch`` and ``ahead`` end each
    message with what it means to the caller (the projector's writer, revert's index)."""
    if built_from[0] is not None and built_from != (stream, created):
        raise StreamMismatch(
            f"{db_path} was built from stream {built_from[0]} created {built_from[1]}, not"
            f" {stream} created {created}: {mismatch}",
            db=str(db_path),
        )
    if stream_last_seq < last_seq:
        raise ProjectionAhead(
            f"{db_path} has applied up to seq {last_seq} but stream {stream} ends at"
            f" {stream_last_seq}: {ahead}",
            last_seq=last_seq,
            stream_last_seq=stream_last_seq,
        )


async def check_log(conn: Connection, db_path: Path, last_seq: int) -> None:
    """Raise :class:`~.errors.LogDiverged` unless the log's message at the projection's newest
    row is the one that row was made from."""
    if last_seq < 1:
        return
    row = await asyncio.to_thread(newest_row, db_path, last_seq)
    if row is None:
        return
    msg = await message_at(conn, row.seq)
    if msg is None or not same(row, msg.subject or "", msg.data or b"", msg.time):
        raise LogDiverged(
            f"{db_path} holds seq {row.seq} ({row.subject}) but the log's message at seq"
            f" {row.seq} is {'gone' if msg is None else 'another'}: the stream was restored"
            f" from an older backup and written past what the projection holds — project into"
            f" a new file",
            db=str(db_path),
            seq=row.seq,
        )
