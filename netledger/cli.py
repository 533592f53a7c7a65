"""The ``netledger`` command line: a thin click layer over the library.

Library errors become a message naming the stable error code and exit status 1 (with JSON
output: ``{"error": {"code", "message"}}`` on stdout); usage errors exit 2. The output options
(common/output.py) are given to every command by :func:`netledger.common.output.install`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from netledger.common.metrics import metrics_port_option
from netledger.common.output import emit, install, state, table
from netledger.common.settings import DEFAULT_URL, Settings, default_data_dir, pass_settings, run
from netledger.events.codec import Actor
from netledger.ops.config import ENV_PREFIX, RESERVE, Reserve, config_option
from netledger.ops.duration import DURATION
from netledger.ops.locate import projection_db
from netledger.ops.logs import LEVELS, setup_logging


def client_call(
    settings: Settings,
    name: str,
    args: dict[str, Any],
    command_id: str | None = None,
    deadline: float | None = None,
) -> dict[str, Any]:
    from netledger.journal.stream import connect
    from netledger.service.client import Client

    async def go() -> dict[str, Any]:
        conn = await connect(settings.url, name="netledger-cli", **settings.connect_kwargs())
        try:
            client = Client(conn, settings.actor, host=settings.as_host)
            if deadline is not None:
                client.deadline = deadline
                client.timeout = min(client.timeout, deadline)
            return await client.request(name, args, command_id=command_id)
        finally:
            await conn.close()

    result: dict[str, Any] = run(settings, go)
    return result


#: The commands other packages own (their ``COMMANDS``), by name: a command's package is imported
#: when it is called (or listed in help), not at every start. Importing them all was half of the
#: CLI's start (0.12 of 0.24 s of CPU), paid by every call — an executor's start, each
#: ``dhcp-event`` dnsmasq runs. tests/ops/test_cli_lazy.py checks this table against them.
PLUGINS: dict[str, str] = {
    "projector": "netledger.projector.cli",
    "show": "netledger.projector.cli",
    "executor": "netledger.executor.cli",
    "replay": "netledger.replay.cli",
    "audit": "netledger.replay.cli",
    "verify": "netledger.replay.cli",
    "export": "netledger.replay.cli",
    "import": "netledger.replay.cli",
    "auth": "netledger.auth_cli",
    "status": "netledger.ops_cli",
    "config": "netledger.ops_cli",
    "revert": "netledger.revert_cli",
    "reclaim": "netledger.reclaim_cli",
}


class LazyGroup(click.Group):
    """The root group: the commands in :data:`PLUGINS` are loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *(n for n in PLUGINS if self._available(PLUGINS[n]))})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in PLUGINS:
            self._load(PLUGINS[cmd_name])
        return self.commands.get(cmd_name)

    def load_all(self) -> None:
        for module in dict.fromkeys(PLUGINS.values()):
            self._load(module)

    def _load(self, module: str) -> None:
        import importlib

        try:
            m = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            return
        for c in getattr(m, "COMMANDS", []):
            if c.name not in self.commands:
                install(c, root=False)  # the output options, as on the commands defined here
                self.add_command(c)

    @staticmethod
    def _available(module: str) -> bool:
        import importlib.util

        return importlib.util.find_spec(module) is not None


