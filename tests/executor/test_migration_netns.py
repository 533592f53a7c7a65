"""An instance migrates between two hosts of a multi-host network, on real namespaces.

``fixed_ip.allocate`` naming the new host moves the allocation (``FixedIpMoved``): the new
host's executor joins the network — bridge, VXLAN link, gateway, the floating IP's /32 and DNAT —
and the old host's executor, holding no other instance there, takes all of it away. The instance,
plugged into the new host's bridge with the same MAC and address, reaches its gateway and is
reached from outside through its floating IP. ``audit address`` tells the move.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import NETLEDGER, Lab, addresses, links, nat_table, ping

pytestmark = pytest.mark.netns


async def run(lab_: Lab, url: str, host: str, ns: str, *extra: str) -> None:
    await asyncio.to_thread(lab_.executor, url, host, ns, *extra)


async def test_a_migrated_instance_takes_its_address_bridge_and_floating_ip_along(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    ha, hb = world.ns("ha"), world.ns("hb")
    outa, outb = world.ns("outa"), world.ns("outb")
    world.wire(ha, "eth0", hb, "eth0", "192.168.51.1/24", "192.168.51.2/24")
    world.wire(ha, "pub0", outa, "eth0", "198.51.100.1/24", "198.51.100.100/24")
    world.wire(hb, "pub0", outb, "eth0", "198.51.100.2/24", "198.51.100.100/24")
    args = ("--physical-interface", "eth0", "--public-interface", "pub0")

    c = Client(conn)
    [net] = await c.create_networks(
        label="mig", cidr="10.21.0.0/24", mode="vxlan", vni_start=4343, multi_host=True,
        project="p1",
    )  # fmt: skip
    bridge = net["bridge"]
    vm = await c.allocate_fixed_ip("vm", project="p1", host="ha")
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.64/28"})
    fip = (await c.request("floating_ip.allocate", {"project": "p1", "pool": "pub"}))["address"]
    await c.request(
        "floating_ip.associate", {"address": fip, "fixed_address": vm["address"], "project": "p1"}
    )
    await run(world, nats_url, "ha", ha, *args)
    await run(world, nats_url, "hb", hb, *args)
    assert addresses(ha, bridge) == ["10.21.0.1/24"]
    assert nat_table(ha)["fip_dnat"] == [(fip, vm["address"])]
    assert bridge not in links(hb)
    world.instance(ha, bridge, "va", f"{vm['address']}/24", "10.21.0.1", vm["mac"])
    assert ping(outa, fip), "the floating IP does not answer on the first host"

    # The migration: the destination asks for the instance's address there.
    moved = await c.allocate_fixed_ip("vm", project="p1", host="hb", command_id="mig-1")
    assert (moved["address"], moved["mac"], moved["host"]) == (vm["address"], vm["mac"], "hb")
    assert moved["moved_from"] == "ha"
    # The same command again (its answer lost) gets the same answer, from the log.
    assert await c.allocate_fixed_ip("vm", project="p1", host="hb", command_id="mig-1") == moved
    # A retry of the same request (the migration's next step asking again) appends nothing.
    again = await c.allocate_fixed_ip("vm", project="p1", host="hb")
    assert again["host"] == "hb" and "moved_from" not in again

    await run(world, nats_url, "hb", hb, *args)
    await run(world, nats_url, "ha", ha, *args)
    lb, la = links(hb), links(ha)
    assert lb[bridge]["ifalias"] == f"netledger:{net['id']}" and "vx4343" in lb
    assert addresses(hb, bridge) == ["10.21.0.1/24"]
    assert nat_table(hb)["fip_dnat"] == [(fip, vm["address"])]
    assert f"{fip}/32" in addresses(hb, "pub0")
    assert bridge not in la and "vx4343" not in la
    assert nat_table(ha) is None
    assert addresses(ha, "pub0") == ["198.51.100.1/24"]

    vb = world.instance(hb, bridge, "vb", f"{vm['address']}/24", "10.21.0.1", vm["mac"])
    assert ping(vb, "10.21.0.1"), "the migrated instance cannot reach its gateway on the new host"
    assert ping(outb, fip), "the floating IP does not answer on the new host"
    assert not ping(outa, fip), "the old host still answers for the floating IP"

    p = subprocess.run(
        [NETLEDGER, "--nats", nats_url, "--json", "audit", "address", vm["address"], "--from-log"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = json.loads(p.stdout)
    [move] = [r for r in rows if r["type"] == "FixedIpMoved"]
    assert (move["data"]["from_host"], move["data"]["host"]) == ("ha", "hb")
    assert move["summary"] == f"{vm['address']} moved with vm from host ha to hb"
