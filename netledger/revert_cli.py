"""``netledger revert``: read the events to undo from the log, ask the service to undo them.

The client side of :mod:`netledger.events.revert`: it finds the stored events (by command id:
through the projection's events index with ``--db``, else by scanning the stream with an
ordered consumer — from the first message stored at ``--since`` (a direct get by time: the
read follows the command's age, not the log's), or from seq 1; by sequence: every event after
N, within ``--scope``), and for the
deallocations among them the project of the allocation each ended (:func:`owners_of`), sends
them in one ``revert`` (or ``revert.plan`` for ``--dry-run``) command, and prints the service's
decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

import netledger.events.revert_events  # noqa: F401  (every netledger process decodes markers)
from netledger.common.output import emit
from netledger.common.settings import Settings, pass_settings, run
from netledger.events.codec import decode
from netledger.events.errors import DecodeError, NetledgerError, ValidationError
from netledger.events.ids import network_subject
from netledger.events.revert import (
    MAX_REVERT_EVENTS,
    NothingToRevert,
    RevertTooLarge,
    StoredEvent,
    command_id_for,
    in_scope,
    pack_events,
    pack_owners,
)
from netledger.events.revert_events import ChangeReverted
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated
from netledger.journal.follow import iter_subject
from netledger.journal.stream import Connection, connect, last_seq
from netledger.replay.cli import moment_callback
from netledger.service.client import Client

#: How far the service's clock (which stamps an event's time) and the server's (which stamps
#: its store time, what a read by time starts from) may differ: a read from ``--since`` starts
#: this much earlier, so an event stamped at ``--since`` is read even if stored "before" it.
CLOCK_SLACK_S = 60.0

#: The first window of a backward read of a network's subject, in stream sequences.
FIRST_WINDOW = 256


class AlreadyReverted(NetledgerError):
    code = "already_reverted"


class ConflictingOptions(ValidationError):
    code = "conflicting_options"


@dataclass
class LogRead:
    """What a revert read of the log, reported with its result (``log_messages_read``): an
    operator (and a test) sees whether the read followed the command or the log's age."""

    messages: int = 0
    #: the earliest time an event kept carries (its envelope's, set by the service)
    earliest: float | None = None

    def kept(self, time: float) -> None:
        self.earliest = time if self.earliest is None else min(self.earliest, time)


Keep = Callable[[StoredEvent], bool]


def _stored_at(seq: int, subject: str, data: bytes) -> tuple[StoredEvent, float] | None:
    """The stored event and the time it carries, or None for what there is nothing to undo."""
    try:
        env = decode(data)
    except DecodeError:
        return None  # the service rejected it too: there is nothing to undo
    if subject.startswith("netledger.evt.host."):
        return None  # what an executor did: it converges on the state after the revert
    return StoredEvent(seq, subject, env.event, env.command_id), env.time


def _stored(seq: int, subject: str, data: bytes) -> StoredEvent | None:
    got = _stored_at(seq, subject, data)
    return None if got is None else got[0]


async def _scan(
    conn: Connection,
    from_seq: int,
    keep: Keep,
    read: LogRead | None = None,
    to_seq: int | None = None,
) -> list[StoredEvent]:
    """The events ``keep`` takes among the messages ``from_seq``..``to_seq`` (default: the
    stream's last now)."""
    from netledger.replay.reader import read_range

    read = LogRead() if read is None else read
    out: list[StoredEvent] = []
    end = await last_seq(conn) if to_seq is None else to_seq
    async for m in read_range(conn, from_seq, end):
        read.messages += 1
        got = _stored_at(m.seq, m.subject, m.data)
        if got is not None and keep(got[0]):
            out.append(got[0])
            read.kept(got[1])
    return out


