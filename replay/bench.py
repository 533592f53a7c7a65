"""Replay rate, peak memory and audit query time on long streams (a measurement, not a test).

    .venv/bin/python -m netledger.replay.bench [--events 100000 1000000]

For each size: starts its own nats-server (temporary store), publishes the projector bench's
synthetic stream (:func:`netledger.projector.bench.synthetic`: networks, allocations, leases,
deallocations, floating IPs), runs ``netledger replay --db OUT`` in a child process (wall time
including start-up, and peak RSS: its VmHWM, polled), then times ``audit`` queries on the result
(from the events index, the median of several runs, cold and warm) and ``verify``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.common.peak_rss import wait_peak
from netledger.journal.stream import connect, ensure_stream
from netledger.projector.bench import publish, synthetic

from . import audit


def child_replay(url: str, db: Path) -> tuple[float, int]:
    """``netledger replay`` in a child: (seconds, peak RSS in KiB)."""
    exe = Path(sys.executable).with_name("netledger")
    t = time.perf_counter()
    proc = subprocess.Popen(
        [str(exe), "--nats", url, "replay", "--db", str(db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, peak_kib = wait_peak(proc)
    if proc.returncode != 0:
        raise RuntimeError("replay failed")
    return time.perf_counter() - t, peak_kib


def time_query(db: Path, kind: str, value: str, runs: int = 5) -> tuple[float, float, int]:
    """(first run ms, median of the next runs ms, rows)."""
    times = []
    n = 0
    for _ in range(runs + 1):
        t = time.perf_counter()
        n = len(audit.from_index(db, kind, value))
        times.append((time.perf_counter() - t) * 1000)
    return times[0], statistics.median(times[1:]), n


async def one(events: int, work: Path) -> dict[str, Any]:
    server = EmbeddedNats(work / "nats", port=free_port(), sync_interval="default")
    server.start()
    try:
        conn = await connect(server.url, name="replay-bench")
        await ensure_stream(conn)
        t = time.perf_counter()
        last = await publish(conn, synthetic(events))
        pub = time.perf_counter() - t
        db = work / "replayed.db"
        secs, rss = child_replay(server.url, db)
        out: dict[str, Any] = {
            "events": last,
            "publish_s": round(pub, 1),
            "replay_s": round(secs, 1),
            "replay_ev_per_s": round(last / secs),
            "peak_rss_mib": round(rss / 1024),
            "db_mb": round(db.stat().st_size / 1e6, 1),
        }
        # an address allocated early, reused later or not; an instance; a host; a project
        mid = f"10.1.{(events // 4 >> 8) & 255 if events < 65_000 else 100}.{7}"
        queries = [
            ("address", "10.1.0.7"),
            ("address", mid),
            ("instance", f"i-{events // 2 + 1}"),
            ("network", "1"),
            ("host", "h3"),
            ("project", "p3"),
        ]
        out["audit"] = []
        for kind, value in queries:
            cold, warm, rows = time_query(db, kind, value)
            out["audit"].append(
                {
                    "kind": kind,
                    "value": value,
                    "rows": rows,
                    "first_ms": round(cold, 2),
                    "median_ms": round(warm, 2),
                }
            )
        from .verify import verify

        t = time.perf_counter()
        v = await verify(conn, db, show_progress=False)
        out["verify_s"] = round(time.perf_counter() - t, 1)
        out["verify_equal"] = v["equal"]
        await conn.close()
        return out
    finally:
        server.stop()


async def main(sizes: list[int]) -> None:
    for n in sizes:
        with tempfile.TemporaryDirectory(
            prefix="replay-bench-", dir=os.environ.get("BENCH_DIR")
        ) as d:
            r = await one(n, Path(d))
        print(
            f"{r['events']:>9,} events: published in {r['publish_s']}s; replay {r['replay_s']}s"
            f" = {r['replay_ev_per_s']:,} ev/s (child, with start-up), peak RSS"
            f" {r['peak_rss_mib']} MiB, db {r['db_mb']} MB; verify {r['verify_s']}s"
            f" ({'equal' if r['verify_equal'] else 'DIFFERENT'})",
            flush=True,
        )
        for q in r["audit"]:
            print(
                f"    audit {q['kind']:8} {q['value']:12} {q['rows']:>7} rows:"
                f" first {q['first_ms']} ms, then median {q['median_ms']} ms",
                flush=True,
            )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--events", type=int, nargs="+", default=[100_000])
    args = ap.parse_args()
    asyncio.run(main(args.events))
