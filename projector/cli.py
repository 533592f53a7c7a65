"""``netledger projector ...`` and ``netledger show ...``: a thin click layer over the projector."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from netledger.common.metrics import metrics_port_option
from netledger.common.output import emit, fail
from netledger.common.params import IP_ADDRESS
from netledger.common.settings import Settings, default_data_dir, pass_settings, run

from .errors import ProjectorError
from .liveness import DEFAULT_PERIOD_S
from .options import linger_option, live_period_option

DB_HELP = (
    "Projection database (default: that of the `netledger serve` running on this machine, else"
    " DATA/projection.db)."
)


def default_db() -> Path:
    return default_data_dir() / "projection.db"


def _db_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="NETLEDGER_DB",
        default=None,
        help=DB_HELP + " Env: NETLEDGER_DB.",
    )(fn)


# --- projector --------------------------------------------------------------------------------


@click.group("projector")
def projector_group() -> None:
    """Keep the queryable SQLite projection of the log current."""


@projector_group.command("run")
@_db_option
@click.option(
    "--once", is_flag=True, help="Catch up to the stream's last sequence as it is now, then exit 0."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 5000),
    default=2000,
    show_default=True,
    help="Messages per SQLite transaction (more, up to 5,000, while the previous one is still"
    " being written: fewer, larger transactions when writing is the slow part).",
)
@linger_option("--linger-ms")
@click.option(
    "--notify-ready",
    is_flag=True,
    help='Print one JSON line {"ready": true, "db", "last_seq"} on stdout once the projection'
    " is open and followed (for a supervisor: `serve` runs its projector so).",
)
@live_period_option("--live-period", " Not with --once.")
@metrics_port_option
@pass_settings
def projector_run(
    settings: Settings,
    db: Path | None,
    once: bool,
    batch_size: int,
    linger_ms: float,
    notify_ready: bool,
    live_period: float,
    metrics_port: int | None,
) -> None:
    """Follow the stream from the checkpoint in the database and apply events in batches.

    Each batch commits together with the last applied stream sequence, so a crash anywhere
    loses nothing and applies nothing twice. Without --once it keeps following, reconnects on
    its own, and stops cleanly on SIGINT/SIGTERM; every --live-period it stamps the database
    with the time it last had the whole stream (`netledger status` reads it). With --once a
    progress bar is shown while it catches up when stderr is a terminal (a new file on a long
    log takes minutes), and the stamp says no daemon follows the file.
    """
    from netledger.journal.stream import connect

    path = db or default_db()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(
            ProjectorError(
                f"cannot create the folder of the projection {path}: {exc.strerror or exc}",
                db=str(path),
            ),
            settings.as_json,
        )

    async def go() -> dict[str, Any]:
        conn = await connect(settings.url, name="netledger-projector", **settings.connect_kwargs())
        try:
            if once:
                return await catch_up_once(conn, path, batch_size)
            return await _follow(
                conn, path, batch_size, metrics_port, linger_ms / 1000, notify_ready, live_period
            )
        finally:
            await conn.close()

    result = run(settings, go)
    emit(result, settings.as_json, f"projection {result['db']} at seq {result['last_seq']}")


async def catch_up_once(
    conn: Any, path: Path, batch_size: int, show_progress: bool | None = None
) -> dict[str, Any]:
    """``projector run --once``: up to the stream's last sequence as it is now; a progress bar
    of the stream sequence reached (``show_progress`` None: when stderr is a terminal)."""
    from netledger.common.progress import progress_bar
    from netledger.journal.stream import last_seq

    from .liveness import stamp_once
    from .runner import bar_hooks, project_until

    end = await last_seq(conn)
    label = f"projector → {path.name}"
    with progress_bar(label, end, show_progress) as advance:
        last = await project_until(
            conn,
            path,
            to_seq=end,
            batch_size=batch_size,
            owns_connection=True,
            **bar_hooks(advance, label),
        )
        advance(last, description=label)
    stamp_once(path, last)
    return {"db": str(path), "last_seq": last}


async def _follow(
    conn: Any,
    path: Path,
    batch_size: int,
    metrics_port: int | None = None,
    linger: float | None = None,
    notify_ready: bool = False,
    live_period: float = DEFAULT_PERIOD_S,
) -> dict[str, Any]:
    from netledger.common.metrics import observe

    from .liveness import Liveness
    from .runner import LINGER, Projector

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    p = Projector(
        conn,
        path,
        batch_size=batch_size,
        owns_connection=True,
        linger=LINGER if linger is None else linger,
    )
    observability = None
    liveness = Liveness(p, live_period)
    try:
        await p.start()
        await liveness.start()
        observability = await observe(
            conn, metrics_port, {f"projector:{path}": lambda: p.last_seq}, watch=(p, str(path))
        )
        print(
            f"netledger projector: following into {path} from seq {p.last_seq + 1}",
            file=sys.stderr,
            flush=True,
        )
        if notify_ready:
            ready = {"ready": True, "db": str(path), "last_seq": p.last_seq}
            print(json.dumps(ready), flush=True)
        stopped = asyncio.create_task(stop.wait())
        failed = asyncio.create_task(p.wait_failed())
        try:
            await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (stopped, failed):
                t.cancel()
        if p.failure is not None:
            raise p.failure
    finally:
        if observability is not None:
            await observability.aclose()
        await p.close()
        await liveness.close()  # after the projector's: its stamp says where it stopped
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return {"db": str(path), "last_seq": p.last_seq, "events": p.events, "rejected": p.rejected}


@projector_group.command("status")
@_db_option
@pass_settings
def projector_status(settings: Settings, db: Path | None) -> None:
    """Show the projection's checkpoint, schema version, lag and rejected-message count, and
    whether the projector following it is live.

    `live`, `mode`, `stamped_at`, `age_s`, `period_s` and `pid` are its daemon's liveness stamp
    (as `netledger status` shows them): `live` is false once the daemon stopped or has not
    stamped for 3 of its periods, null when nothing is expected (never stamped; filled by
    `projector run --once`).
    """
    from . import query

    path = settings.projection(db)

    def go() -> dict[str, Any]:
        with query.open_readonly(path, current=False) as conn:
            return {**query.state(conn), **query.liveness(conn)}

    st = _call(settings, go)
    keys = ("last_seq", "highest_seq", "lag", "events", "rejected", "schema_version", "stream")
    live = ("live", "mode", "stamped_at", "age_s", "period_s", "pid")
    emit(st, text="\n".join(f"{k:15} {st.get(k)}" for k in (*keys, "stream_created", *live)))


# --- show -------------------------------------------------------------------------------------


def _call(settings: Settings, fn: Callable[[], Any]) -> Any:
    """Run a synchronous query with the CLI's error handling (stable codes, exit 1)."""

    async def go() -> Any:
        return fn()

    return run(settings, go)