@click.group(
    cls=LazyGroup,
    context_settings={
        "help_option_names": ["-h", "--help"],
        "max_content_width": 100,
        "auto_envvar_prefix": ENV_PREFIX,
    },
)
@config_option
@click.option(
    "--nats",
    "nats_url",
    envvar="NATS_URL",
    metavar="URL",
    help="NATS server(s), comma-separated (default: the embedded server, "
    f"{DEFAULT_URL}). Env: NATS_URL.",
)
@click.option("--creds", envvar="NETLEDGER_CREDS", metavar="FILE", help="NATS credentials file.")
@click.option("--user", envvar="NETLEDGER_USER", help="NATS user name.")
@click.option("--password", envvar="NETLEDGER_PASSWORD", help="NATS password.")
@click.option(
    "--inbox-prefix",
    envvar="NETLEDGER_INBOX",
    metavar="PREFIX",
    help="Subject prefix for replies, the only one these credentials may subscribe to"
    " (auth init writes it into each credentials file). Env: NETLEDGER_INBOX.",
)
@click.option(
    "--as-project",
    envvar="NETLEDGER_PROJECT",
    metavar="P",
    help="The project you act as (commands are authorised for it).",
)
@click.option(
    "--as-host",
    envvar="NETLEDGER_AS_HOST",
    metavar="H",
    help="Send as host H's DHCP lease script (only fixed-ip lease / release of addresses whose"
    " DHCP H serves; with H's executor credentials). Set by the executor in the script.",
)
@click.option(
    "--role",
    envvar="NETLEDGER_ROLE",
    type=click.Choice(["admin", "member"]),
    default="admin",
    show_default=True,
    help="The role you act with.",
)
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="warning",
    show_default=True,
    help="Log level; logs go to stderr (the units and the example config use info)."
    " Env: NETLEDGER_LOG_LEVEL.",
)
@click.option(
    "--log-json", is_flag=True, help="Log JSON lines instead of text. Env: NETLEDGER_LOG_JSON."
)
@click.version_option(package_name="netledger")
@click.pass_context
def cli(
    ctx: click.Context,
    nats_url: str | None,
    creds: str | None,
    user: str | None,
    password: str | None,
    inbox_prefix: str | None,
    as_project: str | None,
    as_host: str | None,
    role: str,
    log_level: str,
    log_json: bool,
) -> None:
    """netledger: the network state of a cloud as an append-only log of events.

    Networks, fixed IPs and floating IPs are decided by the command service and appended to a
    NATS JetStream stream; projectors, host executors and the audit tools read that log.

    Output options (--json, -f/--format, -c/--column, --json-lines) go here or after any
    command, with one meaning. Without --db, `show`, `audit` and `verify` read the projection
    of a `netledger serve` running on this machine (README.md, "Using it").
    """
    setup_logging(log_level, log_json)
    ctx.obj = Settings(
        nats_url,
        state(ctx),
        creds,
        user,
        password,
        (
            Actor(project=None, role="system", user=f"dhcp:{as_host}")
            if as_host
            else Actor(project=as_project, role=role, user=os.environ.get("USER"))
        ),
        inbox_prefix,
        as_host,
        find_projection=projection_db,
    )


