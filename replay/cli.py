"""``netledger replay | audit | verify | export | import``: a thin click layer over
:mod:`netledger.replay` (errors become stable codes and exit 1 at this edge only)."""

from __future__ import annotations

import datetime
import sys
from collections.abc import Callable, Coroutine
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TextIO

import click

from netledger.common.output import emit, fail, plural
from netledger.common.settings import Settings, pass_settings, run

from .errors import ProjectionMismatch, SnapshotMismatch, SnapshotUnusable


def moment_callback(
    what: str, end: bool = False
) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback turning an ISO 8601 option into an aware datetime (naive refused);
    ``end``: an upper bound, the last microsecond of the unit the time is written to
    (``times.moment_end``)."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        from .errors import ReplayError
        from .times import moment_end, parse_moment

        try:
            moment = parse_moment(value, what)
            return moment_end(value, moment) if end else moment
        except ReplayError as err:
            settings = ctx.find_object(Settings)
            fail(err, bool(settings and settings.as_json))

    return convert


def _with_conn(settings: Settings, name: str, fn: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
    from netledger.journal.stream import connect

    async def go() -> Any:
        conn = await connect(settings.url, name=name, **settings.connect_kwargs())
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return run(settings, go)


DB_OPTION = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="NETLEDGER_DB",
    default=None,
    help="Projection database (default: that of the `netledger serve` running on this machine,"
    " else DATA/projection.db). Env: NETLEDGER_DB.",
)


# --- replay -----------------------------------------------------------------------------------


@click.command("replay")
@click.option(
    "--db",
    "out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The projection database to write (a new file).",
)
@click.option("--to-seq", type=click.IntRange(0), help="Stop after this stream sequence.")
@click.option(
    "--at",
    callback=moment_callback("--at", end=True),
    help="Stop at the last message stored at or before this moment (ISO 8601 with a time zone,"
    " e.g. 2026-05-01T10:00:00Z).",
)
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@pass_settings
def replay_cmd(
    settings: Settings,
    out: Path,
    to_seq: int | None,
    at: datetime.datetime | None,
    force: bool,
) -> None:
    """Rebuild a projection database from the log, as of a sequence or a moment.

    The result is an ordinary projection: every `netledger show ... --db OUT` reads it. Without
    --to-seq or --at it replays everything in the stream now. A progress bar is shown when
    stderr is a terminal.
    """
    from .rebuild import rebuild

    if to_seq is not None and at is not None:
        raise click.UsageError("give --to-seq or --at, not both")
    result = _with_conn(
        settings,
        "netledger-replay",
        lambda conn: rebuild(conn, out, to_seq=to_seq, at=at, force=force),
    )
    last = (
        f"last event at {result['last_event_time']}"
        if result["last_event_time"] is not None
        else "nothing was stored by then"
        if at is not None
        else "no event"
    )
    text = (
        f"projection {result['db']} at seq {result['last_seq']} ({plural(result['events'], 'event')},"
        f" {result['rejected']} rejected; {last}; stream ends at {result['stream_last_seq']})"
    )
    if result.get("next_stamped_by_at"):
        text += (
            f"\n  #{result['next_seq']}, stamped {result['next_event_time']} (as audit shows"
            f" it), was stored at {result['next_stored_at']}, after --at: not included (--at"
            " cuts on the store time); --to-seq up to its command's last event includes it"
            " (audit lists them)"
        )
    emit(result, settings.as_json, text)


# --- audit ------------------------------------------------------------------------------------


