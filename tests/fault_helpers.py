"""Real processes for the fault, cluster and auth tests.

* :class:`ServiceProc` — a command-service replica (``netledger serve --no-projector``) in its own
  process, so it can be SIGKILLed;
* :class:`Cluster` — three nats-server processes forming a JetStream cluster on loopback;
* :func:`allocate_all` — N clients allocating fixed IPs, each command retried with its command
  id until it is acknowledged, recording the acknowledged answers and the unavailability;
* :func:`audit` — read the whole log and count acknowledged / found / duplicated.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgpack

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.errors import NetledgerError, Unavailable
from netledger.events.types import FixedIpAllocated
from netledger.journal.follow import Follower
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService

NETLEDGER = str(Path(sys.executable).parent / "netledger")
T = TypeVar("T")


# --- command-service replicas ---------------------------------------------------------------


@dataclass
class ServiceProc:
    url: str
    log_path: Path
    user: str | None = None
    password: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.user:
            env["NETLEDGER_USER"] = self.user
            env["NETLEDGER_PASSWORD"] = self.password or ""
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(f"--- start {self.starts}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [NETLEDGER, "--nats", self.url, "serve", "--no-projector"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    async def wait_ready(self, timeout: float = 60.0) -> None:
        marker = f"--- start {self.starts}\n".encode()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.log_path.read_bytes() if self.log_path.exists() else b""
            tail = text[text.rfind(marker) :] if marker in text else b""
            if b"netledger ready" in tail:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"service exited:\n{text.decode(errors='replace')[-3000:]}")
            await asyncio.sleep(0.05)
        raise AssertionError(self.log_path.read_text(errors="replace")[-3000:])

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- a 3-node cluster ------------------------------------------------------------------------


@dataclass
class Cluster:
    """Three nats-server processes on loopback; stream replicas 3 survive one loss."""

    base: Path
    size: int = 3
    extra_config: str = ""
    nodes: list[EmbeddedNats] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = [free_port() for _ in range(self.size)]
        routes = [free_port() for _ in range(self.size)]
        # One key per line: nats-server rejects one-line blocks (JETSTREAM_NOTES.md).
        route_lines = "\n".join(f"    nats-route://127.0.0.1:{p}" for p in routes)
        for i in range(self.size):
            cluster = (
                "cluster {\n  name: netledger\n"
                f"  listen: 127.0.0.1:{routes[i]}\n  routes: [\n{route_lines}\n  ]\n}}\n"
            )
            self.nodes.append(
                EmbeddedNats(
                    data_dir=self.base / f"n{i}",
                    port=ports[i],
                    server_name=f"n{i}",
                    sync_interval="default",
                    extra_config=cluster + self.extra_config,
                )
            )

    @property
    def urls(self) -> str:
        return ",".join(n.url for n in self.nodes)

    def start(self) -> None:
        for n in self.nodes:
            n.start()

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def node(self, name: str) -> EmbeddedNats:
        return next(n for n in self.nodes if n.server_name == name)

    async def wait_formed(self, conn: Connection, timeout: float = 120.0) -> None:
        """Poll JetStream until the meta group has a leader (1-2 s; once 47 s under load).

        Each question with a short timeout: one asked before the meta group has a leader gets
        no answer at all (not an error), and with the connection's 10 s timeout the first
        question alone held every cluster test 10 s, the cluster formed after 0.3-1 s."""
        end = time.monotonic() + timeout
        last: Exception | None = None
        js = conn.nc.jetstream(timeout=0.5)
        while time.monotonic() < end:
            try:
                await js.account_info()
                return
            except Exception as exc:
                last = exc
                await asyncio.sleep(0.25)
        raise AssertionError(f"cluster did not form: {last!r}")


async def stream_leader(conn: Connection, timeout: float = 60.0) -> str:
    js = conn.nc.jetstream(timeout=1.0)  # short: this measures how long the election takes
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            info = await js.stream_info(conn.stream)
            if info.cluster and info.cluster.leader:
                return str(info.cluster.leader)
        except Exception:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError("no stream leader")


async def replicas_current(conn: Connection, timeout: float = 60.0) -> list[Any]:
    """Wait until every replica of the stream is current; return them."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            info = await conn.js.stream_info(conn.stream)
            reps = (info.cluster.replicas or []) if info.cluster else []
            if len(reps) == 2 and all(r.current and not r.offline for r in reps):
                return list(reps)
        except Exception:
            pass
        await asyncio.sleep(0.25)
    raise AssertionError("a replica did not catch up")


# --- clients that allocate and remember what was acknowledged -----------------------------


