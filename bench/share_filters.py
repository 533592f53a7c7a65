"""What a share of many networks costs the server: consumers of N filter subjects (issue 13.3).

A host serving N networks follows N network subjects (plus four of its own). Measured on a
generated cloud history (bench/history_gen.py: 1,000 hosts, 5,000 networks, ~1 M events), for
N = 16, 64, 200, 1,000, 2,000 random network subjects:

* **create**: an ordered push consumer (what ``Follower`` uses) with N filter subjects, started
  at the end of the stream (what a resubscription at a network join does), then removed;
  a pull consumer (``add_consumer``) likewise; and an *update in place* of a named push
  consumer's ``filter_subjects`` with one subject more (what a join could do instead);
* **backfill** of the N subjects' whole history (seq 1 to the end): one consumer filtering all
  N; one consumer per subject (N of them, one after the other, each deleted after);
  one direct batch get per subject (``$JS.API.DIRECT.GET`` with ``next_by_subj``: no
  consumer at all); consumers of at most K subjects each; and the kind's wildcard
  (``netledger.evt.network.>``, the whole cloud's networks) from seq 1.

Each figure: wall seconds (median of ``--rounds``), the nats-server's CPU seconds over the same
operation (utime + stime from /proc; 10 ms ticks — summed over rounds, then divided), and
messages delivered. The machine is shared: CPU and counts are the figures to trust.

    .venv/bin/python bench/share_filters.py [--events 1000000] [--store DIR] [--rounds 3]

``--store DIR`` keeps the server's store: a second run reuses the history already built.

Measured 2026-12-04 (1,000,003 events, 5,000 network subjects holding 330,792; 3 rounds; ms of
nats-server CPU per operation, wall in brackets):

| N | create at end | update in place | one N-filter consumer from 1 | per subject | direct gets |
|---:|---:|---:|---:|---:|---:|
| 16 | ~1 (1.2) | ~1 (1.2) | 483 (446) | 30 (51) | 27 (51) |
| 64 | ~1 (1.5) | ~1 (1.3) | 753 (663) | 217 (361) | 120 (214) |
| 200 | 6 (5.6) | 4 (4.8) | 2,543 (2,276) | 437 (698) | 443 (951) |
| 1,000 | 82 (85) | 106 (120) | 11,477 (14,405) | 2,250 (3,843) | 1,953 (4,927) |
| 2,000 | 428 (422) | 404 (411) | 25,307 (33,259) | 6,193 (12,237) | 4,610 (12,577) |

Consumers of <= 16 or <= 64 filters each were no better than one of N (200: 3,033 / 2,527 ms;
2,000: 29,917 / 24,553 ms): every multi-filter consumer started far back scans the log. The
network wildcard from seq 1 (every network's 330,792 events): 6,887 ms CPU, 13,644 ms wall.
So: creating a consumer costs ~N² in its filters; a backfill goes one subject at a time; one
subject each beats the wildcard up to ~2,000 of 5,000 networks (executor/share.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from benchlib import EmbeddedNats, free_port  # noqa: E402
from history_gen import build_history  # noqa: E402
from nats.js.api import ConsumerConfig, DeliverPolicy  # noqa: E402

from netledger.events.ids import EVENT_PREFIX  # noqa: E402
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq  # noqa: E402

NETWORK_PREFIX = f"{EVENT_PREFIX}.network."
SIZES = (16, 64, 200, 1000, 2000)
TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) the nats-server used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Meter:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    async def measure(
        self, fn: Callable[[], Awaitable[int]], rounds: int
    ) -> tuple[float, float, int]:
        """(median wall s, server CPU s per round, messages of the last round)."""
        walls: list[float] = []
        n = 0
        cpu0 = server_cpu(self.pid)
        for _ in range(rounds):
            t = time.perf_counter()
            n = await fn()
            walls.append(time.perf_counter() - t)
        cpu = (server_cpu(self.pid) - cpu0) / rounds
        return statistics.median(walls), cpu, n


# --- reading -------------------------------------------------------------------------------


async def ordered(
    conn: Connection, subjects: list[str], start: int, upto: int, delete: bool = True
) -> int:
    """Messages of ``subjects`` from ``start`` through ``upto`` by one ordered push consumer
    (one subject: ``filter_subject``; several: ``filter_subjects``), counted."""
    got = 0
    last = 0
    done = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:
        nonlocal got, last
        got += 1
        last = msg.metadata.sequence.stream
        if (last >= upto or msg.metadata.num_pending == 0) and not done.done():
            done.set_result(None)

    cfg: dict[str, Any] = {
        "deliver_policy": DeliverPolicy.BY_START_SEQUENCE,
        "opt_start_seq": start,
    }
    if len(subjects) > 1:
        cfg["filter_subjects"] = subjects
    sub = await conn.js.subscribe(
        subjects[0] if len(subjects) == 1 else "",
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        config=ConsumerConfig(**cfg),
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    if start <= upto:
        info = await sub.consumer_info()
        if info.num_pending or (info.delivered and info.delivered.consumer_seq):
            await asyncio.wait_for(done, 600)
    name = sub._consumer if delete else None
    await sub.unsubscribe()
    if name:
        try:
            await conn.js.delete_consumer(conn.stream, name)
        except Exception:
            pass
    return got


async def direct_batch(conn: Connection, subject: str, start: int, upto: int) -> int:
    """Messages of one subject from ``start`` through ``upto`` by direct batch gets
    (``next_by_subj``, up to 1,000 a request): the subject index, no consumer."""
    nc = conn.nc
    inbox = nc.new_inbox()
    q: asyncio.Queue[Any] = asyncio.Queue()

    async def cb(msg: Any) -> None:
        q.put_nowait(msg)

    sub = await nc.subscribe(inbox, cb=cb)
    got = 0
    seq = start
    try:
        while seq <= upto:
            req = {"seq": seq, "next_by_subj": subject, "batch": 1000}
            await nc.publish(
                f"$JS.API.DIRECT.GET.{conn.stream}", json.dumps(req).encode(), reply=inbox
            )
            n = 0
            more = False
            while True:
                msg = await asyncio.wait_for(q.get(), 30)
                hdr = msg.headers or {}
                status = hdr.get("Status")
                if status:  # 204 EOB (end of batch), 404 nothing (left)
                    more = status == "204" and n == 1000
                    break
                s = int(hdr["Nats-Sequence"])
                n += 1
                if s <= upto:
                    got += 1
                seq = s + 1
            if not more:
                break
    finally:
        await sub.unsubscribe()
    return got


# --- the measurements ----------------------------------------------------------------------


async def create_ordered(conn: Connection, subjects: list[str], at: int) -> int:
    await ordered(conn, subjects, at, at - 1)
    return 0


async def create_pull(conn: Connection, subjects: list[str], at: int) -> int:
    cfg = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=at,
        filter_subjects=subjects if len(subjects) > 1 else None,
        filter_subject=subjects[0] if len(subjects) == 1 else None,
        inactive_threshold=30.0,
        mem_storage=True,
        num_replicas=1,
    )
    info = await conn.js.add_consumer(conn.stream, cfg)
    await conn.js.delete_consumer(conn.stream, info.name)
    return 0


async def update_in_place(
    conn: Connection, name: str, subjects: list[str], extra: list[str], i: list[int]
) -> int:
    """A named push consumer's filter gets one subject more (alternating: one more, one less)."""
    i[0] += 1
    subs = subjects + (extra[:1] if i[0] % 2 else [])
    cfg = ConsumerConfig(
        name=name,
        durable_name=name,
        deliver_subject=f"_SHARE.{name}",
        deliver_policy=DeliverPolicy.NEW,
        filter_subjects=subs,
        ack_policy="none",  # type: ignore[arg-type]
    )
    await conn.js.add_consumer(conn.stream, cfg)
    return 0