@click.command("audit")
@click.argument("kind", type=click.Choice(["address", "instance", "project", "network", "host"]))
@click.argument("value")
@click.option(
    "--since", callback=moment_callback("--since"), help="Only events at or after this time."
)
@click.option(
    "--until",
    callback=moment_callback("--until", end=True),
    help="Only events at or before this time (to the unit it is written to: 10:00:00Z is"
    " the whole second).",
)
@DB_OPTION
@click.option(
    "--from-log",
    is_flag=True,
    help="Read the stream instead of the projection: the whole log from seq 1 (--since"
    " does not shorten it), a read as long as the log is old; needs no projection.",
)
@pass_settings
def audit_cmd(
    settings: Settings,
    kind: str,
    value: str,
    since: datetime.datetime | None,
    until: datetime.datetime | None,
    db: Path | None,
    from_log: bool,
) -> None:
    """The history of an address, instance, project, network (id) or host, oldest first.

    Each line: sequence, time, what happened (the data that matters), who did it, event type.
    Times are the events' own (ISO 8601, UTC). Served from the projection's events index
    (--db); --from-log reads the stream instead. The first line, and each event's
    `checkpoint` in --json, says the last log sequence the answer covers (the projection's
    checkpoint; with --from-log, the log's end). An address is IPv4 or IPv6, in any notation
    (it is looked up as the log writes it: 2001:DB8::0001 finds 2001:db8::1).
    """
    from . import audit
    from .errors import BadTime
    from .times import iso

    if since is not None and until is not None and since > until:
        # (an empty window by mistake — the two swapped — said "0 events", as if nothing had
        # happened: review h136)
        fail(
            BadTime(
                f"--since {iso(since.timestamp())} is after --until {iso(until.timestamp())}:"
                " no moment is in that window",
                since=iso(since.timestamp()),
                until=iso(until.timestamp()),
            ),
            settings.as_json,
        )
    if kind == "address":
        value = _address(value, settings.as_json)
    if from_log:
        rows, checkpoint = _with_conn(
            settings,
            "netledger-audit",
            lambda conn: audit.answer_from_log(conn, kind, value, since, until),
        )
        basis = f"the log read to seq {checkpoint}"
    else:
        path = settings.projection(db)

        async def go() -> tuple[list[dict[str, Any]], int]:
            return audit.answer_from_index(path, kind, value, since, until)

        rows, checkpoint = run(settings, go)
        basis = f"projection at seq {checkpoint}"
    # Each row says the checkpoint its answer is based on (a list has no other place for it):
    # an event not listed may be one the projection has not reached yet.
    shown = [{**audit.present(r), "checkpoint": checkpoint} for r in rows]
    head = f"{kind} {value}: {plural(len(shown), 'event')} ({basis})"
    emit(
        shown,
        text="\n".join([head, *("  " + audit.line(p) for p in shown)]),
        columns=["seq", "time", "summary", "actor", "type"],
    )


def _address(value: str, as_json: bool) -> str:
    """``value`` as the log writes an address (netaddr's compact text), or a clear error: a
    typo must not read as an address without history."""
    from netledger.common.params import normalized_address
    from netledger.events.errors import InvalidAddress

    address = normalized_address(value)
    if address is None:
        fail(InvalidAddress(f"{value!r} is not an IPv4 or IPv6 address", address=value), as_json)
    return address


# --- verify -----------------------------------------------------------------------------------


@click.command("verify")
@DB_OPTION
@click.option(
    "--portable",
    is_flag=True,
    help="Ignore which stream instance the projection came from (store times, creation time):"
    " for a projection compared with a copy of its stream (export/import).",
)
@click.option("--show", "limit", default=5, show_default=True, help="Differing rows to show.")
@click.option(
    "--snapshots",
    is_flag=True,
    help="Check the command service's stored snapshots instead: each must equal the fold of"
    " the log up to its sequence (no projection needed).",
)
@pass_settings
def verify_cmd(
    settings: Settings,
    db: Path | None,
    portable: bool,
    limit: int,
    snapshots: bool,
) -> None:
    """Check a projection against a fresh rebuild from the log at the same sequence.

    Compares a checksum per table and shows the first differing rows; reports the events the
    projection rejected. Exit 0 only when equal; 1 with error code projection_mismatch when
    not, log_regression when the stream now ends before the projection's checkpoint.

    With --snapshots: folds the log once, up to the newest stored snapshot's sequence,
    comparing each snapshot with the fold on the way (one read, however many are kept);
    exit 1 with snapshot_mismatch when one differs, snapshot_unusable when one cannot be
    used at all (bad hash, other format or fold version, another stream).
    """
    if snapshots:
        _verify_snapshots(settings)
        return
    from .verify import verify

    path = settings.projection(db, settings.url)
    report = _with_conn(
        settings,
        "netledger-verify",
        lambda conn: verify(conn, path, limit=limit, portable=portable),
    )
    err = None
    if not report["equal"]:
        bad = [t for t, v in report["tables"].items() if not v["equal"]]
        err = ProjectionMismatch(
            f"{path} differs from a rebuild of the log at seq {report['last_seq']}"
            f" in {', '.join(bad)}",
            tables=bad,
        )
    _report(settings, report, err, lambda: _print_verify(report))


