"""``audit``: the history of one thing (an address, instance, project, network or host).

Served from the projection's ``events`` index: each applied event's row names what it concerns
(address, fixed_address, instance, project, network_id, host), each column with a partial index
on ``(column, seq)`` (projector/schema.py), so one lookup is an index range scan however long
the log. ``--from-log`` reads the stream instead and runs the same pure projection in memory
(:func:`netledger.projector.project.project`) to get exactly the index rows the projector would
have written, then filters them: slower, but needs no projection file, and the two answers are
equal by construction (a test holds them to it).
"""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netledger.common.progress import progress_bar
from netledger.events.errors import DecodeError
from netledger.events.wire_fast import decode_fast
from netledger.journal.stream import Connection, last_seq
from netledger.projector.project import MemoryStore, Outcome
from netledger.projector.query import open_readonly
from netledger.projector.tables import EVENTS

from .reader import read_range
from .times import iso

#: What can be audited -> the events-index columns that name it.
KINDS: dict[str, tuple[str, ...]] = {
    "address": ("address", "fixed_address", "address_v6"),
    "instance": ("instance",),
    "project": ("project",),
    "network": ("network_id",),
    "host": ("host",),
}

Row = dict[str, Any]


def _epoch(t: datetime.datetime | None) -> float | None:
    return None if t is None else t.timestamp()


def index_sql(kind: str, since: float | None, until: float | None) -> tuple[str, list[str]]:
    """The query for ``kind`` (placeholders: the value once per column, then the times).

    One ``SELECT`` per column joined by ``UNION``: each uses its own partial index (an ``OR``
    across two partial indexes would not)."""
    cols = KINDS[kind]
    extra = ""
    if since is not None:
        extra += " AND time >= ?"
    if until is not None:
        extra += " AND time <= ?"
    parts = [f"SELECT seq FROM events WHERE {c} = ?{extra}" for c in cols]
    sql = (
        f"SELECT {', '.join(EVENTS.columns)} FROM events WHERE seq IN ("
        + " UNION ".join(parts)
        + ") ORDER BY seq"
    )
    return sql, list(cols)


