"""Review h134: a retry (same command id) is never told it holds what something other than the
client's own later command took away since — an operator's revert, a reclaim — and maybe gave to
someone else. A client is told a retry is safe whenever it comes; told the first answer then,
two instances (or projects) believed they held one address. It is told the first answer while
that still holds, else refused ``command_id_reused``. Real nats-server, real command service."""

from __future__ import annotations

import pytest

from netledger.events.errors import CommandIdReused
from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import revert
from netledger.service import service as service_module
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_reclaim_service import GRACE, prove_gone


async def flat(c: Client, cidr: str) -> str:
    [net] = await c.create_networks(label="n", cidr=cidr, mode="flat")
    return str(net["id"])


async def test_a_retry_of_a_reverted_allocation_is_refused(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c, "10.61.0.0/24")
    first = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    await revert(conn, c, command_id="alloc-vm0")  # an operator undoes it: the address is free
    assert first["address"] not in service.state.networks[nid].fixed
    top = await last_seq(conn)

    with pytest.raises(CommandIdReused) as err:
        await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert err.value.details["address"] == first["address"]
    assert err.value.details["undone_by"] == "revert-alloc-vm0"
    assert await last_seq(conn) == top

    other = await c.allocate_fixed_ip("vm1", network_id=nid, host="h1")
    assert other["address"] == first["address"]  # (the lowest free address again)
    with pytest.raises(CommandIdReused):
        await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    holders = [ip.instance for ip in service.state.networks[nid].fixed.values()]
    assert holders == ["vm1"]


async def test_a_retry_gets_its_first_answer_again_once_its_revert_was_undone(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c, "10.65.0.0/24")
    first = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    n1 = await last_seq(conn)
    await revert(conn, c, command_id="alloc-vm0")
    with pytest.raises(CommandIdReused):
        await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    await revert(conn, c, to_seq=n1)  # undoes that revert: the address is vm0's again
    again = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert again == first


async def test_a_retry_of_an_allocation_another_instance_holds_now_is_refused(
    conn: Connection, service: CommandService
) -> None:
    """Whoever freed it (here the instance's own deallocation, which keeps the first answer
    while the address is free): once another instance holds the address, the retry is not told
    it is its own."""
    c = Client(conn)
    nid = await flat(c, "10.62.0.0/24")
    first = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    await c.deallocate_fixed_ip("vm0")
    again = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert again["address"] == first["address"]  # free still: what the command did
    await c.allocate_fixed_ip("vm1", network_id=nid, host="h1")

    with pytest.raises(CommandIdReused) as err:
        await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert err.value.details["held_by"] == "vm1"