def _verify_snapshots(settings: Settings) -> None:
    from .verify_snapshot import verify_snapshots

    report = _with_conn(settings, "netledger-verify", verify_snapshots)
    bad = [r for r in report["snapshots"] if r["usable"] and not r["equal"]]
    unusable = [r for r in report["snapshots"] if not r["usable"]]
    err: SnapshotMismatch | SnapshotUnusable | None = None
    if bad:
        err = SnapshotMismatch(
            f"{', '.join(r['name'] for r in bad)} {'differs' if len(bad) == 1 else 'differ'} from"
            " the fold of the log",
            snapshots=[r["name"] for r in bad],
        )
    elif unusable:
        err = SnapshotUnusable(
            "; ".join(f"{r['name']}: {r['reason']}" for r in unusable),
            snapshots=[r["name"] for r in unusable],
        )
    _report(settings, report, err, lambda: _print_snapshots(report))


def _report(settings: Settings, report: dict[str, Any], err: Any, text: Callable[[], None]) -> None:
    """A verification's report; exit 1 when it found a difference (JSON: "error" in it)."""
    if err is not None and settings.as_json:
        report["error"] = {"code": err.code, "message": err.message, "details": err.details}
    emit(report, text=text)
    if err is not None:
        if settings.as_json:
            sys.exit(1)
        fail(err, False)


def _print_snapshots(report: dict[str, Any]) -> None:
    if not report["snapshots"]:
        click.echo(f"no snapshots stored (stream {report['stream']})")
    for r in report["snapshots"]:
        if not r["usable"]:
            click.echo(f"  BAD {r['name']}  seq {r['seq']}: not usable: {r['reason']}")
            continue
        mark = "ok " if r["equal"] else "BAD"
        what = "equals" if r["equal"] else "DIFFERS from"
        click.echo(
            f"  {mark} {r['name']}  seq {r['seq']}  {plural(r['bytes'], 'byte')}: {what} the fold of"
            f" the log up to seq {r['seq']}"
        )
        for d in r["differences"]:
            click.echo(f"      differs: {d}")
    if report["snapshots"]:
        click.echo(f"  read {plural(report['log_messages_read'], 'message')} of the log")


def _print_verify(r: dict[str, Any]) -> None:
    click.echo(
        f"{r['db']}: seq {r['last_seq']} (stream ends at {r['stream_last_seq']});"
        f" {'EQUAL' if r['equal'] else 'DIFFERENT'} to a fresh rebuild"
    )
    for name, t in r["tables"].items():
        mark = "ok " if t["equal"] else "BAD"
        rows = (
            f"{t['rows']}"
            if t["rows"] == t["rebuilt_rows"]
            else f"{t['rows']} vs {t['rebuilt_rows']}"
        )
        noun = "row" if t["rows"] == t["rebuilt_rows"] == 1 else "rows"
        click.echo(f"  {mark} {name:18} {rows:>12} {noun:<4}  {t['sha256'][:16]}")
    for d in r["differences"]:
        click.echo(f"  differs: {d['table']} {d['key']} columns {', '.join(d['columns'])}")
        click.echo(f"    projection: {d['projection']}")
        click.echo(f"    rebuilt:    {d['rebuilt']}")
    created, now = r.get("stream_created"), r.get("log_stream_created")
    if not r["equal"] and not r["portable"] and created != now:
        click.echo(
            f"  the projection is of stream {r['stream']} created {created}; the stream now is"
            f" one created {now} (a copy: export/import?): its store times differ in every"
            " row; --portable compares without them"
        )
    rej = r["rejected_events"]
    click.echo(f"  rejected_events: {rej['count']}")
    for x in rej["first"]:
        click.echo(f"    #{x['seq']} {x['subject']} {x['type'] or '?'}: {x['reason']}")


