"""Diagnostic, by hand (not in ``bench/run``): the CPU of the periodic sweep's dump of the kernel.

    .venv/bin/python bench/sweep_dump.py [--networks 1200] [--rounds 5] [--dumps 5]
        [--old-python OTHER_CHECKOUT/.venv/bin/python] [--json OUT.json]

A namespace holding what an executor serving ``--networks`` VXLAN networks holds (each
network's bridge and VXLAN link as bench/kernel.py's raw tools build them, a gateway address
on the bridge, a flood entry toward a peer on the VXLAN link); in it, per round and side, a
process of that side's interpreter opens the executor's kernel cache (executor/cache.py: its
first dump) and dumps ``--dumps`` times more as the sweep does (``KernelCache.resync``),
timing each: the dumping thread's CPU (``time.thread_time``: what it held the interpreter
for, and the kernel's side of the dump — the dump is built in the reader's ``recv``) and wall.
``--old-python``: the same in another checkout's venv (the old code), interleaved (old first in
even rounds). Prints per side the median over rounds of each round's median dump, and the
spread.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kernel import namespace, same_work_texts

CHILD = """
import json, resource, sys, time
from netledger.executor.cache import KernelCache
ns, dumps = sys.argv[1], int(sys.argv[2])
cache = KernelCache(ns, live=True)
t, c = time.monotonic(), time.thread_time()
cache.start()
first = ((time.thread_time() - c) * 1000, (time.monotonic() - t) * 1000)
cpu, user, wall = [], [], []
try:
    for _ in range(dumps):
        t, c = time.monotonic(), time.thread_time()
        u = resource.getrusage(resource.RUSAGE_THREAD).ru_utime
        cache.resync()
        cpu.append((time.thread_time() - c) * 1000)
        user.append((resource.getrusage(resource.RUSAGE_THREAD).ru_utime - u) * 1000)
        wall.append((time.monotonic() - t) * 1000)
    memo = getattr(cache, "memo", None)
    print(json.dumps({"first": first, "cpu": cpu, "user": user, "wall": wall, "links": len(cache.links),
                      "addresses": len(cache.addrs), "fdb": len(cache.fdb),
                      "decoded": getattr(memo, "decoded", None),
                      "reused": getattr(memo, "reused", None),
                      "addr_fdb_decoded": [getattr(getattr(cache, m, None), "decoded", None)
                                           for m in ("_addr_memo", "_flood_memo")],
                      "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
finally:
    cache.close()
"""


def populate(ns: str, count: int, tmp: Path) -> None:
    """What an executor serving ``count`` networks holds, built with the raw tools."""
    nets: list[dict[str, object]] = [
        {"vni": 200000 + i, "bridge": f"brs{i}", "id": f"n{i}"} for i in range(count)
    ]
    create, sysctl, up = same_work_texts(nets)
    addrs = "".join(
        f"addr add 10.{100 + (i >> 8)}.{i & 255}.1/24 dev brs{i}\n" for i in range(count)
    )
    flood = "".join(
        f"fdb append 00:00:00:00:00:00 dev vx{200000 + i} dst 192.0.2.{1 + i % 200}\n"
        for i in range(count)
    )
    for name, text in (("create", create), ("sysctl", sysctl), ("up", up), ("addr", addrs)):
        (tmp / name).write_text(text)
    (tmp / "flood").write_text(flood)
    for argv in (
        ["ip", "-n", ns, "-batch", str(tmp / "create")],
        ["ip", "netns", "exec", ns, "sh", str(tmp / "sysctl")],
        ["ip", "-n", ns, "-batch", str(tmp / "up")],
        ["ip", "-n", ns, "-batch", str(tmp / "addr")],
        ["bridge", "-n", ns, "-batch", str(tmp / "flood")],
    ):
        subprocess.run(argv, check=True, capture_output=True, text=True)


def one(python: str, ns: str, dumps: int) -> dict[str, Any]:
    out = subprocess.run(
        [python, "-c", CHILD, ns, str(dumps)], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", type=int, default=1200)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dumps", type=int, default=5)
    ap.add_argument("--old-python", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sides = ["new"] if not args.old_python else ["old", "new"]
    got: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory() as tmp, namespace("sd") as ns:
        populate(ns, args.networks, Path(tmp))
        for r in range(args.rounds):
            for side in sides if r % 2 == 0 else list(reversed(sides)):
                python = args.old_python if side == "old" else sys.executable
                res = one(python, ns, args.dumps)
                got[side].append(res)
                print(
                    f"round {r} {side}: first dump cpu/wall {res['first'][0]:.1f} /"
                    f" {res['first'][1]:.1f} ms; then cpu median"
                    f" {statistics.median(res['cpu']):.1f} ms"
                    f" ({min(res['cpu']):.1f}-{max(res['cpu']):.1f}) of it user"
                    f" {statistics.median(res['user']):.1f}, wall median"
                    f" {statistics.median(res['wall']):.1f} ms; {res['links']} links,"
                    f" {res['addresses']} addresses, {res['fdb']} flood entries;"
                    f" links decoded/reused {res['decoded']}/{res['reused']}, addresses and"
                    f" flood entries decoded {res['addr_fdb_decoded']};"
                    f" peak RSS {res['maxrss_mb']:.1f} MB",
                    flush=True,
                )
    for side in sides:
        cpu = [statistics.median(x["cpu"]) for x in got[side]]
        wall = [statistics.median(x["wall"]) for x in got[side]]
        user = [statistics.median(x["user"]) for x in got[side]]
        first = [x["first"][0] for x in got[side]]
        print(
            f"{side}: dump cpu median {statistics.median(cpu):.1f} ms"
            f" ({min(cpu):.1f}-{max(cpu):.1f} over rounds), of it user (the interpreter's)"
            f" {statistics.median(user):.1f} ({min(user):.1f}-{max(user):.1f}),"
            f" wall {statistics.median(wall):.1f}"
            f" ({min(wall):.1f}-{max(wall):.1f}); first dump cpu {statistics.median(first):.1f}"
            f" ({min(first):.1f}-{max(first):.1f})"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(got, indent=1))


if __name__ == "__main__":
    main()