async def grouped(conn: Connection, subjects: list[str], k: int, upto: int) -> int:
    total = 0
    for i in range(0, len(subjects), k):
        total += await ordered(conn, subjects[i : i + k], 1, upto)
    return total


async def per_subject(conn: Connection, subjects: list[str], upto: int) -> int:
    total = 0
    for s in subjects:
        total += await ordered(conn, [s], 1, upto)
    return total


async def per_subject_direct(conn: Connection, subjects: list[str], upto: int) -> int:
    total = 0
    for s in subjects:
        total += await direct_batch(conn, s, 1, upto)
    return total


async def wildcard(conn: Connection, wanted: set[str], upto: int) -> int:
    """Every network's history from seq 1 (what a host following every network reads)."""
    got = 0
    seen = 0
    done = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:
        nonlocal got, seen
        seen += 1
        if msg.subject in wanted:
            got += 1
        if msg.metadata.num_pending == 0 and not done.done():
            done.set_result(None)

    sub = await conn.js.subscribe(
        f"{NETWORK_PREFIX}>",
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    await asyncio.wait_for(done, 900)
    await sub.unsubscribe()
    return seen


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--skip", default="", help="comma-separated: pull,update,groups,wildcard")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    sizes = [int(x) for x in args.sizes.split(",")]
    import tempfile

    tmp = tempfile.TemporaryDirectory(prefix="nl-share-filters-") if args.store is None else None
    store = args.store or Path(tmp.name)  # type: ignore[union-attr]
    server = EmbeddedNats(data_dir=store / "nats", port=free_port(), sync_interval="default")
    server.start()
    assert server.proc is not None
    meter = Meter(server.proc.pid)
    conn = await connect(server.url, name="share-filters")
    try:
        await ensure_stream(conn)
        if await last_seq(conn) == 0:
            t = time.perf_counter()
            h = await build_history(conn, args.events, hosts=1000, networks=5000)
            print(f"built {h.last_seq:,} events in {time.perf_counter() - t:.0f} s", flush=True)
        upto = await last_seq(conn)
        info = await conn.js.stream_info(conn.stream, subjects_filter=f"{NETWORK_PREFIX}>")
        counts: dict[str, int] = dict(info.state.subjects or {})
        print(
            f"stream: {upto:,} events, {len(counts):,} network subjects holding"
            f" {sum(counts.values()):,} events; nats-server pid {server.proc.pid}",
            flush=True,
        )
        rnd = random.Random(13)
        names = sorted(counts)
        rows: list[tuple[str, int, float, float, int]] = []

        def row(what: str, n: int, res: tuple[float, float, int]) -> None:
            rows.append((what, n, *res))
            print(
                f"{what:<44} N={n:>5}  wall {res[0] * 1000:9.1f} ms  server CPU"
                f" {res[1] * 1000:8.1f} ms  msgs {res[2]:>8,}",
                flush=True,
            )

        r = args.rounds
        for n in sizes:
            subjects = sorted(rnd.sample(names, n))
            share = sum(counts[s] for s in subjects)
            print(f"--- N={n}: {share:,} events on these subjects", flush=True)
            at = upto + 1
            row("create+delete ordered push at the end", n,
                await meter.measure(lambda: create_ordered(conn, subjects, at), max(r, 5)))  # noqa: B023  # fmt: skip
            if "pull" not in skip:
                row("create+delete pull consumer at the end", n,
                    await meter.measure(lambda: create_pull(conn, subjects, at), max(r, 5)))  # noqa: B023  # fmt: skip
            if "update" not in skip:
                name = f"upd{n}"
                extra = [s for s in names if s not in set(subjects)][:1]
                await update_in_place(conn, name, subjects, extra, [1])
                row("update filter_subjects in place (+-1)", n,
                    await meter.measure(lambda: update_in_place(conn, name, subjects, extra, [0]), max(r, 5)))  # noqa: B023  # fmt: skip
                await conn.js.delete_consumer(conn.stream, name)
            row("backfill: one consumer, N filters, from 1", n,
                await meter.measure(lambda: ordered(conn, subjects, 1, upto), r))  # noqa: B023  # fmt: skip
            row("backfill: N consumers, one subject each", n,
                await meter.measure(lambda: per_subject(conn, subjects, upto), r))  # noqa: B023  # fmt: skip
            row("backfill: N direct batch gets (next_by_subj)", n,
                await meter.measure(lambda: per_subject_direct(conn, subjects, upto), r))  # noqa: B023  # fmt: skip
            if "groups" not in skip:
                for k in (16, 64):
                    if k < n:
                        row(f"backfill: consumers of <= {k} filters", n,
                            await meter.measure(lambda: grouped(conn, subjects, k, upto), r))  # noqa: B023  # fmt: skip
        if "wildcard" not in skip:
            row("backfill: network.> wildcard from 1 (any N)", len(names),
                await meter.measure(lambda: wildcard(conn, set(), upto), r))  # fmt: skip
        print("\n| operation | N | wall ms | server CPU ms | messages |")
        print("|---|---:|---:|---:|---:|")
        for what, n, wall, cpu, msgs in rows:
            print(f"| {what} | {n:,} | {wall * 1000:.1f} | {cpu * 1000:.1f} | {msgs:,} |")
    finally:
        await conn.close()
        server.stop()
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
