"""Commands arriving steadily (open loop): allocation latency at a Poisson arrival rate.

A closed loop (N clients, each sending its next request when the last is answered) shows the
most a service takes, not what a user feels: in a real cloud commands arrive when they arrive,
and one that comes while the service is busy waits. Here the arrivals are a Poisson process at
half the closed-loop capacity measured just before (bench/alloc.py, 16 clients over 16
networks), each request on a random one of those networks (its host fixed per network), sent
at its time whatever is still unanswered; its latency is from that time to the answer (so a
request delayed by the sender counts too: no coordinated omission). The raw limit is the same
arrivals as raw publishes with the OCC header (one subject per network; a subject's next
publish waits for its previous ack, whose sequence it needs — as a lane's decision does), timed
to the publish acknowledgement. Interleaved: raw, ours, raw, ours; the latencies pooled.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
from collections.abc import Awaitable, Callable
from typing import Any

from benchlib import Row, percentile, poisson_arrivals

from netledger.service.client import Client

NAME = "alloc"
#: connections the arrivals are spread over (a cloud's many API workers, not one)
CONNECTIONS = 16
#: the share of the closed-loop capacity the arrivals come at
LOAD = 0.5
#: seconds of arrivals per side at size 1.0, in two interleaved halves
DURATION = 24.0
_uniq = itertools.count()


async def _drive(
    times: list[float], lanes: list[int], send: Callable[[int, int], Awaitable[None]]
) -> list[float]:
    """Start ``send(i, lane)`` at each arrival time; the latency of each (s), from its time."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    # Only the requests in flight are held: a list of every task (~15,000 of 12 s, each done
    # one holding its frame) and the bench's own bookkeeping (history_gen's cloud, the rows so
    # far), all tracked objects, made this process's generation-2 collections 50-300 ms each,
    # two or three every 12 s of arrivals, and every request due meanwhile counted the pause
    # as the service's latency, raw's as the log's (bench/alloc_tail.py). This process stands
    # for the cloud's API workers, none of which holds either. The bookkeeping is collected and
    # frozen for the arrivals (unfrozen after them); what the arrivals make is collected as usual.
    in_flight: set[asyncio.Future[None]] = set()
    failed: list[BaseException] = []

    def finished(task: asyncio.Future[None]) -> None:
        in_flight.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            failed.append(exc)

    gc.collect()
    gc.freeze()

    async def one(i: int, due: float) -> None:
        await send(i, lanes[i])
        latencies.append(loop.time() - due)

    try:
        t0 = loop.time() + 0.05
        for i, at in enumerate(times):
            due = t0 + at
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.ensure_future(one(i, due))
            in_flight.add(task)
            task.add_done_callback(finished)
        await asyncio.gather(*in_flight)
    finally:
        gc.unfreeze()
    if failed:  # a request that failed fails the run, as gather over them all did
        raise failed[0]
    return latencies


async def open_loop_alloc(
    url: str, times: list[float], lanes: list[int], networks: list[str], hosts: list[str]
) -> list[float]:
    clients = [await Client.connect(url) for _ in range(CONNECTIONS)]
    prefix = f"o{next(_uniq)}"

    async def send(i: int, lane: int) -> None:
        await clients[i % CONNECTIONS].allocate_fixed_ip(
            f"{prefix}-{i}", network_id=networks[lane], host=hosts[lane % len(hosts)]
        )

    try:
        return await _drive(times, lanes, send)
    finally:
        for c in clients:
            await c.close()


async def open_loop_raw(url: str, times: list[float], lanes: list[int]) -> list[float]:
    from alloc import RAW_PREFIX, payload, raw_connect

    conn = await raw_connect(url)
    base = f"{RAW_PREFIX}.open{next(_uniq)}"
    seq: dict[int, int] = {}
    locks: dict[int, asyncio.Lock] = {}
    data = [payload(i) for i in range(len(times))]

    async def send(i: int, lane: int) -> None:
        subject = f"{base}.{lane}"
        async with locks.setdefault(lane, asyncio.Lock()):
            ack = await conn.js.publish(
                subject,
                data[i],
                headers={
                    "Nats-Expected-Last-Subject-Sequence": str(seq.get(lane, 0)),
                    "Nats-Msg-Id": f"{subject}-{i}",
                },
            )
            seq[lane] = ack.seq

    try:
        return await _drive(times, lanes, send)
    finally:
        await conn.close()


