"""Diagnostic, by hand (not in ``bench/run``): why allocations slow down while serve's projector
catches up a new projection — its CPU, or its writes to the disk nats-server fsyncs on?

    .venv/bin/python bench/catchup_io.py [--events 200000] [--rounds 3] [--seconds 3]

bench/alloc.py's open loop right after serve starts with its projector catching up a new
projection had a p99 4-8 times the caught-up one (68-194 ms against 19-25). Here the same
arrivals (a Poisson process, one subject per lane, each publish waiting for its lane's previous
ack as a lane's decision does: bench/alloc_open.py ``open_loop_raw``) go straight to the log,
fsync on every publish as shipped, while ``projector run --once`` (niceness 10, as serve's child
runs it) catches up history_gen's cloud into a new file: on the same disk as the nats-server
store, or in a tmpfs (/dev/shm: the same CPU, no disk writes), or with no projector at all.
The sides alternate, the order rotated every round; latencies pooled per side. Also noted per
side: the disk's writes (/proc/diskstats).

Found with it (Dec 7, 17:20 UTC, 47ccb2f, quiet; 5 rounds of 3 s a side, 14,986 publishes
each; p50 / p99 / max ms): no projector 1.22 / 2.65 / 7.0; catching up in a tmpfs 1.60 / 22.9 /
49.8; on the disk (as shipped) 1.63 / 34.5 / 54.1 (118 MB more written in 3 s); as SCHED_IDLE
instead of niceness 10: tmpfs 16.2, disk 36.2 (p99); a checkpoint every 1,000 WAL pages instead
of 16,384: disk 27.4 (p99; 30-85 MB more written). So about two thirds of the tail is the
catch-up's CPU — most of it not the projector's own scheduling (SCHED_IDLE, which any normal
task preempts, keeps 16 of the 20 ms; nats-server serving the projector's reads beside the
publishes it stores is the likely rest, not measured apart) — and a third its writes meeting nats-server's fsyncs on the same disk,
bounded by the checkpoint's size. Neither is worth a change for a window that opens only when a
projection is new or rebuilt (seconds to a minute): left as measured (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from alloc_open import open_loop_raw
from benchlib import NETLEDGER, percentile, poisson_arrivals, stack
from history_gen import build_history

#: a side: where the projection is written ("none": no projector) and how it is scheduled
#: ("-idle": SCHED_IDLE instead of niceness 10), "-wal1k": a checkpoint every 1,000 WAL pages
#: during its bulk catch-up (projector/bulk.py BULK_WAL_PAGES) instead of 16,384
SIDES = ("none", "tmpfs", "disk", "tmpfs-idle", "disk-idle", "disk-wal1k", "disk-idle-wal1k")
_WAL1K = (
    "import netledger.projector.bulk as b; b.BULK_WAL_PAGES = 1000;"
    " from netledger.cli import main; main()"
)


def _sectors_written() -> int:
    total = 0
    for line in Path("/proc/diskstats").read_text().splitlines():
        f = line.split()
        if f[2].startswith("vd") and not f[2][-1].isdigit():  # whole disks only
            total += int(f[9])
    return total


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--lanes", type=int, default=16)
    ap.add_argument("--sides", default=",".join(SIDES), help="of " + ", ".join(SIDES))
    args = ap.parse_args()
    sides = tuple(args.sides.split(","))
    lat: dict[str, list[float]] = {s: [] for s in sides}
    mb: dict[str, list[float]] = {s: [] for s in sides}
    async with stack("catchup-io", service=False) as st:
        assert st.conn is not None
        await build_history(st.conn, args.events)
        shm = Path(tempfile.mkdtemp(prefix="nl-catchup-io-", dir="/dev/shm"))
        disk = st.tmp / "projection"
        disk.mkdir()
        try:
            for r in range(args.rounds):
                k = r % len(sides)
                order = sides[k:] + sides[:k]
                for side in order:
                    times = poisson_arrivals(args.rate, args.seconds, seed=10 + r)
                    rng = random.Random(200 + r)
                    lanes = [rng.randrange(args.lanes) for _ in times]
                    proc = None
                    folder = shm if side.startswith("tmpfs") else disk
                    if side != "none":
                        sched = (
                            ["chrt", "-i", "0"] if side.endswith("-idle") else ["nice", "-n", "10"]
                        )
                        cli = [sys.executable, "-c", _WAL1K] if "wal1k" in side else [NETLEDGER]
                        argv = [*sched, *cli, "--nats", st.url, "projector"]
                        argv += ["run", "--once", "--db", str(folder / "p.db")]
                        proc = await asyncio.to_thread(
                            subprocess.Popen,
                            argv,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                        await asyncio.sleep(0.5)  # its start, as serve's is before commands
                    w0 = _sectors_written()
                    lat[side] += await open_loop_raw(st.url, times, lanes)
                    mb[side].append((_sectors_written() - w0) * 512 / 1e6)
                    if proc is not None:
                        still = proc.poll() is None
                        proc.kill()
                        await asyncio.to_thread(proc.wait)
                        if not still:
                            print(f"  ({side}: the projector finished before the arrivals)")
                    for f in folder.glob("p.db*"):
                        f.unlink()
                print(f"round {r + 1} done", file=sys.stderr)
        finally:
            shutil.rmtree(shm, ignore_errors=True)
    print(f"{args.events:,} events; Poisson {args.rate:,.0f}/s over {args.seconds:g} s a side")
    print(f"{'side':8} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  disk MB written")
    for s in sides:
        xs = lat[s]
        p = [percentile(xs, q) * 1e3 for q in (50.0, 99.0, 100.0)]
        w = ", ".join(f"{x:.0f}" for x in mb[s])
        print(f"{s:8} {len(xs):6} {p[0]:8.2f} {p[1]:8.2f} {p[2]:8.1f}  {w}")


if __name__ == "__main__":
    asyncio.run(main())
