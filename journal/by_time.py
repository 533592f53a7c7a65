"""Finding a message by its id among those stored around a moment: one batched direct get that
starts at a store time and takes only the subjects asked for (the server answers both from its
index), read until a time or a count bound. What the command service uses to find the first
attempt of a retry it no longer remembers (service/old_retry.py)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from dataclasses import dataclass

from netledger.journal.append import is_msg_id_of
from netledger.journal.stream import MSG_ID, Connection, direct_batch, stamp_time

#: Messages asked for in one request: a read that stops early (past ``until``, or found) was
#: sent at most this many it did not need.
PAGE = 100


@dataclass(frozen=True)
class Found:
    """What :func:`find_msg_id` read: the sequence of the message (None: not found) and how
    many messages it read to tell."""

    seq: int | None
    scanned: int


def _rfc3339(when: float) -> str:
    moment = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return moment.isoformat().replace("+00:00", "Z")


async def find_msg_id(
    conn: Connection,
    msg_id: str,
    *,
    subjects: str,
    since: float,
    until: float,
    limit: int,
    timeout: float,
    accept: Callable[[bytes], bool] | None = None,
) -> Found:
    """The sequence of the first message on ``subjects`` (a filter: may hold wildcards) whose
    id is ``msg_id`` (or a chain link's id of it), among those stored from ``since`` to
    ``until`` (Unix time, the server's store time), reading at most ``limit`` of them; with
    ``accept``, the first whose data it accepts too (a client may have sent another command
    under the same id: read on past it).

    Batched direct gets of :data:`PAGE` messages, the first by start time: it reads (and is
    sent) at most ``limit`` messages, never the log's age. Raises :class:`TimeoutError` when
    the whole read takes longer than ``timeout`` seconds."""
    scanned = 0
    #: where the next page starts: the store time first, then the sequence after the last read
    start: dict[str, object] = {"start_time": _rfc3339(since)}
    async with asyncio.timeout(timeout):
        while scanned < limit:
            page = min(PAGE, limit - scanned)
            got = await direct_batch(
                conn, {**start, "batch": page, "next_by_subj": subjects}, timeout
            )
            for m in got:
                hdrs = m.headers or {}
                scanned += 1
                seq = int(hdrs["Nats-Sequence"])
                if stamp_time(hdrs.get("Nats-Time-Stamp")) > until:
                    return Found(None, scanned)
                if is_msg_id_of(hdrs.get(MSG_ID), msg_id) and (accept is None or accept(m.data)):
                    return Found(seq, scanned)
                start = {"seq": seq + 1}
            if len(got) < page:  # the log's end
                break
    return Found(None, scanned)
