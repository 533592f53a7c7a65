"""Review hrev16: floating IPs end to end, on real namespaces.

Two floating IPs associated with one fixed address (the service accepts it, as nova did: a
fixed address's floating IPs, plural, are disassociated with it — NOVA_NETWORK.md): the host's
NAT table must still be written, every floating IP DNATed to its fixed address, and the other
instances' floating IPs must keep working.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from netledger.executor import nft
from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.executor.test_executor_lab import world as world

from .test_executor_incremental import HOST, full_diff, running, settled, stop
from .test_executor_lab import Lab, addresses, links, nat_table, ping, sh

pytestmark = pytest.mark.netns


async def test_two_floating_ips_on_one_fixed_address_leave_the_hosts_nat_working(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    ha, out = world.ns("ha"), world.ns("out")
    world.wire(ha, "pub0", out, "eth0", "198.51.100.1/24", "198.51.100.100/24")
    args = ("--public-interface", "pub0")

    c = Client(conn)
    [net] = await c.create_networks(
        label="fip16", cidr="10.26.0.0/24", mode="vxlan", vni_start=4616, network_host="ha",
        project="p1",
    )  # fmt: skip
    vm_a = await c.allocate_fixed_ip("vm-a", project="p1", host="ha")
    vm_b = await c.allocate_fixed_ip("vm-b", project="p1", host="ha")
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.64/28"})
    fips = [
        (await c.request("floating_ip.allocate", {"project": "p1", "pool": "pub"}))["address"]
        for _ in range(3)
    ]
    pairs = [(fips[0], vm_a["address"]), (fips[1], vm_b["address"]), (fips[2], vm_b["address"])]
    for fip, fixed in pairs:
        # accepted: a fixed address may hold more than one floating IP
        await c.request(
            "floating_ip.associate", {"address": fip, "fixed_address": fixed, "project": "p1"}
        )

    p = await asyncio.to_thread(world.executor, nats_url, "ha", ha, *args, check=False)
    table = nat_table(ha)
    assert table is not None, f"no NAT table was written: {p.stdout} {p.stderr}"
    dnat = cast("list[tuple[str, str]]", table["fip_dnat"])
    snat = dict(cast("list[tuple[str, str]]", table["fip_snat"]))
    assert sorted(dnat) == sorted(pairs)
    assert snat[vm_a["address"]] == fips[0]
    assert snat[vm_b["address"]] in (fips[1], fips[2])
    # read back, it is the executor's own (else every pass would rewrite it as drift)
    back, intact = nft.read(ha)
    assert intact and back is not None and back.floating == tuple(sorted(pairs))

    va = world.instance(ha, net["bridge"], "va", f"{vm_a['address']}/24", "10.26.0.1", vm_a["mac"])
    assert va
    assert ping(out, fips[0]), "vm-a's floating IP does not answer from outside"


async def test_a_running_executor_drops_the_nat_of_an_instance_migrated_away(
    world: Lab, conn: Connection, service: Any
) -> None:
    """Multi-host: the old host keeps another instance in the network (so it keeps reading it
    and serving it); its incremental pass after the ``FixedIpMoved`` must take the moved
    instance's floating IP away (DNAT and /32), as a full pass would."""
    ns, other = world.ns("mv"), world.ns("mvo")
    world.wire(ns, "eth1", other, "eth1")
    sh("ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", "eth1")
    world.wire(ns, "pub0", other, "pub1")
    c = Client(conn)
    [net] = await c.create_networks(
        label="mv16", cidr="10.27.0.0/24", mode="vxlan", vni_start=4716, multi_host=True,
        project="p1",
    )  # fmt: skip
    await c.allocate_fixed_ip("stay", project="p1", host=HOST)
    vm = await c.allocate_fixed_ip("go", project="p1", host=HOST)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.64/28"})
    fip = (await c.request("floating_ip.allocate", {"project": "p1", "pool": "pub"}))["address"]
    await c.request(
        "floating_ip.associate", {"address": fip, "fixed_address": vm["address"], "project": "p1"}
    )
    ex, task = await running(conn, ns)
    try:
        await settled(ex, conn)
        table = nat_table(ns)
        assert table is not None and table["fip_dnat"] == [(fip, vm["address"])]
        assert f"{fip}/32" in addresses(ns, "pub0")
        moved = await c.allocate_fixed_ip("go", project="p1", host="elsewhere")
        assert moved["moved_from"] == HOST
        await settled(ex, conn)
        table = nat_table(ns)
        assert table is not None and table["fip_dnat"] == []
        assert f"{fip}/32" not in addresses(ns, "pub0")
        assert net["bridge"] in links(ns)  # still serving "stay"
        assert await asyncio.to_thread(full_diff, ex, ns) == ()
    finally:
        await stop(ex, task)
