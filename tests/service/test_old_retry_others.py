"""Under the same conditions as tests/service/test_old_retry.py (past ``seen`` and the duplicate
window): a retry of ``network.create`` is looked up in the log too — decided again, a flat
network's create made another network in the free part of its range, and one naming its range
exactly was refused ``network_overlap`` (a VLAN one ``duplicate_vlan``); a retry of
``fixed_ip.allocate`` need not be — decided again, it finds the instance's address by its
natural key, appending nothing (docs/domain.md, "Retries"). Real nats-server, real command
service."""

from __future__ import annotations

import pytest

from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_old_retry import forgetful, past_window  # noqa: F401  (fixture)


async def test_a_forgotten_retry_of_a_fixed_allocation_finds_the_instances_address(
    conn: Connection,
    forgetful: CommandService,  # noqa: F811
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    cid = new_command_id()
    first = await c.allocate_fixed_ip("i1", network_id=net["id"], host="h1", command_id=cid)
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    again = await c.allocate_fixed_ip("i1", network_id=net["id"], host="h1", command_id=cid)

    assert again["address"] == first["address"]
    assert await last_seq(conn) == top
    assert forgetful.stats.old_id_lookups == 0


@pytest.mark.parametrize(
    ("cidr", "mode"), [("10.9.0.0/16", "flat"), ("10.9.0.0/24", "flat"), ("10.9.0.0/16", "vlan")]
)
async def test_a_forgotten_retry_of_a_network_create_gets_its_first_answer(
    conn: Connection,
    forgetful: CommandService,  # noqa: F811
    cidr: str,
    mode: str,
) -> None:
    c = Client(conn)
    args = {"label": "n", "cidr": cidr, "mode": mode, "network_size": 256}
    cid = new_command_id()
    first = await c.request("network.create", args, command_id=cid)
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    again = await c.request("network.create", args, command_id=cid)

    assert again == first
    assert await last_seq(conn) == top
    assert list(forgetful.state.networks) == [first["networks"][0]["id"]]
    assert forgetful.stats.old_id_lookups >= 1
