"""``netledger status`` and ``netledger config ...``: the operator's commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from netledger.common.output import emit, mask_urls, plural
from netledger.common.ranges import FiniteFloatRange
from netledger.common.settings import Settings, pass_settings, run

# --- status ---------------------------------------------------------------------------------


@click.command("status")
@click.option(
    "--db",
    "dbs",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="A projection database to check (repeat for several projectors).",
)
@click.option(
    "--max-lag",
    type=click.IntRange(0),
    default=100,
    show_default=True,
    help="Sequences a projector, service replica or host may be behind before it is lagging.",
)
@click.option(
    "--wait",
    type=FiniteFloatRange(0.05, 30),
    default=0.5,
    show_default=True,
    help="Seconds to collect answers from command-service replicas.",
)
@pass_settings
def status(settings: Settings, dbs: tuple[Path, ...], max_lag: int, wait: float) -> None:
    """Show whether the system is healthy: stream, service replicas, projectors, hosts.

    The stream's size, sequences, replicas and leader; every command-service replica found by
    NATS service discovery; each --db projection's lag and rejected events; each host
    executor's last applied sequence, last reconcile and drift repairs. Exits 1 when anything
    is wrong (listed under "problems"), so it doubles as a health check. Without --db it checks
    the projection of the `netledger serve` on the same NATS URL running on this machine.
    """
    from netledger.journal.stream import connect
    from netledger.ops.locate import status_dbs
    from netledger.ops.status import gather

    checked = list(dbs) or status_dbs(settings.url)

    async def go() -> dict[str, Any]:
        conn = await connect(settings.url, name="netledger-status", **settings.connect_kwargs())
        try:
            return await gather(conn, checked, max_lag=max_lag, wait=wait)
        finally:
            await conn.close()

    result: dict[str, Any] = run(settings, go)
    emit(result, text=lambda: render(result))
    if not result["healthy"]:
        sys.exit(1)


def _age(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.0f}s ago"
    if s < 7200:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def _mark(lagging: bool | None) -> str:
    return "[red]lagging[/red]" if lagging else "[green]ok[/green]"


def live_cell(p: dict[str, Any]) -> str:
    """A projector's liveness stamp in one cell (projector/liveness.py ``liveness_fields``):
    whether its daemon is live and how old its last stamp is — ``yes, 4s ago``; ``no, 2m ago``
    (no stamp for more than 3 of its periods: killed, hung, cut off); ``stopped, 2m ago`` (its
    daemon ended); ``once, 1h ago`` (filled by ``--once``: nothing expected); ``-`` (never
    stamped)."""
    if p.get("mode") is None:
        return "-"
    live, age = p.get("live"), _age(p.get("age_s"))
    if live is None:
        return f"{p['mode']}, {age}"
    if live:
        return f"[green]yes[/green], {age}"
    return f"[red]{'stopped' if p['mode'] == 'stopped' else 'no'}[/red], {age}"


def _projector_mark(p: dict[str, Any]) -> str:
    """Its row's verdict: lagging, not live (a problem even at lag 0), or ok."""
    if p["lagging"] or p.get("live") is not False:
        return _mark(p["lagging"])
    return "[red]not live[/red]"


def _host_mark(h: dict[str, Any]) -> str:
    """A host row's verdict: its problem (ops/status.py ``problems_of``) in a word, or ok."""
    if h.get("error"):
        return "[red]unreadable[/red]"
    if h.get("retired_seq") is not None:
        return "[red]retired, still reports[/red]"
    if h.get("live") is False:
        return "[red]not live[/red]"
    return _mark(h["lagging"])


def log_cell(lg: dict[str, Any] | None) -> str:
    """A replica's log in one cell: its state (and error code when it is not ok), the store's
    free space against its reserve (serve's watcher), restarts of its nats-server."""
    if not isinstance(lg, dict):
        return "-"
    state = str(lg.get("state") or "-")
    out = state if state == "ok" else f"[red]{state}[/red]"
    if lg.get("code") and state != "ok":
        out += f" [{lg['code']}]".replace("[", "\\[", 1)
    store = lg.get("store") or {}
    free, total = store.get("free_bytes"), store.get("total_bytes")
    if isinstance(free, int) and isinstance(total, int) and total > 0:
        out += f", {free * 100 // total}% free"
        reserve = store.get("reserve_bytes")
        if isinstance(reserve, int):
            # rounded: the reserve is itself a truncated percentage of the total (5% showed 4%)
            out += f" (reserve {round(reserve * 100 / total)}%)"
    if lg.get("restarts"):
        out += f", {plural(lg['restarts'], 'restart')}"
    return out


