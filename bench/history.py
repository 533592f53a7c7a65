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
--once`` twice on the same database); the service started from a snapshot plus a tail of
10,000 events on both (the same cloud, 7x older: old / young must stay <= 1.2); the executor of
one host reading its share vs the events that concern it (and vs ``--whole-log``), and of a host
given instances in 200 of the 5,000 networks at the end of the log (issue 13.3); what an idle
host appends to the log per hour (a real executor, heartbeats shortened to 1 s).
"""

from __future__ import annotations

import asyncio
import json
import os
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
from history_pub import BatchWriter
from history_types import History
from kernel import namespace, spawn_logged

from netledger.events.codec import decode
from netledger.journal.snapshot_store import SnapshotStore, StoredSnapshot
from netledger.journal.stream import MAX_BATCH, Connection, last_seq

NAME = "history"
TITLE = "A cloud growing older: service start, projector resume (history of 1,000 hosts)"
YOUNG = 100_000
OLD = 1_000_000
TAIL = 10_000
#: Events after the newest snapshot when a service restarts: half the default --snapshot-every.
SNAP_TAIL = 10_000
NO_SNAPSHOT = ["--ignore-snapshots", "--snapshot-every", "0"]
#: a host serving many networks (issue 13.3): this many of the cloud's 5,000
BIG_HOST = "host-3"
BIG_NETWORKS = 200
_READY = re.compile(r"ready at seq (\d+) in ([0-9.]+)s")
#: the fold's own figure in the same line (no snapshot load, no connect)
_FOLD = re.compile(r"fold: (\d+) events in ([0-9.]+)s")


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


async def service_ready(st: Stack, extra: list[str]) -> tuple[float, float, str, float]:
    """Start ``serve --no-projector`` (plus ``extra``) as its own process: (seconds to its
    ``ready`` line, peak RSS in MB, a note: its resident memory once ready and what it logged
    about its start, seconds of the fold alone as it reports them: 0 if it does not). The
    service is stopped."""
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
    logged = err.read().decode(errors="replace")
    m = _READY.search(logged)
    said = f"VmRSS {now:.0f} MB when ready"
    if m:
        said += f"; it reports its start: {float(m.group(2)):.2f} s to seq {int(m.group(1)):,}"
    f = _FOLD.search(logged)
    fold = float(f.group(2)) if f else 0.0
    if f:
        said += f", the fold alone {fold:.2f} s for {int(f.group(1)):,} events"
    return ready, mb, said, fold


def fold_row(label: str, events: int, folds: list[float], raw: float) -> Row:
    """The service's fold (its own figure: no process start, snapshot load or connect)
    against the raw read of the same events, medians of interleaved runs."""
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
        f"{fold:.2f} s vs raw {raw:.2f} s (goal >= 0.6)",
    )


async def service_rows(
    st: Stack, h: History, label: str, rss: Rss, rounds: int
) -> tuple[list[Row], float, float]:
    """Service ready without a snapshot vs the raw read of the same log, interleaved."""
    assert st.conn is not None
    n = h.last_seq
    raws: list[float] = []
    readies: list[tuple[float, float, str, float]] = []
    for _ in range(rounds):
        raws.append(await raw_read(st.conn, 1, n))
        readies.append(await service_ready(st, NO_SNAPSHOT))
    await unchanged(st.conn, h)
    raw = sorted(raws)[len(raws) // 2]
    ready, mb, said, _ = sorted(readies)[len(readies) // 2]
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
        fold_row(f"the whole {label} log, no snapshot", n, [r[3] for r in readies], raw),
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


# --- the benchmark -------------------------------------------------------------------------


async def run(size: float, rss: Rss) -> list[Row]:
    young_n = scaled(YOUNG, size, 1000)
    old_n = scaled(OLD, size, 10_000)
    tail_n = scaled(TAIL, size, 500)
    rounds = 3 if size >= 0.5 else 1
    snap_tail = scaled(SNAP_TAIL, size, 200)
    idle_s = 30.0 if size >= 0.5 else 3.0
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
        snap_rows, h, snap_young = await service_from_snapshot(st, h, "young", snap_tail, rounds)
        rows += snap_rows
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
        snap_rows, h, snap_old = await service_from_snapshot(st, h, "old", snap_tail, rounds)
        rows += snap_rows
        rows.append(
            Row(
                NAME,
                "service ready from snapshot + tail: old / young",
                snap_old / snap_young,
                "x",
                note=f"goal <= 1.2 (and <= 2 s): {snap_young:.2f} s young, {snap_old:.2f} s old",
            )
        )
        got_rows, h = await projector_rows(st, h, tail_n, rss)
        rows += got_rows
        # Last: a real executor appends what it changes in its kernel (the generator stops here).
        if os.geteuid() != 0:
            rows.append(Row(NAME, "executor", 0, "", note="NOT RUN: needs root (namespaces)"))
            return rows
        big = max(1, round(BIG_NETWORKS * cloud["networks"] / 5000))
        h = await serve_more_networks(st.conn, h, BIG_HOST, big)
        with namespace("hs") as ns, namespace("hw") as ns_whole, namespace("hb") as ns_big:
            rows += await executor_share(st, h, rss, ns, ns_whole)
            rows += (await executor_host(st, h, rss, BIG_HOST, ns_big))[0]
            rows += await idle_host_appends(st, h, rss, ns, idle_s)
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


# --- snapshots, one host's share, idle hosts ---------------------------------------------------


async def _count_subject(conn: Connection, subject: str) -> int:
    """Every message of one subject, counted (one ordered push consumer, no decoding)."""
    done = asyncio.get_running_loop().create_future()
    n = 0

    async def cb(msg: Any) -> None:
        nonlocal n
        n += 1
        if msg.metadata.num_pending == 0 and not done.done():
            done.set_result(None)

    sub = await conn.js.subscribe(
        subject,
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    info = await sub.consumer_info()
    if info.num_pending or (info.delivered is not None and info.delivered.consumer_seq):
        await asyncio.wait_for(done, 900)
    await sub.unsubscribe()
    return n


async def raw_read_share(conn: Connection, subjects: list[str]) -> tuple[float, int]:
    """Seconds to read every message of ``subjects`` from seq 1, one consumer per subject (the
    fastest way: a consumer filtering several subjects at once makes the server scan the whole
    log), and how many: the floor of a reader of that share."""
    t = time.perf_counter()
    got = 0
    for subject in subjects:
        got += await _count_subject(conn, subject)
    return time.perf_counter() - t, got


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
    st: Stack, h: History, label: str, tail: int, rounds: int
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
    readies: list[tuple[float, float, str, float]] = []
    for _ in range(rounds):
        raws.append(await raw_read(st.conn, snap.seq + 1, added))
        readies.append(await service_ready(st, ["--snapshot-every", "0"]))
    await unchanged(st.conn, h)
    raw = sorted(raws)[len(raws) // 2]
    ready, mb, said, _ = sorted(readies)[len(readies) // 2]
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
            note=f"{raw:.3f} s",
        ),
        Row(
            NAME,
            f"service ready from snapshot + {added:,} events, {label} log ({h.last_seq:,})",
            ready,
            "s",
            raw / ready,
            "raw read of the tail",
            f"peak RSS {mb:.0f} MB; {said}",
        ),
        fold_row(f"the tail after the snapshot, {label} log", added, [r[3] for r in readies], raw),
    ]
    return rows, h, ready


def executor_argv(url: str, host: str, ns: str, *extra: str) -> list[str]:
    return [NETLEDGER, "--nats", url, "--json", "executor", "run", "--host", host, "--netns", ns,
            "--no-dhcp", *extra]  # fmt: skip


async def executor_share(st: Stack, h: History, rss: Rss, ns: str, ns_whole: str) -> list[Row]:
    """The executor of one host (``h.focus_host``, instances in ``h.focus_networks``) started
    on the old log (``--once``, as a process: start, read, first apply in a fresh namespace):
    events it read against the events that concern it (goal <= 2x), time against the raw read
    of its share; and the same with ``--whole-log`` (every event, as before shares)."""
    rows, raw_s = await executor_host(st, h, rss, h.focus_host, ns)
    more, _ = await executor_host(st, h, rss, h.focus_host, ns_whole, whole_log=True, raw_s=raw_s)
    return rows + more


async def executor_host(
    st: Stack,
    h: History,
    rss: Rss,
    host: str,
    ns: str,
    *,
    whole_log: bool = False,
    raw_s: float | None = None,
) -> tuple[list[Row], float]:
    """``executor run --once`` of ``host`` in namespace ``ns`` (its share, or ``whole_log``):
    events read vs the events that concern it, process wall vs the raw read of its share
    (measured first, a row of its own, unless given as ``raw_s``). Returns the rows and the
    raw read's seconds."""
    assert st.conn is not None
    share = h.share(host)
    nets = len(h.networks_of(host))
    rows: list[Row] = []
    if raw_s is None:
        raw_s, share_n = await raw_read_share(st.conn, h.share_subjects(host))
        rows.append(
            Row(
                NAME,
                f"raw read of {host}'s share ({share_n:,} events of {h.last_seq:,})",
                share_n / raw_s,
                "events/s",
                baseline="raw limit",
                note=f"{raw_s:.3f} s, one consumer per subject; {nets} networks",
            )
        )
    label = "the whole log" if whole_log else "its share"
    extra = ("--whole-log",) if whole_log else ()
    fin = await run_measured_async([*executor_argv(st.url, host, ns, "--once"), *extra])
    if fin.returncode != 0:
        raise RuntimeError(f"executor --once failed ({fin.returncode}): {fin.stderr[-2000:]}")
    out = json.loads(fin.stdout)
    read = int(out.get("events_read") or 0)
    rss.note("executor", fin.maxrss_mb, f"{NAME} (--once reading {label}, {h.last_seq:,} log)")
    who = f"executor {host} --once reading {label}"
    if host != h.focus_host:  # the focus host's rows keep their names (RESULTS.md compares)
        who = f"executor {host} ({nets} of {len(h.networks):,} networks) --once reading {label}"
    rows.append(
        Row(
            NAME,
            f"{who}: events read",
            read,
            "events",
            share / read if read else None,
            "events that concern it",
            f"{read / share:.2f}x its share ({share:,}); {out.get('share_networks')} networks"
            f" followed; {out.get('changes')} kernel changes",
        )
    )
    rows.append(
        Row(
            NAME,
            f"{who}: ready (process wall)",
            fin.seconds,
            "s",
            raw_s / fin.seconds,
            "raw read of its share",
            f"peak RSS {fin.maxrss_mb:.0f} MB",
        )
    )
    return rows, raw_s


