"""``netledger status``'s host executors: each host's liveness in the ``NETLEDGER_LIVE``
bucket (``host.<h>.status``: its last pass, applied sequence, events of its share still to
read, changes, failures) — or, for an executor from before the liveness bucket, its last
``HostReconciled`` in the log (direct gets, newest first); and each host subject's last event.
A host retired and silent since is no host of the cloud (ops/retired.py). What reads these rows
and calls their problems is :mod:`netledger.ops.status`.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import time
from typing import Any

import netledger.events.host_events  # noqa: F401  (registers the host event types)
from netledger.events.codec import decode
from netledger.events.errors import DecodeError
from netledger.events.host_events import HostReconciled
from netledger.events.ids import EVENT_PREFIX
from netledger.journal.liveness import LIVE_TTL_S, read_all
from netledger.journal.stream import Connection, last_messages
from netledger.ops.retired import retirements

HOST_SUBJECTS = f"{EVENT_PREFIX}.host.>"
MAX_HOPS = 64  # how far back to look for a host's last HostReconciled, in host events


def _number(v: object) -> bool:
    """A finite JSON number (not a bool, which JSON tells apart and Python does not)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _iso(ts: object) -> str | None:
    """A Unix time as ISO text; None when it is none (missing, not a number, not finite, or
    beyond what a date can hold: a host's wild clock must not stop ``status``)."""
    if not _number(ts):
        return None
    assert isinstance(ts, int | float)
    try:
        when = datetime.datetime.fromtimestamp(ts, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return when.isoformat().replace("+00:00", "Z")


def _age_s(ts: object) -> float | None:
    """Seconds since ``ts`` (0 for a time ahead of this clock); None without a usable time."""
    if _iso(ts) is None:
        return None
    assert isinstance(ts, int | float)
    return round(max(0.0, time.time() - ts), 1)


async def host_status(
    conn: Connection,
    host: str,
    subject: str,
    count: int,
    stream_last: int,
    max_lag: int,
    *,
    find_reconciled: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": host,
        "events": count,
        "applied_seq": None,
        "lag": None,
        "lagging": True,
        "reconciled_at": None,
        "age_s": None,
        "changes": None,
        "drift_repairs": None,
        "duration_ms": None,
        "last_event": None,
        "last_event_at": None,
        "source": "log",
        #: why its liveness entry cannot be read (None: it can, or it has none)
        "error": None,
    }
    up_to = stream_last
    for hop in range(MAX_HOPS):
        got = (await last_messages(conn, [subject], up_to)).get(subject)
        if got is None:
            break
        seq, _, data = got
        try:
            env = decode(data)
        except DecodeError:
            up_to = seq - 1
            continue
        if hop == 0:
            out["last_event"] = env.type
            out["last_event_at"] = _iso(env.time)
            if not find_reconciled:
                break
        ev = env.event
        if isinstance(ev, HostReconciled):
            lag = max(0, stream_last - ev.applied_seq)
            out.update(
                applied_seq=ev.applied_seq,
                lag=lag,
                lagging=lag > max_lag,
                reconciled_at=_iso(env.time),
                age_s=_age_s(env.time),
                changes=ev.changes,
                drift_repairs=ev.drift_repairs,
                duration_ms=ev.duration_ms,
            )
            break
        up_to = seq - 1
    return out


async def share_lag(conn: Connection, subjects: list[str], after_seq: int) -> int | None:
    """Messages of a reader's share stored after ``after_seq``: what it has not applied yet.
    (An ephemeral consumer asked once; the server removes it when it goes idle.)"""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    try:
        info = await conn.js.add_consumer(
            conn.stream,
            ConsumerConfig(
                filter_subjects=list(subjects),
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after_seq + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=5.0,
                mem_storage=True,
                num_replicas=1,
            ),
        )
    except Exception:
        return None
    return int(info.num_pending or 0)


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def liveness_error(st: object) -> str | None:
    """What makes a host's liveness entry unreadable (None: nothing). Another version's
    executor, a bug or a wild clock may write anything there: it is that host's problem, told
    as such, never a reason for ``status`` to fail."""
    if not isinstance(st, dict):
        return f"its liveness status is not a JSON object ({_short(st)})"
    t = st.get("time")
    if _iso(t) is None:
        return f"its liveness status has no usable time ({_short(t)})"
    applied = st.get("applied_seq")
    if applied is not None and not (_number(applied) and isinstance(applied, int) and applied >= 0):
        return f"its liveness status has a bad applied_seq ({_short(applied)})"
    beat = st.get("heartbeat")
    if beat is not None and not (_number(beat) and beat > 0):
        return f"its liveness status has a bad heartbeat ({_short(beat)})"
    share = st.get("share")
    if share is not None and not (
        isinstance(share, list) and all(isinstance(x, str) for x in share)
    ):
        return f"its liveness status has a bad share ({_short(share)})"
    return None


def _live_status(
    out: dict[str, Any],
    st: dict[str, Any],
    stream_last: int,
    max_lag: int,
    lag: int | None,
    written: float | None = None,
) -> dict[str, Any]:
    """Merge a host's liveness entry (``host.<h>.status``, checked by :func:`liveness_error`)
    into its status row. ``lag``: the events of its share after what it applied (None: it
    reads the whole stream, or unknown). ``written``: when the NATS server stored the entry —
    its age, not the host's clock (10 minutes slow, a host reporting every minute was "has not
    reported for 600s"; ahead, a dead one stayed live; review hrev21)."""
    applied = st.get("applied_seq")
    if lag is None and isinstance(applied, int) and not st.get("share"):
        lag = max(0, stream_last - applied)
    age = _age_s(written if written is not None else st.get("time")) or 0.0
    heartbeat = float(st.get("heartbeat") or 60.0)
    out.update(
        applied_seq=applied,
        lag=lag,
        lagging=lag is None or lag > max_lag,
        pending=st.get("pending"),
        reconciled_at=_iso(st.get("time")),
        age_s=round(age, 1),
        changes=st.get("changes"),
        drift_repairs=st.get("drift_repairs"),
        duration_ms=st.get("duration_ms"),
        failures=st.get("failures"),
        events_read=st.get("events_read"),
        # its appends sent again (no answer, unavailable: executor/reports.py), as it said
        append_resends=_resends(st.get("append_resends")),
        live=age <= 3 * heartbeat,
        source="liveness",
    )
    return out


def _resends(v: object) -> dict[str, int] | None:
    """An executor's ``append_resends`` if it is what it should be (reason -> count), else
    None: another version's or a broken entry must not break ``status``."""
    if not isinstance(v, dict):
        return None
    ok = all(isinstance(k, str) and type(n) is int and n >= 0 for k, n in v.items())
    return {str(k): int(n) for k, n in v.items()} if ok else None


#: a liveness entry that did not parse (told apart from one that is JSON ``null``)
_NOT_JSON = object()


async def hosts_status(conn: Connection, stream_last: int, max_lag: int) -> list[dict[str, Any]]:
    """Each host's status row, those retired and silent since left out."""
    return (await hosts_and_retired(conn, stream_last, max_lag))[0]


async def hosts_and_retired(
    conn: Connection, stream_last: int, max_lag: int
) -> tuple[list[dict[str, Any]], int]:
    """Each host's status row, and how many hosts were left out: retired (``host retire``)
    and silent since, no hosts of the cloud."""
    info = await conn.js.stream_info(conn.stream, subjects_filter=HOST_SUBJECTS)
    subjects = info.state.subjects or {}
    prefix = f"{EVENT_PREFIX}.host."
    live: dict[str, object] = {}
    written: dict[str, float] = {}
    readable = True
    try:
        for key, (value, _rev, t) in (await read_all(conn, "host.*.status")).items():
            try:
                st: object = json.loads(value)
            except ValueError:  # (a UnicodeDecodeError too)
                st = _NOT_JSON
            live[key.split(".")[1]] = st
            written[key.split(".")[1]] = t
    except Exception:  # no liveness bucket readable: the log's HostReconciled only
        live, readable = {}, False
    hosts = sorted({s[len(prefix) :] for s in subjects} | set(live))
    gone = await retirements(conn, hosts, stream_last)
    limit = asyncio.Semaphore(32)

    async def one(h: str) -> dict[str, Any] | None:
        r = gone.get(h)
        if r is not None and not r.back and written.get(h, 0.0) <= r.time:
            # Retired, silent since: not a host of the cloud (left out, counted).
            return None
        async with limit:
            subject = f"{prefix}{h}"
            n = int(subjects.get(subject, 0))
            row = await host_status(
                conn, h, subject, n, stream_last, max_lag, find_reconciled=h not in live
            )
            if r is not None and not r.back:
                row["retired_seq"] = r.seq  # its executor still reports: a problem
            if h not in live:
                if readable and row["age_s"] is not None and row["age_s"] > LIVE_TTL_S:
                    # Its liveness entry expired: silent for more than a day (the log's last
                    # HostReconciled says since when). In a quiet cloud its lag is small, and
                    # it passed for healthy (review hrev21).
                    row["live"] = False
                return row
            st = live[h]
            bad = "its liveness status is not JSON" if st is _NOT_JSON else liveness_error(st)
            if bad is not None:
                row.update(error=bad, source="liveness")
                return row
            assert isinstance(st, dict)
            lag = None
            share, applied = st.get("share"), st.get("applied_seq")
            if share and isinstance(applied, int):
                lag = await share_lag(conn, share, applied)
            return _live_status(row, st, stream_last, max_lag, lag, written.get(h))

    rows = await asyncio.gather(*(one(h) for h in hosts))
    return [r for r in rows if r is not None], sum(r is None for r in rows)