async def open_loop_rows(
    url: str, capacity: float, size: float, networks: list[str], hosts: list[str]
) -> list[Row]:
    """The open-loop rows: raw and ours p50 / p99 / max (ms), ours against raw (raw / ours)."""
    if capacity <= 0:
        raise RuntimeError("no closed-loop capacity measured to set the arrival rate from")
    rate = LOAD * capacity
    half = max(0.5, DURATION * size / 2)
    raw: list[float] = []
    ours: list[float] = []
    sent = 0
    for r in range(2):
        times = poisson_arrivals(rate, half, seed=r)
        rng = random.Random(100 + r)
        lanes = [rng.randrange(len(networks)) for _ in times]
        sent += len(times)
        raw += await open_loop_raw(url, times, lanes)
        ours += await open_loop_alloc(url, times, lanes, networks, hosts)
    what = (
        f"open loop: Poisson {rate:,.0f}/s (half the {len(networks)} x {len(networks)}"
        f" capacity) over {2 * half:.0f} s"
    )
    rows: list[Row] = []
    for label, p in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        rv = percentile(raw, p) * 1e3
        ov = percentile(ours, p) * 1e3
        rows.append(
            Row(
                NAME,
                f"{what}: raw publish-ack OCC, {label}",
                rv,
                "ms",
                baseline="raw limit",
                note=f"{len(raw):,} publishes, one subject per network, the same arrivals",
            )
        )
        rows.append(
            Row(
                NAME,
                f"{what}: allocation {label}",
                ov,
                "ms",
                rv / ov if ov > 0 else None,
                f"raw publish-ack OCC {label}",
                f"{len(ours):,} allocations of {sent:,} arrivals, command -> answer,"
                " from each arrival's time",
            )
        )
    return rows


async def during_catch_up_rows(
    st: Any, rate: float, size: float, networks: list[str], hosts: list[str]
) -> list[Row]:
    """Allocation latency while ``serve``'s projector catches up a new projection of the whole
    log (a new file, a rebuild after an upgrade) against the same arrivals once it has caught
    up: the projector runs as serve's child process (projector/child.py), reading beside the
    service instead of on its event loop (before: p50 0.8-1.6 s, p99 2-4 s on a 300 k-event log).
    ``st``: the bench's :class:`benchlib.Stack`, its service restarted for each side."""
    from netledger.journal.stream import last_seq

    seconds = max(1.0, 6.0 * size)
    out: dict[str, list[float]] = {"catching up": [], "caught up": []}
    behind = []
    end = 0
    rounds = 2 if size >= 0.5 else 1
    for r in range(rounds):
        for side in ("catching up", "caught up"):
            await st.stop_service()
            if side == "catching up":
                for f in st.serve_dir.glob("projection.db*"):
                    f.unlink()
            await st.start_service()
            times = poisson_arrivals(rate, seconds, seed=10 + r)
            rng = random.Random(200 + r)
            lanes = [rng.randrange(len(networks)) for _ in times]
            out[side] += await open_loop_alloc(st.url, times, lanes, networks, hosts)
            end = await last_seq(st.conn)
            if side == "catching up":
                behind.append(st.projected_seq())
            await st.wait_projected(end)
    rows: list[Row] = []
    what = f"open loop: Poisson {rate:,.0f}/s over {seconds:.0f} s right after serve starts"
    for label, p in (("p50", 50.0), ("p99", 99.0), ("max", 100.0)):
        up = percentile(out["caught up"], p) * 1e3
        catching = percentile(out["catching up"], p) * 1e3
        rows.append(Row(NAME, f"{what}, its projector caught up: allocation {label}", up, "ms"))
        rows.append(
            Row(
                NAME,
                f"{what}, its projector catching up a new projection: allocation {label}",
                catching,
                "ms",
                up / catching if catching else None,
                f"caught up {label}",
                f"the projection reached seq {min(behind):,}-{max(behind):,} of"
                f" ~{end:,} in that time (serve's projector: its own process,"
                f" niceness 10); {rounds} interleaved round(s) each, latencies pooled",
            )
        )
    return rows
