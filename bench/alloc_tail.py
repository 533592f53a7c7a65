"""Diagnostic, by hand (not in ``bench/run``): where the open loop's allocation tail comes from.

    .venv/bin/python bench/alloc_tail.py [--rate 1235] [--seconds 12] [--rounds 2]
        [--warm 30000] [--raw] [--serve-args "..."] [--client-freeze yes|no|ab|ba]
        [--ab ENV=V | --ab-python OTHER_CHECKOUT/.venv/bin/python]

The setup of bench/alloc.py's open-loop rows (history_gen's cloud of 100 k events, ``serve`` as
shipped with its projector, 16 networks, Poisson arrivals over 16 connections), ``serve``
started through bench/tail_probe.py, which stamps each allocation's path in the service and
notes its GC collections (wall and CPU time), event-loop stalls (with what ran) and snapshot
writes. Per round: the phases of the slowest 1 % against the median's (client -> service, lane
wait, decision, publish -> ack, ack -> answer settled, answer -> client), what overlapped the
slow ones (the service's stalls, its collections, this process's own stalls and collections),
CPU of each process. ``--warm N``: N allocations (16 clients) before each round, so that the
service has made state since its start as the bench's closed loops leave it; ``--raw``: the raw
publish-ack with the OCC header at the same arrivals before each round (bench/alloc_open.py).
``--ab ENV=V`` / ``--ab-python``: every round twice, serve restarted for each side, the B side
with that environment variable / that interpreter (another checkout's venv: the old code),
interleaved (A first in even rounds). ``--client-freeze``: this process as bench/alloc_open.py
drives it (its bookkeeping frozen, only requests in flight held: ``yes``, the default) or as it
did before (``no``), or one per side.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from alloc import CLIENTS, HISTORY_EVENTS, HISTORY_HOSTS, HISTORY_NETWORKS, alloc_rate, cpu_seconds
from alloc_open import CONNECTIONS, open_loop_raw
from benchlib import BIN, Stack, percentile, poisson_arrivals, stack
from history_gen import build_history

from netledger.service.client import Client

PROBE = Path(__file__).with_name("tail_probe.py")
PHASES = ("to_service", "lane_wait", "decide", "publish_ack", "to_settled", "to_client")


SERVE_ARGS: list[str] = []
client_gcs: list[tuple[float, int, float]] = []
_gc_t = [0.0]


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _gc_t[0] = time.monotonic()
    else:
        client_gcs.append((_gc_t[0], info["generation"], time.monotonic() - _gc_t[0]))


async def start_probed(
    st: Stack, out: Path, env: dict[str, str], python: str = str(BIN / "python")
) -> subprocess.Popen[str]:
    argv = [
        python,
        str(PROBE),
        str(out),
        "--nats",
        st.url,
        "serve",
        "--data",
        str(st.serve_dir),
        *SERVE_ARGS,
    ]
    p = await asyncio.to_thread(
        subprocess.Popen,
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **env},
    )
    assert p.stdout is not None
    line = await asyncio.to_thread(p.stdout.readline)
    if "ready" not in line:
        p.kill()
        raise RuntimeError(f"serve did not start: {line!r}")
    st.service = p
    return p


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live descendants."""
    total = cpu_seconds(pid)
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(tree_cpu(int(k)) for k in kids)


