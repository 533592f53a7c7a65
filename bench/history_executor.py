"""The history benchmark's executors: one host reading its share of the log, an idle host.

``executor run --once`` of the followed host (its share, then ``--whole-log``) and of a host
given instances in many networks at the end of the log (issue 13.3), each against the raw read
of its share (bench/history_raw.py); then a real executor left idle with 1 s heartbeats: what it
appends to the log per hour. They run in network namespaces (bench/kernel.py): root only.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

from benchlib import NETLEDGER, Row, Rss, Stack, run_measured_async, vmhwm_mb
from history_pub import BatchWriter
from history_raw import NAME, raw_read_share
from history_types import History
from kernel_running import spawn_logged

from netledger.journal.stream import MAX_BATCH, Connection, last_seq


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


async def _settled(st: Stack, p: subprocess.Popen[bytes], log_path: Path) -> None:
    """Until the executor ``p`` (1 s heartbeats) has written to the liveness bucket and the
    log has stayed still for 1.5 s (at most 30 s: then measured as it is)."""
    assert st.conn is not None
    start = time.monotonic()
    live0 = None
    seq, still_since = await last_seq(st.conn), time.monotonic()
    while time.monotonic() - start < 30:
        if p.poll() is not None:
            text = await asyncio.to_thread(log_path.read_text, errors="replace")
            raise RuntimeError(f"executor exited: {text[-2000:]}")
        await asyncio.sleep(0.25)
        try:
            live = (await st.conn.js.stream_info("KV_NETLEDGER_LIVE")).state.last_seq
        except Exception:  # the bucket is made by the first executor's first heartbeat
            live = None
        live0 = live if live0 is None else live0
        now = await last_seq(st.conn)
        if now != seq:
            seq, still_since = now, time.monotonic()
        elif (
            live is not None
            and live0 is not None
            and live > live0
            and (time.monotonic() - still_since >= 1.5)
        ):
            return


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
        # Started, first pass, first sighting report (a change): settled once it has written
        # liveness and the log has not moved for 1.5 heartbeat periods (was a fixed 5 s).
        await _settled(st, p, log_path)
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