def render(st: dict[str, Any]) -> None:
    from rich.table import Table

    from netledger.common.output import table_console
    from netledger.ops.status import replica_state

    con = table_console()
    s = st["stream"]
    con.print(
        f"[bold]stream {s['name']}[/bold]: {plural(s['messages'], 'message')},"
        f" {plural(s['bytes'], 'byte')},"
        f" seq {s['first_seq']}..{s['last_seq']}, replicas {s['replicas']}"
        + (f", cluster {s['cluster']}" if s["cluster"] else "")
        + (f", leader {s['leader']}" if s["leader"] else "")
    )
    for p in s["peers"]:
        con.print(
            f"  replica {p['name']}: {replica_state(p)},"
            f" {'current' if p['current'] else 'behind'}, lag {p['lag']}"
        )

    t = Table(title=f"command service replicas ({len(st['services'])})")
    cols = ("id", "version", "uptime", "applied seq", "commands", "errors", "conflicts", "log")
    for c in (*cols, ""):
        t.add_column(c, overflow="fold")
    for r in st["services"]:
        t.add_row(
            str(r["id"])[:12],
            str(r.get("version")),
            f"{r.get('uptime_s', 0):.0f}s",
            str(r.get("applied_seq")),
            str(r.get("commands")),
            str(r.get("errors")),
            str(r.get("conflicts")),
            log_cell(r.get("log")),
            _mark(r["lagging"]),
        )
    con.print(t)

    if st["projectors"]:
        t = Table(title="projectors")
        for c in ("db", "last seq", "lag", "rejected", "live", ""):
            t.add_column(c, overflow="fold")
        for p in st["projectors"]:
            if p.get("error"):
                t.add_row(p["db"], "-", "-", "-", "-", f"[red]{p['error']}[/red]")
            else:
                t.add_row(
                    p["db"], str(p["last_seq"]), str(p["lag"]), str(p["rejected"]),
                    live_cell(p), _projector_mark(p),
                )  # fmt: skip
        con.print(t)

    retired = st.get("retired_hosts") or 0
    t = Table(
        title=f"hosts ({len(st['hosts'])}"
        + (f"; {retired} retired, not listed" if retired else "")
        + ")"
    )
    for c in (
        "host",
        "applied seq",
        "lag",
        "reconciled",
        "changes",
        "drift repairs",
        "last event",
        "",
    ):
        t.add_column(c, overflow="fold")
    for h in st["hosts"]:
        t.add_row(
            h["host"],
            "-" if h["applied_seq"] is None else str(h["applied_seq"]),
            "-" if h["lag"] is None else str(h["lag"]),
            _age(h["age_s"]),
            "-" if h["changes"] is None else str(h["changes"]),
            "-" if h["drift_repairs"] is None else str(h["drift_repairs"]),
            str(h["last_event"]),
            _host_mark(h),
        )
    con.print(t)

    if st["problems"]:
        con.print("[bold red]problems:[/bold red]")
        for p in st["problems"]:
            con.print(f"  - {p}")
    else:
        con.print("[bold green]healthy[/bold green]")


# --- config ---------------------------------------------------------------------------------


@click.group("config")
def config_group() -> None:
    """Check the configuration file and show where each setting comes from."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Show the global settings in effect and their source (flag, environment, file, default).

    Precedence: flag > environment variable > configuration file > built-in default.
    """
    from netledger.common.settings import config_path
    from netledger.ops.config import effective, masked

    root = ctx.find_root()
    path = config_path(ctx)
    settings = effective(root)
    given = ctx.find_object(Settings)
    if "nats_url" in settings and settings["nats_url"]["value"] is None and given is not None:
        # No URL given: the one commands use, and why (a serve running here, or the default).
        found = given.url_source == "serve"
        settings["nats_url"] = {
            "value": mask_urls(given.url),
            "source": "the netledger serve running here" if found else "default",
        }
    out = {
        "config_file": str(path) if path else None,
        "settings": settings,
        "file": masked(root.default_map or {}),
    }
    lines = [f"config file: {path or '(none found)'}"]
    width = max(map(len, settings), default=0)  # command_timeout is longer than the rest
    lines += [f"{n:{width}} {v['value']!s:40} ({v['source']})" for n, v in settings.items()]
    emit(out, text="\n".join(lines))


@config_group.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def config_check(ctx: click.Context, file: Path | None) -> None:
    """Check a configuration file (default: the one netledger would read) against the commands.

    Exits 1 naming every unknown key and bad value (a line each; with --json, the first one's
    code and all of them in details.problems); prints the file's settings when valid.
    """
    from netledger.common.output import current, dumps, fail
    from netledger.ops.config import ConfigError, all_problems, load_default_map, masked

    problems: list[ConfigError] = []
    try:
        path, dmap = load_default_map(ctx.find_root().command, file, problems=problems)
    except ConfigError as err:  # (not found, not TOML: nothing more to check)
        fail(err, current().as_json)
    if problems:
        fail(problems[0] if len(problems) == 1 else all_problems(problems), current().as_json)
    if path is None:
        emit({}, text="no configuration file found: built-in defaults apply")
        return
    shown = masked(dmap)
    emit(shown, text=f"{path}: ok\n{dumps(shown, pretty=True)}")


COMMANDS = [status, config_group]
