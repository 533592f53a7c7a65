"""``reclaim --network N`` for a network that does not exist is ``network_not_found`` (as
``network show N`` answers), dry run or not, and appends nothing: it answered "0 candidates",
which read as a network with nothing to reclaim. Real nats-server and command service."""

from __future__ import annotations

import asyncio
import json

import pytest
from click.testing import CliRunner, Result

from netledger.cli import cli
from netledger.events.errors import HostNotFound, NetworkNotFound
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("dry_run", [True, False])
async def test_an_unknown_network_is_not_found(
    conn: Connection, service: CommandService, nats_url: str, dry_run: bool
) -> None:
    client = Client(conn)
    (net,) = await client.create_networks(label="a", cidr="10.50.0.0/24", mode="flat")
    before = await last_seq(conn)

    with pytest.raises(NetworkNotFound) as err:
        await client.request("fixed_ip.reclaim", {"network_id": "99", "dry_run": dry_run})
    assert err.value.details == {"network_id": "99"}
    # A network that exists answers as before.
    known = await client.request("fixed_ip.reclaim", {"network_id": net["id"], "dry_run": dry_run})
    assert known["dry_run"] is dry_run

    flag = ["--dry-run"] if dry_run else []
    reclaim = await asyncio.to_thread(
        invoke, "--nats", nats_url, "--json", "reclaim", *flag, "--network", "99"
    )
    show = await asyncio.to_thread(invoke, "--nats", nats_url, "--json", "network", "show", "99")
    assert reclaim.exit_code == show.exit_code == 1, reclaim.output + show.output
    error = json.loads(reclaim.stdout)["error"]
    assert error["code"] == json.loads(show.stdout)["error"]["code"] == "network_not_found"
    text = await asyncio.to_thread(invoke, "--nats", nats_url, "reclaim", *flag, "--network", "99")
    assert text.exit_code == 1
    assert text.stderr == "error [network_not_found]: network 99 does not exist\n", text.stderr
    assert await last_seq(conn) == before  # appends nothing


@pytest.mark.parametrize("dry_run", [True, False])
async def test_an_unknown_host_is_not_found(
    conn: Connection, service: CommandService, nats_url: str, dry_run: bool
) -> None:
    """``--host`` naming a host no allocation names and no executor announced (a typo) is
    ``host_not_found``; a host that holds an allocation (its executor never announced) is
    surveyed as before."""
    client = Client(conn)
    (net,) = await client.create_networks(label="h", cidr="10.51.0.0/24", mode="flat")
    await client.allocate_fixed_ip("vm-1", network_id=net["id"], host="h-real")
    before = await last_seq(conn)
    with pytest.raises(HostNotFound) as err:
        await client.request("fixed_ip.reclaim", {"host": "h-typo", "dry_run": dry_run})
    assert err.value.details == {"host": "h-typo"}
    known = await client.request("fixed_ip.reclaim", {"host": "h-real", "dry_run": True})
    assert known["candidates"] == []
    flag = ["--dry-run"] if dry_run else []
    out = await asyncio.to_thread(
        invoke, "--nats", nats_url, "--json", "reclaim", *flag, "--host", "h-typo"
    )
    assert out.exit_code == 1, out.output
    assert json.loads(out.stdout)["error"]["code"] == "host_not_found"
    assert await last_seq(conn) == before  # appends nothing
