"""What a revert reads of the log: a command's events, the events after a sequence, and whose
the addresses it frees again were (the client side of :mod:`netledger.events.revert`, which
``netledger revert`` sends to the service to decide on).

Each read costs what it is asked about, not the log's age (issue 13; docs/revert.md "What a
revert reads"): a command's events through a projection's events index (``db``), or from the
first message stored at ``since`` (found by one direct get by time); whose an address was,
from its network's subject back from the deallocation. A read of the whole log remains only
for a command id given with neither. :class:`LogRead` counts what was read.
"""

from __future__ import annotations

import contextlib
import datetime
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netledger.events.codec import decode
from netledger.events.errors import DecodeError
from netledger.events.ids import network_subject
from netledger.events.revert import StoredEvent, command_id_for, in_scope
from netledger.events.revert_events import REVERT_SUBJECT, ChangeReverted
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated
from netledger.journal.follow import iter_subject
from netledger.journal.stream import Connection, last_seq, message_at, retrying
from netledger.projector.anchor import check_log, check_stream
from netledger.projector.errors import (
    ProjectionNotFound,
    ProjectorError,
    not_a_projection,
)

from .reader import first_seq_at, read_range

#: How far the service's clock (which stamps an event's time) and the server's (which stamps
#: its store time, what a read by time starts from) may differ: a read from ``--since`` starts
#: this much earlier, so an event stamped at ``--since`` is read even if stored "before" it.
CLOCK_SLACK_S = 60.0

#: The first window of a backward read of a network's subject, in stream sequences.
FIRST_WINDOW = 256


@dataclass
class LogRead:
    """What a revert read of the log, reported with its result (``log_messages_read``): an
    operator (and a test) sees whether the read followed the command or the log's age."""

    messages: int = 0
    #: the earliest time an event kept carries (its envelope's, set by the service)
    earliest: float | None = None
    #: the kept message of the lowest sequence: (its seq, the time it carries, its store time)
    first: tuple[int, float, float] | None = None

    def kept(self, time: float, seq: int = 0, stored: float = 0.0) -> None:
        self.earliest = time if self.earliest is None else min(self.earliest, time)
        if self.first is None or seq < self.first[0]:
            self.first = (seq, time, stored)


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
    read = LogRead() if read is None else read
    out: list[StoredEvent] = []
    end = await last_seq(conn) if to_seq is None else to_seq
    async for m in read_range(conn, from_seq, end):
        read.messages += 1
        got = _stored_at(m.seq, m.subject, m.data)
        if got is not None and keep(got[0]):
            out.append(got[0])
            read.kept(got[1], m.seq, m.stream_time)
    return out


def _earlier(moment: float, slack: float) -> datetime.datetime:
    # (no message is stored before 1970: a --since near the year 1, less the slack, is no
    # datetime)
    return datetime.datetime.fromtimestamp(max(0.0, moment - slack), datetime.UTC)


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
    # A command's message at the very start of the read, stamped more than the slack after
    # it was stored: the service's clock is that far ahead of the server's, and the events
    # found there stamped after a --since they were stored before — nothing above sent the
    # read back, though its first messages may lie before the start (review h108). An atomic
    # batch is stored contiguously: followed back message by message (one direct get each).
    if read.first is None or read.first[0] != start or read.first[1] - read.first[2] <= slack:
        return found
    while found and found[0].seq == start > 1:
        msg = await message_at(conn, start - 1)
        read.messages += 1
        got = None if msg is None else _stored(start - 1, str(msg.subject), msg.data or b"")
        if got is None or not keep(got):
            break
        found.insert(0, got)
        start -= 1
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


