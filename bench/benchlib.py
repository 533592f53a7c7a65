"""What every benchmark needs: a result row, a nats-server + command-service stack, peak RSS.

Each benchmark module defines ``NAME``, ``TITLE`` and ``async def run(size: float, rss: Rss)
-> list[Row]``; ``size=1.0`` is the size the issue asks for, ``size=0.01`` a smoke test. Every
figure is reported next to the raw limit measured *in the same run*, as a ratio, because the
machine is shared and absolute rates move by ±40% from one minute to the next.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from netledger.common.natsserver import EmbeddedNats, free_port  # noqa: E402
from netledger.common.peak_rss import vmhwm_kib, wait_peak  # noqa: E402
from netledger.journal.stream import Connection, connect, ensure_stream  # noqa: E402

T = TypeVar("T")
BIN = Path(sys.executable).parent
NETLEDGER = str(BIN / "netledger")


@dataclass
class Row:
    """One figure. ``ratio`` = this figure / ``baseline`` (both as rates: higher is better)."""

    bench: str
    metric: str
    value: float
    unit: str
    ratio: float | None = None
    baseline: str = ""
    note: str = ""


@dataclass
class Rss:
    """Peak resident memory (VmHWM, MB) per component, across every run that used it."""

    peaks: dict[str, float] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)

    def note(self, component: str, mb: float, where: str) -> None:
        if mb > self.peaks.get(component, 0.0):
            self.peaks[component] = mb
            self.where[component] = where


def scaled(full: int, size: float, minimum: int) -> int:
    return max(minimum, int(full * size))


def vmhwm_mb(pid: int) -> float:
    """Peak RSS of a running process (VmHWM), MB; 0 when it is gone."""
    return vmhwm_kib(pid) / 1024


@dataclass
class Finished:
    returncode: int
    seconds: float
    maxrss_mb: float
    stdout: str
    stderr: str


def run_measured(argv: list[str], timeout: float = 900.0, **kw: object) -> Finished:
    """Run a child to completion; wall time and the peak RSS of its largest process (VmHWM
    polled while it runs, netledger/common/peak_rss.py: ``wait4``'s ru_maxrss counts the RSS of
    the bench at the fork — it reported 237 MB for every executor ``--once`` until Dec 7)."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t = time.perf_counter()
    # a group of its own: wait_peak's kill at the timeout reaches a process whose parent exited
    kw.setdefault("process_group", 0)
    p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    _, peak_kib = wait_peak(p, timeout=timeout)
    dt = time.perf_counter() - t
    out.seek(0)
    err.seek(0)
    return Finished(
        p.returncode,
        dt,
        peak_kib / 1024,
        out.read().decode(errors="replace"),
        err.read().decode(errors="replace"),
    )


async def run_measured_async(argv: list[str], timeout: float = 900.0) -> Finished:
    return await asyncio.to_thread(run_measured, argv, timeout)


def netledger_has(command: str) -> bool:
    """Whether the CLI has a top-level command (projector/executor are plugins)."""
    p = subprocess.run([NETLEDGER, command, "--help"], capture_output=True, text=True, timeout=60)
    return p.returncode == 0


#: What ``netledger serve`` ships with (netledger/cli.py): an embedded nats-server with
#: ``sync_interval: always`` (a write is acknowledged once it is on disk) and a projector running
#: in the service's process, following the log into DATA/projection.db. Every benchmark stack
#: uses it unless it asks otherwise, and so do the raw limits measured on the same server (the
#: fsync policy is the server's, for every stream on it: the raw twin stream too).
SHIPPED_SYNC = "always"
SHIPPED = "as shipped: sync_interval always, serve with its projector"


