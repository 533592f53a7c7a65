"""The history benchmark's projector: a full catch-up of the old log, then its resume.

``projector run --once`` on an empty database, again on the same database after new churn
events, and once more with nothing new (the fixed cost inside every resume), each against the
raw read of the same events (bench/history_raw.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from benchlib import NETLEDGER, Row, Rss, Stack, netledger_has, run_measured_async
from history_raw import NAME, raw_read
from history_types import History


async def projector_once(url: str, db: Path, rss: Rss, what: str) -> float:
    fin = await run_measured_async(
        [NETLEDGER, "--nats", url, "projector", "run", "--db", str(db), "--once"]
    )
    if fin.returncode != 0:
        raise RuntimeError(f"projector run --once failed ({fin.returncode}): {fin.stderr[-2000:]}")
    rss.note("projector", fin.maxrss_mb, f"{NAME} ({what})")
    return fin.seconds


async def projector_rejected(db: Path) -> int:
    """Events the projection rejected (a generated history should have none)."""
    fin = await run_measured_async([NETLEDGER, "projector", "status", "--json", "--db", str(db)])
    return int(json.loads(fin.stdout).get("rejected", -1)) if fin.returncode == 0 else -1


async def projector_rows(st: Stack, h: History, tail: int, rss: Rss) -> tuple[list[Row], History]:
    """Full catch-up of the old log, then ``tail`` new churn events and the resume (returns the
    rows and the grown history)."""
    assert st.conn is not None
    if not netledger_has("projector"):
        return [Row(NAME, "projector", 0, "s", note="NOT RUN: no `netledger projector` command")], h
    db = st.tmp / "history.db"
    n = h.last_seq
    start = await run_measured_async([NETLEDGER, "projector", "--help"])
    full = await projector_once(st.url, db, rss, f"{n:,} events from an empty database")
    rejected = await projector_rejected(db)
    raw_full = await raw_read(st.conn, 1, n)
    more = await h.extend(st.conn, tail)
    added = more.last_seq - n
    raw_tail = await raw_read(st.conn, n + 1, added)
    resume = await projector_once(st.url, db, rss, f"resume, {added:,} new events")
    # Nothing new: the fixed cost inside every resume (process start, connect, checkpoint).
    again = await projector_once(st.url, db, rss, "resume, nothing new")
    return [
        Row(
            NAME,
            f"projector run --once, whole log ({n:,} events)",
            n / full,
            "events/s",
            raw_full / full,
            "raw read of the same log",
            f"{full:.1f} s wall (start {start.seconds:.2f} s included); {rejected} rejected",
        ),
        Row(
            NAME,
            f"raw read of {added:,} new events (after seq {n:,})",
            added / raw_tail,
            "events/s",
            baseline="raw limit",
            note=f"{raw_tail:.3f} s",
        ),
        Row(
            NAME,
            f"projector resume: {added:,} new events after {n:,}",
            resume,
            "s",
            raw_tail / resume,
            "raw read of the new events",
            f"{added / resume:,.0f} events/s; {resume / full:.3f} of the full catch-up,"
            f" the tail is {added / more.last_seq:.3f} of the log",
        ),
        Row(
            NAME,
            "projector resume with nothing new",
            again,
            "s",
            start.seconds / again,
            "CLI process start (--help)",
            "the fixed cost inside every resume",
        ),
    ], more