async def open_loop(
    url: str,
    times: list[float],
    lanes: list[int],
    networks: list[str],
    hosts: list[str],
    prefix: str,
    lean: bool = True,
) -> tuple[dict[str, tuple[float, float]], list[tuple[float, float]]]:
    """Allocations at the arrival times: instance -> (due, answered), monotonic; and this
    process's own loop stalls (> 5 ms) meanwhile."""
    clients = [await Client.connect(url) for _ in range(CONNECTIONS)]
    out: dict[str, tuple[float, float]] = {}
    lags: list[tuple[float, float]] = []
    stop = False

    async def beat() -> None:
        while not stop:
            t = time.monotonic()
            await asyncio.sleep(0.001)
            late = time.monotonic() - t - 0.001
            if late > 0.005:
                lags.append((t, late))

    async def one(i: int, due: float) -> None:
        name = f"{prefix}-{i}"
        await clients[i % CONNECTIONS].allocate_fixed_ip(
            name, network_id=networks[lanes[i]], host=hosts[lanes[i] % len(hosts)]
        )
        out[name] = (due, time.monotonic())

    b = asyncio.ensure_future(beat())
    tasks: set[asyncio.Future[None]] = set()
    if lean:  # as bench/alloc_open.py's _drive
        gc.collect()
        gc.freeze()
    t0 = time.monotonic() + 0.05
    try:
        for i, at in enumerate(times):
            due = t0 + at
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one(i, due))
            tasks.add(task)
            if lean:
                task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    finally:
        stop = True
        await b
        for c in clients:
            await c.close()
    return out, lags


def overlap(spans: list[tuple[float, float]], a: float, b: float) -> float:
    return sum(max(0.0, min(b, s + d) - max(a, s)) for s, d in spans)


