"""Reading a range of the stream in order, with headers: what export, import and audit
``--from-log`` share.

An ordered push consumer (the fastest read path in nats-py, JETSTREAM_NOTES.md) started at a
sequence; there is no "stop at" on the server, so the reader stops itself at ``to_seq`` (by
default the stream's last sequence when the read starts). The callback waits for room in a
bounded queue, which holds back nats-py's flow-control reply and so pauses the server: memory
stays flat however long the stream.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from netledger.events.errors import Unavailable
from netledger.events.ids import ALL_EVENTS
from netledger.journal.stream import Connection, last_seq, retrying, seed_ordered

from .errors import SeqBeyondStream

log = logging.getLogger("netledger.replay")

QUEUE_SIZE = 5000

#: How long the server may take to answer a direct get.
GET_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Stored:
    """One message as the stream holds it."""

    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]
    stream_time: float  # the server's store time, epoch seconds


async def read_range(
    conn: Connection, from_seq: int = 1, to_seq: int | None = None, heartbeat: float = 1.0
) -> AsyncIterator[Stored]:
    """Yield the stored messages ``from_seq``..``to_seq`` (inclusive; default: the stream's
    last sequence now) in order. Raises :class:`SeqBeyondStream` if the stream ends before an
    explicit ``to_seq``."""
    end = await last_seq(conn)
    if to_seq is None:
        to_seq = end
    elif to_seq > end:
        raise SeqBeyondStream(
            f"the stream ends at seq {end}, before {to_seq}", to_seq=to_seq, stream_last_seq=end
        )
    from_seq = max(1, from_seq)
    if to_seq < from_seq:
        return
    queue: asyncio.Queue[Stored] = asyncio.Queue(maxsize=QUEUE_SIZE)
    expected = from_seq

    async def on_msg(msg: Msg) -> None:
        nonlocal expected
        md = msg.metadata
        seq = int(md.sequence.stream)
        if seq < expected or seq > to_seq:
            return  # redelivered after an ordered-consumer reset, or past the end
        expected = seq + 1
        headers: dict[str, Any] = dict(msg.headers or {})
        await queue.put(Stored(seq, msg.subject, msg.data, headers, md.timestamp.timestamp()))

    sub = await conn.js.subscribe(
        ALL_EVENTS,
        cb=on_msg,
        ordered_consumer=True,
        idle_heartbeat=heartbeat,
        stream=conn.stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=from_seq
        ),
        pending_msgs_limit=-1,
        pending_bytes_limit=0,
    )
    seed_ordered(sub, from_seq)  # recreated from here, not from seq 1
    try:
        while True:
            item = await queue.get()
            yield item
            if item.seq >= to_seq:
                return
    finally:
        try:
            await sub.unsubscribe()
        except Exception as exc:  # the connection may be gone already
            log.debug("unsubscribe: %s", exc)


async def first_seq_at(conn: Connection, moment: datetime.datetime) -> int | None:
    """The sequence of the first message stored at or after ``moment`` (the server's store
    time), None if none is: one direct get by start time, which the server answers from its
    index — the log is not read, so a read that starts there costs what follows ``moment``,
    not the log's age. ``moment`` must be timezone-aware."""
    if moment.tzinfo is None:
        raise ValueError("'moment' must be timezone-aware")
    when = moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    body = json.dumps({"start_time": when}).encode()

    async def ask() -> Any:
        return await conn.nc.request(f"$JS.API.DIRECT.GET.{conn.stream}", body, timeout=GET_TIMEOUT)

    reply = await retrying(ask, f"the first message of the log at or after {when}")
    headers = reply.headers or {}
    status = headers.get("Status")
    if status == "404":  # nothing stored at or after it
        return None
    if status or "Nats-Sequence" not in headers:
        raise Unavailable(f"the first message of the log at or after {when}: answered {status}")
    return int(headers["Nats-Sequence"])
