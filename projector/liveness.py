"""A projector daemon's liveness: when it last confirmed that its projection holds the whole
stream — stamped in the projection file, never appended to the log.

In a quiet cloud the stream does not move, so a projector's lag stays 0 whether it runs or
died an hour ago: the checkpoint alone cannot tell a dead projector from an idle one. The log
must gain nothing while nothing happens (journal/liveness.py: what only says "still alive"
stays out of it), and ``netledger status`` reads the projection file anyway. So ``projector
run`` (the daemon) stamps its file: every ``period`` seconds it asks the stream for its last
sequence, waits until its own commits reach it, and rewrites one row. Idle or busy, that is one
small UPDATE a period and one stream-info request, nothing per event; nothing is written while
it catches up (its first stamp after a start comes once it has what the stream held then). A
projector that stopped, hangs or cannot reach NATS stamps nothing, and ``status`` calls it not
live after :data:`DEAD_AFTER_PERIODS` of its periods (:func:`is_live`).

The row, ``projector_liveness`` (``id`` 1):

* ``mode`` — ``follow`` (the daemon stamped it), ``stopped`` (the daemon ended: its last
  stamp), ``once`` (``projector run --once`` caught up and exited: no daemon, nothing to
  expect);
* ``at`` — when (Unix time, the projector's clock: ``status`` reads the file on the same
  machine); ``seq`` — the projection's last sequence then (for ``follow``: at least the stream's
  last sequence as asked at the period's start); ``period_s`` — the daemon's period; ``pid``.

It is a table of its own, created by the first stamp: not in the projection's migrations (a
migration would make an older netledger refuse the file for a stamp it never reads), nor among
the tables two projections of one stream must agree on (:mod:`.compare`, replay/checksum.py):
it is a fact about a process and a clock, not a fold of the log. The stamp is written by a
connection of its own, in a thread (the writer's commit may hold the file's write lock for a
moment: ~0.5 ms, up to its busy timeout), never by the writer: a batch's transaction stays rows
and checkpoint only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("netledger.projector")

TABLE = "projector_liveness"
FOLLOW, STOPPED, ONCE = "follow", "stopped", "once"
#: Seconds between a daemon's stamps (``projector run --live-period``).
DEFAULT_PERIOD_S = 10.0
#: A ``follow`` stamp older than this many periods is a projector that is not live.
DEAD_AFTER_PERIODS = 3
#: How long a stamp waits for the writer's commit to release the file (then: next period).
BUSY_TIMEOUT_S = 5.0

_CREATE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    mode TEXT NOT NULL,
    at REAL NOT NULL,
    seq INTEGER NOT NULL,
    period_s REAL,
    pid INTEGER
)"""
_UPDATE = f"UPDATE {TABLE} SET mode = ?, at = ?, seq = ?, period_s = ?, pid = ? WHERE id = 1"
_INSERT = f"INSERT INTO {TABLE} (mode, at, seq, period_s, pid, id) VALUES (?, ?, ?, ?, ?, 1)"


@dataclass(frozen=True)
class Stamp:
    mode: str
    at: float
    seq: int
    period_s: float | None = None
    pid: int | None = None


def write_stamp(db_path: str | Path, stamp: Stamp) -> None:
    """Write ``stamp`` into the projection at ``db_path`` (blocking: a thread's work)."""
    conn = sqlite3.connect(str(db_path), timeout=BUSY_TIMEOUT_S)
    try:
        # As the writer's: no fsync per commit (a stamp lost to a power cut is the next one's).
        # Measured: FULL ~6 ms of wall a stamp (an fsync), NORMAL ~0.5 ms (0.3 ms of CPU).
        conn.execute("PRAGMA synchronous=NORMAL")
        values = (stamp.mode, stamp.at, stamp.seq, stamp.period_s, stamp.pid)
        conn.execute(_CREATE)  # a look at the schema once the table is there: no write
        with conn:
            if conn.execute(_UPDATE, values).rowcount == 0:
                conn.execute(_INSERT, values)
    finally:
        conn.close()


def read_stamp(conn: sqlite3.Connection) -> Stamp | None:
    """The projection's stamp (None: never stamped, or a row this code cannot read — its
    liveness is unknown, never a reason for ``status`` to fail)."""
    try:
        row = conn.execute(
            f"SELECT mode, at, seq, period_s, pid FROM {TABLE} WHERE id = 1"
        ).fetchone()
    except sqlite3.OperationalError:  # no such table (or another version's shape)
        return None
    if row is None:
        return None
    mode, at, seq, period, pid = row
    if not isinstance(mode, str) or not _finite(at) or not isinstance(seq, int):
        return None
    return Stamp(
        mode,
        float(at),
        seq,
        float(period) if _finite(period) and period > 0 else None,
        pid if isinstance(pid, int) else None,
    )


def _finite(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) < 1e18


