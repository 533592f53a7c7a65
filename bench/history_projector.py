"""The history benchmark's projector: a full catch-up of the old log, then its resume.

``projector run --once`` on an empty database, again on the same database after new churn
events, and once more with nothing new (the fixed cost inside every resume), each against the
raw read of the same events (bench/history_raw.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import median

from benchlib import NETLEDGER, Row, Rss, Stack, netledger_has, run_measured_async
from history_raw import NAME, raw_read, samples
from history_rawc import c_read
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


async def projector_rows(
    st: Stack, h: History, tail: int, rss: Rss, rounds: int = 1
) -> tuple[list[Row], History]:
    """Full catch-up of the old log, then ``tail`` new churn events and the resume (returns the
    rows and the grown history). Each figure is the median of ``rounds`` runs interleaved with
    the raw read of the same events (raw, ours, raw, ours ...): a full catch-up per round into a
    database of its own, and every one of those databases resumed once."""
    assert st.conn is not None
    if not netledger_has("projector"):
        return [Row(NAME, "projector", 0, "s", note="NOT RUN: no `netledger projector` command")], h
    n = h.last_seq
    dbs = [st.tmp / f"history{k}.db" for k in range(rounds)]
    start = await run_measured_async([NETLEDGER, "projector", "--help"])
    raws: list[float] = []
    fulls: list[float] = []
    for db in dbs:
        raws.append(await raw_read(st.conn, 1, n))
        fulls.append(await projector_once(st.url, db, rss, f"{n:,} events from an empty database"))
    rejected = await projector_rejected(dbs[-1])
    c_s = await c_read(st.conn, "netledger.evt.>", 1, n)  # the non-Python ceiling, once
    raw_full, full = median(raws), median(fulls)
    more = await h.extend(st.conn, tail)
    added = more.last_seq - n
    raw_tails: list[float] = []
    resumes: list[float] = []
    for db in dbs:
        raw_tails.append(await raw_read(st.conn, n + 1, added))
        resumes.append(await projector_once(st.url, db, rss, f"resume, {added:,} new events"))
    raw_tail, resume = median(raw_tails), median(resumes)
    # Nothing new: the fixed cost inside every resume (process start, connect, checkpoint).
    agains: list[float] = []
    starts: list[float] = [start.seconds]
    for k, db in enumerate(dbs):
        agains.append(await projector_once(st.url, db, rss, "resume, nothing new"))
        if k:
            starts.append((await run_measured_async([NETLEDGER, "projector", "--help"])).seconds)
    again, help_s = median(agains), median(starts)
    how = samples(rounds)
    return [
        Row(
            NAME,
            f"raw read of the whole log ({n:,} events)",
            n / raw_full,
            "events/s",
            baseline="raw limit",
            note=f"{raw_full:.2f} s; {samples(rounds, 'the projector')}",
        ),
        *(
            [
                Row(
                    NAME,
                    f"raw read of the whole log by a C reader ({n:,} events)",
                    n / c_s,
                    "events/s",
                    note="the non-Python ceiling (bench/history_rawc.py), no ratio is taken"
                    f" against it; 1 sample; the Python raw limit above is {c_s / raw_full:.2f}"
                    " of it",
                )
            ]
            if c_s
            else []
        ),
        Row(
            NAME,
            f"projector run --once, whole log ({n:,} events)",
            n / full,
            "events/s",
            raw_full / full,
            "raw read of the same log",
            f"{full:.1f} s wall (start {start.seconds:.2f} s included); {rejected} rejected; {how}",
        ),
        Row(
            NAME,
            f"raw read of {added:,} new events (after seq {n:,})",
            added / raw_tail,
            "events/s",
            baseline="raw limit",
            note=f"{raw_tail:.3f} s; {samples(rounds, 'the resumes')}",
        ),
        Row(
            NAME,
            f"projector resume: {added:,} new events after {n:,}",
            resume,
            "s",
            raw_tail / resume,
            "raw read of the new events",
            f"{added / resume:,.0f} events/s; {resume / full:.3f} of the full catch-up,"
            f" the tail is {added / more.last_seq:.3f} of the log; {how}",
        ),
        Row(
            NAME,
            "projector resume with nothing new",
            again,
            "s",
            help_s / again,
            "CLI process start (--help)",
            "the fixed cost inside every resume; "
            + (f"medians of {rounds} each" if rounds > 1 else "1 sample each"),
        ),
    ], more