# --- export / import --------------------------------------------------------------------------


@click.command("export")
@click.option(
    "--from-seq",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="First stream sequence to export.",
)
@click.option("--to-seq", type=click.IntRange(1), help="Last sequence (default: the last now).")
@click.option(
    "--since",
    callback=moment_callback("--since"),
    help="Only messages stored at or after this time (ISO 8601 with a time zone; the server's"
    " store time, as replay --at): where they start is looked up, not read to.",
)
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (default: stdout).",
)
@pass_settings
def export_cmd(
    settings: Settings,
    from_seq: int,
    to_seq: int | None,
    since: datetime.datetime | None,
    out: Path | None,
) -> None:
    """Write stored messages as JSON lines: seq, time, subject, headers, the exact payload
    (base64) and the decoded event (or the reason it cannot be decoded).

    With --since, the export starts at the first message stored at or after that time (or
    at --from-seq, whichever is later), found by one lookup: what was stored before it is
    not read, so "the last day of the log" costs the last day, not the log's age. A --to-seq
    past the stream's end is refused (seq_beyond_stream, as replay) and writes nothing.
    """
    from .archive import export, export_end
    from .errors import OutputUnwritable

    async def go(conn: Any) -> dict[str, Any]:
        # Refused before --out is opened: a refusal must not leave it truncated.
        end = await export_end(conn, to_seq)
        try:
            ctx: Any = (
                out.open("w", encoding="utf-8") if out is not None else nullcontext(sys.stdout)
            )
        except OSError as exc:
            raise OutputUnwritable(
                f"cannot write {out}: {exc.strerror or exc}", out=str(out)
            ) from None
        with ctx as f:
            target: TextIO = f
            return await export(conn, target, from_seq=from_seq, to_seq=end, since=since)

    result = _with_conn(settings, "netledger-export", go)
    if out is not None:
        emit(
            {"out": str(out), **result},
            settings.as_json,
            f"exported {plural(result['messages'], 'message')}"
            + (
                f" (seq {result['first_seq']}..{result['last_seq']},"
                f" {result['undecodable']} undecodable)"
                if result["messages"]
                else ""
            )
            + f" to {out}",
        )
    else:
        click.echo(f"exported {plural(result['messages'], 'message')}", err=True)


@click.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@pass_settings
def import_cmd(settings: Settings, file: Path) -> None:
    """Append an export to an empty stream, in order, byte for byte.

    A stream that already holds exactly the file's first messages is completed (so running the
    same import again appends nothing); any other non-empty stream is refused. Line i is stored
    as seq i: an export of a part of the log (--from-seq N) is stored from 1 on, which the
    result says (renumbered, first_seq_in_file; a notice on stderr); a file whose sequences
    have a gap is refused.
    """
    from netledger.journal.stream import ensure_stream

    from .archive import import_file

    async def go(conn: Any) -> dict[str, Any]:
        await ensure_stream(conn)
        return await import_file(conn, file)

    result = _with_conn(settings, "netledger-import", go)
    if result["renumbered"]:
        shift = result["first_seq_in_file"] - 1
        click.echo(
            f"netledger: {file} starts at seq {result['first_seq_in_file']} (an export of a part"
            f" of the log): its messages are stored from seq 1, each {shift} lower than in the"
            " log it came from",
            err=True,
        )
    emit(
        result,
        settings.as_json,
        f"imported {file}: {result['appended']} appended, {result['already_present']} already"
        f" present; stream ends at {result['stream_last_seq']}",
    )


COMMANDS = [replay_cmd, audit_cmd, verify_cmd, export_cmd, import_cmd]