def _earlier(moment: float, slack: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(moment - slack, datetime.UTC)


async def _scan_since(
    conn: Connection, since: datetime.datetime, keep: Keep, read: LogRead, slack: float
) -> list[StoredEvent]:
    """The events ``keep`` takes among the messages stored from ``since`` (less ``slack``) on:
    the start found by one direct get by time, so the read costs what was stored since, not
    the log's age.

    A command's events all carry the time the service decided it, stamped before the server
    stores them. An event kept here carrying a time before the read's start belongs to a
    command begun earlier (``--since`` given inside it), whose first events may lie before the
    start: the read goes back to that time (less ``slack``) for them — never half a command
    reverted under its marker, which could never be reverted whole."""
    from netledger.replay.reader import first_seq_at

    bound = since.timestamp()
    start = await first_seq_at(conn, _earlier(bound, slack))
    if start is None:
        return []  # nothing stored since
    found = await _scan(conn, start, keep, read)
    while read.earliest is not None and read.earliest < bound:
        bound = read.earliest
        earlier = await first_seq_at(conn, _earlier(bound, slack))
        if earlier is None or earlier >= start:
            break
        found = await _scan(conn, earlier, keep, read, start - 1) + found
        start = earlier
    return found


async def _by_seqs(conn: Connection, seqs: list[int], read: LogRead) -> list[StoredEvent]:
    out: list[StoredEvent] = []
    for seq in seqs:
        raw = await conn.js.get_msg(conn.stream, seq)
        read.messages += 1
        s = _stored(seq, str(raw.subject), raw.data or b"")
        if s is not None:
            out.append(s)
    return out


def _open_index(db: Path) -> sqlite3.Connection:
    """The projection at ``db``, read-only. Its URI is built from the absolute path (as
    ops/status.py and projector/query.py do): ``file:{db}`` as written read ``#``, ``?`` and
    ``%`` in a directory's name as a URI's own, and opened — created, empty — another file."""
    return sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)


def _index_seqs(db: Path, *command_ids: str) -> tuple[list[int], int]:
    """The sequences the projection's index holds for ``command_ids``, and the projection's
    checkpoint (what it has read of the log)."""
    with contextlib.closing(_open_index(db)) as c:
        marks = ",".join("?" * len(command_ids))
        seqs = [
            r[0]
            for r in c.execute(
                f"SELECT seq FROM events WHERE command_id IN ({marks}) ORDER BY seq", command_ids
            )
        ]
        row = c.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
    return seqs, int(row[0]) if row else 0


async def events_of_command(
    conn: Connection,
    command_id: str,
    db: Path | None = None,
    *,
    since: datetime.datetime | None = None,
    read: LogRead | None = None,
    slack: float = CLOCK_SLACK_S,
) -> tuple[list[StoredEvent], list[StoredEvent]]:
    """(the events of ``command_id``, the revert marker(s) already naming it): through the
    projection ``db``, else from the messages stored since ``since`` (its markers come after
    it: there too), else from the whole log."""
    mine = command_id_for(command_id, None, None, None)
    read = LogRead() if read is None else read

    def keep(s: StoredEvent) -> bool:
        return s.command_id in (command_id, mine)

    if db is not None:
        # The index up to the projection's checkpoint, the log after it: a projection may have
        # stopped inside the command's atomic batch (it commits at any sequence), and half a
        # command reverted under its marker could never be reverted whole (found by review).
        seqs, upto = _index_seqs(db, command_id, mine)
        both = await _by_seqs(conn, seqs, read)
        both += await _scan(conn, upto + 1, keep, read)
    elif since is not None:
        both = await _scan_since(conn, since, keep, read, slack)
    else:
        both = await _scan(conn, 1, keep, read)
    events = [s for s in both if s.command_id == command_id]
    marks = [s for s in both if s.command_id == mine]
    return events, [s for s in marks if isinstance(s.event, ChangeReverted)]


def _address(s: StoredEvent) -> tuple[str, str]:
    ev = s.event
    assert isinstance(ev, FixedIpAllocated | FixedIpDeallocated)
    return ev.network_id, ev.address


def _undone_in(events: list[StoredEvent]) -> list[StoredEvent]:
    """The deallocations among ``events`` whose allocation ``events`` does not hold (the
    service finds those there: any allocation of the address before the deallocation)."""
    first: dict[tuple[str, str], int] = {}
    for s in events:
        if isinstance(s.event, FixedIpAllocated):
            first[_address(s)] = min(s.seq, first.get(_address(s), s.seq))
    return [
        s
        for s in events
        if isinstance(s.event, FixedIpDeallocated) and first.get(_address(s), s.seq) >= s.seq
    ]


