"""Which hosts ``status`` leaves out: those retired (``netledger host retire``,
events/decide_host.py) and not back since.

A decommissioned host's subjects stay in the log for good (its history is audited), and its
liveness entry until it expires: without this, ``status`` listed every host the cloud ever had
and called each one gone a problem — one nothing could clear. A retirement is a message on
``netledger.evt.retired.<host>``: the stream's subject index names the retired hosts without
reading the log, and one batched direct get of the last message on each of their subjects says
whether the host announced itself after it (its executor started again: it is *back*; a report
of an executor still running there is not — events/decide_host.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from netledger.events.ids import (
    RETIRED_HOSTS,
    RETIRED_PREFIX,
    announce_subject,
    retired_subject,
)
from netledger.journal.stream import Connection, last_messages


@dataclass(frozen=True)
class Retirement:
    """A host's last retirement: its stream sequence and when the server stored it (Unix
    time), and whether the host announced itself after it."""

    seq: int
    time: float
    back: bool


async def retirements(
    conn: Connection, hosts: list[str], stream_last: int
) -> dict[str, Retirement]:
    """The last retirement of each of ``hosts`` that has one."""
    info = await conn.js.stream_info(conn.stream, subjects_filter=RETIRED_HOSTS)
    named = {s[len(RETIRED_PREFIX) :] for s in (info.state.subjects or {})}
    retired = sorted(named.intersection(hosts))
    if not retired:
        return {}
    subjects = [s for h in retired for s in (retired_subject(h), announce_subject(h))]
    last = await last_messages(conn, subjects, stream_last)
    out = {}
    for h in retired:
        got = last.get(retired_subject(h))
        if got is None:  # (gone between the two reads: a purge)
            continue
        announced = last.get(announce_subject(h), (0, 0.0, b""))[0]
        out[h] = Retirement(got[0], got[1], back=announced > got[0])
    return out