# --- serve ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder for the embedded server's store and the projection"
    " (default $NETLEDGER_DATA or ~/.local/share/netledger).",
)
@click.option("--port", default=4222, show_default=True, help="Port of the embedded nats-server.")
@click.option("--nats-server", "nats_binary", metavar="PATH", help="nats-server binary to run.")
@click.option(
    "--sync-interval",
    default="always",
    show_default=True,
    help="JetStream fsync policy of the embedded server: 'always' acknowledges a write"
    " only once it is on disk; 'default' (or a duration like 2s) is faster and can lose"
    " acknowledged writes on power loss.",
)
@click.option("--replicas", default=1, show_default=True, help="Stream replicas (3 on a cluster).")
@click.option(
    "--projector/--no-projector",
    default=True,
    show_default=True,
    help="Also run a projector into DATA/projection.db.",
)
@click.option(
    "--release-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="Seconds after which a deallocated DHCP address whose release never came returns to"
    " the pool (decided from the times in the log).",
)
@click.option(
    "--reclaim-after",
    type=DURATION,
    default=None,
    help="Reclaim, every 30 s, addresses whose instance its host has not seen for this long"
    " (e.g. 2h; default off; see `netledger reclaim`).",
)
@click.option(
    "--auth-config",
    type=click.Path(dir_okay=False, exists=True),
    help="nats-server auth include written by `netledger auth init` (embedded server only);"
    " connect with the service user's --user/--password (or its .env file).",
)
@click.option(
    "--snapshot-every",
    type=click.IntRange(0),
    default=20_000,
    show_default=True,
    metavar="EVENTS",
    help="Write a snapshot of the service's fold (into the NETLEDGER_SNAPSHOTS object store)"
    " once this many events were folded since the last one; a start then reads only the"
    " events after it. 0: never write.",
)
@click.option(
    "--snapshot-min-interval",
    type=DURATION,
    default=60.0,
    show_default=True,
    help="Write snapshots at most this often (e.g. 60s, 10m).",
)
@click.option(
    "--ignore-snapshots",
    is_flag=True,
    help="Fold the whole log from sequence 1 instead of starting from the newest snapshot"
    " (new snapshots are still written).",
)
@click.option(
    "--storage-reserve",
    type=RESERVE,
    default="5%",
    show_default=True,
    help="Free space kept on the embedded server's store: below it new commands are refused"
    " with log_storage_full (reads, audit and replay keep working) until space is freed."
    " Bytes (512MiB, 2G) or a percentage of the filesystem; also applied to JetStream's"
    " storage limit when it has one (any server). 0: no reserve.",
)
@click.option(
    "--storage-check-interval",
    type=DURATION,
    default=1.0,
    show_default=True,
    help="How often the store's free space and JetStream's usage are checked (e.g. 1s).",
)
@click.option(
    "--nats-restarts",
    type=click.IntRange(0),
    default=5,
    show_default=True,
    help="Restarts (with backoff) of the embedded nats-server to heal a stream latched in a"
    " write error, once space is back; then serve gives up and says so. A --nats server is"
    " never restarted.",
)
@metrics_port_option
@pass_settings
def serve(
    settings: Settings,
    data_dir: Path | None,
    port: int,
    nats_binary: str | None,
    sync_interval: str,
    replicas: int,
    projector: bool,
    release_timeout: float,
    reclaim_after: float | None,
    auth_config: str | None,
    snapshot_every: int,
    snapshot_min_interval: float,
    ignore_snapshots: bool,
    storage_reserve: Reserve,
    storage_check_interval: float,
    nats_restarts: int,
    metrics_port: int | None,
) -> None:
    """Run the command service (and a projector) — with its own nats-server unless --nats is given.

    Prints one line with the NATS URL when ready; stops everything on SIGINT/SIGTERM. The
    service starts from the newest valid snapshot of its fold and reads only the log after it
    (an unusable snapshot is skipped with a warning); `netledger verify --snapshots` checks
    stored snapshots against the log.
    """
    from netledger.serve import serve_forever
    from netledger.service import eventloop
    from netledger.service.snapshotter import SnapshotPolicy

    eventloop.install()
    run(
        settings,
        lambda: serve_forever(
            nats_url=settings.nats,
            data_dir=data_dir or default_data_dir(),
            port=port,
            nats_binary=nats_binary,
            sync_interval=sync_interval,
            replicas=replicas,
            run_projector=projector,
            connect_kwargs=settings.connect_kwargs(),
            release_timeout=release_timeout,
            reclaim_after=reclaim_after,
            metrics_port=metrics_port,
            auth_config=auth_config,
            snapshots=SnapshotPolicy(
                every_events=snapshot_every,
                min_interval=snapshot_min_interval,
                load=not ignore_snapshots,
            ),
            storage_reserve=storage_reserve,
            storage_interval=storage_check_interval,
            nats_restarts=nats_restarts,
        ),
    )


# --- networks ------------------------------------------------------------------------------

NETWORK_COLUMNS = [
    "id", "label", "cidr", "gateway", "cidr_v6", "mode", "vlan", "vni", "bridge", "project",
]  # fmt: skip


@cli.group()
def network() -> None:
    """Create, list, show, delete and disassociate networks."""