async def serve_more_networks(conn: Connection, h: History, host: str, total: int) -> History:
    """``host`` gets an instance in more networks, up to ``total`` (spread over the cloud),
    as the generator would write it (allocation, join, passes, lease; one sighting), appended
    at the end of the log: a host serving many networks (issue 13.3)."""
    cloud = h.cloud
    if await last_seq(conn) != h.last_seq or cloud.out:
        raise RuntimeError("the stream is not where the history left it")
    have = set(h.networks_of(host))
    step = max(1, len(h.networks) // max(1, total))
    more = [n for n in h.networks[::step] if n not in have][: max(0, total - len(have))]
    for nid in more:
        x = cloud._allocate(nid, host)
        cloud._sync_network(nid, host)
        cloud._lease(x)
    cloud._sighting(cloud.hosts[host])
    out, cloud.out = cloud.out, []
    writer = BatchWriter(conn, h.last_seq)
    for i in range(0, len(out), MAX_BATCH):
        await writer.send(out[i : i + MAX_BATCH])
    await writer.wait()
    return cloud.history(0.0, len(out))


async def idle_host_appends(st: Stack, h: History, rss: Rss, ns: str, seconds: float) -> list[Row]:
    """A real executor of ``h.focus_host`` running in its namespace (its kernel already
    converged by executor_share), heartbeats shortened to 1 s: what it appends to the log over
    ``seconds`` of idleness, per hour; what it writes to the liveness bucket instead."""
    assert st.conn is not None
    host = h.focus_host
    log_path = st.tmp / "idle-executor.log"
    p = await asyncio.to_thread(
        spawn_logged,
        executor_argv(st.url, host, ns, "--heartbeat", "1", "--interval", "1"),
        log_path,
    )
    try:
        await asyncio.sleep(5.0)  # started, first pass, first sighting report (a change)
        if p.poll() is not None:
            raise RuntimeError(f"executor exited: {log_path.read_text(errors='replace')[-2000:]}")
        before = await last_seq(st.conn)
        live_before = (await st.conn.js.stream_info("KV_NETLEDGER_LIVE")).state.last_seq
        await asyncio.sleep(seconds)
        after = await last_seq(st.conn)
        live_after = (await st.conn.js.stream_info("KV_NETLEDGER_LIVE")).state.last_seq
        rss.note("executor", vmhwm_mb(p.pid), f"{NAME} (running, {h.last_seq:,} log)")
    finally:
        p.terminate()
        try:
            await asyncio.to_thread(p.wait, 15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    appended = after - before
    return [
        Row(
            NAME,
            "domain events appended per idle host per hour",
            appended * 3600 / seconds,
            "events/h",
            note=f"{appended} in {seconds:.0f} s of a real executor idle with 1 s heartbeats"
            f" ({seconds:.0f} heartbeat periods); it wrote {live_after - live_before} liveness"
            " entries to the KV bucket instead (was ~1,600 log events a day per host)",
        )
    ]


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
