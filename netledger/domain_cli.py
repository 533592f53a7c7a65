"""The domain's commands: networks, fixed and floating IPs, and the DHCP events dnsmasq reports
— each a request to the command service (:func:`netledger.cli.client_call`). Loaded by the root
command when one of them is named (netledger/cli.py ``PLUGINS``).
"""

from __future__ import annotations

import os
from typing import Any

import click

from netledger.cli import client_call
from netledger.common.output import emit, table
from netledger.common.settings import Settings, pass_settings

NETWORK_COLUMNS = [
    "id", "label", "cidr", "gateway", "cidr_v6", "mode", "vlan", "vni", "bridge", "project",
]  # fmt: skip


@click.group()
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
    """List live networks as the command service knows them.

    In --json each network's id is both `id` and `network_id` (as `show networks` names it).
    """
    nets = client_call(settings, "network.list", {"project": project})["networks"]
    emit(nets, columns=[*NETWORK_COLUMNS, "in_use", "capacity"])


@network.command("show")
@click.argument("network_id")
@pass_settings
def network_show(settings: Settings, network_id: str) -> None:
    """Show one network (its id as both `id` and `network_id`)."""
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


@click.group("fixed-ip")
def fixed_ip() -> None:
    """Allocate, deallocate, lease and release fixed IPs of instances."""


@fixed_ip.command("allocate")
@click.option("--instance", required=True, help="Instance id.")
@click.option("--project", help="Project (VLAN/VXLAN: its network, assigned on first use).")
@click.option("--network", "network_id", help="Network id to allocate from.")
@click.option(
    "--host",
    help="Compute host the instance runs on. For an instance that already holds its address"
    " here, another host moves the address there (a migration: its bridge, DHCP entry and"
    " floating-IP NAT follow on multi-host networks).",
)
@click.option("--mac", help="MAC address (default: a generated 02:16:3e:xx:xx:xx).")
@click.option(
    "--command-id",
    help="Idempotency key (default: a new one). Not starting with 'revert-': the reverts' own"
    " (reserved_command_id).",
)
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
    """Allocate the lowest free address to an instance (the same one again on a retry, or
    when it already holds one there; naming another --host then moves it: a migration)."""
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
    moved = "moved_from" in r
    if moved:
        out["moved_from"] = r["moved_from"]
    v6 = out["address_v6"]
    shown = out["address"] if v6 in (None, out["address"]) else f"{out['address']} {v6}"
    text = f"{shown} (network {out['network_id']}, mac {out['mac']})"
    if moved:
        text += f", moved from host {r['moved_from'] or '(none)'} to {out['host']}"
    emit(out, settings.as_json, text)


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


@click.command("dhcp-event")
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
    it knows it) in DNSMASQ_MAC; when it does not (a lease it read back from its lease file
    after a restart), the MAC is the one of the executor's host entry giving the address.
    """
    if ":" in ip and "." not in ip:
        mac = os.environ.get("DNSMASQ_MAC") or _entry_mac(ip) or mac
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


def _entry_mac(address: str) -> str | None:
    """The MAC of the executor's host entry giving ``address`` (its state dir named by the
    lease script), None without one."""
    from netledger.executor import hostsdir  # the standard library only

    state_dir = os.environ.get(hostsdir.STATE_DIR_ENV)
    return hostsdir.mac_of(state_dir, address) if state_dir else None


# --- floating IPs --------------------------------------------------------------------------


@click.group("floating-ip")
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


# --- hosts ---------------------------------------------------------------------------------


@click.group()
def host() -> None:
    """Take hosts out of the cloud."""


@host.command("retire")
@click.argument("name")
@pass_settings
def host_retire(settings: Settings, name: str) -> None:
    """Retire a decommissioned host NAME (admin).

    Stop its executor first. Its VTEP leaves every other host's flood entries, its
    --network-host role ends, the command service forgets its reports, and `status` no longer
    lists it. Refused while addresses are allocated there or a live network names it as its
    network host (host_in_use), and for a host no executor ever announced or retired already
    (host_not_found). An executor started there again announces itself: the host is back."""
    r = client_call(settings, "host.retire", {"host": name})
    emit(r, settings.as_json, f"retired host {name}")


COMMANDS = [network, fixed_ip, dhcp_event, floating_ip, host]