def is_live(stamp: Stamp | None, age_s: float) -> bool | None:
    """Whether the projector that wrote ``stamp`` ``age_s`` seconds ago is live: None when
    nothing is to be expected of it (never stamped; the last run was ``--once``)."""
    if stamp is None or stamp.mode == ONCE:
        return None
    if stamp.mode != FOLLOW or stamp.period_s is None:
        return False  # stopped (or a mode this code does not know: not following for sure)
    return age_s <= DEAD_AFTER_PERIODS * stamp.period_s


#: the fields a stamp is shown as (:func:`liveness_fields`), in this order
FIELDS = ("live", "mode", "stamped_at", "age_s", "period_s", "pid")


def liveness_fields(stamp: Stamp | None) -> dict[str, Any]:
    """A projection's stamp as ``netledger status`` and ``projector status`` show it: ``live``
    — True, False (its daemon stopped, or has not confirmed it has the whole stream for more
    than :data:`DEAD_AFTER_PERIODS` of its periods), or None (nothing to expect: never stamped
    — a file ``projector run --once`` of an older netledger or a library call filled, or a
    daemon not at the stream's end yet since it started — or last filled by ``--once``);
    ``mode`` (``follow``, ``stopped``, ``once``), ``stamped_at``, ``age_s`` (seconds since, on
    this machine's clock: both read the file where the projector wrote it), ``period_s``,
    ``pid``. Judged by the stamp's age alone."""
    if stamp is None:
        return dict.fromkeys(FIELDS)
    age: float | None = round(max(0.0, time.time() - stamp.at), 1)
    try:
        when = datetime.datetime.fromtimestamp(stamp.at, datetime.UTC)
        at: str | None = when.isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # a wild clock: no date, never a failure
        at, age = None, None
    return {
        "live": is_live(stamp, math.inf if age is None else age),
        "mode": stamp.mode,
        "stamped_at": at,
        "age_s": age,
        "period_s": stamp.period_s,
        "pid": stamp.pid,
    }


class Liveness:
    """Stamps a following :class:`~.runner.Projector`'s file every ``period`` seconds once its
    commits reach the stream's last sequence as asked at the period's start.

    Owns one task and the stamp being written: ``await close()`` — after the projector's own
    close, so that it says its last sequence — cancels the task, lets a stamp in flight finish,
    and stamps the file ``stopped``.
    """

    def __init__(self, projector: Any, period: float = DEFAULT_PERIOD_S) -> None:
        if period <= 0:
            raise ValueError("period must be positive")
        self.projector = projector
        self.db_path = Path(projector.db_path)
        self.period = period
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Future[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="netledger-projector-liveness")

    async def _run(self) -> None:
        from netledger.journal.stream import last_seq

        p = self.projector
        while True:
            try:
                target = await last_seq(p.conn, wait=self.period)
                # Forever if it must: a projector that never gets there is not live.
                await p.wait_for(target, timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS away, or paused (a full disk): no stamp this time
                log.debug("projector liveness: not confirmed this period: %s", exc)
            else:
                await self._stamp(FOLLOW, p.last_seq)
            await asyncio.sleep(self.period)

    async def _stamp(self, mode: str, seq: int) -> None:
        stamp = Stamp(mode, time.time(), seq, self.period, os.getpid())
        self._writing = _in_thread(lambda: write_stamp(self.db_path, stamp))
        try:
            # Shielded: a cancel (close) does not stop the thread; close() waits for it.
            await asyncio.shield(self._writing)
        except Exception as exc:  # busy past the timeout, a full disk: next period
            log.warning("projector liveness: cannot stamp %s: %s", self.db_path, exc)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._writing is not None:
            await asyncio.wait([self._writing])  # the thread's write, to its end
            with contextlib.suppress(BaseException):
                self._writing.result()  # retrieved (its error was logged, or is moot now)
        if task is not None:
            await self._stamp(STOPPED, int(self.projector.last_seq))

    async def __aenter__(self) -> Liveness:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _in_thread(fn: Callable[[], None]) -> asyncio.Future[None]:
    """``fn()`` in a thread of its own that ends with it. Not the loop's executor, whose idle
    threads stay: the projector forks its writer again when a full disk frees up
    (:mod:`.writer_proc`), and a fork beside another thread is what Python warns against (a
    lock that thread held stays held in the child)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle(exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)

    def work() -> None:
        try:
            fn()
        except BaseException as exc:
            loop.call_soon_threadsafe(settle, exc)
        else:
            loop.call_soon_threadsafe(settle, None)

    threading.Thread(target=work, name="netledger-projector-stamp", daemon=True).start()
    return done


def stamp_once(db_path: str | Path, last_seq: int) -> None:
    """``projector run --once`` caught up: no daemon follows this file now (``status`` expects
    nothing of it; a daemon's older stamp no longer calls it dead). A stamp that cannot be
    written is logged, never the run's failure: the projection itself is done."""
    try:
        write_stamp(db_path, Stamp(ONCE, time.time(), last_seq, None, os.getpid()))
    except sqlite3.Error as exc:
        log.warning("projector liveness: cannot stamp %s: %s", db_path, exc)