async def check_projection(conn: Connection, db: Path) -> None:
    """Raise unless ``db`` is a projection of this log as far as it goes, one whose events index
    may find a command's events: of this stream (its name and creation time: another cloud's
    names other messages by their sequences, and the log after its checkpoint would be searched
    from the wrong place), not ahead of it, and holding at its newest row the message the log
    holds there. A log restored from an older backup keeps its name and creation time and,
    written past the projection's checkpoint, its length; only its messages differ: the index
    would name the lost log's, and the read after the checkpoint start inside a command
    straddling it (half of it reverted; a marker stored before the checkpoint missed: review
    h108). The projector refuses such a file alike (projector/anchor.py)."""
    try:
        with contextlib.closing(_open_index(db)) as c:
            row = c.execute(
                "SELECT stream, stream_created, last_seq FROM projection_state WHERE id = 1"
            ).fetchone()
    except sqlite3.Error as exc:
        raise not_a_projection(db, exc) from None
    if row is None:
        raise ProjectionNotFound(f"{db} is not a netledger projection (no state)", db=str(db))
    info = await retrying(lambda: conn.js.stream_info(conn.stream), "stream info")
    created = info.created.isoformat() if info.created else ""
    upto = int(row[2] or 0)
    check_stream(
        db,
        (row[0] or "", row[1]),  # (a projection that never read: of no stream yet, not this one)
        upto,
        conn.stream,
        created,
        int(info.state.last_seq),
        mismatch="its sequences name other messages",
        ahead="the stream was restored from an older backup",
    )
    await check_log(conn, db, upto)


async def projection_of(conn: Connection, db: Path) -> bool:
    """Whether ``db`` is a projection of this log as far as it goes (:func:`check_projection`):
    one found rather than given may be another cloud's (the default data folder's), or one of
    this stream from before a restore."""
    try:
        await check_projection(conn, db)
    except ProjectorError:
        return False
    return True