def _show(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    emit(rows, columns=columns, title=f"{title} ({len(rows)})")


@click.group("show")
def show_group() -> None:
    """Query the projection (SQLite; no NATS needed). --json or -f value -c COLUMN for scripts."""


@show_group.command("networks")
@_db_option
@click.option("--project", help="Only this project's networks.")
@click.option("--network", "network_id", help="Only this network.")
@click.option("--host", help="Only networks served by this network host.")
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted networks.")
@pass_settings
def show_networks(
    settings: Settings,
    db: Path | None,
    project: str | None,
    network_id: str | None,
    host: str | None,
    include_deleted: bool,
) -> None:
    """List networks with their VLAN/VNI, bridge, project and addresses in use.

    In --json each network's id is both `network_id` and `id` (as `network list` names it).
    """
    from . import query

    path = settings.projection(db)

    def go() -> list[dict[str, Any]]:
        with query.open_readonly(path) as conn:
            rows = query.networks(
                conn,
                project=project,
                network_id=network_id,
                host=host,
                include_deleted=include_deleted,
            )
        # `id` too: `network list`/`network show` call it so (both carry both names)
        return [{**r, "id": r["network_id"]} for r in rows]

    cols = [
        "network_id", "label", "cidr", "cidr_v6", "mode", "vlan", "vni", "bridge", "project",
        "in_use",
    ]  # fmt: skip
    if include_deleted:
        cols.append("deleted")
    _show(_call(settings, go), cols, "networks")


@show_group.command("fixed-ips")
@_db_option
@click.option("--project", help="Only this project's addresses.")
@click.option("--network", "network_id", help="Only this network.")
@click.option("--host", help="Only instances on this compute host.")
@click.option("--instance", help="Only this instance.")
@click.option(
    "--address",
    type=IP_ADDRESS,
    help="Only the fixed IP with this IPv4 or IPv6 address (any notation).",
)
@pass_settings
def show_fixed_ips(
    settings: Settings,
    db: Path | None,
    project: str | None,
    network_id: str | None,
    host: str | None,
    instance: str | None,
    address: str | None,
) -> None:
    """List fixed IPs in use or reserved (deallocated, waiting for the DHCP release)."""
    from . import query

    path = settings.projection(db)

    def go() -> list[dict[str, Any]]:
        with query.open_readonly(path) as conn:
            return query.fixed_ips(
                conn,
                project=project,
                network_id=network_id,
                host=host,
                instance=instance,
                address=address,
            )

    cols = [
        "network_id", "address", "address_v6", "instance", "mac", "host", "project", "allocated",
        "leased",
    ]  # fmt: skip
    _show(_call(settings, go), cols, "fixed IPs")


@show_group.command("floating-ips")
@_db_option
@click.option("--project", help="Only this project's floating IPs.")
@click.option("--network", "network_id", help="Only those associated into this network.")
@click.option("--host", help="Only those associated with instances on this host.")
@click.option("--pool", help="Only this pool.")
@click.option(
    "--address",
    type=IP_ADDRESS,
    help="Only this floating IP, or the one associated with this fixed IP.",
)
@pass_settings
def show_floating_ips(
    settings: Settings,
    db: Path | None,
    project: str | None,
    network_id: str | None,
    host: str | None,
    pool: str | None,
    address: str | None,
) -> None:
    """List allocated floating IPs and what they are associated with."""
    from . import query

    path = settings.projection(db)

    def go() -> list[dict[str, Any]]:
        with query.open_readonly(path) as conn:
            return query.floating_ips(
                conn, project=project, network_id=network_id, host=host, pool=pool, address=address
            )

    cols = ["address", "pool", "project", "fixed_address", "network_id", "instance", "host"]
    _show(_call(settings, go), cols, "floating IPs")


@show_group.command("hosts")
@_db_option
@click.option("--host", help="Only this host.")
@pass_settings
def show_hosts(settings: Settings, db: Path | None, host: str | None) -> None:
    """List hosts: what their executors reported (links, addresses, NAT) and fixed IPs on them."""
    from . import query

    path = settings.projection(db)

    def go() -> list[dict[str, Any]]:
        with query.open_readonly(path) as conn:
            return query.hosts(conn, host=host)

    cols = [
        "host",
        "vtep_address",
        "network_host",
        "applied_seq",
        "links",
        "addresses",
        "nat_rules",
        "fixed_ips",
    ]
    _show(_call(settings, go), cols, "hosts")


COMMANDS = [projector_group, show_group]
