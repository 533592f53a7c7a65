"""The raw read limit: the log read by ordered push consumers, counted, not decoded.

Every reader of the log (the projector, the service's fold, an executor's share) is reported
next to the raw read of the same events in the same run (bench/benchlib.py says why). That read
is **the fastest Python reader built with nats-py here**, never slower than netledger's own:

* a connection of its own, on which nats-py parses the headers of status messages only
  (heartbeats, flow control: what the ordered consumer acts on) — every stored message carries
  ``Nats-Msg-Id`` and the atomic batch's headers, which nothing reads (the catch-up child's and
  ``projector run``'s trick, ``journal/catchup.py`` ``_skip_stored_headers``);
* stored messages handed from nats-py's parser straight to a plain function (no ``Msg``, no
  queue, no task hop), as ``projector run`` reads (``journal/fastread.py``); on a nats-py
  release that module was not checked against, nats-py's callback with the headers skipped.

Until Dec 6 (morning) it was nats-py's ordered consumer with a callback on the benchmark's shared
connection, parsing every stored message's headers: the same consumer with the headers skipped
read 27-52 % faster (an independent re-measure), this reader ~1.7x as fast (40,000 events,
3 interleaved rounds: 79 k -> 141 k events/s), so every ratio against it was flattered.

Its rows carry ``NAME``, defined here because every part of the history benchmark imports this
module; bench/history.py re-exports it for the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from netledger.events.ids import ALL_EVENTS
from netledger.journal import fastread
from netledger.journal.catchup import _skip_stored_headers
from netledger.journal.stream import Connection, connect

NAME = "history"
#: What the raw read is, for the rows that name it.
HOW = "own connection, stored headers not parsed, parser -> handler (as projector run reads)"


@dataclass
class Read:
    """One raw read: seconds from subscribing to the last message, this process's CPU seconds
    over the same span, the messages and (when asked) their payloads."""

    seconds: float
    cpu: float
    count: int
    payloads: list[bytes] = field(default_factory=list)
    #: False: nats-py's callback path (this nats-py release is not one fastread was checked on)
    fast: bool = True


async def reader_connection(conn: Connection) -> tuple[Connection, bool]:
    """A connection of its own to ``conn``'s server, set up as netledger's own readers set
    theirs up: (the connection, whether stored messages skip nats-py's callback path)."""
    url = conn.nc.connected_url
    assert url is not None
    own = await connect(url.geturl(), stream=conn.stream, name="bench-raw-read")
    _skip_stored_headers(own.nc)
    return own, fastread.install(own.nc)


async def read_stored(
    conn: Connection,
    subject: str,
    start_seq: int,
    *,
    count: int | None = None,
    collect: bool = False,
    timeout: float = 900,
) -> Read:
    """Read ``subject`` from ``start_seq`` with one ordered push consumer on a connection of its
    own: until ``count`` messages came, or (``count`` None) until the server says nothing is
    pending. The connection is opened before the clock starts and closed after it stops."""
    own, fast = await reader_connection(conn)
    try:
        return await read_on(own, fast, subject, start_seq, count, collect, timeout)
    finally:
        await own.close()


async def read_on(
    own: Connection,
    fast: bool,
    subject: str,
    start_seq: int,
    count: int | None = None,
    collect: bool = False,
    timeout: float = 900,
) -> Read:
    """:func:`read_stored` on a reader connection already open (:func:`reader_connection`,
    ``fast`` what it returned): a reader of many subjects in turn, as an executor's share is
    read (bench/fleet_worker.py), keeps one connection."""
    from nats.js.api import ConsumerConfig, DeliverPolicy

    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    got = 0
    payloads: list[bytes] = []
    keep = payloads.append if collect else None

    def stored(seq: int, subj: str, data: bytes, ts: int, pending: int) -> None:
        nonlocal got
        if done.done():
            return
        got += 1
        if keep is not None:
            keep(data)
        if (got >= count) if count is not None else pending == 0:
            done.set_result(None)

    async def cb(msg: Any) -> None:  # nats-py's path: status messages, or no fastread
        if msg.reply and not (msg.headers and msg.headers.get("Status")):
            md = msg.metadata
            stored(md.sequence.stream, msg.subject, msg.data, 0, md.num_pending)

    if fast:
        fast = fastread.register(own.nc, cb, stored)
    try:
        config = (
            ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
            if start_seq <= 1
            else ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start_seq
            )
        )
        cpu = time.process_time()
        t = time.perf_counter()
        sub = await own.js.subscribe(
            subject,
            cb=cb,
            ordered_consumer=True,
            stream=own.stream,
            config=config,
            pending_msgs_limit=-1,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        if count is None and not done.done():
            info = await sub.consumer_info()
            if not info.num_pending and not (info.delivered and info.delivered.consumer_seq):
                done.set_result(None)  # an empty subject: nothing will come
        await asyncio.wait_for(done, timeout)
        dt = time.perf_counter() - t
        cpu = time.process_time() - cpu
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        return Read(dt, cpu, got, payloads, fast)
    finally:
        if fast:
            fastread.unregister(own.nc, cb)


async def raw_read(conn: Connection, start_seq: int, count: int) -> float:
    """Seconds for the raw reader to deliver ``count`` messages of the log from ``start_seq``
    (counted, not decoded): the read floor every reader is compared with."""
    return (await read_stored(conn, ALL_EVENTS, start_seq, count=count)).seconds


async def raw_read_share(conn: Connection, subjects: list[str]) -> tuple[float, int]:
    """Seconds to read every message of ``subjects`` from seq 1, one consumer per subject (the
    fastest way: a consumer filtering several subjects at once makes the server scan the whole
    log), and how many: the floor of a reader of that share. Each consumer's connection is
    opened outside the clock."""
    total = 0.0
    got = 0
    for subject in subjects:
        r = await read_stored(conn, subject, 1)
        total += r.seconds
        got += r.count
    return total, got


def samples(rounds: int, with_what: str = "the raw read") -> str:
    """How many runs a figure is the median of, for its row's note."""
    return f"median of {rounds}, interleaved with {with_what}" if rounds > 1 else "1 sample"