async def test_a_retry_of_a_reverted_floating_allocation_is_refused(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-p1")
    again = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-p1")
    assert again == first
    await revert(conn, c, command_id="fa-p1")
    with pytest.raises(CommandIdReused) as err:
        await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-p1")
    assert err.value.details["undone_by"] == "revert-fa-p1"

    taken = await c.request("floating_ip.allocate", {"project": "p2"})
    assert taken["address"] == first["address"]
    with pytest.raises(CommandIdReused) as err:
        await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-p1")
    assert err.value.details["held_by"] == "p2"


async def test_a_retry_of_a_reverted_association_is_refused(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c, "10.63.0.0/24")
    a0 = (await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", project="p1"))["address"]
    a1 = (await c.allocate_fixed_ip("vm1", network_id=nid, host="h1", project="p1"))["address"]
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    fip = (await c.request("floating_ip.allocate", {"project": "p1"}))["address"]
    assoc = {"address": fip, "fixed_address": a0, "project": "p1"}
    first = await c.request("floating_ip.associate", assoc, command_id="as-vm0")
    assert await c.request("floating_ip.associate", assoc, command_id="as-vm0") == first
    await revert(conn, c, command_id="as-vm0")
    top = await last_seq(conn)
    with pytest.raises(CommandIdReused) as err:
        await c.request("floating_ip.associate", assoc, command_id="as-vm0")
    assert err.value.details["undone_by"] == "revert-as-vm0"
    assert await last_seq(conn) == top, "the retry associated it again"

    moved = {"address": fip, "fixed_address": a1, "project": "p1"}
    await c.request("floating_ip.associate", moved)
    with pytest.raises(CommandIdReused) as err:
        await c.request("floating_ip.associate", assoc, command_id="as-vm0")
    assert err.value.details["held_by"] == a1
    [(_, f)] = [service.state.find_floating(fip)]
    assert f is not None and f.fixed_address == a1


async def test_a_forgotten_retry_of_an_allocation_undone_since_is_refused(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the commands the service remembers (``SEEN_COMMANDS``; one here) but inside the
    log's duplicate window: decided again (a new address: the instance holds none), acknowledged
    as a duplicate, and answered from what the first attempt stored — whose revert the service
    no longer remembers either. It was told the address another instance holds."""
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    c = Client(conn)
    nid = await flat(c, "10.64.0.0/24")
    first = await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    await revert(conn, c, command_id="alloc-vm0")
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    assert "alloc-vm0" not in service.seen and "revert-alloc-vm0" not in service.seen
    top = await last_seq(conn)

    # Free still: decided again it is the same address, under the same message id.
    with pytest.raises(CommandIdReused) as err:
        await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert err.value.details["address"] == first["address"]
    assert await last_seq(conn) == top
    assert first["address"] not in service.state.networks[nid].fixed

    other = await c.allocate_fixed_ip("vm1", network_id=nid, host="h1")
    assert other["address"] == first["address"]
    with pytest.raises(CommandIdReused) as err:
        await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", command_id="alloc-vm0")
    assert err.value.details["held_by"] == "vm1"
    holders = [ip.instance for ip in service.state.networks[nid].fixed.values()]
    assert holders == ["vm1"]


async def test_a_retry_of_an_association_a_reclaim_undid_is_refused(
    conn: Connection, service: CommandService
) -> None:
    """A reclaim frees the unseen instance's address and disassociates its floating IP in one
    batch. Decided again, the retry of the association found the address free and was answered
    ``already_applied`` (ok): the client took its instance to be reachable at the floating IP."""
    c = Client(conn)
    nid = await flat(c, "10.66.0.0/24")
    a0 = (await c.allocate_fixed_ip("vm0", network_id=nid, host="h1", project="p1"))["address"]
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    fip = (await c.request("floating_ip.allocate", {"project": "p1"}))["address"]
    assoc = {"address": fip, "fixed_address": a0, "project": "p1"}
    await c.request("floating_ip.associate", assoc, command_id="as-vm0")
    await prove_gone(conn, service, "h1", [], nid)
    res = await c.request("fixed_ip.reclaim", {"grace": GRACE, "host": "h1"})
    assert [r["address"] for r in res["reclaimed"]] == [a0]

    with pytest.raises(CommandIdReused) as err:
        await c.request("floating_ip.associate", assoc, command_id="as-vm0")
    assert err.value.details["reclaimed"] is True
    assert err.value.details["fixed_address"] == a0


async def test_a_retry_of_a_reverted_network_create_is_refused(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    args = {"label": "n", "cidr": "10.67.0.0/24", "mode": "flat"}
    first = await c.request("network.create", args, command_id="create-n")
    assert await c.request("network.create", args, command_id="create-n") == first
    [nid] = [n["id"] for n in first["networks"]]
    await revert(conn, c, command_id="create-n")
    assert nid not in service.state.networks
    again = await c.request("network.create", {**args, "label": "m"})  # the range, another's
    assert again["networks"][0]["cidr"] == "10.67.0.0/24"

    with pytest.raises(CommandIdReused) as err:
        await c.request("network.create", args, command_id="create-n")
    assert err.value.details == {
        "command_id": "create-n",
        "network_id": nid,
        "undone_by": "revert-create-n",
        "reverted": True,
    }


async def test_a_retry_of_a_project_network_another_project_holds_now_is_refused(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    args = {
        "label": "v",
        "cidr": "10.68.0.0/26",
        "mode": "vlan",
        "vlan_start": 300,
        "project": "p1",
    }
    first = await c.request("network.create", args, command_id="create-p1")
    [nid] = [n["id"] for n in first["networks"]]
    assert first["networks"][0]["project"] == "p1"
    await c.request("network.disassociate", {"network_id": nid})  # an admin gives it back
    got = await c.allocate_fixed_ip("vm2", project="p2")  # p2's first: the free network
    assert got["network_id"] == nid

    with pytest.raises(CommandIdReused) as err:
        await c.request("network.create", args, command_id="create-p1")
    assert err.value.details["held_by"] == "p2"
    assert err.value.details["network_id"] == nid
