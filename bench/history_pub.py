"""Writing a generated history into an empty ``NETLEDGER`` stream: atomic batches, in order.

Nothing else writes the stream while a history is built, so there are no OCC headers: every
message carries only its ``Nats-Msg-Id`` and the batch headers. The generator folds each event
with the sequence it *will* get (the count so far + 1); :meth:`BatchWriter.send` checks every
commit's acknowledgement against that, so a history whose fold and stream disagree cannot pass
unnoticed. Two batches are in flight while the next one is generated, so the server always has
one to store (its ~20 µs per message is the build's floor). The messages before a batch's commit
go to the socket as one block of ``HPUB`` frames (the NATS protocol, what ``nc.publish`` writes
one by one at ~10 µs of Python each); the commit goes through ``js.publish`` for its ack.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from typing import Any

from netledger.journal.stream import MAX_BATCH, MSG_ID, Connection

#: (subject, msgpack payload, Nats-Msg-Id)
Message = tuple[str, bytes, str]


class BatchWriter:
    def __init__(self, conn: Connection, last_seq: int) -> None:
        self.conn = conn
        #: sequence of the last message handed to the server
        self.sent = last_seq
        self._inflight: deque[tuple[asyncio.Future[Any], int, int]] = deque()
        self.batches = 0
        self.depth = 2
        nc = conn.nc
        self._raw = getattr(nc, "_send_command", None)

    async def send(self, msgs: list[Message]) -> None:
        """One atomic batch (at most MAX_BATCH messages); returns once it is on its way."""
        if not msgs:
            return
        if len(msgs) > MAX_BATCH:
            raise ValueError(f"an atomic batch holds at most {MAX_BATCH} messages")
        nc, js = self.conn.nc, self.conn.js
        bid = uuid.uuid4().hex
        n = len(msgs)
        if self._raw is not None:
            await self._raw(_frames(msgs[:-1], bid))
        else:  # pragma: no cover - a nats-py without the internal used above
            for i in range(n - 1):
                s, d, mid = msgs[i]
                await nc.publish(
                    s,
                    d,
                    headers={MSG_ID: mid, "Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i + 1)},
                )
        s, d, mid = msgs[-1]
        headers = {
            MSG_ID: mid,
            "Nats-Batch-Id": bid,
            "Nats-Batch-Sequence": str(n),
            "Nats-Batch-Commit": "1",
        }
        fut = asyncio.ensure_future(
            js.publish(s, d, stream=self.conn.stream, timeout=60.0, headers=headers)
        )
        self.sent += n
        self._inflight.append((fut, self.sent, n))
        self.batches += 1
        while len(self._inflight) > self.depth:
            await self._wait_one()
        # Let the flusher hand the batch to the socket before the caller goes back to CPU work.
        for _ in range(3):
            await asyncio.sleep(0)

    async def wait(self) -> None:
        """Wait for every batch in flight."""
        while self._inflight:
            await self._wait_one()

    async def _wait_one(self) -> None:
        """The oldest batch in flight must land where the fold put it."""
        fut, expected, n = self._inflight.popleft()
        ack = await fut
        seq = int(getattr(ack, "seq", 0))
        size = getattr(ack, "batch_size", None)
        if seq != expected or (size is not None and int(size) != n):
            raise RuntimeError(
                f"atomic batch of {n} ended at seq {seq} (batch size {size}), expected {expected}:"
                " the stream was not empty or someone else wrote to it"
            )


def _frames(msgs: list[Message], batch_id: str) -> bytes:
    """The ``HPUB`` frames of ``msgs`` (batch sequences 1..n), as ``nc.publish`` would write."""
    out = []
    head = f"\r\nNats-Batch-Id: {batch_id}\r\nNats-Batch-Sequence: "
    for i, (subject, data, mid) in enumerate(msgs, 1):
        hdr = f"NATS/1.0\r\n{MSG_ID}: {mid}{head}{i}\r\n\r\n".encode()
        out.append(f"HPUB {subject} {len(hdr)} {len(hdr) + len(data)}\r\n".encode())
        out.append(hdr)
        out.append(data)
        out.append(b"\r\n")
    return b"".join(out)
