"""Allocation throughput against the raw JetStream limits measured in the same run.

    .venv/bin/python bench/alloc.py [--size 1.0]

Against one nats-server and one command-service process as ``serve`` ships them
(``sync_interval: always``, the projector following the log in the service's process), serving
a cloud with a long history (bench/history_gen.py: 100,000 events, 1,000 networks, 200 hosts at
size 1.0; the service and its projector caught up before anything is measured): raw sequential
publish-ack with the OCC header, raw ``publish_async``, raw atomic batches and pipelined chains
of 16, and netledger allocations — one client sequential (vs publish-ack), 16 concurrent
clients on one network (vs its batch floor and its chain floor), 64 on one network and 16
clients over 16 networks (vs ``publish_async``). Each pair runs interleaved, the median of the
rounds. Then commands arriving steadily (bench/alloc_open.py): Poisson arrivals at half the
16 x 16 rate, the latency of each allocation against a raw publish-ack at the same arrivals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import msgpack
from alloc_open import LOAD, during_catch_up_rows, open_loop_rows
from benchlib import SHIPPED, Row, Rss, alternate, attempt, scaled, stack
from history_gen import build_history

from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.types import FixedIpAllocated
from netledger.journal import natsclient
from netledger.journal.stream import Connection, connect, stream_config
from netledger.service.client import Client

NAME = "alloc"
TITLE = "Allocation (command service, end to end)"
CLIENTS = 16
_uniq = itertools.count()
#: the cloud the service already serves when the allocations start (at size 1.0): a log of
#: this many events (bench/history_gen.py: creations, fills, then churn), these hosts, networks
HISTORY_EVENTS = 100_000
HISTORY_HOSTS = 200
HISTORY_NETWORKS = 1000


#: The raw limits append to a twin of the log's stream (same storage and settings: file store,
#: duplicate window, atomic batches) that nothing follows. Appended to the log's own stream, the
#: command service (and any executor) reads back and decodes every raw append, and on 2 cores
#: that took ~30 % off the raw sequential rate and 10-25 % off ``publish_async`` (measured
#: 2026-12-05, interleaved): the raw limit was measured low, every ratio against it flattered.
RAW_STREAM = "BENCHRAW"
RAW_PREFIX = "benchraw"


async def raw_connect(url: str) -> Connection:
    """A connection whose stream is the twin (created on first use)."""
    conn = await connect(url, stream=RAW_STREAM)
    cfg = stream_config(RAW_STREAM)
    cfg.subjects = [f"{RAW_PREFIX}.>"]
    cfg.description = "netledger benchmarks: the raw limits"
    await conn.js.add_stream(cfg)  # the same definition again is no change
    return conn


def payload(i: int, network_id: str = "raw") -> bytes:
    """A FixedIpAllocated envelope of realistic size (~150 bytes)."""
    ev = FixedIpAllocated(
        network_id=network_id,
        address=f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}",
        instance=f"i-{i}",
        mac="02:16:3e:00:00:01",
        host="h1",
        project="p1",
    )
    return encode(Envelope(ev, f"raw-{i}", f"raw-{i}", time.time()))


async def raw_sequential_occ(url: str, n: int) -> float:
    """The floor of one-at-a-time appends: publish, wait for the ack, OCC header set."""
    conn = await raw_connect(url)
    subject = f"{RAW_PREFIX}.rawocc{next(_uniq)}"
    data = [payload(i) for i in range(n)]
    seq = 0
    t = time.perf_counter()
    for i in range(n):
        ack = await conn.js.publish(
            subject,
            data[i],
            headers={
                "Nats-Expected-Last-Subject-Sequence": str(seq),
                "Nats-Msg-Id": f"{subject}-{i}",
            },
        )
        seq = ack.seq
    dt = time.perf_counter() - t
    await conn.close()
    return n / dt


async def raw_async(url: str, n: int) -> float:
    """The floor of concurrent appends from Python: ``publish_async`` with many in flight."""
    conn = await raw_connect(url)
    subject = f"{RAW_PREFIX}.rawasync{next(_uniq)}"
    data = [payload(i) for i in range(n)]
    t = time.perf_counter()
    for i in range(n):
        await conn.js.publish_async(subject, data[i], headers={"Nats-Msg-Id": f"{subject}-{i}"})
    await conn.js.publish_async_completed()
    dt = time.perf_counter() - t
    await conn.close()
    return n / dt


async def alloc_rate(
    url: str, clients: int, networks: list[str], n: int, hosts: list[str] | None = None
) -> float:
    """``n`` allocations by ``clients`` concurrent clients, client k on network k mod len, for
    an instance on host k mod len(``hosts``) (default one host, ``h1``)."""
    conns = [await Client.connect(url) for _ in range(clients)]
    prefix = f"a{next(_uniq)}"
    counter = iter(range(n))
    on = hosts or ["h1"]

    async def worker(k: int) -> None:
        c = conns[k]
        for i in counter:
            await c.allocate_fixed_ip(
                f"{prefix}-{i}", network_id=networks[k % len(networks)], host=on[k % len(on)]
            )

    t = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    dt = time.perf_counter() - t
    for c in conns:
        await c.close()
    return n / dt


async def raw_atomic(url: str, k: int, n: int) -> float:
    """Atomic batches of ``k`` with the OCC header, one after another: the floor of one lane's
    group commit (the file store pays a fixed cost per atomic commit)."""
    conn = await raw_connect(url)
    subject = f"{RAW_PREFIX}.rawbatch{next(_uniq)}"
    data = [payload(i) for i in range(n)]
    seq = 0
    t = time.perf_counter()
    for start in range(0, n, k):
        bid = uuid.uuid4().hex
        chunk = data[start : start + k]
        for i, d in enumerate(chunk, 1):
            h = {
                "Nats-Msg-Id": f"{subject}-{start + i}",
                "Nats-Batch-Id": bid,
                "Nats-Batch-Sequence": str(i),
            }
            if i == 1:
                h["Nats-Expected-Last-Subject-Sequence"] = str(seq)
            if i == len(chunk):
                h["Nats-Batch-Commit"] = "1"
                seq = (await conn.js.publish(subject, d, headers=h)).seq
            else:
                await conn.nc.publish(subject, d, headers=h)
    dt = time.perf_counter() - t
    await conn.close()
    return n / dt


async def raw_chain(url: str, k: int, n: int) -> float:
    """Pipelined chains of ``k`` single messages, one chain after another: what a lane sends
    for a round of fewer than ``batch_threshold`` single-event decisions (service/lanes.py,
    ``Appender.append_chain``): all ``k`` at once, the first with the subject OCC header, every
    later one with ``Nats-Expected-Last-Msg-Id`` = the previous one's id; then the acks (the
    last one's sequence is the next chain's OCC)."""
    conn = await raw_connect(url)
    subject = f"{RAW_PREFIX}.rawchain{next(_uniq)}"
    data = [payload(i) for i in range(n)]
    seq = 0
    t = time.perf_counter()
    for start in range(0, n, k):
        futs = []
        prev = ""
        for i in range(start, min(n, start + k)):
            mid = f"{subject}-{i}"
            h = {"Nats-Msg-Id": mid}
            if prev:
                h["Nats-Expected-Last-Msg-Id"] = prev
            else:
                h["Nats-Expected-Last-Subject-Sequence"] = str(seq)
            prev = mid
            futs.append(asyncio.ensure_future(conn.js.publish(subject, data[i], headers=h)))
        seq = (await asyncio.gather(*futs))[-1].seq
    dt = time.perf_counter() - t
    await conn.close()
    return n / dt


async def group_floor_rows(
    url: str, network: str, hosts: list[str], n: int, rounds: int
) -> list[Row]:
    """The floor under 16 clients on one network (issue 15's goal: 0.8 of raw atomic batches of
    16): the same requests answered by responders that decide nothing but commit a lane's
    waiting requests together (bench/floor_responder.py ``--group``: a pipelined chain, each
    client answered from its link's ack, as the lane sends; ``--group-atomic``: one atomic
    batch; ``--group-direct``: the chain with the acks straight to the clients, a protocol
    netledger does not have), each reading back what it appends. Interleaved with raw atomic
    batches of 16 and with ours, ``rounds`` times; medians."""
    kinds = {
        "chain": ("--group", "a pipelined chain, each answered from its ack"),
        "atomic": ("--group-atomic", "one atomic batch, answered from its commit's ack"),
        "direct": ("--group-direct", "a pipelined chain, the acks straight to the clients"),
    }
    got: dict[str, list[float]] = {k: [] for k in ("raw", "ours", *kinds)}
    async with (
        floor_responder(url, kinds["chain"][0]),
        floor_responder(url, kinds["atomic"][0]),
        floor_responder(url, kinds["direct"][0]),
    ):
        for _ in range(rounds):
            got["raw"].append(await raw_atomic(url, CLIENTS, n))
            for kind in kinds:
                got[kind].append(await floor_rate(url, CLIENTS, 1, n * 2, group=kind))
            got["ours"].append(await alloc_rate(url, CLIENTS, [network], n * 2, hosts))
    med = {k: statistics.median(v) for k, v in got.items()}
    raw_name = f"raw atomic batches of {CLIENTS}"
    rows = [
        Row(
            NAME,
            f"raw atomic batches of {CLIENTS}, OCC (sequential)",
            med["raw"],
            "msg/s",
            baseline="raw limit",
            note="interleaved with the responders below",
        )
    ]
    for kind, (_, how) in kinds.items():
        rows.append(
            Row(
                NAME,
                f"{CLIENTS} clients, 1 network: a responder deciding nothing, group commit"
                f" as {how}",
                med[kind],
                "req/s",
                med[kind] / med["raw"],
                raw_name,
                "the waiting requests of one lane committed together, read back by a"
                " Follower; no decision"
                + ("; a protocol netledger does not have" if kind == "direct" else ""),
            )
        )
    rows.append(
        Row(
            NAME,
            f"{CLIENTS} clients, 1 network vs the group-commit responder (chain)",
            med["ours"],
            "alloc/s",
            med["ours"] / med["chain"],
            "the floor",
            f"interleaved; {med['ours'] / med['raw']:.2f} of the raw atomic batches beside it",
        )
    )
    return rows


@asynccontextmanager
async def floor_responder(url: str, *args: str) -> AsyncIterator[None]:
    """bench/floor_responder.py running: a responder that appends and answers, deciding
    nothing (the floor under any service's rate; see its docstring)."""
    script = Path(__file__).with_name("floor_responder.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), url, *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        if line.strip() != b"ready":
            raise RuntimeError(f"floor responder did not start: {line!r}")
        yield
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


async def floor_rate(
    url: str,
    clients: int,
    lanes: int,
    n: int,
    follow: bool = True,
    direct: bool = False,
    group: str = "",
) -> float:
    """``n`` requests to the floor responder by ``clients`` concurrent clients, client k on
    lane k mod ``lanes``, each built and read as :meth:`Client.request` does (a msgpack map
    with a command id and the actor; the reply unpacked). ``direct``: to the responder whose
    append is acked straight to the client (its answer is JetStream's ack, checked for a
    sequence). ``group`` ``"chain"`` / ``"atomic"``: to the responder that commits a lane's
    waiting requests as one pipelined chain / one atomic batch (group commit, many clients on
    one lane)."""
    from floor_responder import (
        SUBJECT,
        SUBJECT_DIRECT,
        SUBJECT_GROUP,
        SUBJECT_GROUP_ATOMIC,
        SUBJECT_GROUP_DIRECT,
        SUBJECT_NO_FOLLOW,
    )

    served = (
        SUBJECT_GROUP
        if group == "chain"
        else SUBJECT_GROUP_ATOMIC
        if group == "atomic"
        else SUBJECT_GROUP_DIRECT
        if group == "direct"
        else SUBJECT_DIRECT
        if direct
        else SUBJECT
        if follow
        else SUBJECT_NO_FOLLOW
    )

    conns = [await natsclient.connect(servers=[url]) for _ in range(clients)]
    for nc in conns:
        await nc.ready_for_requests()
    counter = iter(range(n))
    actor = SYSTEM.to_wire()

    async def worker(k: int) -> None:
        nc, lane = conns[k], str(k % lanes)
        for i in counter:
            data = msgpack.packb(
                {
                    "command_id": uuid.uuid4().hex,
                    "actor": actor,
                    "args": {"instance": f"f-{i}", "network_id": lane, "host": "h1"},
                }
            )
            reply, _ = await nc.request_raw(f"{served}.{lane}", data, 5.0)
            if direct or group == "direct":
                assert json.loads(reply).get("seq"), reply
            else:
                assert msgpack.unpackb(reply)["ok"]

    t = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(clients)))
    dt = time.perf_counter() - t
    for nc in conns:
        await nc.close()
    return n / dt


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process and its living descendants have used (``/proc/*/stat``):
    the command service's projector writes from two forked processes of its own, whose CPU
    the service's figure left out until Dec 6 (~600 us an allocation beside one client)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (st := _stat(int(name))) is not None:
            kids.setdefault(int(st[1]), []).append(int(name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        st = _stat(p)
        if st is not None:
            total += int(st[11]) + int(st[12])
        todo.extend(kids.get(p, ()))
    return total / os.sysconf("SC_CLK_TCK")


def _ceiling(
    what: str,
    raw: float,
    label: str,
    service: list[float],
    clients: list[float],
    server: list[float],
) -> Row:
    """The most allocations a second the CPU they took allows on this machine's cores (the
    medians of the rounds: command service + the clients, in this process, + nats-server),
    as if every process ran perfectly in parallel: more overlap cannot beat it, only less CPU
    per allocation (issue 15)."""
    cores = os.cpu_count() or 1
    sv, cl, ns = (statistics.median(x) for x in (service, clients, server))
    total = sv + cl + ns
    rate = cores / total * 1e6 if total > 0 else 0.0
    return Row(
        NAME,
        f"{what}: ceiling of its CPU on {cores} cores",
        rate,
        "alloc/s",
        rate / raw,
        label,
        f"CPU {total:.0f} us/alloc: service {sv:.0f} + clients {cl:.0f} + nats-server {ns:.0f}",
    )


async def run(size: float, rss: Rss) -> list[Row]:
    n = scaled(2000, size, 20)
    rounds = 3 if size >= 0.5 else 1
    rows: list[Row] = []
    async with stack(NAME, service=False) as st:
        url = st.url
        assert st.conn is not None
        # The state a real cloud is in: a long history, hundreds of networks, many hosts; the
        # service starts on it (folding it) and its projector catches up before any figure.
        t = time.perf_counter()
        h = await build_history(
            st.conn,
            scaled(HISTORY_EVENTS, size, 2000),
            hosts=max(10, round(HISTORY_HOSTS * size)),
            networks=max(20, round(HISTORY_NETWORKS * size)),
        )
        built = time.perf_counter() - t
        t = time.perf_counter()
        await st.start_service()
        ready = time.perf_counter() - t
        caught_up = await st.wait_projected(h.last_seq)
        rows.append(
            Row(
                NAME,
                "the cloud served: events in the log before the first allocation",
                h.last_seq,
                "events",
                note=f"{len(h.networks):,} networks, {len(h.hosts):,} hosts,"
                f" {len(h.instances):,} live instances (bench/history_gen.py, written in"
                f" {built:.1f} s); service ready in {ready:.1f} s, its projector caught up"
                f" {caught_up:.1f} s later; {SHIPPED}",
            )
        )
        hosts = h.hosts
        admin = Client(st.conn)
        [one] = await admin.create_networks(
            label="seq", cidr="10.100.0.0/16", network_size=65536, mode="flat", bridge="br1"
        )
        [shared] = await admin.create_networks(
            label="conc", cidr="10.101.0.0/16", network_size=65536, mode="flat", bridge="br2"
        )
        many = await admin.create_networks(
            label="many",
            # A /16 each: the open loops below run at half the closed-loop capacity, which
            # on a fast run (2,059/s) asked more than 16 x 4,096 addresses held (nothing
            # deallocates between phases). 10.112-127 is clear of history_gen's 10.0-10.19.
            cidr="10.112.0.0/12",
            num_networks=CLIENTS,
            network_size=65536,
            mode="vxlan",
            vni_start=200_000,  # the cloud's networks hold VNIs from 1000
        )
        # Warm-up; each client's host joins its networks here (a two-event decision), not in
        # a measured round.
        await alloc_rate(url, 1, [one["id"]], max(10, n // 20), hosts)
        await alloc_rate(url, 4 * CLIENTS, [shared["id"]], 4 * CLIENTS, hosts)
        await alloc_rate(url, CLIENTS, [m["id"] for m in many], CLIENTS, hosts)

        assert st.service is not None and st.server.proc is not None
        pid = st.service.pid
        server_pid = st.server.proc.pid

        async def pair(
            label: str,
            unit_raw: str,
            raw: Callable[[], Awaitable[float]],
            ours: Callable[[], Awaitable[float]],
            raw_name: str,
            what: str,
            ceiling: bool = False,
            floor: Callable[..., Awaitable[float]] | None = None,
            note: str = "",
        ) -> tuple[float, float] | None:
            # The command service's CPU per allocation (what limits the rates without waits:
            # issue 15), the median over the rounds, in the figure's note; with ``ceiling``
            # also the clients' (this process) and the nats-server's, and the rate that CPU
            # allows on this machine's cores.
            cpu: list[float] = []
            clients: list[float] = []
            server: list[float] = []
            rates: list[float] = []

            async def measured() -> float:
                c0, t0 = cpu_seconds(pid), time.perf_counter()
                p0, s0 = time.process_time(), cpu_seconds(server_pid)
                rate = await ours()
                done = rate * (time.perf_counter() - t0)
                if done:
                    cpu.append((cpu_seconds(pid) - c0) / done * 1e6)
                    clients.append((time.process_time() - p0) / done * 1e6)
                    server.append((cpu_seconds(server_pid) - s0) / done * 1e6)
                rates.append(rate)
                return rate

            got = await attempt(rows, NAME, what, lambda: alternate(raw, measured, rounds))
            if got is not None:
                r, a = got
                cpu_note = (
                    f"service CPU {statistics.median(cpu):.0f} us/alloc (its projector's"
                    " processes included)"
                    if cpu
                    else ""
                )
                rows.append(Row(NAME, raw_name, r, unit_raw, baseline="raw limit"))
                rows.append(
                    Row(
                        NAME,
                        what,
                        a,
                        "alloc/s",
                        a / r,
                        label,
                        "; ".join(filter(None, [cpu_note, note])),
                    )
                )
                if ceiling and cpu:
                    rows.append(_ceiling(what, r, label, cpu, clients, server))
            if floor is None or got is None:
                return got
            # The floor under any service: the same requests answered by a process that only
            # appends (bench/floor_responder.py), interleaved with ours.
            what_floor = f"{what}: a responder deciding nothing (the floor)"
            what_direct = f"{what}: a responder deciding nothing, the ack straight to the client"
            async with (
                floor_responder(url),
                floor_responder(url, "--no-follow"),
                floor_responder(url, "--direct"),
            ):
                pair_floor = await attempt(
                    rows, NAME, what_floor, lambda: alternate(lambda: floor(True), ours, rounds)
                )
                no_follow = await attempt(
                    rows,
                    NAME,
                    what_floor,
                    lambda: alternate(lambda: floor(True), lambda: floor(False), rounds),
                )
                direct = await attempt(
                    rows,
                    NAME,
                    what_direct,
                    lambda: alternate(
                        lambda: floor(True), lambda: floor(True, direct=True), rounds
                    ),
                )
            if pair_floor is not None:
                f, a = pair_floor
                rows.append(
                    Row(
                        NAME,
                        what_floor,
                        f,
                        "req/s",
                        f / got[0],
                        label,
                        "append with OCC + ack + reply, a Follower reading back; no decision",
                    )
                )
                rows.append(
                    Row(
                        NAME,
                        f"{what} vs the responder deciding nothing",
                        a,
                        "alloc/s",
                        a / f,
                        "the floor",
                        "interleaved with the floor",
                    )
                )
            if no_follow is not None:
                rows.append(
                    Row(
                        NAME,
                        f"{what}: a responder deciding nothing, not reading back",
                        no_follow[1],
                        "req/s",
                        no_follow[1] / got[0],
                        label,
                        f"interleaved with the floor above ({no_follow[0]:,.0f} req/s then)",
                    )
                )
            if direct is not None:
                rows.append(
                    Row(
                        NAME,
                        what_direct,
                        direct[1],
                        "req/s",
                        direct[1] / got[0],
                        label,
                        "a protocol netledger does not have: 4 messages a command, not 6"
                        f" (interleaved with the floor above, {direct[0]:,.0f} req/s then)",
                    )
                )
            return got

        await pair(
            "raw publish-ack OCC",
            "msg/s",
            lambda: raw_sequential_occ(url, n),
            lambda: alloc_rate(url, 1, [one["id"]], n, hosts),
            "raw publish-ack, OCC header (sequential)",
            "1 client, sequential",
            floor=lambda follow, direct=False: floor_rate(url, 1, 1, n, follow, direct),
        )
        await pair(
            "raw publish_async",
            "msg/s",
            lambda: raw_async(url, n * 2),
            lambda: alloc_rate(url, CLIENTS, [shared["id"]], n * 2, hosts),
            "raw publish_async (concurrent)",
            f"{CLIENTS} clients, 1 network (group commit)",
        )
        await pair(
            f"raw atomic batches of {CLIENTS}",
            "msg/s",
            lambda: raw_atomic(url, CLIENTS, n),
            lambda: alloc_rate(url, CLIENTS, [shared["id"]], n * 2, hosts),
            f"raw atomic batches of {CLIENTS}, OCC (sequential)",
            f"{CLIENTS} clients, 1 network vs its batch floor",
            # The most its CPU allows on this machine against the goal (0.8 of this floor):
            # more overlap of the lane's rounds cannot beat it (bench/README.md, section 1).
            ceiling=True,
            note="the issue's goal; with <= 16 in flight the lane sends pipelined chains, not"
            " atomic batches: see the chain floor below",
        )
        # What the lane really sends with <= 16 requests in flight (below batch_threshold 24):
        # single events pipelined in a chain (Appender.append_chain), so its floor is the chain.
        await pair(
            f"raw pipelined chains of {CLIENTS}",
            "msg/s",
            lambda: raw_chain(url, CLIENTS, n),
            lambda: alloc_rate(url, CLIENTS, [shared["id"]], n * 2, hosts),
            f"raw pipelined chains of {CLIENTS}: subject OCC + last-msg-id (sequential)",
            f"{CLIENTS} clients, 1 network vs its chain floor",
            note="what the lane sends at this load (service/lanes.py)",
        )
        rows += (
            await attempt(
                rows,
                NAME,
                f"{CLIENTS} clients, 1 network: responders deciding nothing (group commit)",
                lambda: group_floor_rows(url, shared["id"], hosts, n, rounds),
            )
            or []
        )
        await pair(
            "raw publish_async",
            "msg/s",
            lambda: raw_async(url, n * 2),
            lambda: alloc_rate(url, 4 * CLIENTS, [shared["id"]], n * 2, hosts),
            "raw publish_async (concurrent)",
            f"{4 * CLIENTS} clients, 1 network (group commit)",
        )
        spread = [m["id"] for m in many]
        got = await pair(
            "raw publish_async",
            "msg/s",
            lambda: raw_async(url, n * 2),
            lambda: alloc_rate(url, CLIENTS, spread, n * 2, hosts),
            "raw publish_async (concurrent)",
            f"{CLIENTS} clients, {CLIENTS} networks",
            ceiling=True,
            floor=lambda follow, direct=False: floor_rate(
                url, CLIENTS, CLIENTS, n * 2, follow, direct
            ),
        )
        # Commands arriving steadily: Poisson arrivals at half the closed-loop capacity just
        # measured (16 clients over 16 networks), allocation latency vs raw publish-ack's.
        capacity = got[1] if got else 0.0
        rows += (
            await attempt(
                rows,
                NAME,
                "open loop (Poisson arrivals)",
                lambda: open_loop_rows(url, capacity, size, spread, hosts),
            )
            or []
        )
        rss.note("command service", st.service_rss(), f"{NAME} (serve with its projector)")
        # The same arrivals right after serve starts, its projector catching up a new
        # projection of the whole log vs caught up.
        rows += (
            await attempt(
                rows,
                NAME,
                "open loop while the projector catches up",
                lambda: during_catch_up_rows(st, LOAD * capacity, size, spread, hosts),
            )
            or []
        )
    return rows


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
