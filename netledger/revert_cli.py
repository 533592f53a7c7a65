"""``netledger revert``: read the events to undo from the log, ask the service to undo them.

The client side of :mod:`netledger.events.revert`: it finds the stored events and whose the
addresses they free again were (:mod:`netledger.replay.revert_reads`: by command id through a
projection's events index — ``--db``, else the one on this machine when it is of this stream —
or from the messages stored since ``--since``, else the whole log; by sequence: every event
after N, within ``--scope``), sends them in one ``revert`` (or ``revert.plan`` for
``--dry-run``) command, and prints the service's decision. What it read of the revert markers
goes with it (``markers_upto``): a revert landed since refuses it ``revert_raced``, and the
markers since are read — one that undid any of the same events is ``already_reverted``, else
the revert is sent again (docs/revert.md "Two reverts at once").
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Any

import click

import netledger.events.revert_events  # noqa: F401  (every netledger process decodes markers)
from netledger.cli import command_client
from netledger.common.output import emit, plural
from netledger.common.settings import Settings, pass_settings, run
from netledger.events.errors import NetledgerError, ValidationError
from netledger.events.ids import command_time
from netledger.events.revert import (
    MAX_REVERT_EVENTS,
    NothingToRevert,
    RevertTooLarge,
    StoredEvent,
    command_id_for,
    in_scope,
    is_skipped,
    pack_events,
    pack_owners,
)
from netledger.events.revert_events import ChangeReverted
from netledger.journal.stream import Connection, connect, last_seq
from netledger.projector.errors import ProjectorError
from netledger.replay.cli import moment_callback
from netledger.replay.errors import SeqBeyondStream
from netledger.replay.revert_reads import (
    CLOCK_SLACK_S,
    LogRead,
    _owners,
    _scan,
    _undone_in,
    check_projection,
    compensations_of,
    events_after,
    events_of_command,
    owners_of,
    reverted_by,
    undone_since,
)
from netledger.replay.times import iso_us
from netledger.service.client import Client

#: The reads live in :mod:`netledger.replay.revert_reads`; named here too for the callers (and
#: tests) that have always imported them from the command.
__all__ = [
    "AlreadyReverted",
    "ConflictingOptions",
    "_owners",
    "_scan",
    "_undone_in",
    "events_after",
    "events_of_command",
    "owners_of",
    "render",
    "revert",
]


class AlreadyReverted(NetledgerError):
    code = "already_reverted"


class RevertUndone(NetledgerError):
    """The command's own revert (``revert-<id>``) was undone since by a later revert: its
    changes stand again, and that id is taken (a revert under it is answered as the old one's
    retry). Details: ``seq``/``command_id`` (its revert's marker), ``undone_by``/``undone_seq``
    (the revert that undid it)."""

    code = "revert_undone"


class ConflictingOptions(ValidationError):
    code = "conflicting_options"


#: How many times a revert refused ``revert_raced`` (another revert landed after its read of
#: the markers, undoing none of its events) reads the markers since and is sent again: reverts
#: are rare, and each read costs only the markers since the last one.
RACED_RETRIES = 3


def _projection_here(settings: Settings) -> Path | None:
    """The projection ``show`` and ``audit`` read on this machine when given no ``--db`` (a
    running serve's, ``$NETLEDGER_DATA``'s, the default data folder's), if there is one."""
    if settings.find_projection is None:
        return None
    try:
        path = settings.find_projection(settings.nats)
    except NetledgerError:
        return None
    return path if path.is_file() else None


def _made_at(command_id: str) -> datetime.datetime | None:
    """When ``command_id`` says it was made (a UUIDv7: events/ids.py ``command_time``), if a
    datetime holds it. A client's own id of 32 hex digits may merely look like a UUIDv7 (an MD5
    digest: one in 64), its "time" anything up to the year 10889 (one MD5 id in ~700 beyond
    9999): an id whose time no datetime holds carries none (review h108). A revert's own id,
    ``revert-<id>`` (events/revert.py ``command_id_for``), was made after ``<id>``: the inner
    id's time bounds it from below (a revert of a revert read the whole log, review h107)."""
    while command_id.startswith("revert-"):
        command_id = command_id[len("revert-") :]
    made = command_time(command_id)
    if made is None:
        return None
    try:
        return datetime.datetime.fromtimestamp(made, datetime.UTC)
    except (ValueError, OverflowError, OSError):
        return None


def _already(what: str, events: list[StoredEvent], mark: StoredEvent, rest: str) -> AlreadyReverted:
    """``what``'s events (some or all) were undone by the revert whose marker is ``mark``: the
    command's own (``revert-<id>``) or a range's (``revert-seq-N-M``). ``rest``: how the
    events it did not undo are undone, when it undid only some."""
    ev = mark.event
    assert isinstance(ev, ChangeReverted)
    undone = sorted({s.seq for s in events}.intersection(ev.reverted_seqs))
    partly = bool(events) and len(undone) < len({s.seq for s in events if not is_skipped(s.event)})
    how = f"partly ({', '.join(f'#{q}' for q in undone)}; {rest}) " if partly else ""
    return AlreadyReverted(
        f"{what} was already reverted {how}by command {mark.command_id} (marker #{mark.seq})",
        seq=mark.seq,
        command_id=mark.command_id,
        seqs=undone,
    )


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
    the log (by sequence, by time, by subject) to find the events and their owners, and
    ``events_found_by``: ``index`` (the projection ``db``), ``since``, ``command_time`` (the
    time a UUIDv7 command id carries), ``log`` (the whole log) or ``after_seq``."""
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
    if db is not None:
        # A projection of another stream, or of this one before a restore, would name other
        # messages: refused as the projector refuses it, before anything is read (review h108).
        await check_projection(conn, db)
    read = LogRead()
    found_by = "index" if db is not None else "since" if since is not None else "log"
    if command_id is not None:
        after = _made_at(command_id) if found_by == "log" else None
        if after is not None:
            # The id says when it was made (a UUIDv7, as Client makes them): read from then on.
            # Only a hint — the client's clock: found nothing there, the whole log is read.
            found_by = "command_time"
            events, marks = await events_of_command(
                conn, command_id, since=after, read=read, slack=slack
            )
            if not events and not marks:
                found_by = "log"
        if found_by != "command_time":
            events, marks = await events_of_command(
                conn, command_id, db, since=since, read=read, slack=slack
            )
        label = f"command {command_id}"
        rest = "a --to-seq revert within --scope undoes the rest"
        if marks:
            # Its own revert, undone since by a range that held its compensations: the changes
            # stand again, and no revert can go under revert-<id> (review h114).
            undone = await undone_since(conn, marks[0], read)
            if undone is None:
                raise _already(label, events, marks[0], rest)
            # (what undid it may have undone the command too: a range that held both)
            done = await reverted_by(conn, events, read)
            if not done:
                raise RevertUndone(
                    f"command {command_id} was reverted by command {marks[0].command_id}"
                    f" (marker #{marks[0].seq}), which command {undone.command_id} (marker"
                    f" #{undone.seq}) undid since: its changes stand again, and that id is"
                    " taken — undo them with a --to-seq revert (within --scope)",
                    seq=marks[0].seq,
                    command_id=marks[0].command_id,
                    undone_by=undone.command_id,
                    undone_seq=undone.seq,
                )
            raise _already(label, events, done[0], rest)
        if scope is not None:
            events = [s for s in events if in_scope(s.event, scope, set())]
        # A range revert (--to-seq) that covered the command wrote its marker under its own
        # id: compensated again, the command undid a later change (review h112).
        markers = await last_seq(conn)
        done = await reverted_by(conn, events, read, upto=markers)
        if done:
            raise _already(label, events, done[0], rest)
        upto = None
    else:
        assert to_seq is not None
        found_by = "after_seq"
        # Read up to the log's end now: a marker up to it that undid events of the range is
        # in the range too, with its compensations (undone with the rest, newest first).
        markers = await last_seq(conn)
        if to_seq > markers:
            # a sequence the log does not have is a typo, not "nothing to revert" (h136)
            raise SeqBeyondStream(
                f"the stream ends at seq {markers}; there is no seq {to_seq} to revert after",
                to_seq=to_seq,
                stream_last_seq=markers,
            )
        events = await events_after(conn, to_seq, scope, read, markers)
        upto = max((s.seq for s in events), default=to_seq)
        label = f"events after #{to_seq} up to #{upto}" + (f" in {scope}" if scope else "")
        rest = f"revert --to-seq {to_seq} again: the range then holds that revert, undone too"
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
                f" stored since {iso_us(since)} (give an earlier --since: at or before the"
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
        # What this read saw of the markers: one stored after it refuses the revert
        # (revert_raced), and whether it undid any of these events is read below (review h113).
        "markers_upto": markers,
    }
    owners = await owners_of(conn, events, db, read)
    if owners:
        args["owners"] = pack_owners(owners)
    rid = command_id_for(command_id, to_seq, upto, scope)
    name = "revert.plan" if dry_run else "revert"
    raced = 0
    for attempt in range(50):
        try:
            answer = await client.request(name, args, command_id=rid)
            return {**answer, "log_messages_read": read.messages, "events_found_by": found_by}
        except NetledgerError as err:
            if err.code == "revert_raced" and raced < RACED_RETRIES:
                # Another revert landed after this one read the markers: the service's fold
                # does not say what it undid, its marker does. Undid it any of these events,
                # a second compensation would undo a later change (review h113).
                raced += 1
                now = await last_seq(conn)
                # A command's: every marker since it again, as one landed since may have made
                # an earlier one stand again (a range undoing the range that undid its revert:
                # review h114). A range's: those since, as one inside it that undid its events
                # is undone with them.
                seen_upto = markers if command_id is None else None
                done = await reverted_by(conn, events, read, after=seen_upto, upto=now)
                own = next((m for m in done if m.command_id == rid), None)
                if own is not None and not dry_run:
                    # Its own marker: a send of this revert landed, its answer was lost, and
                    # the replica the resend reached no longer remembered it (past the
                    # service's SEEN_COMMANDS) and decided it again on the markers since.
                    answer = await _landed(conn, own, read)
                    return {
                        **answer,
                        "log_messages_read": read.messages,
                        "events_found_by": found_by,
                    }
                if done:
                    raise _already(label, events, done[0], rest) from None
                args["markers_upto"] = markers = now
                continue
            if err.code != "service_behind" or attempt == 49:
                raise
            await asyncio.sleep(0.1)  # the service is still folding what we just read
    raise AssertionError("unreachable")


async def _landed(conn: Connection, mark: StoredEvent, read: LogRead) -> dict[str, Any]:
    """The service's answer to the revert whose marker is ``mark``, as the log holds it (the
    decider's result: events/revert.py ``decide_revert``)."""
    ev = mark.event
    assert isinstance(ev, ChangeReverted)
    made = [*await compensations_of(conn, mark, read), mark]
    return {
        "revert_command_id": mark.command_id,
        "reverted_command_id": ev.reverted_command_id,
        "after_seq": ev.after_seq,
        "upto_seq": ev.upto_seq,
        "scope": ev.scope,
        "reverted_seqs": ev.reverted_seqs,
        "skipped_seqs": ev.skipped_seqs,
        "events": [
            {"type": s.event.TYPE, "subject": s.subject, "data": s.event.to_data()} for s in made
        ],
        "appended": True,
    }


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
        # not all facts of the world: the NAT and placement records written for the executors
        # (FloatingIpUnmapped, NetworkHostJoined, ...) are left too, the compensations bringing
        # their own (events/revert_compensate.py SKIPPED_TYPES; h136: called "reported facts")
        lines.append(
            f"  left as they are (reported facts; records the compensations write anew): {kept}"
        )
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
    " through this projection's events index. Default without --since: the projection"
    " `show` and `audit` read on this machine, if it is one of this stream; else the log.",
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
    log after its checkpoint); with --since by reading the log from the first message stored
    then (found by time, not by reading: a minute earlier, for clock differences; further
    back if the command began before it); with neither through the projection on this
    machine (a running serve's, as `show` finds it) if it is one of this stream, else from
    the time the command id carries (a UUIDv7: what netledger's client gives a command),
    else by reading the whole log, a read as long as the log is old (said on stderr). The
    result says how many messages were read (log_messages_read) and how the events were
    found (events_found_by: index, since, command_time, log, after_seq).
    """
    scope_s = f"{scope[0]}:{scope[1]}" if scope else None
    here = _projection_here(settings) if command_id and db is None and since is None else None

    #: why this machine's projection was not used (it is checked as the projector checks it)
    refused: list[str] = []

    async def go() -> tuple[dict[str, Any], Path | None]:
        conn = await connect(settings.url, name="netledger-revert", **settings.connect_kwargs())
        try:
            found = None
            if here is not None:
                try:
                    await check_projection(conn, here)
                    found = here
                except ProjectorError as exc:
                    refused.append(str(exc))
            result = await revert(
                conn,
                command_client(conn, settings),
                command_id=command_id,
                to_seq=to_seq,
                scope=scope_s,
                db=db or found,
                since=since,
                dry_run=dry_run,
            )
            return result, found
        finally:
            await conn.close()

    result, found = run(settings, go)
    if found is not None:
        click.echo(
            f"netledger: found command {command_id}'s events through the projection {found}"
            f" (this machine's; read {plural(result['log_messages_read'], 'message')} of the log)",
            err=True,
        )
    elif result.get("events_found_by") == "log" and command_id is not None:
        mismatch = f" (not using {here}: {refused[0]})" if refused else ""
        click.echo(
            f"netledger: read the whole log ({plural(result['log_messages_read'], 'message')}) for command"
            f" {command_id}{mismatch}; --since TIME (at or before the command's time, as"
            " `netledger audit` shows it) or --db PROJECTION bounds that read",
            err=True,
        )
    emit(result, text=render(result))


COMMANDS = [revert_cmd]
