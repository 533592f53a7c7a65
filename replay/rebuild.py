"""Rebuilding a projection database from the log, up to a sequence or a moment.

The work is the projector's own (:func:`netledger.projector.runner.project_until`): a replayed
database is an ordinary projection, built by the same code, that every ``show`` command reads.
It is built in a temporary file next to the output and renamed into place only once complete,
so an interrupted replay never leaves a half-built file under the name asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import sqlite3
from pathlib import Path
from typing import Any

from netledger.common.progress import progress_bar
from netledger.events.errors import DecodeError
from netledger.events.wire_fast import decode_fast
from netledger.journal.stream import Connection, last_seq
from netledger.projector import query
from netledger.projector.runner import bar_hooks, project_until

from .errors import OutputExists, OutputUnwritable, SeqBeyondStream
from .reader import read_range
from .times import iso, iso_us

_SIDECARS = ("-wal", "-shm", "-journal")


def _one_file(db: Path) -> None:
    """The rebuilt projection as one file (a rollback journal, not the projector's WAL): a
    read-only open of a WAL database — ``show``, ``audit``, ``verify`` — leaves ``-wal`` and
    ``-shm`` beside it, which it cannot remove (found by review h130). A projector that resumes
    on it makes it WAL again."""
    with contextlib.closing(sqlite3.connect(db)) as c:
        c.execute("PRAGMA journal_mode=DELETE").fetchone()


def remove_db(path: Path) -> None:
    """Delete a SQLite file and its sidecars (WAL, shared memory, rollback journal)."""
    for p in [path, *(path.with_name(path.name + s) for s in _SIDECARS)]:
        p.unlink(missing_ok=True)


def temp_path_for(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial-{os.getpid()}")


async def rebuild(
    conn: Connection,
    out: str | Path,
    *,
    to_seq: int | None = None,
    at: datetime.datetime | None = None,
    force: bool = False,
    show_progress: bool | None = None,
    batch_size: int = 2000,
) -> dict[str, Any]:
    """Project the log into a new database at ``out`` up to ``to_seq`` (default: the stream's
    last sequence now) or up to the last message stored at or before ``at``; return a summary.
    Refuses an existing ``out`` unless ``force``."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExists(f"{out} exists: give --force to replace it", db=str(out))
    if at is not None and at.tzinfo is None:
        raise ValueError("'at' must be timezone-aware")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputUnwritable(f"cannot create {out}: {exc.strerror or exc}", db=str(out)) from None
    end = await last_seq(conn)
    if to_seq is not None and to_seq > end:
        raise SeqBeyondStream(
            f"the stream ends at seq {end}; there is no seq {to_seq} to replay to",
            to_seq=to_seq,
            stream_last_seq=end,
        )
    target = end if to_seq is None else to_seq
    tmp = temp_path_for(out)
    remove_db(tmp)
    try:
        label = f"replay → {out.name}"
        with progress_bar(label, target, show_progress) as advance:
            reached = await project_until(
                conn,
                tmp,
                to_seq=target,
                at=at,
                batch_size=batch_size,
                **bar_hooks(advance, label),
            )
            advance(target if at is None else reached)
        await asyncio.to_thread(_one_file, tmp)
        if force:
            remove_db(out)
        os.replace(tmp, out)
        for s in _SIDECARS:  # normally gone: the projector closed the last connection
            side = tmp.with_name(tmp.name + s)
            if side.exists():
                os.replace(side, out.with_name(out.name + s))
    except BaseException:
        remove_db(tmp)
        raise
    with query.open_readonly(out) as db:
        st = query.state(db)
        row = db.execute("SELECT time FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    after = await _first_after(conn, reached, at) if at is not None and reached < end else {}
    return {
        "db": str(out),
        "last_seq": reached,
        "to_seq": to_seq,
        # in UTC like every time the tools print (the bound to the microsecond: the end of
        # the unit it was written to, times.moment_end), not in the zone it was given in
        "at": iso_us(at) if at is not None else None,
        "stream_last_seq": end,
        "events": st["events"],
        "rejected": st["rejected"],
        "last_event_time": iso(row[0]) if row is not None else None,
        **after,
    }


async def _first_after(conn: Connection, reached: int, at: datetime.datetime) -> dict[str, Any]:
    """The first message ``--at`` left out: where it was stored and its own time.

    ``--at`` cuts on the store time, which follows the event's own time (what ``audit``
    prints) by the time an append takes: a time ``audit`` printed, given back as ``--at``,
    leaves its event out when the store was a few milliseconds later (h136: the state "at" a
    mistaken command was the state before it). Said, so the cut is never a silent surprise."""
    async for m in read_range(conn, reached + 1, reached + 1):
        try:
            own: float | None = decode_fast(m.data).time
        except DecodeError:
            own = None
        return {
            "next_seq": m.seq,
            "next_stored_at": iso(m.stream_time),
            "next_event_time": iso(own),
            # stamped by --at, stored after it: the surprise this says
            "next_stamped_by_at": own is not None and own <= at.timestamp(),
        }
    return {}
