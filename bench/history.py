"""A cloud that grows older: start-up and catch-up follow live state + tail, not age (issue 13).

One stream, one cloud (bench/history_gen.py: 1,000 hosts, 5,000 VXLAN networks of 2 hosts each,
20,000 live instances, a floating-IP pool), written straight into the stream in atomic batches:

* **young**: the networks created and the cloud filled (at least 100,000 events; the fill of
  this cloud alone is ~136,000: 10,000 host-network pairs each cost a placement, two links, a
  gateway address, an FDB entry and a dnsmasq start);
* **old**: the same cloud after churn up to 1,000,000 events — the same live state, 7x older.

Figures, each next to the raw limit of the same run (an ordered push consumer reading the same
events without decoding): the build rate; the command service started without a snapshot
(``serve --no-projector --ignore-snapshots --snapshot-every 0``: folds the whole log) on the
young and on the old history — seconds to its ``ready`` line and peak RSS; the projector's full
catch-up of the old history and its resume after 10,000 new churn events (``projector run
--once`` twice on the same database). Rows other engineers add later have their functions at
the end of this module (snapshot + tail, one host's executor, idle hosts).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchlib import (
    NETLEDGER,
    Row,
    Rss,
    Stack,
    netledger_has,
    run_measured_async,
    scaled,
    stack,
    vmhwm_mb,
)
from history_gen import build_history
from history_types import History

from netledger.events.codec import decode
from netledger.events.stream import Connection, last_seq

NAME = "history"
TITLE = "A cloud growing older: service start, projector resume (history of 1,000 hosts)"
YOUNG = 100_000
OLD = 1_000_000
TAIL = 10_000
NO_SNAPSHOT = ["--ignore-snapshots", "--snapshot-every", "0"]
_READY = re.compile(r"ready at seq (\d+) in ([0-9.]+)s")


def cloud_size(size: float) -> dict[str, int]:
    """1,000 hosts and 5,000 networks at size 1.0; a cloud of 10 hosts for the smoke test."""
    hosts = max(10, round(1000 * size))
    return {"hosts": hosts, "networks": 5 * hosts}


# --- raw limit -----------------------------------------------------------------------------


async def raw_read(conn: Connection, start_seq: int, count: int) -> float:
    """Seconds for an ordered push consumer to deliver ``count`` messages from ``start_seq``
    (counted, not decoded): the read floor every reader is compared with."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    got = 0
    done = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:
        nonlocal got
        got += 1
        if got >= count and not done.done():
            done.set_result(None)

    config = (
        ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        if start_seq <= 1
        else ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq)
    )
    t = time.perf_counter()
    sub = await conn.js.subscribe(
        "netledger.evt.>",
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        config=config,
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    await asyncio.wait_for(done, 900)
    dt = time.perf_counter() - t
    await sub.unsubscribe()
    return dt


# --- the command service -------------------------------------------------------------------


def vmrss_mb(pid: int) -> float:
    """Resident memory now (VmRSS), MB; 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


async def service_ready(st: Stack, extra: list[str]) -> tuple[float, float, str]:
    """Start ``serve --no-projector`` (plus ``extra``) as its own process: (seconds to its
    ``ready`` line, peak RSS in MB, a note: its resident memory once ready and what it logged
    about its start). The service is stopped."""
    err = tempfile.TemporaryFile()
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
    st.service = p  # so that Stack.close stops it if anything below fails
    if "ready" not in line:
        await st.stop_service()
        err.seek(0)
        raise RuntimeError(f"command service did not start: {line!r} {err.read()[-1000:]!r}")
    mb, now = vmhwm_mb(p.pid), vmrss_mb(p.pid)
    await st.stop_service()
    err.seek(0)
    m = _READY.search(err.read().decode(errors="replace"))
    said = f"VmRSS {now:.0f} MB when ready"
    if m:
        said += f"; it reports its fold: {float(m.group(2)):.1f} s to seq {int(m.group(1)):,}"
    return ready, mb, said


async def service_rows(
    st: Stack, h: History, label: str, rss: Rss, rounds: int
) -> tuple[list[Row], float, float]:
    """Service ready without a snapshot vs the raw read of the same log, interleaved."""
    assert st.conn is not None
    n = h.last_seq
    raws: list[float] = []
    readies: list[tuple[float, float, str]] = []
    for _ in range(rounds):
        raws.append(await raw_read(st.conn, 1, n))
        readies.append(await service_ready(st, NO_SNAPSHOT))
    await unchanged(st.conn, h)
    raw = sorted(raws)[len(raws) // 2]
    ready, mb, said = sorted(readies)[len(readies) // 2]
    rss.note("command service", mb, f"{NAME} ({n:,} events folded, no snapshot)")
    rows = [
        Row(
            NAME,
            f"raw read of the {label} log ({n:,} events)",
            n / raw,
            "events/s",
            baseline="raw limit",
            note=f"{raw:.2f} s",
        ),
        Row(
            NAME,
            f"service ready, no snapshot, {label} log",
            ready,
            "s",
            raw / ready,
            "raw read of the same log",
            f"{n / ready:,.0f} events/s",
        ),
        Row(
            NAME,
            f"service peak RSS, no snapshot, {label} log",
            mb,
            "MB",
            note=f"{len(h.instances):,} live instances; {said}",
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


# --- the projector -------------------------------------------------------------------------


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


async def projector_rows(st: Stack, h: History, tail: int, rss: Rss) -> list[Row]:
    """Full catch-up of the old log, then ``tail`` new churn events and the resume."""
    assert st.conn is not None
    if not netledger_has("projector"):
        return [Row(NAME, "projector", 0, "s", note="NOT RUN: no `netledger projector` command")]
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
    ]


# --- the benchmark -------------------------------------------------------------------------


async def run(size: float, rss: Rss) -> list[Row]:
    young_n = scaled(YOUNG, size, 1000)
    old_n = scaled(OLD, size, 10_000)
    tail_n = scaled(TAIL, size, 500)
    rounds = 3 if size >= 0.5 else 1
    cloud = cloud_size(size)
    rows: list[Row] = []

    def progress(seq: int) -> None:
        print(f"   ... {seq:,} events written", flush=True)

    async with stack(NAME, service=False) as st:
        assert st.conn is not None
        h = await build_history(
            st.conn, young_n, hosts=cloud["hosts"], networks=cloud["networks"], progress=progress
        )
        rows.append(build_row(h, "young"))
        rows.append(share_row(h))
        got, t_young, raw_young = await service_rows(st, h, "young", rss, rounds)
        rows += got
        young = h.last_seq
        rows += await service_from_snapshot(st, h, "young")
        h = await h.extend(st.conn, max(0, old_n - h.last_seq), progress)
        rows.append(build_row(h, "old"))
        rows.append(share_row(h))
        got, t_old, raw_old = await service_rows(st, h, "old", rss, 1)
        rows += got
        rows.append(
            Row(
                NAME,
                "service ready, no snapshot: old / young",
                t_old / t_young,
                "x",
                (raw_old / raw_young) / (t_old / t_young),
                "raw read old / young",
                f"the log is {h.last_seq / young:.1f}x longer, the live state the same",
            )
        )
        rows += await service_from_snapshot(st, h, "old")
        rows += await executor_share(st, h)
        rows += await idle_host_appends(st, h)
        rows += await projector_rows(st, h, tail_n, rss)
    return rows


def build_row(h: History, label: str) -> Row:
    return Row(
        NAME,
        f"build: {label} log, {h.written:,} events in atomic batches",
        h.written / h.seconds,
        "events/s",
        note=f"now {h.last_seq:,} events, {h.host_events / h.last_seq:.0%} host events,"
        f" {len(h.instances):,} live instances, {len(h.hosts):,} hosts, {len(h.networks):,} networks",
    )


def share_row(h: History) -> Row:
    return Row(
        NAME,
        f"events concerning {h.focus_host} ({len(h.focus_networks)} networks), of {h.last_seq:,}",
        h.focus_share,
        "events",
        note=f"{h.focus_share / h.last_seq:.1%} of the log: registry, announcements, its own"
        " subjects, its networks",
    )


# --- rows added later (issue 13, point 5): each returns its rows, [] until written -----------


async def service_from_snapshot(st: Stack, h: History, label: str) -> list[Row]:
    """TO BE WRITTEN: "service ready from a snapshot + tail", at the young and at the old log
    (goal: old / young <= 1.2, <= 2 s here), against the raw read of the tail and the
    no-snapshot start above. Called once after each build, with the stream at ``h.last_seq``
    and no service running."""
    return []


async def executor_share(st: Stack, h: History) -> list[Row]:
    """TO BE WRITTEN: "executor of one host: events read and seconds to ready vs its share" —
    the executor of ``h.focus_host`` (in ``h.focus_networks``) started on the old log; events it
    read against ``h.focus_share`` (goal <= 2x; ``h.share_subjects(host)`` are its subjects)
    and its time to ready against a raw read of that share; its peak RSS (rss "executor")."""
    return []


async def idle_host_appends(st: Stack, h: History) -> list[Row]:
    """TO BE WRITTEN: "domain events appended per idle host per hour" (goal 0): a real
    executor in a namespace over several shortened heartbeat periods, on the old log."""
    return []


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