@network.command("create")
@click.option("--label", required=True, help="Label (with several networks: LABEL_0, LABEL_1...).")
@click.option(
    "--cidr",
    help="The IPv4 range to split, e.g. 10.0.0.0/16 (without it: IPv6-only networks, --cidr-v6).",
)
@click.option(
    "--mode",
    type=click.Choice(["flat", "flat_dhcp", "vlan", "vxlan"]),
    default="vlan",
    show_default=True,
    help="Network mode.",
)
@click.option("--num-networks", type=int, default=1, show_default=True, help="How many networks.")
@click.option(
    "--network-size",
    type=int,
    help="Addresses each (a power of two). Default: the range divided by --num-networks,"
    " at most 256 (nova's rule; a notice says when it was capped).",
)
@click.option(
    "--vlan-start", type=int, default=100, show_default=True, help="First VLAN id (vlan)."
)
@click.option("--vni-start", type=int, default=1000, show_default=True, help="First VNI (vxlan).")
@click.option(
    "--vpn-start", type=int, default=1000, show_default=True, help="First VPN port (vlan)."
)
@click.option("--bridge", help="Bridge name (flat default br100; vlan brVLAN; vxlan brvxVNI).")
@click.option("--bridge-interface", help="Physical interface the bridge is built on.")
@click.option("--dns1", help="First DNS server.")
@click.option("--dns2", help="Second DNS server.")
@click.option("--project", help="Assign the network to this project at once.")
@click.option("--multi-host", is_flag=True, help="Every host is a network host (gateway, NAT).")
@click.option("--network-host", help="The host that serves gateway, DHCP and NAT.")
@click.option("--mtu", type=int, help="MTU of the bridge.")
@click.option(
    "--cidr-v6",
    help="An IPv6 prefix (/64 or shorter) split into one /64 per network, e.g. 2001:db8::/48:"
    " dual-stack with --cidr, IPv6-only without.",
)
@click.option(
    "--ipv6-mode",
    type=click.Choice(["slaac", "dhcpv6"]),
    help="How instances get their IPv6 address: slaac (EUI-64 of the MAC, router"
    " advertisements; the default) or dhcpv6 (the lowest free address, by DHCPv6).",
)
@pass_settings
def network_create(settings: Settings, /, **opts: Any) -> None:
    """Split a range into networks and append them to the log; prints them (JSON: a list).

    The range is walked in blocks of --network-size and every block that overlaps a network or
    floating IP pool in use is skipped (nova's rule); refused (range_exhausted) when fewer than
    --num-networks blocks are free. Each network in the JSON says its network_size. --cidr-v6
    is split the same way into /64s, one per network (its gateway_v6 is the /64's ::1).
    """
    if opts.get("cidr") is None and opts.get("cidr_v6") is None:
        raise click.UsageError("give --cidr, --cidr-v6 or both")
    result = client_call(settings, "network.create", opts)
    nets = result["networks"]
    # On stderr: a script reading the JSON on stdout is not disturbed.
    for notice in result.get("notices") or []:
        click.echo(f"notice: {notice}", err=True)
    if settings.as_json:
        emit(nets, True)
    else:
        table(nets, NETWORK_COLUMNS)


@network.command("list")
@click.option("--project", help="Only this project's networks.")
@pass_settings
def network_list(settings: Settings, project: str | None) -> None:
    """List live networks as the command service knows them."""
    nets = client_call(settings, "network.list", {"project": project})["networks"]
    emit(nets, columns=[*NETWORK_COLUMNS, "in_use", "capacity"])


@network.command("show")
@click.argument("network_id")
@pass_settings
def network_show(settings: Settings, network_id: str) -> None:
    """Show one network."""
    emit(client_call(settings, "network.show", {"network_id": network_id})["network"], True)


@network.command("delete")
@click.argument("network_id")
@pass_settings
def network_delete(settings: Settings, network_id: str) -> None:
    """Delete a network (refused while addresses are in use or a project holds it)."""
    r = client_call(settings, "network.delete", {"network_id": network_id})
    emit(r, settings.as_json, f"deleted network {network_id}")


@network.command("disassociate")
@click.argument("network_id")
@pass_settings
def network_disassociate(settings: Settings, network_id: str) -> None:
    """Take a network away from its project (refused while addresses are in use)."""
    r = client_call(settings, "network.disassociate", {"network_id": network_id})
    emit(r, settings.as_json, f"network {network_id} no longer belongs to {r.get('was')}")


# --- fixed IPs -----------------------------------------------------------------------------


