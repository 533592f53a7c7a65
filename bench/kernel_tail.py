"""Diagnostic, by hand (not in ``bench/run``): where the open loop's command → kernel tail goes.

    .venv/bin/python bench/kernel_tail.py [--networks 1200] [--rate 30] [--seconds 12]
        [--interval 5] [--rounds 2] [--old-python OTHER_CHECKOUT/.venv/bin/python]
        [--json OUT.json]

bench/kernel_running.py's open loop (Poisson arrivals, each an allocation in a network new to
the host, timed from its scheduled arrival until ``ip monitor`` shows its VXLAN link in its
bridge) on a host serving ``--networks`` networks, with the executor started through
bench/executor_probe.py, which stamps each network's way through the daemon (the allocation
folded, the pass that took it, its plan, its netlink batch) and notes the daemon's GC
collections, event-loop stalls (with what ran) and its side work (the sweep's dump and check,
sighting observations, status puts, view snapshot writes). Per round: p50 / p99 / max, the
phases of the slowest 1 % against the median band, what overlapped the slow ones, and the
passes of changes by what ran beside them in a worker thread (the sweep's dump, another, none).
``--old-python``: every round twice, the executor of that interpreter (another checkout's venv:
the old code) beside this one's, interleaved (old first in even rounds); both get a fresh
executor in the same namespace and fresh networks. ``--old-env VAR=VALUE`` (repeatable): the
old side's executor runs with that in its environment (bench/executor_probe.py reads
``PROBE_SWITCH_INTERVAL``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import percentile, poisson_arrivals, stack
from kernel import allocate_each, create_vxlan_networks, namespace
from kernel_running import LAT_HOST, LinkWatch, running_executor

from netledger.service.client import Client

PROBE = Path(__file__).with_name("executor_probe.py")
PHASES = ("to_fold", "to_pass", "plan", "to_batch", "batch", "to_seen")
BASE_VNI, ROUND_VNI = 300000, 310000


def _pass_of(probe: dict[str, Any], nid: str, alloc: float) -> dict[str, Any] | None:
    """The pass that took network ``nid`` after its allocation was folded."""
    for p in probe["passes"]:
        taken = p.get("taken")
        if taken is None or taken < alloc:
            continue
        dirty = p.get("dirty")
        if dirty is None or nid in dirty:
            return p
    return None


def phases(rec: dict[str, Any], probe: dict[str, Any]) -> dict[str, float] | None:
    """One allocation's path from its arrival to its link seen (ms), or None if unmatched."""
    n = probe["nets"].get(rec["id"], {})
    alloc = n.get("alloc")
    if alloc is None:
        return None
    p = _pass_of(probe, rec["id"], alloc)
    if p is None or not p["batches"]:
        return None
    b0, b1 = p["batches"][0]
    ms = 1000.0
    return {
        "to_fold": (alloc - rec["at"]) * ms,
        "to_pass": (p["start"] - alloc) * ms if p["start"] >= alloc else 0.0,
        "plan": (p["planned"] - max(p["start"], alloc)) * ms,
        "to_batch": (b0 - p["planned"]) * ms,
        "batch": (b1 - b0) * ms,
        "to_seen": (rec["seen"] - b1) * ms,
        "answer": (rec["answered"] - rec["at"]) * ms,
        "reason": p["reason"],  # type: ignore[dict-item]
    }


def overlaps(probe: dict[str, Any], t0: float, t1: float) -> dict[str, float]:
    """What of the daemon's own ran within [t0, t1] (ms of each kind, overlapping part)."""
    out: dict[str, float] = {}

    def add(what: str, s: float, d: float) -> None:
        o = min(t1, s + d) - max(t0, s)
        if o > 0:
            out[what] = out.get(what, 0.0) + o * 1000

    for s, d, what, _thread in probe["spans"]:
        add(what, s, d)
    for s, gen, d, _cpu in probe["gcs"]:
        add(f"gc{gen}", s, d)
    for s, d in probe["stalls"]:
        add("stall", s, d)
    for s, d in probe["resubs"]:
        add("resubscribe", s, d)
    for p in probe["passes"]:
        if p["reason"] != "change":
            add(f"pass {p['reason']}", p["start"], p["end"] - p["start"])
    return out