def _index_allocations(db: Path, deallocs: list[StoredEvent]) -> tuple[list[int], int]:
    """The sequence of the allocation each of ``deallocs`` ended as far as the projection's
    events index goes, and how far that is (its checkpoint)."""
    seqs: list[int] = []
    with contextlib.closing(_open_index(db)) as c:
        for s in deallocs:
            network_id, address = _address(s)
            # (address, seq) is indexed: walked back from the deallocation, the first
            # allocation of the address on this network is the one it ended
            got = c.execute(
                "SELECT seq FROM events WHERE address = ? AND seq < ? AND network_id = ?"
                " AND type = 'FixedIpAllocated' ORDER BY seq DESC LIMIT 1",
                (address, s.seq, network_id),
            ).fetchone()
            if got is not None:
                seqs.append(int(got[0]))
        row = c.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
    return seqs, int(row[0]) if row else 0


async def _read_allocations(
    conn: Connection, deallocs: list[StoredEvent], start: int, read: LogRead
) -> list[StoredEvent]:
    """The allocations of the addresses ``deallocs`` free stored from ``start`` on, read back
    from the deallocations until each has one before it (the newest before a deallocation is
    the one it ended: :func:`_owners`) or ``start`` is reached.

    From the network's subject (one subject: served from the server's index, not a scan of the
    log), in windows of sequences going back, each twice as wide as the one after it: the read
    costs the subject's messages since those allocations, not since the network's first (a
    network lives for years). Only allocations are decoded, and only those of the addresses
    asked about kept."""
    out: list[StoredEvent] = []
    by_network: dict[str, list[StoredEvent]] = {}
    for s in deallocs:
        by_network.setdefault(_address(s)[0], []).append(s)
    for network_id, mine in sorted(by_network.items()):
        addresses = {_address(s)[1] for s in mine}
        found: list[StoredEvent] = []
        lo, width = max(s.seq for s in mine), FIRST_WINDOW
        while lo > start and not _each_has_one(mine, found):
            hi, lo = lo - 1, max(start, lo - width)
            width *= 2
            async for seq, subject, data, _msg in iter_subject(
                conn, network_subject(network_id), lo, hi
            ):
                read.messages += 1
                if b"FixedIpAllocated" in data:  # (msgpack keeps the type name as it is)
                    got = _stored(seq, subject, data)
                    ev = None if got is None else got.event
                    if isinstance(ev, FixedIpAllocated) and ev.address in addresses:
                        assert got is not None
                        found.append(got)
        out += found
    return out


def _each_has_one(deallocs: list[StoredEvent], allocations: list[StoredEvent]) -> bool:
    """Whether an allocation of each deallocation's address comes before it (all read from
    the deallocations back: the newest of them is the one it ended)."""
    first: dict[str, int] = {}
    for a in allocations:
        address = _address(a)[1]
        first[address] = min(a.seq, first.get(address, a.seq))
    return all(first.get(_address(d)[1], d.seq) < d.seq for d in deallocs)


def _owners(deallocs: list[StoredEvent], allocations: list[StoredEvent]) -> dict[int, str | None]:
    """Deallocation seq -> the project of the newest allocation of its address before it, if
    of the same instance and MAC (else it is not the one the deallocation ended: unknown)."""
    by_address: dict[tuple[str, str], list[StoredEvent]] = {}
    for a in sorted(allocations, key=lambda a: a.seq):
        if isinstance(a.event, FixedIpAllocated):
            by_address.setdefault(_address(a), []).append(a)
    out: dict[int, str | None] = {}
    for d in deallocs:
        before = [a for a in by_address.get(_address(d), ()) if a.seq < d.seq]
        if before:
            alloc, ev = before[-1].event, d.event
            assert isinstance(alloc, FixedIpAllocated) and isinstance(ev, FixedIpDeallocated)
            if (alloc.instance, alloc.mac) == (ev.instance, ev.mac):
                out[d.seq] = alloc.project
    return out