@cli.group("fixed-ip")
def fixed_ip() -> None:
    """Allocate, deallocate, lease and release fixed IPs of instances."""


@fixed_ip.command("allocate")
@click.option("--instance", required=True, help="Instance id.")
@click.option("--project", help="Project (VLAN/VXLAN: its network, assigned on first use).")
@click.option("--network", "network_id", help="Network id to allocate from.")
@click.option("--host", help="Compute host the instance runs on.")
@click.option("--mac", help="MAC address (default: a generated 02:16:3e:xx:xx:xx).")
@click.option("--command-id", help="Idempotency key (default: a new one).")
@pass_settings
def fixed_allocate(
    settings: Settings,
    instance: str,
    project: str | None,
    network_id: str | None,
    host: str | None,
    mac: str | None,
    command_id: str | None,
) -> None:
    """Allocate the lowest free address to an instance (the same one again on a retry)."""
    if project is None and network_id is None:
        raise click.UsageError("give --project or --network")
    r = client_call(
        settings,
        "fixed_ip.allocate",
        {
            "instance": instance,
            "project": project,
            "network_id": network_id,
            "host": host,
            "mac": mac,
        },
        command_id,
    )
    keys = ("address", "address_v6", "network_id", "instance", "mac", "host")
    out = {k: r.get(k) for k in keys}
    v6 = out["address_v6"]
    shown = out["address"] if v6 in (None, out["address"]) else f"{out['address']} {v6}"
    emit(out, settings.as_json, f"{shown} (network {out['network_id']}, mac {out['mac']})")


@fixed_ip.command("deallocate")
@click.option("--instance", required=True, help="Instance id.")
@click.option("--network", "network_id", help="Only its address in this network.")
@pass_settings
def fixed_deallocate(settings: Settings, instance: str, network_id: str | None) -> None:
    """Give up an instance's fixed IPs (its floating IPs are disassociated)."""
    r = client_call(
        settings, "fixed_ip.deallocate", {"instance": instance, "network_id": network_id}
    )
    shown = [
        d["address"] if d.get("address_v6") in (None, d["address"]) else
        f"{d['address']} {d['address_v6']}"
        for d in r["deallocated"]
    ]  # fmt: skip
    emit(r, settings.as_json, ", ".join(shown) + " deallocated")


def _lease_command(name: str, verb: str) -> click.Command:
    @click.option("--address", required=True, help="The fixed IP.")
    @click.option("--mac", required=True, help="The MAC the DHCP server saw.")
    @pass_settings
    def cmd(settings: Settings, address: str, mac: str) -> None:
        r = client_call(settings, f"fixed_ip.{name}", {"address": address, "mac": mac})
        emit(r, settings.as_json, f"{address} {verb}")

    cmd.__doc__ = f"Record a DHCP {name} of an address (what dnsmasq reports)."
    return click.command(name)(cmd)


fixed_ip.add_command(_lease_command("lease", "leased"))
fixed_ip.add_command(_lease_command("release", "released"))


#: how long `dhcp-event` waits for the command service before it gives up (dnsmasq waits)
DHCP_EVENT_DEADLINE_S = 15.0


@cli.command("dhcp-event")
@click.argument("action")
@click.argument("mac")
@click.argument("ip")
@click.argument("hostname", required=False)
@pass_settings
def dhcp_event(settings: Settings, action: str, mac: str, ip: str, hostname: str | None) -> None:
    """dnsmasq's lease script (--dhcp-script): ACTION MAC IP [HOSTNAME].

    ``add`` and ``old`` record a lease, ``del`` a release (what nova-dhcpbridge did); other
    actions (``init``, ``tftp``) are accepted and ignored. Each becomes an event in the log.
    For a DHCPv6 lease dnsmasq passes the client's DUID instead of the MAC, and the MAC (when
    it knows it) in DNSMASQ_MAC.
    """
    if ":" in ip and "." not in ip:
        mac = os.environ.get("DNSMASQ_MAC") or mac
    if action in ("add", "old"):
        name = "lease"
    elif action == "del":
        name = "release"
    else:
        return
    # dnsmasq runs its lease script one event at a time: a log that cannot store must not hold
    # the next lease for a minute. The service answers a full or unavailable log within
    # seconds (error [log_storage_full] / [log_unavailable] on stderr, in dnsmasq's log); this
    # bounds the case where no service answers at all.
    r = client_call(
        settings, f"fixed_ip.{name}", {"address": ip, "mac": mac}, deadline=DHCP_EVENT_DEADLINE_S
    )
    emit(r, settings.as_json, f"{ip} {name}d ({mac})")


