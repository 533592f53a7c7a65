"""``netledger reclaim``: free the addresses of instances their host no longer sees.

A thin layer over the ``fixed_ip.reclaim`` command: the command service computes the
candidates on its folded log and appends each reclaim with OCC on the network's subject and the
host's subject (events/reclaim.py, service/reclaim_run.py, docs/reclaim.md).
"""

from __future__ import annotations

from typing import Any

import click

from netledger.cli import client_call
from netledger.common.output import emit, plural
from netledger.common.settings import Settings, pass_settings
from netledger.events.reclaim import DEFAULT_GRACE
from netledger.ops.duration import DURATION

COLUMNS = ("network_id", "address", "instance", "mac", "host", "unseen_for", "report_seq")


def render(result: dict[str, Any]) -> str:
    rows = result.get("candidates") if result.get("dry_run") else result.get("reclaimed")
    rows = rows or []
    verb = "would reclaim" if result.get("dry_run") else "reclaimed"
    lines = [
        f"{verb} {plural(len(rows), 'address', 'addresses')} (grace {result.get('grace', 0):g}s)"
    ]
    for r in rows:
        lines.append(
            f"  {r['address']:<16} network {r['network_id']}  instance {r['instance']}"
            f"  mac {r['mac']}  host {r['host']}: unseen for {r['unseen_for']:.1f}s"
            f" (reports {r['first_absent_seq']}..{r['report_seq']})"
            + (f", seq {r['seq']}" if r.get("seq") else "")
        )
    held = result.get("held_back") or []
    if held:
        lines.append(
            f"held back {plural(len(held), 'address', 'addresses')} another host still sees"
        )
    for r in held:
        lines.append(
            f"  {r['address']:<16} network {r['network_id']}  instance {r['instance']}"
            f"  mac {r['mac']}: unseen on {r['host']} for {r['unseen_for']:.1f}s,"
            f" but seen on {', '.join(r['seen_on'])}"
        )
    large = result.get("too_large") or []
    if large:
        lines.append(
            f"left {plural(len(large), 'address', 'addresses')} to an operator: more floating IPs on each than one"
            " batch frees (deallocate it)"
        )
    for r in large:
        lines.append(f"  {r['address']:<16} network {r['network_id']}  host {r['host']}")
    return "\n".join(lines)


@click.command("reclaim")
@click.option("--dry-run", is_flag=True, help="List the candidates; append nothing.")
@click.option(
    "--host",
    default=None,
    help="Only addresses held on this host (host_not_found if no allocation names it and it is"
    " not in the cloud).",
)
@click.option(
    "--network",
    "network_id",
    default=None,
    help="Only this network's addresses (network_not_found if there is none).",
)
@click.option(
    "--older-than",
    "grace",
    type=DURATION,
    default=DEFAULT_GRACE,
    show_default=True,
    help="Grace period: how long the host's reports must show an instance gone (90s, 15m, 2h).",
)
@pass_settings
def reclaim_cmd(
    settings: Settings,
    dry_run: bool,
    host: str | None,
    network_id: str | None,
    grace: float,
) -> None:
    """Free addresses whose instance its host has not seen for the grace period.

    An address is reclaimed when its host's executor reported, in every report from a first
    one through one at least --older-than later (the host's own clock, in the log), that it
    no longer sees the instance's MAC, and the address was not allocated again since. Each
    reclaim names those reports; a re-allocation or a sighting that lands while the reclaim is
    decided makes the log reject it (see docs/reclaim.md). An address whose MAC another host's
    newest report lists (a migration recorded while the instance stayed where it was) is held
    back, and listed with the hosts that see it.
    """
    args: dict[str, Any] = {"grace": grace, "dry_run": dry_run}
    if host:
        args["host"] = host
    if network_id:
        args["network_id"] = network_id
    result = client_call(settings, "fixed_ip.reclaim", args)
    emit(result, text=render(result))


COMMANDS = [reclaim_cmd]
