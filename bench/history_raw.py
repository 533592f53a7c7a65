"""The history benchmark's raw limit: the log read by ordered push consumers, counted, not decoded.

The benchmark's figures (bench/history.py) stand next to the raw read of the same events in the
same run (bench/benchlib.py says why). Its rows carry ``NAME``, defined here because every
part of the benchmark imports this module; bench/history.py re-exports it for the runner.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from netledger.journal.stream import Connection

NAME = "history"


async def raw_read(conn: Connection, start_seq: int, count: int) -> float:
    """Seconds for an ordered push consumer to deliver ``count`` messages from ``start_seq``
    (counted, not decoded): the read floor every reader is compared with."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    got = 0
    done = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:
        nonlocal got
        got += 1
        if got >= count and not done.done():
            done.set_result(None)

    config = (
        ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        if start_seq <= 1
        else ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq)
    )
    t = time.perf_counter()
    sub = await conn.js.subscribe(
        "netledger.evt.>",
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        config=config,
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    await asyncio.wait_for(done, 900)
    dt = time.perf_counter() - t
    await sub.unsubscribe()
    return dt


async def _count_subject(conn: Connection, subject: str) -> int:
    """Every message of one subject, counted (one ordered push consumer, no decoding)."""
    done = asyncio.get_running_loop().create_future()
    n = 0

    async def cb(msg: Any) -> None:
        nonlocal n
        n += 1
        if msg.metadata.num_pending == 0 and not done.done():
            done.set_result(None)

    sub = await conn.js.subscribe(
        subject,
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    info = await sub.consumer_info()
    if info.num_pending or (info.delivered is not None and info.delivered.consumer_seq):
        await asyncio.wait_for(done, 900)
    await sub.unsubscribe()
    return n


async def raw_read_share(conn: Connection, subjects: list[str]) -> tuple[float, int]:
    """Seconds to read every message of ``subjects`` from seq 1, one consumer per subject (the
    fastest way: a consumer filtering several subjects at once makes the server scan the whole
    log), and how many: the floor of a reader of that share."""
    t = time.perf_counter()
    got = 0
    for subject in subjects:
        got += await _count_subject(conn, subject)
    return time.perf_counter() - t, got