def passes_beside(probe: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The passes of changes by what ran beside them in a worker thread: the sweep's dump of
    the kernel cache, another worker thread (the sighting reporter's, nft's read...), none —
    p50 of their duration (ms) and how many."""
    dumps = [(s, s + d) for s, d, what, _t in probe["spans"] if what == "cache dump"]
    others = [
        (s, s + d)
        for s, d, what, thread in probe["spans"]
        if what not in ("cache dump", "in_netns") and thread != "MainThread"
    ]
    groups: dict[str, list[float]] = {"cache dump": [], "another thread": [], "none": []}
    for p in probe["passes"]:
        if p["reason"] != "change" or "end" not in p:
            continue
        a, b = p["start"], p["end"]
        if any(x < b and a < y for x, y in dumps):
            key = "cache dump"
        elif any(x < b and a < y for x, y in others):
            key = "another thread"
        else:
            key = "none"
        groups[key].append((b - a) * 1000)
    return {
        k: {"p50_ms": round(statistics.median(v), 2), "n": len(v)} for k, v in groups.items() if v
    }


def summary(side: str, recs: list[dict[str, Any]], probe: dict[str, Any]) -> dict[str, Any]:
    lat = sorted(r["seen"] - r["at"] for r in recs)
    by = sorted(recs, key=lambda r: r["seen"] - r["at"])
    k = max(1, len(by) // 100)
    slow, mid = by[-k:], by[len(by) * 45 // 100 : len(by) * 55 // 100]
    out: dict[str, Any] = {
        "side": side,
        "n": len(lat),
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": lat[-1] * 1000,
    }
    for name, group in (("median_band", mid), ("slowest_1pct", slow)):
        ph = [x for x in (phases(r, probe) for r in group) if x is not None]
        out[name] = {
            key: round(statistics.mean(float(x[key]) for x in ph), 2)
            for key in (*PHASES, "answer")
            if ph
        }
        out[name]["matched"] = len(ph)
        if name == "slowest_1pct":
            out[name]["each"] = [
                {
                    "ms": round((r["seen"] - r["at"]) * 1000, 1),
                    "phases": phases(r, probe),
                    "overlaps": {
                        k2: round(v, 1) for k2, v in overlaps(probe, r["at"], r["seen"]).items()
                    },
                }
                for r in reversed(group)
            ]
    gen2 = [g for g in probe["gcs"] if g[1] == 2]
    out["gc2"] = [(round(g[2] * 1000, 1), round(g[3] * 1000, 1)) for g in gen2]
    out["gc_count"] = [sum(1 for g in probe["gcs"] if g[1] == i) for i in range(3)]
    st = sorted((d for _, d in probe["stalls"]), reverse=True)
    out["stalls"] = {"n": len(st), "top_ms": [round(d * 1000, 1) for d in st[:8]]}
    kinds: dict[str, list[float]] = {}
    for _s, d, what, _thread in probe["spans"]:
        kinds.setdefault(what, []).append(d * 1000)
    out["spans"] = {
        w: {"n": len(v), "max_ms": round(max(v), 1), "sum_ms": round(sum(v), 1)}
        for w, v in kinds.items()
    }
    out["passes_beside"] = passes_beside(probe)
    out["tracked"] = probe["tracked"]["non_frozen"]
    out["full_collect_ms"] = probe["tracked"].get("full_collect_ms")
    out["tracked_top"] = probe["tracked"]["top"][:8]
    # the stacks seen during the longest stalls
    longest = {s for s, d in sorted(probe["stalls"], key=lambda x: -x[1])[:6]}
    out["stall_stacks"] = [w for b, w in probe["stacks"] if b in longest][:6]
    return out


async def one_round(
    st: Any,
    ns: str,
    nets: list[dict[str, object]],
    arrivals: list[float],
    interval: float,
    python: str,
    out: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    watch = LinkWatch(ns)
    await watch.start()
    recs: list[dict[str, Any]] = []
    prefix = [python, str(PROBE), str(out)]
    iv = str(interval)
    try:
        async with running_executor(
            st, LAT_HOST, ns, "--interval", iv, "--heartbeat", iv, prefix=prefix
        ):
            async with await Client.connect(st.url) as c:

                async def one(n: dict[str, object], at: float) -> None:
                    rec: dict[str, Any] = {"id": str(n["id"]), "at": at}
                    await c.allocate_fixed_ip(
                        f"tail-{n['id']}", network_id=str(n["id"]), host=LAT_HOST
                    )
                    rec["answered"] = time.monotonic()
                    rec["seen"] = await watch.wait(f"vx{n['vni']}")
                    recs.append(rec)

                gc.collect()
                gc.freeze()  # this process's setup: no collection of ours walks it meanwhile
                t0 = time.monotonic()
                tasks = []
                for n, at in zip(nets, arrivals, strict=True):
                    delay = t0 + at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(n, t0 + at)))
                await asyncio.gather(*tasks)
                gc.unfreeze()
    finally:
        await watch.stop()
    return recs, json.loads(await asyncio.to_thread(out.read_text))


async def main(args: argparse.Namespace) -> None:
    arrivals = poisson_arrivals(args.rate, args.seconds)
    sides = ["new"] if not (args.old_python or args.old_env) else ["old", "new"]
    results: list[dict[str, Any]] = []
    async with stack("ktail") as st:
        assert st.conn is not None
        admin = Client(st.conn)
        base = await create_vxlan_networks(admin, args.networks, BASE_VNI, 20, "t", "elsewhere")
        await allocate_each(st.url, base, LAT_HOST)
        print(f"{args.networks} networks served, {len(arrivals)} arrivals a round", flush=True)
        with namespace("t") as ns:
            k = 0
            for r in range(args.rounds):
                order = sides if r % 2 == 0 else list(reversed(sides))
                for side in order:
                    python = (
                        (args.old_python or sys.executable) if side == "old" else sys.executable
                    )
                    for kv in args.old_env:  # the executor inherits this process's environment
                        var, _, val = kv.partition("=")
                        if side == "old":
                            os.environ[var] = val
                        else:
                            os.environ.pop(var, None)
                    out = Path(st.tmp) / f"probe-{k}.json"
                    # Made now, not all at the start: the host needs most of the live networks
                    # (it follows every network, as bench/kernel.py's host does).
                    nets = await create_vxlan_networks(
                        admin,
                        len(arrivals),
                        ROUND_VNI + 1000 * k,
                        100 + 2 * k,
                        f"r{k}-",
                        "elsewhere",
                    )
                    recs, probe = await one_round(
                        st, ns, nets, arrivals, args.interval, python, out
                    )
                    if args.keep:  # the probe's record and the client's, for a closer look
                        keep = Path(args.keep) / f"round-{k}-{side}.json"
                        await asyncio.to_thread(
                            keep.write_text, json.dumps({"recs": recs, "probe": probe})
                        )
                    s = summary(side, recs, probe)
                    s["round"] = r
                    results.append(s)
                    print(
                        f"round {r} {side}: p50 {s['p50_ms']:.2f} p99 {s['p99_ms']:.2f}"
                        f" max {s['max_ms']:.1f} ms; median band {s['median_band']};"
                        f" slowest 1 % { ({x: y for x, y in s['slowest_1pct'].items() if x != 'each'}) };"
                        f" gc counts {s['gc_count']}, gen2 (wall, cpu ms) {s['gc2']};"
                        f" stalls {s['stalls']}; spans {s['spans']}; passes of changes beside"
                        f" a worker thread {s['passes_beside']}; tracked {s['tracked']}",
                        flush=True,
                    )
                    k += 1
    if args.json:
        await asyncio.to_thread(Path(args.json).write_text, json.dumps(results, indent=1))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=1200)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--old-python", default=None)
    ap.add_argument("--old-env", action="append", default=[], metavar="VAR=VALUE")
    ap.add_argument("--json", default=None)
    ap.add_argument("--keep", default=None, metavar="DIR", help="each round's records, kept")
    asyncio.run(main(ap.parse_args()))
