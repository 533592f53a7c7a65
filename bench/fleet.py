"""1,000 hosts following the log at once: what a fleet costs the log (the brief: "1 M events and
1,000 simulated hosts").

bench/history_executor.py measures one executor reading its share, bench/kernel.py a few in
namespaces; here the whole cloud's hosts follow the log together, each the way an executor
does without its kernel: a connection of its own and an ``executor/view.py`` ``HostView`` (its
follower with the share's filter subjects, the fold, the share growing as the fold says),
spread over a few worker processes (bench/fleet_worker.py). The cloud is history_gen's (1,000
hosts, 5,000 networks, the young log at size 1.0), written straight into the stream, with the
command service as ``serve`` ships it started on it; ~1 % of the hosts are network hosts
serving a few single-host networks created on top. Then, in order:

1. commands arriving steadily with no fleet attached (half the run; the other half at the end);
2. the fleet's start: every view reading its share and following it (seconds, server CPU,
   the workers' CPU and memory), then the server idle with the fleet attached;
3. commands arriving steadily (Poisson, bench/fleet_loop.py: allocations on random hosts of
   random networks, ~10 % joining a network new to their host, ~5 % in the single-host
   networks, and the deallocations of them): command -> its host's view has applied it
   (p50/p99/max, one clock: the workers note when a view applied an event of a known instance);
   the messages handed to every host per command against the hosts whose share it is in; the
   server's, the service's and the workers' CPU per command;
4. the raw limit: the same hosts as raw readers (their share's history read raw, one consumer
   per subject, then one raw ordered consumer with the same filter subjects on a twin stream)
   and the same arrivals as raw acknowledged publishes;
5. the other half of the commands with no fleet.

Every figure is next to its raw limit of the same run (bench/README.md): the fleet's start vs
the raw fleet's, latency vs raw publish -> raw consumer, server CPU per command vs no fleet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloc import cpu_seconds
from benchlib import HERE, SHIPPED, Row, Rss, Stack, poisson_arrivals, scaled, settle, stack
from fleet_loop import Arrival, Sent, appended, fold_held, make_plan, send_commands, send_raw
from fleet_rows import FleetStart, Loop, RawRun, fleet_rows
from history import cloud_size
from history_gen import build_history
from nats.js.api import StorageType, StreamConfig

from netledger.events.ids import EVENT_PREFIX
from netledger.executor.share import Share
from netledger.journal.stream import last_seq, stream_config
from netledger.service.client import Client

NAME = "fleet"
TITLE = "1,000 hosts following the log at once: command -> every host's view, server CPU"
YOUNG = 100_000
#: commands a second (open loop) and for how long at size 1.0: with the fleet, raw, without
RATE = 30.0
FLEET_S = 60.0
RAW_S = 30.0  # with the raw fleet; then with no consumers
BARE_S = 20.0  # twice: before the fleet starts and after it is gone
IDLE_S = 10.0
#: after a start, before the idle figure: the one-off consumers of the share reads (the raw
#: reader leaves them to the server) are gone after their inactivity threshold (5 s)
LINGER_S = 6.0
WORKERS = 8
#: below this size a run is a smoke run (tests/bench runs 0.01), which measures nothing: see run()
SMOKE_BELOW = 0.05
#: one host in this many runs as a network host (``executor run --network-host``)
NETWORK_HOST_EVERY = 100
SINGLE_NETWORKS = 4
#: the consumers the benchmark's streams are given room for (as shipped a stream holds at most
#: nats-server's default_max_consumers: :func:`consumer_limit`)
CONSUMERS = 50_000
MAX_CONSUMERS_ERR = 10026
#: the probe of that default stops here (a server with no default: "at least this many")
PROBE_MAX = 5_000
#: a smoke run's probe: past nats-server 2.15's default of 1,000, so it still meets one
SMOKE_PROBE_MAX = 1_100
RAW_STREAM = "FLEETRAW"
#: one host in this many reads its share raw for the raw limit of the fleet's start (scaled to
#: the fleet: ~2 minutes of CPU at 1,000 hosts otherwise)
RAW_SAMPLE = 10
RAW_PREFIX = "fleetraw"
#: the fleet's start stops (its workers killed) if the machine's available memory falls below
#: this: every view holds its share's fold (~17 MB at 5,000 networks: every network's
#: creation is on the registry, which every host reads), and the machine is shared
MEM_FLOOR_MB = 2048


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return 0.0


class WorkerProc:
    """A fleet worker process (bench/fleet_worker.py) and its JSON-line pipe."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def spawn(cls, log: Path) -> WorkerProc:
        with log.open("ab") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / "fleet_worker.py"),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                limit=1 << 26,
            )
        w = cls(proc, log)
        await w.ask({"op": "progress"})  # imported and listening
        return w

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"fleet worker {self.pid} exited: {tail}")
        answer = json.loads(line)
        if "error" in answer:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"fleet worker {self.pid}: {answer['error']}; its log: {tail}")
        return dict(answer["ok"])

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.ask({"op": "stop"}), 60)
                await asyncio.wait_for(self.proc.wait(), 10)
            except Exception:
                self.kill()
                await self.proc.wait()

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