def analyse(
    label: str,
    client: dict[str, tuple[float, float]],
    probe: dict[str, Any],
    lags: list[tuple[float, float]],
    cpu: dict[str, float],
) -> dict[str, float]:
    paths = probe["paths"]
    rows = []
    for name, (due, answered) in client.items():
        p = paths.get(name)
        if not p or not all(k in p for k in ("queued", "taken", "pub", "ack", "done")):
            continue
        rows.append(
            {
                "total": answered - due,
                "to_service": p["queued"] - due,
                "lane_wait": p["taken"] - p["queued"],
                "decide": p["pub"] - p["taken"],
                "publish_ack": p["ack"] - p["pub"],
                "to_settled": p["done"] - p["ack"],
                "to_client": answered - p["done"],
                "chain": p.get("chain", 1),
                "round": p.get("round", 1),
                "due": due,
                "answered": answered,
            }
        )
    rows.sort(key=lambda r: r["total"])
    n = len(rows)
    tot = [r["total"] for r in rows]
    slow = rows[int(n * 0.99) :]
    t_first = min(r["due"] for r in rows)
    t_last = max(r["answered"] for r in rows)
    mid = rows[int(n * 0.45) : int(n * 0.55)]
    stalls = [tuple(s) for s in probe["stalls"]]
    gcs = probe["gcs"]
    gc_spans = [(g[0], g[2]) for g in gcs]
    print(
        f"\n== {label}: {n} allocations of {len(client)}; p50 {percentile(tot, 50) * 1e3:.2f}"
        f" p99 {percentile(tot, 99) * 1e3:.2f} max {tot[-1] * 1e3:.1f} ms"
    )
    print("phase (ms, mean)      median band   slowest 1%")
    for ph in PHASES:
        print(
            f"  {ph:18s} {statistics.mean(r[ph] for r in mid) * 1e3:9.2f} "
            f"{statistics.mean(r[ph] for r in slow) * 1e3:12.2f}"
        )
    print(
        f"  chain len mean      {statistics.mean(r['chain'] for r in mid):9.2f}"
        f" {statistics.mean(r['chain'] for r in slow):12.2f}"
    )
    print(
        f"  round size mean     {statistics.mean(r['round'] for r in mid):9.2f}"
        f" {statistics.mean(r['round'] for r in slow):12.2f}"
    )
    ov_s = [overlap(stalls, r["due"], r["answered"]) for r in slow]
    ov_g = [overlap(gc_spans, r["due"], r["answered"]) for r in slow]
    ov_c = [overlap(lags, r["due"], r["answered"]) for r in slow]
    sp = [x for x in probe.get("spans", []) if t_first - 1 <= x[0] <= t_last]
    if sp:
        print(
            "  spans: " + ", ".join(f"{w} {d * 1e3:.1f} ms @{x - t_first:.2f}s" for x, d, w in sp)
        )
        snaps = [(x, d) for x, d, w in sp if w == "snapshot"]
        hit = sum(1 for r in slow if overlap(snaps, r["due"], r["answered"]) > 0)
        allhit = sum(1 for r in rows if overlap(snaps, r["due"], r["answered"]) > 0)
        print(
            f"  slowest 1% overlapping a snapshot write: {hit} of {len(slow)}; all: {allhit} of {n}"
        )
    print(
        f"  service loop stalls overlapping a slow one: mean {statistics.mean(ov_s) * 1e3:.2f}"
        f" ms; GC {statistics.mean(ov_g) * 1e3:.2f} ms; client loop stalls"
        f" {statistics.mean(ov_c) * 1e3:.2f} ms"
    )
    ins = [s for s in stalls if t_first <= s[0] <= t_last]
    gin = [g for g in gcs if t_first <= g[0] <= t_last]
    print(
        f"  service stalls > 5 ms in the window: {len(ins)}, total"
        f" {sum(s[1] for s in ins) * 1e3:.0f} ms, max {max((s[1] for s in ins), default=0) * 1e3:.1f}"
    )
    for gen in (0, 1, 2):
        g = [x[2] for x in gin if x[1] == gen]
        c = [x[3] for x in gin if x[1] == gen]
        if g:
            print(
                f"  GC gen {gen}: {len(g)} collections, total {sum(g) * 1e3:.0f} ms,"
                f" max {max(g) * 1e3:.1f} ms, >5 ms: {sum(1 for x in g if x > 0.005)};"
                f" CPU total {sum(c) * 1e3:.0f} ms, max {max(c) * 1e3:.1f} ms"
            )
    for gen in (0, 1, 2):
        g = [x[2] for x in client_gcs if x[1] == gen and t_first <= x[0] <= t_last]
        if g:
            print(
                f"  client GC gen {gen}: {len(g)} collections, total {sum(g) * 1e3:.0f} ms,"
                f" max {max(g) * 1e3:.1f} ms"
            )
    print(f"  client loop stalls > 5 ms: {len(lags)}, total {sum(x[1] for x in lags) * 1e3:.0f} ms")
    stk: dict[str, int] = {}
    for t, s in probe["stacks"]:
        if t_first <= t <= t_last:
            top = " < ".join(s.split(" < ")[:4])
            stk[top] = stk.get(top, 0) + 1
    for s, c in sorted(stk.items(), key=lambda x: -x[1])[:8]:
        print(f"  stall stack x{c}: {s}")
    print("  CPU s: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    return {"p50": percentile(tot, 50), "p99": percentile(tot, 99), "max": tot[-1]}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=1235.0)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=float, default=1.0)
    ap.add_argument("--ab", default="", help="ENV=V: B sides run serve with it")
    ap.add_argument("--raw", action="store_true", help="the raw publish-ack beside each round")
    ap.add_argument("--serve-args", default="", help="more serve options (space-separated)")
    ap.add_argument(
        "--client-freeze",
        choices=("no", "yes", "ab", "ba"),
        default="yes",
        help="the client as bench/alloc_open.py's (its bookkeeping frozen, only the"
        " requests in flight held); no: as before; ab: B sides lean",
    )
    ap.add_argument("--warm", type=int, default=0, help="allocations before the rounds")
    ap.add_argument(
        "--ab-python",
        default="",
        help="B sides run serve with this interpreter (another checkout's venv)",
    )
    a = ap.parse_args()
    SERVE_ARGS.extend(a.serve_args.split())
    gc.callbacks.append(_on_gc)
    env_b = dict([a.ab.split("=", 1)]) if a.ab else ({} if a.ab_python else None)
    async with stack("tail", service=False) as st:
        assert st.conn is not None
        h = await build_history(
            st.conn,
            int(HISTORY_EVENTS * a.size),
            hosts=max(10, round(HISTORY_HOSTS * a.size)),
            networks=max(20, round(HISTORY_NETWORKS * a.size)),
        )
        out = st.tmp / "probe.json"
        await start_probed(st, out, {})
        await st.wait_projected(h.last_seq)
        admin = Client(st.conn)
        many = await admin.create_networks(
            label="many",
            cidr="10.112.0.0/12",
            num_networks=CLIENTS,
            network_size=65536,
            mode="vxlan",
            vni_start=200_000,
        )
        nets = [m["id"] for m in many]
        await alloc_rate(st.url, CLIENTS, nets, CLIENTS * 20, h.hosts)
        results: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
        pending: list[tuple[str, str, Any, Any, dict[str, float]]] = []
        keep = env_b is None
        if a.warm and keep:
            await alloc_rate(st.url, CLIENTS, nets, a.warm, h.hosts)
        for r in range(a.rounds):
            ab = env_b is not None or a.client_freeze in ("ab", "ba")
            sides = ["A", "B"] if ab else ["A"]
            if ab and r % 2:
                sides.reverse()
            times = poisson_arrivals(a.rate, a.seconds, seed=r)
            rng = random.Random(100 + r)
            lanes = [rng.randrange(len(nets)) for _ in times]
            if a.raw:
                raw = await open_loop_raw(st.url, times, lanes)
                print(
                    f"\nraw publish-ack round {r}: p50 {percentile(raw, 50) * 1e3:.2f}"
                    f" p99 {percentile(raw, 99) * 1e3:.2f} max {max(raw) * 1e3:.1f} ms"
                )
            for side in sides:
                env = env_b if side == "B" and env_b else {}
                python = a.ab_python if side == "B" and a.ab_python else str(BIN / "python")
                frozen = (
                    a.client_freeze == "yes"
                    or (a.client_freeze == "ab" and side == "B")
                    or (a.client_freeze == "ba" and side == "A")
                )
                label = f"round {r} side {side} {env} {python}" + (" client lean" if frozen else "")
                gc.unfreeze()
                if not keep:
                    await st.stop_service()
                    await start_probed(st, out, env, python)
                    end = await st.conn.js.stream_info(st.conn.stream)
                    await st.wait_projected(end.state.last_seq)
                    if a.warm:
                        await alloc_rate(st.url, CLIENTS, nets, a.warm, h.hosts)
                assert st.service is not None
                pid = st.service.pid
                server = st.server.proc.pid if st.server.proc else 0
                c0 = {
                    "serve+projector": tree_cpu(pid),
                    "nats": cpu_seconds(server),
                    "client": time.process_time(),
                }
                got, lags = await open_loop(
                    st.url, times, lanes, nets, h.hosts, f"r{r}{side}", lean=frozen
                )
                cpu = {
                    "serve+projector": tree_cpu(pid) - c0["serve+projector"],
                    "nats": cpu_seconds(server) - c0["nats"],
                    "client": time.process_time() - c0["client"],
                }
                pending.append((side, label, got, lags, cpu))
                if not keep:
                    await st.stop_service()
                    probe = json.loads(out.read_text())
                    results[side].append(analyse(label, got, probe, lags, cpu))
                    pending.clear()
        if keep:
            await st.stop_service()
            probe = json.loads(out.read_text())
            print("tracked objects at the end:", probe["tracked"])
            for side, label, got, lags, cpu in pending:
                results[side].append(analyse(label, got, probe, lags, cpu))
        for side, rs in results.items():
            if rs:
                print(
                    f"\nside {side}: p50 {[round(x['p50'] * 1e3, 2) for x in rs]}"
                    f" p99 {[round(x['p99'] * 1e3, 1) for x in rs]}"
                    f" max {[round(x['max'] * 1e3, 1) for x in rs]}"
                )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    asyncio.run(main())