async def owners_of(
    conn: Connection,
    events: list[StoredEvent],
    db: Path | None = None,
    read: LogRead | None = None,
) -> dict[int, str | None]:
    """Whose the addresses deallocated among ``events`` were: the project of the allocation
    each deallocation ended, where ``events`` does not hold it, by the deallocation's seq.
    Sent with the revert (``owners``), so that an address freed since goes back with its
    project (``FixedIpDeallocated`` records none; docs/revert.md). With ``db`` through the
    projection's events index up to its checkpoint and from the network's subject after it,
    else from the network's subject."""
    read = LogRead() if read is None else read
    deallocs = _undone_in(events)
    if not deallocs:
        return {}
    found: list[StoredEvent] = []
    start = 1
    if db is not None:
        seqs, upto = _index_allocations(db, deallocs)
        found = await _by_seqs(conn, seqs, read)
        start = upto + 1
    later = [s for s in deallocs if s.seq >= start]
    found += await _read_allocations(conn, later, start, read)
    return _owners(deallocs, found)


async def events_after(
    conn: Connection, after_seq: int, scope: str | None, read: LogRead | None = None
) -> list[StoredEvent]:
    instances: set[str] = set()
    return await _scan(conn, after_seq + 1, lambda s: in_scope(s.event, scope, instances), read)


async def revert(
    conn: Connection,
    client: Client,
    *,
    command_id: str | None = None,
    to_seq: int | None = None,
    scope: str | None = None,
    db: Path | None = None,
    since: datetime.datetime | None = None,
    dry_run: bool = False,
    slack: float = CLOCK_SLACK_S,
) -> dict[str, Any]:
    """Read the events to undo, have the service decide (and append unless ``dry_run``).

    The result is the service's answer with ``log_messages_read``: the messages this read of
    the log (by sequence, by time, by subject) to find the events and their owners."""
    if (command_id is None) == (to_seq is None):
        raise ConflictingOptions("give exactly one of --command-id and --to-seq")
    if since is not None and command_id is None:
        raise ConflictingOptions("--since finds a command's events: give it with --command-id")
    if since is not None and db is not None:
        raise ConflictingOptions(
            "give --db or --since, not both: the projection's index finds the command's events"
            " without reading the log"
        )
    if since is not None and since.tzinfo is None:
        raise ValueError("'since' must be timezone-aware")
    read = LogRead()
    if command_id is not None:
        events, marks = await events_of_command(
            conn, command_id, db, since=since, read=read, slack=slack
        )
        if marks:
            raise AlreadyReverted(
                f"command {command_id} was already reverted (marker #{marks[0].seq},"
                f" command {marks[0].command_id})",
                seq=marks[0].seq,
            )
        if scope is not None:
            events = [s for s in events if in_scope(s.event, scope, set())]
        upto = None
    else:
        assert to_seq is not None
        events = await events_after(conn, to_seq, scope, read)
        upto = max((s.seq for s in events), default=to_seq)
    if not events:
        what = (
            f"the log holds no events of command {command_id}"
            if command_id is not None
            else f"the log holds no events after seq {to_seq}"
        )
        if scope is not None:
            what += f" within scope {scope}"
        if since is not None:
            what += (
                f" stored since {since.isoformat()} (give an earlier --since: at or before the"
                " command's time, as `netledger audit` shows it)"
            )
        raise NothingToRevert(f"nothing to revert: {what}")
    if len(events) > MAX_REVERT_EVENTS:
        raise RevertTooLarge(
            f"{len(events)} events to revert; at most {MAX_REVERT_EVENTS} fit one atomic batch:"
            " narrow it with --scope or a later --to-seq",
            count=len(events),
        )
    args: dict[str, Any] = {
        "reverted_command_id": command_id,
        "after_seq": to_seq,
        "upto_seq": upto,
        "scope": scope,
        "events": pack_events(events),
    }
    owners = await owners_of(conn, events, db, read)
    if owners:
        args["owners"] = pack_owners(owners)
    rid = command_id_for(command_id, to_seq, upto, scope)
    name = "revert.plan" if dry_run else "revert"
    for attempt in range(50):
        try:
            answer = await client.request(name, args, command_id=rid)
            return {**answer, "log_messages_read": read.messages}
        except NetledgerError as err:
            if err.code != "service_behind" or attempt == 49:
                raise
            await asyncio.sleep(0.1)  # the service is still folding what we just read
    raise AssertionError("unreachable")


