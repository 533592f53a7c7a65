"""The command service's work per allocation, counted: ``python bench/alloc_calls.py``.

The CPU a service spends per allocation (bench/alloc.py's "service CPU ... us/alloc") swings
with the machine by ±30 % between runs of the same code — the socket sends do the receiver's
work when the machine is busy, group commit batches differ with the scheduling — so it cannot
tell whether a change made the request path heavier. This counts it instead: the service runs
in a child process under cProfile, switched on for each phase only (after a warm-up), and the
figure per allocation is

- **calls**: Python function calls (deterministic for one code path: a change that adds work
  shows here whatever the machine does),
- **python**: profiled time in Python functions, without the event loop's wait (``epoll``)
  and the socket calls (inflated by the profiler's own cost per call, so only comparable
  between runs of this script),
- **socket**: profiled time in ``send``/``recv`` (the machine's share, not the code's),
- **passes**: passes of the event loop (asyncio's ``_run_once``; the child runs asyncio's loop,
  not serve's uvloop, whose passes are not Python calls): each costs an ``epoll_wait`` and the
  loop's bookkeeping, and one client's command waits for those on its way (issue 15).

Phases: 1 client sequential on one network, 16 clients over 16 networks, 16 clients on one
network — on an empty log (the request path, not the fold: bench/fold_cpu.py has that).

    python bench/alloc_calls.py                  # this tree, 2 runs
    python bench/alloc_calls.py --ab 1518ee3     # interleaved A/B: that commit vs this tree
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fold_cpu import tree  # (bench/ is not a package)

PHASES = (("1 client", 1, 1), ("16 x 16", 16, 16), ("16 x 1", 16, 1))
SOCKET = (
    "<method 'send' of '_socket.socket' objects>",
    "<method 'recv' of '_socket.socket' objects>",
)


async def serve(url: str, out: str) -> None:
    """The child: a command service, profiled between SIGUSR1 and SIGUSR2 (dumped to ``out``)."""
    from netledger.journal.stream import connect, ensure_stream
    from netledger.service.service import CommandService

    conn = await connect(url, name="alloc-calls")
    await ensure_stream(conn)
    svc = CommandService(conn)
    await svc.start()
    prof = cProfile.Profile()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def fresh() -> None:  # one profile per phase
        nonlocal prof
        prof = cProfile.Profile()
        prof.enable()

    def done() -> None:
        prof.disable()
        prof.dump_stats(out)
        print("dumped", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, fresh)
    loop.add_signal_handler(signal.SIGUSR2, done)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await svc.close()
    await conn.close()


def figures(path: str, n: int) -> dict[str, float]:
    stats: dict[Any, Any] = pstats.Stats(path).stats  # type: ignore[attr-defined]
    calls = sum(v[1] for v in stats.values())
    busy = sum(v[2] for k, v in stats.items() if "'poll' of 'select.epoll'" not in k[2])
    sock = sum(v[2] for k, v in stats.items() if k[2] in SOCKET)
    passes = sum(v[1] for k, v in stats.items() if k[2] == "_run_once")
    return {
        "calls": calls / n,
        "python": (busy - sock) / n * 1e6,
        "socket": sock / n * 1e6,
        "passes": passes / n,
    }


async def drive(path: Path | None, n: int) -> dict[str, dict[str, float]]:
    """One run: a nats-server as serve starts it, the service child, the phases."""
    from netledger.common.natsserver import EmbeddedNats, free_port
    from netledger.journal.stream import connect, ensure_stream
    from netledger.service.client import Client

    tmp = Path(tempfile.mkdtemp(prefix="alloc-calls-"))
    server = EmbeddedNats(data_dir=tmp / "nats", port=free_port(), sync_interval="always")
    server.start()
    prof = str(tmp / "phase.prof")
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    child = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, __file__, "--serve", server.url, prof],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert child.stdout is not None
    got: dict[str, dict[str, float]] = {}
    try:
        if "ready" not in await asyncio.to_thread(child.stdout.readline):
            raise RuntimeError("the command service did not start")
        conn = await connect(server.url, name="alloc-calls-admin")
        await ensure_stream(conn)
        admin = Client(conn)
        [one] = await admin.create_networks(
            label="one", cidr="10.100.0.0/16", network_size=65536, mode="flat", bridge="br1"
        )
        many = await admin.create_networks(
            label="many", cidr="10.102.0.0/16", num_networks=16, network_size=4096,
            mode="vxlan", vni_start=200_000,
        )  # fmt: skip
        nets = {1: [one["id"]], 16: [m["id"] for m in many]}
        await allocations(server.url, 16, nets[16], 320, "warm16")  # hosts join their networks
        await allocations(server.url, 16, nets[1], 320, "warm1")
        for name, clients, networks in PHASES:
            child.send_signal(signal.SIGUSR1)
            await asyncio.sleep(0.2)
            await allocations(server.url, clients, nets[networks], n, name.replace(" ", ""))
            await asyncio.sleep(0.2)  # the last answers' tails (the follower's read-back)
            child.send_signal(signal.SIGUSR2)
            if "dumped" not in await asyncio.to_thread(child.stdout.readline):
                raise RuntimeError("the command service did not write its profile")
            got[name] = figures(prof, n)
        await conn.close()
    finally:
        child.terminate()
        child.wait()
        server.stop()
    return got


async def allocations(url: str, clients: int, networks: list[str], n: int, tag: str) -> None:
    from netledger.service.client import Client

    conns = [await Client.connect(url) for _ in range(clients)]
    todo = iter(range(n))

    async def worker(k: int) -> None:
        for i in todo:
            await conns[k].allocate_fixed_ip(
                f"{tag}-{i}", network_id=networks[k % len(networks)], host=f"h{k}"
            )

    await asyncio.gather(*(worker(k) for k in range(clients)))
    for c in conns:
        await c.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ab", metavar="REV", help="compare with this commit, interleaved")
    ap.add_argument("--n", type=int, default=1500, help="allocations per phase")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--serve", nargs=2, metavar=("URL", "PROFILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
        return
    trees: dict[str, Path | None] = {"this tree": None}
    if args.ab:
        trees[args.ab] = tree(args.ab)
    runs: dict[str, list[dict[str, dict[str, float]]]] = {k: [] for k in trees}
    for _ in range(args.repeats):
        for name, path in trees.items():
            runs[name].append(asyncio.run(drive(path, args.n)))
    print(f"per allocation, median of {args.repeats} interleaved runs ({args.n} a phase):")
    for phase, _, _ in PHASES:
        for name in trees:
            med = {
                k: statistics.median(r[phase][k] for r in runs[name])
                for k in ("calls", "python", "socket", "passes")
            }
            print(
                f"  {phase:>8} {name:>12}: {med['calls']:5.0f} calls, python {med['python']:4.0f}"
                f" µs, socket {med['socket']:4.0f} µs, {med['passes']:4.2f} loop passes"
            )
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
