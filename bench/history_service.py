"""The history benchmark's command service: its start folding the whole log, or from a snapshot.

``serve --no-projector`` as its own process, timed to its ``ready`` line, with its peak RSS and
the fold's own figure from what it logs; each timed start is interleaved with the raw read of
the same events (bench/history_raw.py). No start may append to the log (:func:`unchanged`): the
generator goes on from where it left the stream.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from benchlib import NETLEDGER, Row, Rss, Stack, vmhwm_mb
from history_raw import NAME, raw_read, samples
from history_types import History

from netledger.events.codec import decode
from netledger.journal.snapshot_store import SnapshotStore, StoredSnapshot
from netledger.journal.stream import Connection, last_seq

NO_SNAPSHOT = ["--ignore-snapshots", "--snapshot-every", "0"]
_READY = re.compile(r"ready at seq (\d+) in ([0-9.]+)s")
#: the snapshot's load (list, read, check, decode) in the same line
_LOADED = re.compile(r"loaded in ([0-9.]+)s")
#: the fold's own figure in the same line (no snapshot load, no connect)
_FOLD = re.compile(r"fold: (\d+) events in ([0-9.]+)s")


def vmrss_mb(pid: int) -> float:
    """Resident memory now (VmRSS), MB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Start(NamedTuple):
    """One ``serve`` start (ordered by its time to ``ready``)."""

    ready: float
    #: peak RSS, MB
    mb: float
    #: its resident memory once ready and what it logged about its start
    said: str
    #: the fold alone as it reports it, seconds (0 if it does not)
    fold: float
    #: the rest of the machine's CPU from the spawn to ``ready``, in cores (CPU seconds per
    #: second): not the service (nor the catch-up child it collected), nats-server or this
    #: process. A start's fold is three busy processes on two cores: beside one more busy
    #: process it takes ~1.8x as long, the raw read far less (bench/README.md, "Why the tail
    #: fold's wall moves")
    others: float


def _ticks(pid: int, children: bool = False) -> int:
    """CPU of a process (and of the children it has collected), clock ticks; 0 once gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return sum(int(x) for x in fields[11 : 15 if children else 13])  # utime stime cutime cstime


def _busy_ticks() -> int:
    """Every core's busy time since boot, clock ticks (``/proc/stat``: user, nice, system, irq,
    softirq; not idle, iowait or what the hypervisor stole)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return f[0] + f[1] + f[2] + f[5] + f[6]