class Fleet:
    """The worker processes of one phase."""

    def __init__(self, workers: list[WorkerProc]) -> None:
        self.workers = workers
        #: the workers' own peak RSS before any host (imports): left out of a host's figure
        self.base_mb = self.rss_mb()

    @classmethod
    async def spawn(cls, st: Stack, n: int, label: str) -> Fleet:
        return cls([await WorkerProc.spawn(st.tmp / f"{label}-{k}.log") for k in range(n)])

    def cpu(self) -> float:
        return sum(cpu_seconds(w.pid) for w in self.workers)

    def rss_mb(self) -> float:
        from benchlib import vmhwm_mb

        return sum(vmhwm_mb(w.pid) for w in self.workers)

    async def ask_all(self, reqs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return list(
            await asyncio.gather(*(w.ask(r) for w, r in zip(self.workers, reqs, strict=True)))
        )

    async def ask_each(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        return await self.ask_all([dict(req) for _ in self.workers])

    async def dump(self, st: Stack, label: str) -> dict[str, Any]:
        """What every host saw (merged over the workers)."""
        paths = [str(st.tmp / f"{label}-{k}.json") for k in range(len(self.workers))]
        await self.ask_all([{"op": "dump", "path": p} for p in paths])
        views: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        for p in paths:
            d = json.loads(await asyncio.to_thread(Path(p).read_text))
            views.update(d["views"])
            raw.update(d["raw"])
        return {"views": views, "raw": raw}

    async def close(self) -> None:
        await asyncio.gather(*(w.close() for w in self.workers))


@dataclass
class Meter:
    """CPU seconds of the server, the service (with its projector's processes) and a fleet's
    workers, and wall seconds, from :meth:`start` to :meth:`stop`."""

    st: Stack
    fleet: Fleet | None = None

    def _now(self) -> tuple[float, float, float, float]:
        assert self.st.server.proc is not None
        server = cpu_seconds(self.st.server.proc.pid)
        service = cpu_seconds(self.st.service.pid) if self.st.service else 0.0
        return time.monotonic(), server, service, self.fleet.cpu() if self.fleet else 0.0

    def start(self) -> None:
        self.t0 = self._now()

    def stop(self) -> dict[str, float]:
        t1 = self._now()
        names = ("seconds", "server", "service", "workers")
        return {n: b - a for n, a, b in zip(names, self.t0, t1, strict=True)}


def split(items: list[Any], n: int) -> list[list[Any]]:
    return [items[k::n] for k in range(n)]


async def idle(st: Stack, fleet: Fleet | None, seconds: float) -> dict[str, float]:
    m = Meter(st, fleet)
    m.start()
    await asyncio.sleep(seconds)
    return m.stop()


def added(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    """Two spans measured by :class:`Meter` as one (their rates weighted by their lengths)."""
    return {k: a[k] + b[k] for k in a}


async def commands(
    st: Stack, plan: list[Arrival], prefix: str, fleet: Fleet | None, after_s: float = 1.0
) -> tuple[list[Sent], dict[str, float], int, int]:
    """The plan's commands, open loop: (sent, CPU over the loop and ``after_s`` after its last
    answer, the first and last sequence of what they appended)."""
    assert st.conn is not None
    first = await last_seq(st.conn) + 1
    if fleet is not None:
        await fleet.ask_each({"op": "record", "from_seq": first})
    m = Meter(st, fleet)
    m.start()
    sent = await send_commands(st.url, plan, prefix)
    await asyncio.sleep(after_s)
    cpu = m.stop()
    return sent, cpu, first, await last_seq(st.conn)


async def start_fleet(
    st: Stack, hosts: list[tuple[str, bool]], n_workers: int, need_mb: float
) -> tuple[Fleet, FleetStart]:
    """Every host's view started at once over the workers, until all are ready."""
    if mem_available_mb() < need_mb + MEM_FLOOR_MB:
        raise MemoryError(
            f"{len(hosts):,} views need ~{need_mb:,.0f} MB, the machine has"
            f" {mem_available_mb():,.0f} MB available (floor {MEM_FLOOR_MB} MB)"
        )
    fleet = await Fleet.spawn(st, n_workers, "views")
    settle()
    m = Meter(st, fleet)
    m.start()
    work = asyncio.gather(
        *(
            w.ask({"op": "views", "url": st.url, "hosts": chunk, "prefix": "fa-"})
            for w, chunk in zip(
                fleet.workers, split([list(h) for h in hosts], n_workers), strict=True
            )
        )
    )
    try:
        while not work.done():
            await asyncio.wait([work], timeout=0.5)
            if not work.done() and mem_available_mb() < MEM_FLOOR_MB:
                for w in fleet.workers:
                    w.kill()
                raise MemoryError(
                    f"the machine's available memory fell below {MEM_FLOOR_MB} MB while the"
                    f" views started (workers' peak {fleet.rss_mb():,.0f} MB)"
                )
        answers = work.result()
    except BaseException:
        work.cancel()
        await fleet.close()
        raise
    cpu = m.stop()
    subjects: dict[str, list[str]] = {}
    for a in answers:
        subjects.update(a["subjects"])
    read = sum(int(a["read"]) for a in answers)
    failed = [f for a in answers for f in a["failed_starts"]]
    rss = fleet.rss_mb() - fleet.base_mb
    return fleet, FleetStart(cpu, subjects, read, rss, failed=failed)


async def start_raw(
    st: Stack, subjects: dict[str, list[str]], n_workers: int
) -> tuple[Fleet, FleetStart]:
    """The raw limit of the fleet's start: the same hosts reading their share raw (one host in
    :data:`RAW_SAMPLE`, all at once, scaled to the whole fleet: the read is the same work a
    host), then each a connection and a raw ordered consumer with the same filter subjects on
    the twin stream (all of them)."""
    assert st.conn is not None
    await st.conn.js.add_stream(
        StreamConfig(
            name=RAW_STREAM,
            subjects=[f"{RAW_PREFIX}.>"],
            storage=StorageType.FILE,
            allow_direct=True,
            max_consumers=CONSUMERS,
        )
    )
    fleet = await Fleet.spawn(st, n_workers, "raw")
    hosts = [[h, s] for h, s in sorted(subjects.items())]
    every = RAW_SAMPLE if len(hosts) >= 10 * RAW_SAMPLE else 1
    sample = hosts[::every]
    rename = [f"{EVENT_PREFIX}.", f"{RAW_PREFIX}."]
    try:
        settle()
        m = Meter(st, fleet)
        m.start()
        answers = await fleet.ask_all(
            [{"op": "read_raw", "url": st.url, "hosts": c} for c in split(sample, n_workers)]
        )
        reading = m.stop()
        m.start()
        await fleet.ask_all(
            [
                {"op": "follow_raw", "url": st.url, "hosts": c, "stream": RAW_STREAM,
                 "rename": rename}
                for c in split(hosts, n_workers)
            ]
        )  # fmt: skip
        following = m.stop()
    except BaseException:
        await fleet.close()
        raise
    scale = len(hosts) / len(sample)
    cpu = {k: reading[k] * scale + following[k] for k in reading}
    read = round(sum(int(a["read"]) for a in answers) * scale)
    rss = fleet.rss_mb() - fleet.base_mb
    return fleet, FleetStart(cpu, subjects, read, rss, sampled=len(sample))


async def consumer_limit(st: Stack, probe_max: int = PROBE_MAX) -> int:
    """How many consumers a stream defined as netledger defines its log (journal/stream.py
    ``stream_config``: no consumer limit of its own) accepts on this server: made until refused
    (nats-server 2.15 gives every stream a default of 1,000), on a stream of its own."""
    from nats.js.api import ConsumerConfig, DeliverPolicy
    from nats.js.errors import BadRequestError

    assert st.conn is not None
    js = st.conn.js
    name = "FLEETLIMIT"
    await js.add_stream(dataclasses.replace(stream_config(name), subjects=["fleetlimit.>"]))
    made = 0
    try:
        while made < probe_max:
            try:
                await js.add_consumer(
                    name,
                    ConsumerConfig(
                        deliver_policy=DeliverPolicy.NEW,
                        filter_subject=f"fleetlimit.{made}",
                        deliver_subject=f"_fleetlimit.{made}",
                        mem_storage=True,
                    ),
                )
            except BadRequestError as exc:
                if exc.err_code != MAX_CONSUMERS_ERR:
                    raise
                break
            made += 1
    finally:
        await js.delete_stream(name)
    return made


async def raise_consumer_limit(st: Stack) -> None:
    """As an operator would (``nats stream edit NETLEDGER --max-consumers N``; the service's
    ``ensure_stream`` keeps an operator's limits): room for the fleet's consumers."""
    assert st.conn is not None
    info = await st.conn.js.stream_info(st.conn.stream)
    await st.conn.js.update_stream(dataclasses.replace(info.config, max_consumers=CONSUMERS))


def raw_subject(network: str) -> str:
    return f"{RAW_PREFIX}.network.{network}"


async def run(size: float, rss: Rss) -> list[Row]:
    shape = cloud_size(size)
    scale = min(1.0, size)
    fleet_s = max(3.0, FLEET_S * scale)
    raw_s = max(2.0, RAW_S * scale)
    bare_s = max(2.0, BARE_S * scale)
    # A smoke run's figures mean nothing, so it waits for no figure's sake: its lingers, idle
    # spans and metering after a loop are short, its consumer probe stops sooner and two workers
    # carry its hosts (8 spawned one after another took ~4 s a phase; the lingers and idle spans
    # ~30 s of its ~60). Every step and command loop still runs.
    smoke = size < SMOKE_BELOW
    n_workers = 2 if smoke else min(WORKERS, shape["hosts"])
    linger_s = 0.5 if smoke else LINGER_S
    idle_s = 0.5 if smoke else max(2.0, IDLE_S * scale)
    after_s = 0.2 if smoke else 1.0  # a command loop's CPU is metered this long after its end
    async with stack(NAME, service=False) as st:
        assert st.conn is not None
        t = time.perf_counter()
        h = await build_history(
            st.conn, scaled(YOUNG, size, 1000), hosts=shape["hosts"], networks=shape["networks"]
        )
        built = time.perf_counter() - t
        t = time.perf_counter()
        await st.start_service()
        ready = time.perf_counter() - t
        caught_up = await st.wait_projected(h.last_seq)
        admin = Client(st.conn)
        single = [
            n["id"]
            for n in await admin.create_networks(
                label="single",
                cidr="10.200.0.0/22",
                num_networks=SINGLE_NETWORKS,
                network_size=64,
                mode="vxlan",
                vni_start=300_000,  # the cloud's networks hold VNIs from 1000
            )
        ]
        shipped_limit = await consumer_limit(st, SMOKE_PROBE_MAX if smoke else PROBE_MAX)
        await raise_consumer_limit(st)
        network_hosts = set(h.hosts[::NETWORK_HOST_EVERY])
        compute = [x for x in h.hosts if x not in network_hosts]
        held = {n: {} for n in h.networks} | {n: {} for n in single}
        for x in h.instances.values():
            held[x.network_id][x.host] = held[x.network_id].get(x.host, 0) + 1

        def bare_plan(seed: int) -> list[Arrival]:
            return make_plan(poisson_arrivals(RATE, bare_s, seed), held, single, compute, seed)

        cloud_note = (
            f"{len(h.hosts):,} hosts ({len(network_hosts)} network hosts), {len(h.networks):,}"
            f" networks + {len(single)} single-host, {len(h.instances):,} live instances"
            f" (bench/history_gen.py, written in {built:.1f} s); service ready in {ready:.1f} s,"
            f" its projector caught up {caught_up:.1f} s later; {SHIPPED}"
        )
        bare: list[Loop] = []
        idle_bare = await idle(st, None, idle_s)
        sent, cpu, first, last = await commands(st, bare_plan(1), "fb", None, after_s)
        bare.append(Loop(sent, cpu, first, last))
        # What those commands left allocated is in the shares the fleet starts with.
        fold_held(held, await appended(st.conn, first, last))
        # The share of each host by executor/share.py's rule on the history's own model.
        model = {
            x: Share(x, x in network_hosts).subjects(
                {n for n, hs in held.items() if hs.get(x)}
                | (set(single) if x in network_hosts else set())
            )
            for x in h.hosts
        }
        times = poisson_arrivals(RATE, fleet_s, seed=7)
        plan = make_plan(times, held, single, compute, seed=7)
        need = len(h.hosts) * (len(h.networks) * 3.4 + 300) / 1024  # measured: ~3.4 KB a network
        fleet, started = await start_fleet(
            st, [(x, x in network_hosts) for x in h.hosts], n_workers, need
        )
        try:
            await asyncio.sleep(linger_s)
            settle()
            idle_fleet = await idle(st, fleet, idle_s)
            before = await fleet.ask_each({"op": "progress"})
            sent, cpu, first, last = await commands(st, plan, "fa", fleet, after_s)
            # Bracketed: at 30 commands a second the fleet's heartbeats are most of the
            # server's CPU, and the figure less them is only as good as their rate.
            idle_fleet = added(idle_fleet, await idle(st, fleet, idle_s))
            synced = await fleet.ask_each({"op": "sync"})
            seen = await fleet.dump(st, "views")
            rss.note("command service", st.service_rss(), f"{NAME} ({len(h.hosts):,} hosts)")
        finally:
            await fleet.close()
        ours = Loop(sent, cpu, first, last, seen)
        resubscribed = sum(int(a["resubscriptions"]) for a in synced) - sum(
            int(a["resubscriptions"]) for a in before
        )
        raw_plan = [a for a in plan if a.at < raw_s]
        fleet, raw_started = await start_raw(st, started.subjects, n_workers)
        try:
            await asyncio.sleep(linger_s)
            settle()
            idle_raw = await idle(st, fleet, idle_s)
            await fleet.ask_each({"op": "record", "from_seq": 0})
            m = Meter(st, fleet)
            m.start()
            raw_sent = await send_raw(st.conn, raw_plan, "fr", raw_subject, RAW_STREAM)
            await asyncio.sleep(after_s)
            raw_cpu = m.stop()
            idle_raw = added(idle_raw, await idle(st, fleet, idle_s))
            raw_seen = await fleet.dump(st, "raw")
        finally:
            await fleet.close()
        # The same publishes with no consumer: the server's own cost of one.
        lone_plan = raw_plan
        await asyncio.sleep(linger_s)
        settle()
        idle_bare = added(idle_bare, await idle(st, None, idle_s))
        m = Meter(st, None)
        m.start()
        lone_sent = await send_raw(st.conn, lone_plan, "fl", raw_subject, RAW_STREAM)
        await asyncio.sleep(after_s)
        lone = RawRun(lone_plan, lone_sent, m.stop(), {})
        sent, cpu, first, last = await commands(st, bare_plan(2), "fc", None, after_s)
        bare.append(Loop(sent, cpu, first, last))
        return await fleet_rows(
            st,
            cloud_note=cloud_note,
            last_seq_before=h.last_seq,
            hosts=h.hosts,
            network_hosts=network_hosts,
            single=set(single),
            held=held,
            model=model,
            plan=plan,
            started=started,
            raw_started=raw_started,
            idle={"none": idle_bare, "fleet": idle_fleet, "raw": idle_raw},
            ours=ours,
            raw=RawRun(raw_plan, raw_sent, raw_cpu, raw_seen),
            lone=lone,
            bare=bare,
            resubscribed=resubscribed,
            workers=n_workers,
            shipped_limit=shipped_limit,
        )


if __name__ == "__main__":
    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