class Stack:
    """A nats-server with a temporary store, a connection, optionally a command service.

    By default the server and the service are what ``serve`` ships (:data:`SHIPPED`);
    ``sync_interval="default"`` / ``projector=False`` give the old bench setup, for a row that
    says so."""

    def __init__(
        self, tmp: Path, sync_interval: str = SHIPPED_SYNC, projector: bool = True
    ) -> None:
        self.tmp = tmp
        self.sync_interval = sync_interval
        self.projector = projector
        self.server = EmbeddedNats(
            data_dir=tmp / "nats", port=free_port(), sync_interval=sync_interval
        )
        self.conn: Connection | None = None
        self.service: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def serve_dir(self) -> Path:
        """``serve --data``: where its projector keeps projection.db (never the user's)."""
        return self.tmp / "serve"

    @property
    def projection_db(self) -> Path:
        return self.serve_dir / "projection.db"

    async def start(self) -> Connection:
        await asyncio.to_thread(self.server.start)
        self.conn = await connect(self.url, name="bench")
        await ensure_stream(self.conn)
        return self.conn

    async def start_service(self, extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
        """The command service as its own process (as deployed: ``serve``, with its projector
        unless this stack has none), ready once it caught up."""
        argv = [NETLEDGER, "--nats", self.url, "serve", "--data", str(self.serve_dir)]
        if not self.projector:
            argv.append("--no-projector")
        p = await asyncio.to_thread(
            subprocess.Popen,
            [*argv, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert p.stdout is not None
        line = await asyncio.to_thread(p.stdout.readline)
        if "ready" not in line:
            p.kill()
            p.wait()
            raise RuntimeError(f"command service did not start: {line!r}")
        self.service = p
        return p

    def projected_seq(self) -> int:
        """The checkpoint of the service's projector (0 before it wrote one)."""
        try:
            uri = self.projection_db.resolve().as_uri() + "?mode=ro"  # ("#", "?" in a path)
            db = sqlite3.connect(uri, uri=True, timeout=1.0)
            try:
                row = db.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return 0
        return int(row[0]) if row else 0

    async def wait_projected(self, seq: int, timeout: float = 600.0) -> float:
        """Wait until the service's projector has projected the log up to ``seq`` (a real
        cloud's projector is caught up: its catch-up must not be charged to a measurement);
        the seconds waited."""
        t = time.perf_counter()
        while self.projector and self.projected_seq() < seq:
            if self.service is None or self.service.poll() is not None:
                raise RuntimeError("the command service (and its projector) stopped")
            if time.perf_counter() - t > timeout:
                raise RuntimeError(
                    f"projector at {self.projected_seq()} of {seq} after {timeout} s"
                )
            await asyncio.sleep(0.1)
        return time.perf_counter() - t

    def service_rss(self) -> float:
        return vmhwm_mb(self.service.pid) if self.service else 0.0

    async def stop_service(self) -> None:
        p = self.service
        self.service = None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                await asyncio.to_thread(p.wait, 10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    async def close(self) -> None:
        await self.stop_service()
        if self.conn is not None:
            await self.conn.close()
        await asyncio.to_thread(self.server.stop)


@asynccontextmanager
async def stack(
    prefix: str,
    service: bool = True,
    *,
    sync_interval: str = SHIPPED_SYNC,
    projector: bool = True,
) -> AsyncIterator[Stack]:
    """A :class:`Stack` in a temporary folder, as shipped unless asked otherwise."""
    with tempfile.TemporaryDirectory(prefix=f"nl-bench-{prefix}-") as d:
        st = Stack(Path(d), sync_interval=sync_interval, projector=projector)
        try:
            await st.start()
            if service:
                await st.start_service()
            yield st
        finally:
            await st.close()


def _cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of every core since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return fields[3] + fields[4], sum(fields)  # idle + iowait


def settle(idle: float = 0.85, window: float = 0.1, timeout: float = 5.0) -> float:
    """Wait until the machine is idle again (two windows in a row at least ``idle`` idle over
    every core), at most ``timeout`` seconds; the seconds waited. A step's own aftermath — the
    kernel tearing down the links of a namespace just deleted, a child process exiting — must
    not be charged to the next measurement (the raw limit and ours alike)."""
    start = time.perf_counter()
    calm = 0
    while calm < 2 and time.perf_counter() - start < timeout:
        i0, t0 = _cpu_times()
        time.sleep(window)
        i1, t1 = _cpu_times()
        calm = calm + 1 if t1 > t0 and (i1 - i0) / (t1 - t0) >= idle else 0
    return time.perf_counter() - start


async def alternate(
    a: Callable[[], Awaitable[float]], b: Callable[[], Awaitable[float]], rounds: int
) -> tuple[float, float]:
    """Median of ``rounds`` interleaved runs of two measurements (A B A B ...), so that a noisy
    neighbour hits both sides alike; the ratio of the medians is what we report."""
    ra: list[float] = []
    rb: list[float] = []
    for _ in range(rounds):
        ra.append(await a())
        rb.append(await b())
    return statistics.median(ra), statistics.median(rb)


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return 0.0
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def attempt(
    rows: list[Row], bench: str, what: str, fn: Callable[[], Awaitable[T]]
) -> T | None:
    """Run one phase; on failure record a FAILED row (the rest of the benchmark still runs)."""
    try:
        return await fn()
    except Exception as exc:
        msg = " ".join(str(exc).split())[:200]
        print(f"   {what}: FAILED: {exc.__class__.__name__}: {msg}", flush=True)
        rows.append(Row(bench, what, 0.0, "", note=f"FAILED: {exc.__class__.__name__}: {msg}"))
        return None


def poisson_arrivals(rate: float, seconds: float, seed: int = 13) -> list[float]:
    """Arrival times (s from the start) of a Poisson process of ``rate`` a second over
    ``seconds``: the open-loop runs' commands (alloc_open.py, kernel_running.py)."""
    rng = random.Random(seed)
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < seconds:
        out.append(t)
        t += rng.expovariate(rate)
    return out
