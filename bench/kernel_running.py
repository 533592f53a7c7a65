"""Kernel benchmark, the running parts: an executor process in a namespace (started, watched
through its liveness status, stopped), ``ip monitor`` watching links appear, and the command →
kernel latency runs — closed loop (one allocation after another) and open loop (Poisson
arrivals). bench/kernel.py measures with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from benchlib import NETLEDGER, Rss, Stack, percentile, run_measured_async, vmhwm_mb

from netledger.journal.liveness import live_bucket
from netledger.service.client import Client

NAME = "kernel"
HOST, LAT_HOST = "bench-h1", "bench-h2"


def executor_argv(url: str, host: str, ns: str, once: bool, *extra: str) -> list[str]:
    return [
        NETLEDGER,
        "--nats",
        url,
        "executor",
        "run",
        "--host",
        host,
        "--netns",
        ns,
        *(["--once"] if once else []),
        *extra,
    ]


async def statuses(st: Stack, host: str) -> Any:
    """A watch on the host's liveness entry (``host.<h>.status``): one JSON per pass that
    changed something and at least every --heartbeat."""
    assert st.conn is not None
    kv = await live_bucket(st.conn, create=True)
    return await kv.watch(f"host.{host}.status")


class LinkWatch:
    """``ip -n NS monitor link``: when did a VXLAN link first show up inside its bridge."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.seen: dict[str, float] = {}
        self.events: dict[str, asyncio.Event] = {}
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "ip",
            "-n",
            self.ns,
            "monitor",
            "link",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            now = time.perf_counter()
            line = raw.decode(errors="replace")
            if "master" not in line or ":" not in line:
                continue
            name = line.split(":")[1].strip().split("@")[0]
            if name not in self.seen:
                self.seen[name] = now
                self.events.setdefault(name, asyncio.Event()).set()

    async def wait(self, name: str, timeout: float = 60.0) -> float:
        await asyncio.wait_for(self.events.setdefault(name, asyncio.Event()).wait(), timeout)
        return self.seen[name]

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def spawn_logged(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


@contextlib.asynccontextmanager
async def running_executor(
    st: Stack, host: str, ns: str, *extra: str, prefix: list[str] | None = None
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A running executor, yielded once its first pass is done (its liveness entry says so).
    ``prefix``: what runs it instead of ``netledger`` (bench/kernel_tail.py: an interpreter and
    bench/executor_probe.py)."""
    watch = await statuses(st, host)
    # The entry outlives an executor: a watch starts with the last one's (passes and all), so
    # only an entry of this executor (started after the spawn) says its first pass is done.
    spawned = time.time()
    argv = executor_argv(st.url, host, ns, False, *extra)
    if prefix is not None:
        argv[:1] = prefix
    p = await asyncio.to_thread(
        spawn_logged,
        argv,
        st.tmp / f"executor-{host}.log",
    )
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                entry = await watch.updates(timeout=1.0)
            except Exception:
                entry = None
            got = json.loads(entry.value) if entry is not None and entry.value else {}
            if got.get("passes", 0) >= 1 and float(got.get("started") or 0) >= spawned:
                break
            if p.poll() is not None or time.monotonic() > deadline:
                tail = (st.tmp / f"executor-{host}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"executor for {host} did not start: {tail}")
        await watch.stop()
        yield p
    finally:
        if p.poll() is None:
            p.terminate()
            try:
                await asyncio.to_thread(p.wait, 15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def sweep_seconds(st: Stack, host: str, ns: str, passes: int = 5) -> float:
    """The median duration of a running executor's periodic full sweep (nothing to change),
    as it reports it in its liveness entry."""
    watch = await statuses(st, host)
    durations: list[float] = []
    async with running_executor(st, host, ns, "--interval", "1", "--heartbeat", "0.5"):
        deadline = time.monotonic() + 120
        while len(durations) < passes and time.monotonic() < deadline:
            try:
                entry = await watch.updates(timeout=2.0)
            except Exception:
                continue
            if entry is None or not entry.value:
                continue
            s = json.loads(entry.value)
            if s.get("reason") == "periodic" and not s.get("changes"):
                # the pass and its dump of the kernel (run beside the passes before it)
                durations.append((float(s["duration_ms"]) + float(s.get("dump_ms") or 0)) / 1000)
    await watch.stop()
    if not durations:
        raise RuntimeError("no periodic pass reported")
    return percentile(durations, 50)


async def latency(st: Stack, nets: list[dict[str, object]], ns: str, rss: Rss) -> list[float]:
    watch = LinkWatch(ns)
    await watch.start()
    lat: list[float] = []
    try:
        async with running_executor(st, LAT_HOST, ns) as p:
            async with await Client.connect(st.url) as c:
                for n in nets:
                    t = time.perf_counter()
                    await c.allocate_fixed_ip(
                        f"lat-{n['id']}", network_id=str(n["id"]), host=LAT_HOST
                    )
                    seen = await watch.wait(f"vx{n['vni']}")
                    lat.append(seen - t)
            rss.note("executor", vmhwm_mb(p.pid), f"{NAME} (following, {len(nets)} changes)")
    finally:
        await watch.stop()
    return lat


#: Open-loop arrivals (commands arriving steadily, not one after another): the rate, and the
#: executor's drift-sweep interval and heartbeat for the run (defaults 30 s and 60 s: shortened
#: so that a run of a few seconds meets several sweeps; the row's note says so).
OPEN_RATE = 30.0
OPEN_INTERVAL_FULL, OPEN_INTERVAL_SMALL = 5.0, 1.0
#: the run lasts this many sweep intervals
OPEN_SWEEPS = 2.4


async def open_loop(
    st: Stack,
    nets: list[dict[str, object]],
    arrivals: list[float],
    ns: str,
    rss: Rss,
    interval: float,
) -> tuple[list[float], dict[str, Any]]:
    """Allocations sent at ``arrivals`` (one per network of ``nets``, each new to the host)
    whatever the previous ones are doing, to a running executor with ``--interval`` and
    ``--heartbeat`` ``interval``: each latency from its scheduled arrival (so that a late send
    counts against us) until ``ip monitor`` shows the VXLAN link in its bridge. Returns the
    latencies and the executor's last liveness status (passes, snapshot writes)."""
    watch = LinkWatch(ns)
    await watch.start()
    lat: list[float] = []
    status: dict[str, Any] = {}
    try:
        async with running_executor(
            st, LAT_HOST, ns, "--interval", str(interval), "--heartbeat", str(interval)
        ) as p:
            first = await _status_now(st)
            async with await Client.connect(st.url) as c:

                async def one(n: dict[str, object], at: float) -> None:
                    await c.allocate_fixed_ip(
                        f"open-{n['id']}", network_id=str(n["id"]), host=LAT_HOST
                    )
                    lat.append(await watch.wait(f"vx{n['vni']}") - at)

                t0 = time.perf_counter()
                tasks = []
                for n, at in zip(nets, arrivals, strict=True):
                    delay = t0 + at - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    tasks.append(asyncio.create_task(one(n, t0 + at)))
                await asyncio.gather(*tasks)
                # the run ends with its arrivals; the sweep schedule is checked against it
                status = await _status_now(st)
                status["run_s"] = time.perf_counter() - t0
                status["first"] = first
            rss.note("executor", vmhwm_mb(p.pid), f"{NAME} (open loop, {len(nets)} changes)")
    finally:
        await watch.stop()
    return lat, status


async def _status_now(st: Stack) -> dict[str, Any]:
    """The latency host's liveness entry as it is now ({} if none)."""
    assert st.conn is not None
    kv = await live_bucket(st.conn, create=True)
    try:
        entry = await kv.get(f"host.{LAT_HOST}.status")
    except Exception:
        return {}
    return json.loads(entry.value) if entry and entry.value else {}


async def executor_once(st: Stack, ns: str, rss: Rss, count: int) -> float:
    """``executor run --once`` in the fresh namespace ``ns``: its wall seconds."""
    fin = await run_measured_async(executor_argv(st.url, HOST, ns, True))
    if fin.returncode != 0:
        raise RuntimeError(f"executor --once failed ({fin.returncode}): {fin.stderr[-2000:]}")
    rss.note("executor", fin.maxrss_mb, f"{NAME} (--once, {count:,} networks)")
    return fin.seconds
