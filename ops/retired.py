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

import datetime
import json
from dataclasses import dataclass

from netledger.events.ids import (
    RETIRED_HOSTS,
    RETIRED_PREFIX,
    announce_subject,
    retired_subject,
)
from netledger.journal.stream import Connection

#: Subjects per batched direct get (the server caps how many one request may answer)
CHUNK = 900


@dataclass(frozen=True)
class Retirement:
    """A host's last retirement: its stream sequence and when the server stored it (Unix
    time), and whether the host announced itself after it."""

    seq: int
    time: float
    back: bool


def _stamp(text: str | None) -> float:
    """A ``Nats-Time-Stamp`` (RFC 3339, nanoseconds) as Unix time (0: none)."""
    if not text:
        return 0.0
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        when = datetime.datetime.fromisoformat(head).replace(tzinfo=datetime.UTC)
    except ValueError:
        return 0.0
    return when.timestamp() + (float("0." + frac) if frac.isdigit() else 0.0)


async def _last_of(
    conn: Connection, subjects: list[str], up_to_seq: int
) -> dict[str, tuple[int, float]]:
    """subject -> (seq, stored time) of its last message at or before ``up_to_seq``, for those
    of ``subjects`` that have one (batched direct gets)."""
    nc = conn.nc
    out: dict[str, tuple[int, float]] = {}
    for i in range(0, len(subjects), CHUNK):
        part = subjects[i : i + CHUNK]
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox)
        try:
            req = {"multi_last": part, "up_to_seq": up_to_seq, "batch": len(part)}
            await nc.publish(
                f"$JS.API.DIRECT.GET.{conn.stream}", json.dumps(req).encode(), reply=inbox
            )
            while True:
                m = await sub.next_msg(timeout=5.0)
                hdrs = m.headers or {}
                if hdrs.get("Status"):  # 204: end of the batch; 404: nothing there
                    break
                out[hdrs["Nats-Subject"]] = (
                    int(hdrs["Nats-Sequence"]),
                    _stamp(hdrs.get("Nats-Time-Stamp")),
                )
        finally:
            await sub.unsubscribe()
    return out


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
    last = await _last_of(conn, subjects, stream_last)
    out = {}
    for h in retired:
        got = last.get(retired_subject(h))
        if got is None:  # (gone between the two reads: a purge)
            continue
        announced = last.get(announce_subject(h), (0, 0.0))[0]
        out[h] = Retirement(got[0], got[1], back=announced > got[0])
    return out