async def service_ready(st: Stack, extra: list[str]) -> Start:
    """Start ``serve --no-projector`` (plus ``extra``) as its own process, measured; stopped."""
    err = tempfile.TemporaryFile()
    server = st.server.proc.pid if st.server.proc is not None else 0
    before = (_busy_ticks(), _ticks(server), time.process_time())
    t = time.perf_counter()
    p = await asyncio.to_thread(
        subprocess.Popen,
        [NETLEDGER, "--nats", st.url, "--log-level", "info", "serve", "--no-projector", *extra],
        stdout=subprocess.PIPE,
        stderr=err,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert p.stdout is not None
    line = await asyncio.to_thread(p.stdout.readline)
    ready = time.perf_counter() - t
    mine = _ticks(p.pid, children=True)
    after = (_busy_ticks(), _ticks(server), time.process_time())
    others = (after[0] - before[0] - mine - (after[1] - before[1])) / os.sysconf("SC_CLK_TCK")
    others = max(0.0, others - (after[2] - before[2])) / ready
    st.service = p  # so that Stack.close stops it if anything below fails
    if "ready" not in line:
        await st.stop_service()
        err.seek(0)
        raise RuntimeError(f"command service did not start: {line!r} {err.read()[-1000:]!r}")
    mb, now = vmhwm_mb(p.pid), vmrss_mb(p.pid)
    await st.stop_service()
    err.seek(0)
    logged = err.read().decode(errors="replace")
    m = _READY.search(logged)
    said = f"VmRSS {now:.0f} MB when ready"
    if m:
        said += f"; it reports its start: {float(m.group(2)):.2f} s to seq {int(m.group(1)):,}"
    loaded = _LOADED.search(logged)
    if loaded:
        said += f", the snapshot loaded in {float(loaded.group(1)):.2f} s"
    f = _FOLD.search(logged)
    fold = float(f.group(2)) if f else 0.0
    if f:
        said += f", the fold alone {fold:.3f} s for {int(f.group(1)):,} events"
    return Start(ready, mb, said, fold, others)


def fold_row(label: str, events: int, starts: list[Start], raw: float, caveat: str = "") -> Row:
    """The service's fold (its own figure: no process start, snapshot load or connect)
    against the raw read of the same events, medians of interleaved runs; the note gives the
    rest of the machine's CPU over each start (what moves this figure most), after
    ``caveat``."""
    folds = [s.fold for s in starts]
    fold = sorted(folds)[len(folds) // 2]
    if fold <= 0:
        return Row(NAME, f"service fold of {label}", 0, "", note="NOT MEASURED: no fold figure")
    return Row(
        NAME,
        f"service fold of {label} ({events:,} events)",
        events / fold,
        "events/s",
        raw / fold,
        "raw read of the same events",
        f"{caveat}{fold:.3f} s vs raw {raw:.3f} s (goal >= 0.6); each start's fold, and the rest of the"
        " machine's CPU meanwhile (spawn to ready): "
        + ", ".join(f"{s.fold:.3f} s ({s.others:.2f} cores)" for s in starts),
    )


async def service_rows(
    st: Stack, h: History, label: str, rss: Rss, rounds: int
) -> tuple[list[Row], float, float]:
    """Service ready without a snapshot vs the raw read of the same log, interleaved."""
    assert st.conn is not None
    n = h.last_seq
    raws: list[float] = []
    readies: list[Start] = []
    for _ in range(rounds):
        raws.append(await raw_read(st.conn, 1, n))
        readies.append(await service_ready(st, NO_SNAPSHOT))
    await unchanged(st.conn, h)
    raw = sorted(raws)[len(raws) // 2]
    median = sorted(readies)[len(readies) // 2]
    ready, said = median.ready, median.said
    for r in readies:  # the peak of every start, not the median's
        rss.note("command service", r.mb, f"{NAME} ({n:,} events folded, no snapshot)")
    rows = [
        Row(
            NAME,
            f"raw read of the {label} log ({n:,} events)",
            n / raw,
            "events/s",
            baseline="raw limit",
            note=f"{raw:.2f} s; {samples(rounds, 'the service starts')}",
        ),
        Row(
            NAME,
            f"service ready, no snapshot, {label} log",
            ready,
            "s",
            raw / ready,
            "raw read of the same log",
            f"{n / ready:,.0f} events/s; {samples(rounds)}",
        ),
        fold_row(f"the whole {label} log, no snapshot", n, readies, raw),
        Row(
            NAME,
            f"service peak RSS, no snapshot, {label} log",
            max(r.mb for r in readies),
            "MB",
            note=f"{len(h.instances):,} live instances; the largest of {len(readies)} starts;"
            f" the median start's {said}",
        ),
    ]
    return rows, ready, raw


async def unchanged(conn: Connection, h: History) -> None:
    """The service must have appended nothing at its start (no backfill, no reaping): the
    generator goes on from where it left the stream."""
    now = await last_seq(conn)
    if now != h.last_seq:
        kinds: Counter[str] = Counter()
        for seq in range(h.last_seq + 1, min(now, h.last_seq + 2000) + 1):
            kinds[decode((await conn.js.get_msg(conn.stream, seq)).data or b"").type] += 1
        raise RuntimeError(
            f"the command service appended {now - h.last_seq} events at its start"
            f" ({dict(kinds)}): the generator no longer writes what the service expects"
        )


# --- started from a snapshot plus a tail ------------------------------------------------------


async def write_snapshot(st: Stack, h: History) -> StoredSnapshot:
    """A service writes a snapshot of the log as it is (what a running cloud's service does
    every --snapshot-every events), then stops."""
    assert st.conn is not None
    store = SnapshotStore(st.conn)
    p = await asyncio.to_thread(
        subprocess.Popen,
        [NETLEDGER, "--nats", st.url, "serve", "--no-projector", "--snapshot-every", "1",
         "--snapshot-min-interval", "0.05s"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    st.service = p
    try:
        assert p.stdout is not None
        line = await asyncio.to_thread(p.stdout.readline)
        if "ready" not in line:
            raise RuntimeError(f"command service did not start: {line!r}")
        deadline = time.monotonic() + 300
        while True:
            got = await store.snapshots()
            if got and got[0].seq >= h.last_seq:
                return got[0]
            if time.monotonic() > deadline:
                raise RuntimeError("no snapshot was written within 300 s")
            await asyncio.sleep(0.2)
    finally:
        await st.stop_service()
        await unchanged(st.conn, h)


async def service_from_snapshot(
    st: Stack, h: History, label: str, tail: int, rounds: int, rss: Rss
) -> tuple[list[Row], History, float]:
    """The service as it starts in a cloud that runs: from its newest snapshot plus the events
    appended since (``tail``: half of the default --snapshot-every, the average a restart
    meets), against the raw read of that tail. Returns the rows, the history (grown by the
    tail) and the median ready time."""
    assert st.conn is not None
    snap = await write_snapshot(st, h)
    h = await h.extend(st.conn, tail)
    added = h.last_seq - snap.seq
    raws: list[float] = []
    readies: list[Start] = []
    for _ in range(rounds):
        raws.append(await raw_read(st.conn, snap.seq + 1, added))
        readies.append(await service_ready(st, ["--snapshot-every", "0"]))
    await unchanged(st.conn, h)
    raw = sorted(raws)[len(raws) // 2]
    median = sorted(readies)[len(readies) // 2]
    ready, said = median.ready, median.said
    for r in readies:  # a start from a snapshot holds the snapshot and the fold at once
        rss.note(
            "command service",
            r.mb,
            f"{NAME} (from the snapshot at seq {snap.seq:,} + {added:,} events, {label} log)",
        )
    rows = [
        Row(
            NAME,
            f"snapshot of the {label} fold (seq {snap.seq:,})",
            snap.size / 1e6,
            "MB",
            note=f"{len(h.instances):,} live instances, {len(h.hosts):,} hosts, {len(h.networks):,}"
            " networks",
        ),
        Row(
            NAME,
            f"raw read of the {added:,} events after the snapshot ({label} log)",
            added / raw,
            "events/s",
            baseline="raw limit",
            note=f"{raw:.3f} s; {samples(rounds, 'the service starts')}",
        ),
        Row(
            NAME,
            f"service ready from snapshot + {added:,} events, {label} log ({h.last_seq:,})",
            ready,
            "s",
            raw / ready,
            "raw read of the tail",
            f"peak RSS {max(r.mb for r in readies):.0f} MB (the largest of {len(readies)} starts);"
            f" {said}; {samples(rounds)}",
        ),
        fold_row(
            f"the tail after the snapshot, {label} log",
            added,
            readies,
            raw,
            # (since Dec 7, 17:00 UTC: service/tail_prefetch.py)
            "the fold after the snapshot's decode: the catch-up child reads the tail from the"
            " snapshot's fetch on, beside the decode, so part of the read is not in this figure"
            " (flattered against rows before Dec 7 17:00; ready above is the figure that"
            " compares); ",
        ),
    ]
    return rows, h, ready
