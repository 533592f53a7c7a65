"""``netledger executor ...``: the per-host daemon's command line (a thin click layer)."""

from __future__ import annotations

import gc
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import click

from netledger.common.metrics import metrics_port_option
from netledger.common.output import emit, fail, plural
from netledger.common.params import IP_ADDRESS, IPV4_CIDR
from netledger.common.ranges import FiniteFloatRange
from netledger.common.settings import Settings, config_path, pass_settings, run
from netledger.journal.stream import FOLLOW_HEARTBEAT_S


@click.group("executor")
def executor_group() -> None:
    """Per-host executor: applies the log to this host's kernel (bridges, VXLAN/VLAN, NAT)."""


@executor_group.command("run")
@click.option(
    "--host", required=True, help="This host's name (as given to fixed-ip allocate --host)."
)
@click.option(
    "--netns", metavar="NS", help="Work in this existing network namespace (never created)."
)
@click.option(
    "--physical-interface",
    metavar="IF",
    help="Interface bridges are built on (flat/vlan) and the VXLAN underlay device.",
)
@click.option("--public-interface", metavar="IF", help="Interface floating IPs are bound to.")
@click.option(
    "--network-host",
    is_flag=True,
    help="Serve gateways and NAT of networks that name no network host.",
)
@click.option(
    "--vtep-address",
    metavar="A",
    type=IP_ADDRESS,
    help="VXLAN underlay address, IPv4 or IPv6 (default: the physical interface's first IPv4,"
    " else its first global IPv6).",
)
@click.option(
    "--snat-address",
    metavar="A",
    type=IP_ADDRESS,
    help="Address fixed ranges are SNATed to (default: the public interface's address).",
)
@click.option(
    "--fixed-range",
    "fixed_range",
    metavar="CIDR",
    type=IPV4_CIDR,
    multiple=True,
    help="The fixed ranges never NATed between each other (nova's fixed_range; repeatable)."
    " Default: every network's IPv4 range, which makes every NAT host rewrite its table (and"
    " report it) when a network is created; a supernet given here does not change.",
)
@click.option(
    "--dhcp/--no-dhcp",
    default=None,
    help="Run dnsmasq for the flat_dhcp/vlan/vxlan networks this host serves (default: on;"
    " off with --netns, whose dnsmasq would outlive the namespace's deletion).",
)
@click.option(
    "--state-dir",
    metavar="DIR",
    help="dnsmasq pid, hosts and lease files, and the snapshot of this host's view of the log"
    " (default /run/netledger/[NETNS/]HOST).",
)
@click.option(
    "--dhcp-lease-time",
    type=click.IntRange(min=120),
    default=86400,
    show_default=True,
    help="DHCP lease time (seconds).",
)
@click.option("--once", is_flag=True, help="Reconcile to the stream's current end and exit.")
@click.option(
    "--interval",
    type=FiniteFloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between drift-repair passes.",
)
@click.option(
    "--heartbeat",
    type=FiniteFloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Write this host's liveness (last pass, sightings) into the NETLEDGER_LIVE bucket at"
    " least this often (seconds). Nothing is appended to the log when nothing changed.",
)
@click.option(
    "--follow-heartbeat",
    type=FiniteFloatRange(min=0.5, max=30.0),
    default=FOLLOW_HEARTBEAT_S,
    show_default=True,
    help="Seconds between the idle heartbeats of the consumer this executor follows the log"
    " with. Two missed, it is made again: after a NATS server restart or a stream failover the"
    " executor reads on within about twice this. The server sends every idle host one each"
    " period (1,000 hosts at 1 s: ~55 ms of server CPU a second), so a large cloud may"
    " trade a slower recovery for less: 3 s is a third.",
)
@click.option(
    "--sighting-changes/--whole-sightings",
    default=True,
    show_default=True,
    help="Report the instance MACs this host sees as what changed since its previous report"
    " (HostInstancesChanged; a whole set at a start and every 32 reports) or always as the"
    " whole set (HostInstancesSeen). --whole-sightings while command services older than"
    " Dec 7, 2026 still run (a rolling upgrade that did not start with them): those skip the"
    " changes and could take an instance seen only in them for gone (docs/reclaim.md).",
)
@click.option(
    "--batch-size",
    type=int,
    default=150,
    show_default=True,
    hidden=True,
    help="Netlink requests per sendmsg.",
)
@click.option(
    "--pause-between-batches",
    type=float,
    default=0.0,
    hidden=True,
    help="Slow motion for tests that interrupt an apply (seconds).",
)
@click.option(
    "--whole-log",
    is_flag=True,
    help="Read the whole stream instead of this host's share (registry, announcements, its own"
    " and its placement subject, its networks): for comparisons and repairs.",
)
@click.option(
    "--snapshot-every",
    type=click.IntRange(min=0),
    default=1000,
    show_default=True,
    metavar="N",
    help="After a pass, write a snapshot of this host's view of the log (STATE_DIR/view.snapshot)"
    " once N messages were read since the last one; a restart then reads only the log after it."
    " 0: never write one (an existing one is still read). With --once only when given.",
)
@click.option(
    "--ignore-snapshot",
    is_flag=True,
    help="Do not start from the view snapshot: read this host's share of the log from the"
    " start (repairs; a new snapshot is written as usual).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log every pass.")