def render(result: dict[str, Any]) -> str:
    from netledger.replay.audit import phrase

    what = (
        f"command {result['reverted_command_id']}"
        if result.get("reverted_command_id")
        else f"events after #{result.get('after_seq')} up to #{result.get('upto_seq')}"
        + (f" in {result['scope']}" if result.get("scope") else "")
    )
    verb = "reverted" if result.get("appended") else "would revert (dry run, nothing appended)"
    lines = [f"{verb} {what} as command {result.get('revert_command_id')}:"]
    for e in result.get("events", []):
        lines.append(f"  {e['type']:<24} {phrase(e['type'], e['data'])}")
    if result.get("skipped_seqs"):
        kept = ", ".join(f"#{s}" for s in result["skipped_seqs"])
        lines.append(f"  left as they are (reported facts): {kept}")
    return "\n".join(lines)


@click.command("revert")
@click.option("--command-id", default=None, help="Revert every event of this command.")
@click.option(
    "--to-seq", type=click.IntRange(min=0), default=None, help="Revert every event after seq N."
)
@click.option(
    "--scope",
    nargs=2,
    type=(click.Choice(["network", "project", "pool"]), str),
    default=None,
    help="Only the events of one network, project or pool (e.g. --scope network 7).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Find the command's events (and the allocations the deallocations among them ended)"
    " through this projection's events index (else read the log).",
)
@click.option(
    "--since",
    callback=moment_callback("--since"),
    help="Without --db: look for the command's events only among the messages stored from"
    " this time on (ISO 8601 with a time zone; at or before the command's time, as"
    " `netledger audit` shows it): the read then costs what was stored since, not the whole"
    " log.",
)
@click.option("--dry-run", is_flag=True, help="Print the compensating events; append nothing.")
@pass_settings
def revert_cmd(
    settings: Settings,
    command_id: str | None,
    to_seq: int | None,
    scope: tuple[str, str] | None,
    db: Path | None,
    since: datetime.datetime | None,
    dry_run: bool,
) -> None:
    """Undo a change by appending compensating events, checked against the current state.

    --command-id ID undoes one command's events; --to-seq N every event after sequence N
    (optionally only within --scope). The compensations (a deallocation for an allocation, a
    re-association for a disassociation, a deletion for a network creation, ...) and a
    ChangeReverted marker are appended as one atomic batch under the command id
    revert-<ID> (revert-seq-N-M[-scope]); a revert that later changes make impossible is
    refused with the reasons and appends nothing. DHCP leases/releases and host events are
    left as they are. The history keeps both; `netledger audit` shows the link.

    Finding a command's events: with --db through the projection's events index (and the
    log after its checkpoint); else by reading the log — from the first message stored at
    --since (found by time, not by reading: a minute earlier, for clock differences; further
    back if the command began before it), else from its first message, a read as long as
    the log is old. The result says how many messages were read (log_messages_read).
    """
    scope_s = f"{scope[0]}:{scope[1]}" if scope else None

    async def go() -> dict[str, Any]:
        conn = await connect(settings.url, name="netledger-revert", **settings.connect_kwargs())
        try:
            return await revert(
                conn,
                Client(conn, settings.actor),
                command_id=command_id,
                to_seq=to_seq,
                scope=scope_s,
                db=db,
                since=since,
                dry_run=dry_run,
            )
        finally:
            await conn.close()

    result = run(settings, go)
    if command_id is not None and db is None and since is None:
        click.echo(
            f"netledger: read the whole log ({result['log_messages_read']} messages) for command"
            f" {command_id}; --since TIME (at or before the command's time, as `netledger audit`"
            " shows it) or --db PROJECTION bounds that read",
            err=True,
        )
    emit(result, text=render(result))


COMMANDS = [revert_cmd]