def from_index(
    db: str | Path,
    kind: str,
    value: str,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> list[Row]:
    """The events index rows concerning ``value``, oldest first."""
    return answer_from_index(db, kind, value, since, until)[0]


def answer_from_index(
    db: str | Path,
    kind: str,
    value: str,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> tuple[list[Row], int]:
    """:func:`from_index`'s rows and the projection's checkpoint they are the answer at (its
    ``last_seq``: the log up to it), read in one read transaction — a projector writing
    meanwhile must not leave the rows newer than the number said with them."""
    s, u = _epoch(since), _epoch(until)
    sql, cols = index_sql(kind, s, u)
    args: list[Any] = []
    for _ in cols:
        args.append(value)
        args += [t for t in (s, u) if t is not None]
    with open_readonly(db) as conn:
        conn.row_factory = sqlite3.Row
        conn.execute("BEGIN")  # one snapshot of the file for the checkpoint and the rows
        row = conn.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
        checkpoint = int(row[0] or 0) if row is not None else 0
        found = [dict(r) for r in conn.execute(sql, args)]
        seen = found
        if u is not None and found:
            seen = found + _later_compensations(conn, kind, value, found[-1]["seq"])
        return link_reverts(found, _markers_from_index(conn, seen)), checkpoint


# --- reverts: "reverted by" / "reverts" -------------------------------------------------------

#: Command ids of reverts start with this (netledger.events.revert.command_id_for).
REVERT_PREFIX = "revert-"
#: A revert's marker lands in the same atomic batch as its compensations, which hold at most
#: this many messages: it is found by a primary-key range scan after any compensation.
_BATCH = 1000


def _marker(seq: int, command_id: str, data: str | dict[str, Any]) -> Row:
    return {
        "seq": seq,
        "command_id": command_id,
        "data": json.loads(data) if isinstance(data, str) else data,
    }


def _markers_from_index(conn: sqlite3.Connection, rows: list[Row]) -> dict[str, Row]:
    """The ChangeReverted markers of the reverts whose compensations are among ``rows``."""
    out: dict[str, Row] = {}
    for r in rows:
        cid = r.get("command_id") or ""
        if not cid.startswith(REVERT_PREFIX) or cid in out:
            continue
        if r.get("type") == "ChangeReverted":
            out[cid] = _marker(r["seq"], cid, r["data"])
            continue
        m = conn.execute(
            "SELECT seq, data FROM events WHERE seq > ? AND seq <= ? AND command_id = ?"
            " AND type = 'ChangeReverted' LIMIT 1",
            (r["seq"], r["seq"] + _BATCH, cid),
        ).fetchone()
        if m is not None:
            out[cid] = _marker(m[0], cid, m[1])
    return out


def _later_compensations(
    conn: sqlite3.Connection, kind: str, value: str, after_seq: int
) -> list[Row]:
    """The compensations concerning ``value`` stored after ``after_seq``.

    A revert lands after what it undid, so an ``--until`` before it cuts its marker off: these
    rows lead to it, and the events in the window still say they were reverted (found by h136:
    the incident's own window showed a reverted deallocation as standing). They come from the
    same partial indexes as the audit itself, so this costs no more than reading the entity's
    rows after the window."""
    cols = KINDS[kind]
    part = (
        "SELECT seq, command_id, type, data FROM events WHERE {} = ? AND seq > ?"
        " AND command_id >= ? AND command_id < ?"
    )
    sql = " UNION ".join(part.format(c) for c in cols) + " ORDER BY seq"
    # Every id that starts with the prefix sorts between it and the prefix's next string.
    upper = REVERT_PREFIX[:-1] + chr(ord(REVERT_PREFIX[-1]) + 1)
    args = [a for _ in cols for a in (value, after_seq, REVERT_PREFIX, upper)]
    return [dict(r) for r in conn.execute(sql, args)]


def link_reverts(rows: list[Row], markers: dict[str, Row]) -> list[Row]:
    """Mark each row a revert undid (``reverted_by``) and each compensation (``reverts``).

    A revert's compensations concern the same address / instance / network as what they
    undo, so an audit that shows a change also shows its revert, whose marker names the
    reverted sequences. (An audit by project misses compensations that name no project.)"""
    undone: dict[int, Row] = {}
    for marker in markers.values():
        for seq in marker["data"].get("reverted_seqs") or ():
            undone[seq] = marker
    for r in rows:
        m = markers.get(r.get("command_id") or "")
        if m is not None and r.get("type") != "ChangeReverted":
            d = m["data"]
            r["reverts"] = {
                "marker_seq": m["seq"],
                "command_id": d.get("reverted_command_id"),
                "after_seq": d.get("after_seq"),
                "upto_seq": d.get("upto_seq"),
                "scope": d.get("scope"),
            }
        by = undone.get(r["seq"])
        if by is not None:
            r["reverted_by"] = {"command_id": by["command_id"], "seq": by["seq"]}
    return rows


def matches(row: Row, kind: str, value: str, since: float | None, until: float | None) -> bool:
    if not any(row.get(c) == value for c in KINDS[kind]):
        return False
    t = row.get("time")
    if since is not None and (t is None or t < since):
        return False
    return until is None or (t is not None and t <= until)


class _StateOnly(MemoryStore):
    """The pure projection's state without the event history (memory grows with the state,
    not the log)."""

    def apply(self, seq: int, outcome: Outcome) -> None:
        super().apply(seq, outcome)
        self.events.pop(seq, None)
        self.rejected.pop(seq, None)


async def from_log(
    conn: Connection,
    kind: str,
    value: str,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    show_progress: bool | None = None,
) -> list[Row]:
    """The same rows as :func:`from_index`, computed by reading the whole stream."""
    return (await answer_from_log(conn, kind, value, since, until, show_progress))[0]


async def answer_from_log(
    conn: Connection,
    kind: str,
    value: str,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    show_progress: bool | None = None,
) -> tuple[list[Row], int]:
    """:func:`from_log`'s rows and the last sequence read (the log's end when the read began)."""
    s, u = _epoch(since), _epoch(until)
    store = _StateOnly()
    found: list[Row] = []
    later: set[str] = set()
    markers: dict[str, Row] = {}
    end = await last_seq(conn)
    with progress_bar("audit: reading the log", end, show_progress) as advance:
        async for m in read_range(conn, 1, end):
            try:
                env = decode_fast(m.data)
            except DecodeError:
                continue  # the projector rejects it: it is in no index either
            out = store.feed(m.seq, m.subject, env, m.stream_time)
            if out.event is not None and matches(out.event, kind, value, s, u):
                found.append(out.event)
            elif out.event is not None and matches(out.event, kind, value, None, None):
                # outside the window: a revert of what is in it still marks it (from_index)
                cid = out.event["command_id"] or ""
                if u is not None and found and cid.startswith(REVERT_PREFIX):
                    later.add(cid)
            if out.event is not None and out.event["type"] == "ChangeReverted":
                cid = out.event["command_id"] or ""
                markers[cid] = _marker(m.seq, cid, out.event["data"])
            if m.seq % 1000 == 0:
                advance(m.seq)
        advance(end)
    wanted = {r.get("command_id") for r in found} | later
    return link_reverts(found, {k: v for k, v in markers.items() if k in wanted}), end


# --- rendering --------------------------------------------------------------------------------


def _parts(*items: tuple[str, Any]) -> str:
    shown = [f"{k} {v}" if k else str(v) for k, v in items if v not in (None, "")]
    return f" ({', '.join(shown)})" if shown else ""


def _v6(d: Row) -> str:
    """`` and <IPv6>`` for a dual-stack allocation (on an IPv6-only one it is the address)."""
    v6 = d.get("address_v6")
    return f" and {v6}" if v6 and v6 != d.get("address") else ""


def _fixed_allocated(d: Row) -> str:
    return f"{d['address']}{_v6(d)} allocated to {d['instance']}" + _parts(
        ("project", d.get("project")), ("host", d.get("host")), ("network", d.get("network_id"))
    )


def _fixed_deallocated(d: Row) -> str:
    held = "freed" if d.get("freed") else "held until the DHCP release"
    return f"{d['address']}{_v6(d)} deallocated from {d['instance']}, {held}"


def _fixed_released(d: Row) -> str:
    return (
        f"{d['address']} released by {d['instance']}"
        + (" (its IPv6 lease)" if d.get("v6") else "")
        + (", freed" if d.get("freed") else "")
    )


def _floating_disassociated(d: Row) -> str:
    return f"floating {d['address']} disassociated from {d['fixed_address']}" + _parts(
        ("", d.get("instance")), ("reason", d.get("reason"))
    )


def _network_created(d: Row) -> str:
    cidrs = " and ".join(c for c in (d.get("cidr"), d.get("cidr_v6")) if c)
    return f"network {d['network_id']} created: {cidrs}" + _parts(
        ("mode", d.get("mode")), ("vlan", d.get("vlan")), ("project", d.get("project"))
    )


PHRASES: dict[str, Callable[[Row], str]] = {
    "FixedIpAllocated": _fixed_allocated,
    "FixedIpDeallocated": _fixed_deallocated,
    "FixedIpLeased": lambda d: (
        f"{d['address']} leased to {d['instance']} ({d['mac']}"
        + (", its IPv6 address)" if d.get("v6") else ")")
    ),
    "FixedIpReleased": _fixed_released,
    "FixedIpFreed": lambda d: f"{d['address']} freed from {d['instance']} ({d['reason']})",
    "FixedIpMoved": lambda d: (
        f"{d['address']} moved with {d['instance']} from host {d.get('from_host') or '(none)'}"
        f" to {d['host']}"
    ),
    "FloatingIpAllocated": lambda d: (
        f"floating {d['address']} allocated to project {d['project']} (pool {d['pool']})"
    ),
    "FloatingIpAssociated": lambda d: (
        f"floating {d['address']} associated with {d['fixed_address']}"
        f" ({d['instance']}, network {d['network_id']})"
    ),
    "FloatingIpDisassociated": _floating_disassociated,
    "FloatingIpDeallocated": lambda d: (
        f"floating {d['address']} deallocated (project {d['project']})"
    ),
    "NetworkCreated": _network_created,
    "NetworkDeleted": lambda d: f"network {d['network_id']} deleted",
    "NetworkRetired": lambda d: (
        f"network {d['network_id']} retired from the registry (its deletion, for every host)"
    ),
    "HostRetired": lambda d: f"host {d['host']} retired from the cloud (host retire)",
    "NetworkAssociated": lambda d: (
        f"network {d['network_id']} associated with project {d['project']}"
    ),
    "NetworkDisassociated": lambda d: (
        f"network {d['network_id']} disassociated from project {d['project']}"
    ),
    "NetworkReassociated": lambda d: (
        f"network {d['network_id']} given back to project {d['project']} (the network's side)"
    ),
    "FloatingPoolCreated": lambda d: f"floating pool {d['pool']} created: {d['cidr']}",
    # What the service writes beside the commands' own events (events/placement_events.py,
    # events/reclaim_events.py): said in words too, not as their payload (review h130: `audit
    # host` printed a join as JSON).
    "NetworkHostJoined": lambda d: (
        f"host {d['host']} joined network {d['network_id']}" + _parts(("reason", d.get("reason")))
    ),
    "FloatingIpMapped": lambda d: (
        f"floating {d['floating']} NATed to {d['fixed']} in network {d['network_id']}"
        + _parts(("pool", d.get("pool")), ("reason", d.get("reason")))
    ),
    "FloatingIpUnmapped": lambda d: (
        f"floating {d['floating']} no longer NATed to {d['fixed']} in network {d['network_id']}"
        + _parts(("pool", d.get("pool")))
    ),
    "FixedIpReclaimed": lambda d: (
        f"{d['address']}{_v6(d)} reclaimed from {d['instance']}: host {d['host']} did not see"
        f" {d['mac']} for {d['grace']:g} s (reports #{d['first_absent_seq']}..#{d['report_seq']})"
    ),
    "FixedIpReclaimSealed": lambda d: (
        f"reclaims on host {d['host']} decided as of its #{d['host_seq']}: "
        + ", ".join(d["addresses"])
    ),
    "FixedIpReconfirmed": lambda d: (
        f"{d['address']} asked for again by {d['instance']} ({d['mac']})"
        + _parts(("host", d.get("host")))
    ),
    "ChangeReverted": lambda d: (
        (
            f"revert of command {d['reverted_command_id']}"
            if d.get("reverted_command_id")
            else f"revert of #{d['after_seq']}+1..#{d['upto_seq']}"
            + (f" in {d['scope']}" if d.get("scope") else "")
        )
        + f": {d.get('compensations')} compensating event(s)"
    ),
}

_HOST_KEYS = ("name", "kind", "interface", "address", "network_id", "vtep_address", "changes")


def phrase(type_name: str, data: Row) -> str:
    """What the event did, in words (the fields that matter, not the whole payload)."""
    fn = PHRASES.get(type_name)
    if fn is not None:
        try:
            return fn(data)
        except KeyError:
            pass  # an unexpected shape: fall through to the generic form
    if type_name.startswith("Host") and "host" in data:
        what = type_name[4:]
        return f"{data['host']}: {what}" + _parts(*((k, data.get(k)) for k in _HOST_KEYS))
    return f"{type_name} " + json.dumps(data, sort_keys=True, default=str)


def actor_text(row: Row) -> str:
    who = row.get("actor_user") or "?"
    extra = [row.get("actor_role")] + (
        [f"project {row['actor_project']}"] if row.get("actor_project") else []
    )
    return f"{who} ({', '.join(str(x) for x in extra if x)})"


def present(row: Row) -> Row:
    """An index row as audit prints it (``--json``): times in ISO 8601, data as an object."""
    data = json.loads(row["data"]) if row.get("data") else {}
    return {
        "seq": row["seq"],
        "time": iso(row["time"]),
        "stream_time": iso(row.get("stream_time")),
        "type": row["type"],
        "subject": row["subject"],
        "actor": {
            "user": row.get("actor_user"),
            "role": row.get("actor_role"),
            "project": row.get("actor_project"),
        },
        "event_id": row.get("event_id"),
        "command_id": row.get("command_id"),
        "summary": phrase(row["type"], data),
        "data": data,
        **{k: row[k] for k in ("reverted_by", "reverts") if k in row},
    }


def line(p: Row) -> str:
    """One printed line of an audit."""
    a = p["actor"]
    who = actor_text(
        {"actor_user": a["user"], "actor_role": a["role"], "actor_project": a["project"]}
    )
    out = f"#{p['seq']:<8} {p['time']}  {p['summary']}  · by {who} · {p['type']}"
    if "reverts" in p:
        r = p["reverts"]
        what = (
            f"command {r['command_id']}"
            if r.get("command_id")
            else f"#{r['after_seq']}+1..#{r['upto_seq']}"
            + (f" in {r['scope']}" if r["scope"] else "")
        )
        out += f" · reverts {what} (marker #{r['marker_seq']})"
    if "reverted_by" in p:
        out += f" · reverted by {p['reverted_by']['command_id']} (#{p['reverted_by']['seq']})"
    return out