@dataclass
class AllocationRun:
    acked: dict[str, dict[str, Any]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    ack_times: list[float] = field(default_factory=list)
    retries: int = 0

    def longest_gap(self, after: float | None = None) -> float:
        """The longest time without any acknowledgement (the unavailability seen by clients)."""
        t = sorted(self.ack_times)
        if after is not None:
            before = [x for x in t if x <= after]
            t = t[len(before) - 1 :] if before else t
        return max((b - a for a, b in itertools.pairwise(t)), default=0.0)


async def allocate_all(
    url: str,
    n_clients: int,
    instances: list[tuple[str, str]],
    run: AllocationRun,
    *,
    connect_kwargs: dict[str, Any] | None = None,
    timeout: float = 2.0,
    within: float = 300.0,
) -> AllocationRun:
    """Allocate every (instance, network); a command is retried with its id until answered,
    for at most ``within`` seconds in all (then AssertionError: a log that never takes writes
    again fails the test with what was acknowledged, instead of holding it until its limit)."""
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in instances:
        queue.put_nowait(item)
    give_up = time.monotonic() + within

    async def worker() -> None:
        c = await Client.connect(url, **(connect_kwargs or {}))
        c.timeout = timeout
        c.deadline = 10.0
        try:
            while not queue.empty():
                inst, net = queue.get_nowait()
                while True:
                    if time.monotonic() > give_up:
                        raise AssertionError(
                            f"not all allocated within {within:.0f} s: {len(run.acked)} of"
                            f" {len(instances)} acknowledged, {run.retries} retries,"
                            f" errors {dict(run.errors)}"
                        )
                    try:
                        r = await c.allocate_fixed_ip(
                            inst, network_id=net, host="h1", command_id=f"cmd-{inst}"
                        )
                        break
                    except Unavailable:
                        run.retries += 1
                    except NetledgerError as err:
                        # e.g. a replica answering "unavailable" mid-failover: same id again.
                        run.errors[err.code] += 1
                        run.retries += 1
                        await asyncio.sleep(0.2)
                run.acked[inst] = r
                run.ack_times.append(time.monotonic())
        finally:
            await c.close()

    await asyncio.gather(*(worker() for _ in range(n_clients)))
    return run


async def read_all(conn: Connection) -> list[tuple[int, str, Any]]:
    out: list[tuple[int, str, Any]] = []
    f = Follower(conn, lambda seq, subj, env, err, msg: out.append((seq, subj, env)))
    await f.start()
    try:
        await f.catch_up(timeout=120)
    finally:
        await f.stop()
    return out


@dataclass
class Audit:
    acked: int
    found: int
    duplicated_instances: int
    duplicated_addresses: int
    lost: int
    mismatched: int

    def line(self) -> str:
        return (
            f"acked={self.acked} found={self.found} lost={self.lost}"
            f" dup_instances={self.duplicated_instances}"
            f" dup_addresses={self.duplicated_addresses} mismatched={self.mismatched}"
        )


async def audit(
    url: str, run: AllocationRun, connect_kwargs: dict[str, Any] | None = None
) -> Audit:
    """Compare the acknowledged answers with the log: every ack found once, nothing twice."""
    conn = await connect(url, name="audit", **(connect_kwargs or {}))
    try:
        events = await read_all(conn)
    finally:
        await conn.close()
    allocs = [
        e.event for _, _, e in events if e is not None and isinstance(e.event, FixedIpAllocated)
    ]
    per_instance = Counter(a.instance for a in allocs)
    per_address = Counter((a.network_id, a.address) for a in allocs)
    by_instance = {a.instance: a for a in allocs}
    found = sum(1 for inst in run.acked if inst in by_instance)
    mismatched = sum(
        1
        for inst, r in run.acked.items()
        if inst in by_instance and by_instance[inst].address != r["address"]
    )
    return Audit(
        acked=len(run.acked),
        found=found,
        duplicated_instances=sum(1 for c in per_instance.values() if c > 1),
        duplicated_addresses=sum(1 for c in per_address.values() if c > 1),
        lost=len(run.acked) - found,
        mismatched=mismatched,
    )


def report(name: str, text: str) -> None:
    """Figures for docs: printed (pytest -s) and appended to $NETLEDGER_FIGURES if set."""
    line = f"[{name}] {text}"
    print(line)
    path = os.environ.get("NETLEDGER_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


# --- a command service in a background event loop (for hypothesis' synchronous tests) --------


class BackgroundService:
    """A nats-server and a :class:`CommandService` on an event loop in a thread, so that a
    synchronous hypothesis test can send hundreds of examples to one running service."""

    def __init__(self, tmp: Path) -> None:
        self.server = EmbeddedNats(tmp / "nats", free_port(), sync_interval="default")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.conn: Connection | None = None
        self.service: CommandService | None = None
        self.network_id = ""

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.server.start()
        self.thread.start()
        self.call(self._start())

    async def _start(self) -> None:
        self.conn = await connect(self.server.url, name="fuzz")
        await ensure_stream(self.conn)
        self.service = CommandService(self.conn)
        await self.service.start()
        nets = await Client(self.conn).create_networks(label="fz", cidr="10.70.0.0/22", mode="flat")
        self.network_id = nets[0]["id"]

    async def last_seq(self) -> int:
        assert self.conn is not None
        return await last_seq(self.conn)

    async def request(self, subject: str, raw: bytes) -> dict[str, Any]:
        assert self.conn is not None
        msg = await self.conn.nc.request(subject, raw, timeout=5.0)
        reply = msgpack.unpackb(msg.data, raw=False)
        assert isinstance(reply, dict)
        return reply

    async def publish_raw(self, subject: str, raw: bytes) -> int:
        assert self.conn is not None
        ack = await self.conn.js.publish(subject, raw, stream=self.conn.stream)
        return int(ack.seq)

    async def _stop(self) -> None:
        if self.service is not None:
            await self.service.close()
        if self.conn is not None:
            await self.conn.close()

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.server.stop()
