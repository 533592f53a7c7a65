"""A retried allocation never hands out an address reclaimed since, and always says the
address it holds (review h131), on a real nats-server.

A client whose ``fixed_ip.allocate`` got no answer is told that a retry with the same command id
is safe, whenever it comes. The service answered such a retry from the events the first attempt
stored, whatever happened since: after the instance (which never booted: it waited for that
answer) had been unseen for the grace, its address reclaimed and given to another instance, the
retry was told the address was its own — one address, two instances.
"""

from __future__ import annotations

import time

import pytest

from netledger.events.errors import CommandIdReused
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_reclaim_service import GRACE, prove_gone, report


async def test_a_retry_is_not_told_an_address_reclaimed_since(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.47.0.0/24", mode="flat")
    nid = net["id"]
    first = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    await prove_gone(conn, service, "h1", [], nid)
    res = await c.request("fixed_ip.reclaim", {"grace": GRACE, "host": "h1"})
    assert [r["address"] for r in res["reclaimed"]] == [first["address"]]
    other = await c.allocate_fixed_ip("vm1", network_id=nid, host="h1")
    assert other["address"] == first["address"]  # (the lowest free address again)

    with pytest.raises(CommandIdReused) as err:
        await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert err.value.details["address"] == first["address"]
    holders = [ip.instance for ip in service.state.networks[nid].fixed.values()]
    assert holders == ["vm1"]


async def test_a_retry_of_an_allocation_still_held_gets_its_answer(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.48.0.0/24", mode="flat")
    nid = net["id"]
    first = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    again = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert again["address"] == first["address"] and again["mac"] == first["mac"]


async def test_a_retry_of_a_reconfirming_answer_still_gets_the_address(
    conn: Connection, service: CommandService
) -> None:
    """An allocate for an instance its host does not see appends ``FixedIpReconfirmed``. Its
    retry (same command id) was decided again: with the instance still unseen by a later
    report, that decision reconfirmed again and the answer was ``already_applied`` with the
    event types — no address."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.49.0.0/24", mode="flat")
    nid = net["id"]
    first = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1")
    seq = await report(conn, "h1", [], time.time(), [nid])
    await service.follower.wait_for(seq)
    again = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="re-1")
    assert again["address"] == first["address"]
    seq = await report(conn, "h1", ["02:16:3e:7f:00:01"], time.time(), [nid])  # still unseen
    await service.follower.wait_for(seq)
    retry = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="re-1")
    assert retry == again