@metrics_port_option
@pass_settings
def executor_run(
    settings: Settings,
    host: str,
    netns: str | None,
    physical_interface: str | None,
    public_interface: str | None,
    network_host: bool,
    vtep_address: str | None,
    snat_address: str | None,
    fixed_range: tuple[str, ...],
    dhcp: bool | None,
    state_dir: str | None,
    dhcp_lease_time: int,
    once: bool,
    interval: float,
    heartbeat: float,
    follow_heartbeat: float,
    sighting_changes: bool,
    batch_size: int,
    pause_between_batches: float,
    whole_log: bool,
    snapshot_every: int,
    ignore_snapshot: bool,
    verbose: bool,
    metrics_port: int | None,
) -> None:
    """Run the executor of one host: follow the log and keep the kernel equal to it.

    Needs root. Announces the host (with its VTEP address), reconciles on start (from the
    snapshot of its view in --state-dir plus the log after it, or the log from the start when
    there is no valid snapshot), after every change and every --interval seconds, and appends
    what it changed to netledger.evt.host.HOST. --once reads a snapshot too, but writes one
    (of its view before its pass) only when --snapshot-every is given: writing it beside the
    pass cost --once 60-140 ms over 1,000 networks, and the daemon writes them. Serving DHCP-mode
    networks, it runs one dnsmasq per bridge (files in --state-dir); dnsmasq outlives the
    executor and is adopted by the next run. Exit status 1 with code executor_not_permitted
    without the rights, netns_not_found for a missing --netns, apply_incomplete when --once
    could not apply it all.
    """
    if once:
        # One pass, then the process ends: the cyclic collector would only walk the modules,
        # the fold and the desired state over and over (45-60 ms of a pass over 1,000
        # networks); reference counting frees what the pass drops, the exit the rest.
        gc.disable()
    from netledger.events.errors import NetledgerError
    from netledger.events.ids import check_id
    from netledger.journal.stream import connect

    from .daemon import run_executor
    from .desired import HostConfig
    from .dhcp import DhcpPaths, default_state_dir, script_text
    from .hostsdir import STATE_DIR_ENV
    from .netlink import check_netns
    from .options import Options
    from .snapshot import FILE_NAME as SNAPSHOT_FILE

    dhcp_defaulted_off = dhcp is None and netns is not None
    if dhcp is None:
        # A namespace is a lab host (tests, demos) that is deleted without stopping what runs
        # in it: dnsmasq, which outlives executors by design, would be left behind.
        dhcp = netns is None

    logging.basicConfig(
        level=logging.INFO if verbose or not once else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # A missing namespace first: its error, not a warning about DHCP in it (review h130).
    try:
        check_netns(netns)
    except NetledgerError as err:
        fail(err, settings.as_json)
    if dhcp_defaulted_off:
        logging.getLogger("netledger.executor").warning(
            "DHCP is off in namespace %s (the default with --netns: a namespace's dnsmasq would"
            " outlive it): instances of flat_dhcp/vlan/vxlan networks served here get no address"
            " from this host; add --dhcp to serve it",
            netns,
        )
    cfg = HostConfig(
        host=host,
        physical_interface=physical_interface,
        public_interface=public_interface,
        network_host=network_host,
        vtep_address=vtep_address,
        snat_address=snat_address,
        fixed_range=fixed_range,
        dhcp=dhcp,
        dhcp_lease_time=dhcp_lease_time,
    )
    paths = None
    script = ""
    state_dir = os.path.abspath(state_dir or default_state_dir(host, netns))
    if dhcp:
        paths = DhcpPaths(state_dir=state_dir, dnsmasq=_dnsmasq())
        command, env = _lease_command(settings, host, _config_file())
        env = {**env, STATE_DIR_ENV: state_dir}  # where dhcp-event finds the host entries
        script = script_text(command, env, paths.handle if netns else None, paths.marks)
    opts = Options(
        freeze_gc=True,
        netns=netns,
        interval=interval,
        heartbeat=heartbeat,
        chunk_size=batch_size,
        pause=pause_between_batches,
        dhcp_paths=paths,
        dhcp_script=script,
        sightings_heartbeat=heartbeat,
        sighting_changes=sighting_changes,
        follow_heartbeat=follow_heartbeat,
        share=not whole_log,
        snapshot_path=os.path.join(state_dir, SNAPSHOT_FILE),
        snapshot_every=snapshot_every if not once or _given("snapshot_every") else 0,
        snapshot_load=not ignore_snapshot,
    )

    async def go() -> Any:
        check_id(host, "host")
        conn = await connect(
            settings.url, name=f"netledger-executor-{host}", **settings.connect_kwargs()
        )
        from netledger.common.metrics import executor_applied, observe

        observability = await observe(
            conn, metrics_port, {f"executor:{host}": lambda: executor_applied(host)}
        )
        try:
            return await run_executor(conn, cfg, opts, once)
        finally:
            await observability.aclose()
            await conn.close()

    report = run(settings, go)
    if once and report is not None:
        out = {
            "host": host,
            "applied_seq": report.applied_seq,
            "changes": report.changes,
            "drift_repairs": report.drift_repairs,
            "conflicts": report.conflicts,
            "duration_ms": report.duration_ms,
            # what it read of the log to get there, and how many networks its share holds
            "events_read": report.events_read,
            "share_networks": report.share_networks,
            # the view snapshot it started from (None: read from the start of the log)
            "snapshot_seq": report.snapshot_seq,
        }
        emit(
            out,
            settings.as_json,
            f"{host}: reconciled to {report.applied_seq}, {plural(report.changes, 'change')}"
            + (f", {plural(len(report.conflicts), 'conflict')}" if report.conflicts else ""),
        )


def _dnsmasq() -> str:
    """dnsmasq's path: found on the usual system PATH (dhcpplan.SYSTEM_PATH) first, then on
    the executor's; a missing one fails at start, logged.

    It is the first word of dnsmasq's command line, which a running dnsmasq must match to be
    adopted: found on the executor's PATH first, an operator's shell listing /sbin before
    /usr/sbin (/sbin a link to /usr/sbin) got ``/sbin/dnsmasq``, and each run of that executor
    replaced every dnsmasq of the host, then the unit's daemon replaced them back. Every
    executor of a host finds the same one now, whatever its PATH (and a dnsmasq started by
    another name of that file is adopted: dhcp.Dnsmasq reads it so)."""
    from .dhcpplan import SYSTEM_PATH

    found = shutil.which("dnsmasq", path=SYSTEM_PATH) or shutil.which("dnsmasq")
    return found or "/usr/sbin/dnsmasq"


def _config_file() -> str | None:
    """The configuration file this command read (``--config``, ``$NETLEDGER_CONFIG`` or a
    default location), absolute; None when there was none."""
    found = config_path(click.get_current_context())
    return os.path.abspath(found) if found else None


#: OpenSSL's variables naming the CAs a ``tls://`` NATS server is trusted by: ``dhcp-event``
#: has no option of its own for them, so the lease script exports the executor's.
TLS_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def _lease_command(
    settings: Settings, host: str, config: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """How dnsmasq's lease script calls this CLI: same configuration file, NATS server and
    credentials, on this host's command subject (the only one an executor's credentials may
    send commands to).

    ``config`` (:func:`_config_file`) goes on the command line: read from ``--config``, it was
    nowhere else — ``dhcp-event`` read the default locations instead and lost what only the
    file said (its output and log options, ``command-timeout``...; found by review). The
    script quotes it (script_text: shlex).

    Nothing is left to dnsmasq's environment, the same for every executor of the host
    (dhcpplan.dnsmasq_env: a fixed PATH): ``netledger`` is named by its absolute path, and
    ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` (the CA a ``tls://`` NATS server is trusted by), when
    the executor has them, are exported by the script (absolute: dnsmasq runs it from /)."""
    exe = Path(sys.executable).with_name("netledger")
    which = shutil.which("netledger")
    if exe.exists():
        command = [os.path.abspath(exe)]
    elif which:
        command = [os.path.abspath(which)]  # (a relative PATH entry gives a relative one)
    else:
        command = [os.path.abspath(sys.executable), "-m", "netledger.cli"]
    if config is not None:
        command += ["--config", config]
    command += ["--nats", settings.url]
    if settings.creds:
        command += ["--creds", os.path.abspath(settings.creds)]
    env = {"NETLEDGER_AS_HOST": host}
    for name in TLS_ENV:
        if os.environ.get(name):
            env[name] = os.path.abspath(os.environ[name])
    if settings.inbox_prefix:
        env["NETLEDGER_INBOX"] = settings.inbox_prefix
    if settings.user:
        env["NETLEDGER_USER"] = settings.user
    if settings.password:
        env["NETLEDGER_PASSWORD"] = settings.password
    return command, env


COMMANDS = [executor_group]


def _given(param: str) -> bool:
    """Whether ``param`` of the command running was given on the command line (or from the
    environment), not left at its default."""
    ctx = click.get_current_context()
    source = ctx.get_parameter_source(param)
    return source not in (None, click.core.ParameterSource.DEFAULT)