# --- floating IPs --------------------------------------------------------------------------


@cli.group("floating-ip")
def floating_ip() -> None:
    """Pools of public addresses, allocated to projects and associated with fixed IPs."""


@floating_ip.command("pool-create")
@click.option("--pool", required=True, help="Pool name.")
@click.option("--cidr", required=True, help="Public range, e.g. 203.0.113.0/24.")
@click.option("--public-interface", help="Interface the addresses are bound to on network hosts.")
@pass_settings
def pool_create(settings: Settings, pool: str, cidr: str, public_interface: str | None) -> None:
    """Create a floating IP pool."""
    r = client_call(
        settings,
        "floating_ip.pool_create",
        {"pool": pool, "cidr": cidr, "public_interface": public_interface},
    )
    emit(r, settings.as_json, f"pool {pool} ({cidr}) created")


@floating_ip.command("allocate")
@click.option("--project", required=True, help="Project receiving the address.")
@click.option("--pool", help="Pool (default: the first with a free address).")
@pass_settings
def floating_allocate(settings: Settings, project: str, pool: str | None) -> None:
    """Allocate the first free floating IP of a pool to a project."""
    r = client_call(settings, "floating_ip.allocate", {"project": project, "pool": pool})
    emit(r, settings.as_json, f"{r['address']} (pool {r['pool']}) allocated to {project}")


@floating_ip.command("associate")
@click.option("--address", required=True, help="The floating IP.")
@click.option("--fixed-address", required=True, help="The fixed IP it forwards to.")
@click.option("--project", required=True, help="The project owning both.")
@pass_settings
def floating_associate(settings: Settings, address: str, fixed_address: str, project: str) -> None:
    """Associate a project's floating IP with one of its fixed IPs (DNAT/SNAT on the host)."""
    r = client_call(
        settings,
        "floating_ip.associate",
        {"address": address, "fixed_address": fixed_address, "project": project},
    )
    emit(r, settings.as_json, f"{address} -> {fixed_address}")


@floating_ip.command("disassociate")
@click.option("--address", required=True, help="The floating IP.")
@click.option("--project", required=True, help="The project owning it.")
@pass_settings
def floating_disassociate(settings: Settings, address: str, project: str) -> None:
    """Remove a floating IP's association."""
    r = client_call(settings, "floating_ip.disassociate", {"address": address, "project": project})
    emit(r, settings.as_json, f"{address} disassociated")


@floating_ip.command("deallocate")
@click.option("--address", required=True, help="The floating IP.")
@click.option("--project", required=True, help="The project owning it.")
@pass_settings
def floating_deallocate(settings: Settings, address: str, project: str) -> None:
    """Return a floating IP to its pool (refused while associated)."""
    r = client_call(settings, "floating_ip.deallocate", {"address": address, "project": project})
    emit(r, settings.as_json, f"{address} returned to pool {r['pool']}")


install(cli)  # the output options on every command, before or after its name (plugins: on load)


def main() -> None:
    """The console script: the command, then a quick exit. Whatever a command opened is closed
    by the time it returns (connections, databases, child processes); what is left is the
    interpreter freeing every object one by one — 0.1-0.17 s after an executor's first pass over
    1,000 networks (measured with strace), paid by every script that calls the CLI. So the
    output and the logs are flushed and the process ends with the command's status."""
    try:
        cli(prog_name="netledger")
        code = 0
    except SystemExit as exc:
        code = _status(exc.code)
    _quick_exit(code)


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # what sys.exit("message") prints
    return 1


def _quick_exit(code: int) -> None:
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    main()