def _checkpoint(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT last_seq FROM projection_state WHERE id = 1").fetchone()
    return int(row[0] or 0) if row else 0


def _index_seqs(db: Path, *command_ids: str) -> tuple[list[int], int]:
    """The sequences the projection's index holds for ``command_ids``, and the projection's
    checkpoint (what it has read of the log; the caller reads the log after it).

    The checkpoint first, then the rows at or below it: a running serve's projector commits
    between two statements (each its own read), and a message it committed after the rows
    were read but before the checkpoint was would be in neither read — half a command found
    (review h108)."""
    with contextlib.closing(_open_index(db)) as c:
        upto = _checkpoint(c)
        marks = ",".join("?" * len(command_ids))
        seqs = [
            r[0]
            for r in c.execute(
                f"SELECT seq FROM events WHERE command_id IN ({marks}) AND seq <= ? ORDER BY seq",
                (*command_ids, upto),
            )
        ]
    return seqs, upto


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


async def reverted_by(
    conn: Connection,
    events: list[StoredEvent],
    read: LogRead | None = None,
    *,
    after: int | None = None,
    upto: int | None = None,
) -> list[StoredEvent]:
    """The revert markers that undid any of ``events`` already, whatever their command id: a
    range revert (``--to-seq``) writes its marker as ``revert-seq-N-M``, not ``revert-<id>``,
    and a command it covered, compensated again, undid a later change or was refused with a
    conflict that did not say why (review h112).

    Every marker lives on one subject and names the sequences it undid (``reverted_seqs``);
    one that undid an event was stored after it: that subject from the first of ``events`` on
    is read (served from the server's index), a read that costs the reverts since the command,
    not the log. ``after``: read only the markers stored after it (those a read up to it did
    not see: review h113); ``upto``: up to it (default: the stream's last now). A marker whose
    compensations a later one undid is no longer in effect (:func:`in_effect`)."""
    read = LogRead() if read is None else read
    seqs = {s.seq for s in events}
    if not seqs:
        return []
    start = max(min(seqs), after or 0) + 1
    end = await last_seq(conn) if upto is None else upto
    marks: list[StoredEvent] = []
    async for seq, subject, data, _msg in iter_subject(conn, REVERT_SUBJECT, start, end):
        read.messages += 1
        got = _stored(seq, subject, data)
        if got is not None and isinstance(got.event, ChangeReverted):
            marks.append(got)
    return [m for m in in_effect(marks) if seqs.intersection(_undid(m))]


async def undone_since(
    conn: Connection, mark: StoredEvent, read: LogRead | None = None
) -> StoredEvent | None:
    """The marker of the revert that undid ``mark``'s since (every compensation of it:
    :func:`in_effect`), or None while it stands. Reads the markers after it (the reverts
    since)."""
    read = LogRead() if read is None else read
    later: list[StoredEvent] = []
    async for seq, subject, data, _msg in iter_subject(
        conn, REVERT_SUBJECT, mark.seq + 1, await last_seq(conn)
    ):
        read.messages += 1
        got = _stored(seq, subject, data)
        if got is not None and isinstance(got.event, ChangeReverted):
            later.append(got)
    standing = in_effect([mark, *later])
    if standing and standing[0].seq == mark.seq:
        return None
    ev = mark.event
    assert isinstance(ev, ChangeReverted)
    made = set(range(mark.seq - ev.compensations, mark.seq))
    return next((m for m in standing if made.intersection(_undid(m))), None)


async def compensations_of(
    conn: Connection, mark: StoredEvent, read: LogRead | None = None
) -> list[StoredEvent]:
    """The compensating events the revert whose marker is ``mark`` appended: the messages
    right before the marker in its atomic batch (the placements they brought follow it)."""
    ev = mark.event
    assert isinstance(ev, ChangeReverted)
    seqs = list(range(mark.seq - ev.compensations, mark.seq))
    got = await _by_seqs(conn, seqs, LogRead() if read is None else read)
    return [s for s in got if s.command_id == mark.command_id]


def _undid(mark: StoredEvent) -> list[int]:
    ev = mark.event
    assert isinstance(ev, ChangeReverted)
    return ev.reverted_seqs


def in_effect(marks: list[StoredEvent]) -> list[StoredEvent]:
    """The markers (``marks``: in the log's order) whose revert still stands: not one whose
    compensations later reverts undid, every one of them (a range that held them) — what it
    undid is live again, and a command it covered was told ``already_reverted`` and could not be
    reverted by its id (review h114). Newest first, as an undo only reaches back: a marker
    undone by one itself undone stands again. A revert's compensations are the messages right
    before its marker (one atomic batch, the marker after them: events/revert.py). One undone
    in part still stands, and undoes nothing of an earlier one for sure (which of its events
    came back is not recorded): refused, never compensated twice."""
    #: undone by a revert standing whole; by one standing at least in part
    sure: set[int] = set()
    maybe: set[int] = set()
    out: list[StoredEvent] = []
    for m in reversed(marks):
        ev = m.event
        assert isinstance(ev, ChangeReverted)
        made = range(m.seq - ev.compensations, m.seq)
        if ev.compensations and all(q in sure for q in made):
            continue
        whole = not any(q in maybe for q in made)
        maybe.update(ev.reverted_seqs)
        if whole:
            sure.update(ev.reverted_seqs)
        out.append(m)
    out.reverse()
    return out


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
    events index goes, and how far that is (its checkpoint: read first, the rows bounded by it,
    as :func:`_index_seqs`)."""
    seqs: list[int] = []
    with contextlib.closing(_open_index(db)) as c:
        upto = _checkpoint(c)
        for s in deallocs:
            network_id, address = _address(s)
            # (address, seq) is indexed: walked back from the deallocation, the first
            # allocation of the address on this network is the one it ended
            got = c.execute(
                "SELECT seq FROM events WHERE address = ? AND seq < ? AND network_id = ?"
                " AND type = 'FixedIpAllocated' ORDER BY seq DESC LIMIT 1",
                (address, min(s.seq, upto + 1), network_id),
            ).fetchone()
            if got is not None:
                seqs.append(int(got[0]))
    return seqs, upto


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
    conn: Connection,
    after_seq: int,
    scope: str | None,
    read: LogRead | None = None,
    upto: int | None = None,
) -> list[StoredEvent]:
    """The events after ``after_seq`` up to ``upto`` (default: the stream's last now) within
    ``scope``."""
    instances: set[str] = set()
    return await _scan(
        conn, after_seq + 1, lambda s: in_scope(s.event, scope, instances), read, upto
    )
