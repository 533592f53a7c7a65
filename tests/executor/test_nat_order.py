"""fixed -> fixed is accepted before an instance's floating IP is SNATed (nova's ``POSTROUTING
-s fixed -d fixed -j ACCEPT`` came before its snat chains): nft evaluates a chain's rules in
order and snat is final, so with ``fip-snat`` first an instance with a floating IP reached
other fixed ranges with the floating IP as its source.

A host whose table still has the old order is repaired by the next full pass: the read-back
(``nft.parse``) compares the rules in order, finds the table not intact, and it is written
again. Pure, then on real network namespaces (root): nft itself, and an executor between two
networks with real pings.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netledger.executor import nft
from netledger.executor.diff import diff
from netledger.executor.model import HostActual, HostDesired, NatTable
from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import Lab, ns_exec, ping, sh

TABLE = NatTable(
    floating=(("203.0.113.5", "10.0.0.3"),), fixed_ranges=("10.0.0.0/23",), snat_to="192.0.2.1"
)


def old_order(text: str) -> str:
    """A table as executors before the fix wrote it: ``fip-snat`` before ``fixed-to-fixed``."""
    lines = text.splitlines(keepends=True)
    f2f = next(i for i, line in enumerate(lines) if '"fixed-to-fixed"' in line)
    fip = next(i for i, line in enumerate(lines) if '"fip-snat"' in line)
    lines[f2f], lines[fip] = lines[fip], lines[f2f]
    return "".join(lines)


def postrouting(ns: str) -> list[str]:
    """The comments of the postrouting rules of our table, in order."""
    import json

    doc = json.loads(ns_exec(ns, "nft", "-j", "list", "table", "ip", "netledger").stdout)
    return [
        o["rule"]["comment"]
        for o in doc["nftables"]
        if "rule" in o and o["rule"]["chain"] == "postrouting"
    ]


def test_fixed_to_fixed_comes_before_the_floating_snat() -> None:
    text = nft.render4(TABLE)
    post = text[text.index("chain postrouting") :]
    order = [post.index(f'"{c}"') for c in ("fixed-to-fixed", "fip-snat", "fixed-snat")]
    assert order == sorted(order), post
    assert nft.RULES["postrouting"] == ("fixed-to-fixed", "fip-snat", "fixed-snat")


@pytest.mark.netns
def test_a_table_in_the_old_order_reads_not_intact_and_is_replaced(world: Lab) -> None:
    ns = world.ns("nft")
    nft.apply(ns, old_order(nft.render(TABLE)))
    assert postrouting(ns) == ["fip-snat", "fixed-to-fixed", "fixed-snat"]
    table, intact = nft.read(ns)
    assert table == TABLE and not intact  # same content, wrong order
    ops = diff(HostDesired(nat=TABLE), HostActual(nat=table, nat_intact=intact)).ops
    assert ops, "a table in the old order must be written again"
    nft.apply(ns, nft.render(TABLE))
    assert nft.read(ns) == (TABLE, True)
    assert postrouting(ns) == ["fixed-to-fixed", "fip-snat", "fixed-snat"]


@pytest.mark.netns
async def test_an_instance_with_a_floating_ip_reaches_another_network_from_its_fixed_ip(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    ha, out = world.ns("ha"), world.ns("out")
    world.wire(ha, "pub0", out, "eth0", "198.51.100.1/24", "198.51.100.100/24")
    args = ("--public-interface", "pub0")
    c = Client(conn)
    [n1] = await c.create_networks(
        label="one", cidr="10.30.0.0/24", mode="flat", bridge="brf1", network_host="ha"
    )
    [n2] = await c.create_networks(
        label="two", cidr="10.31.0.0/24", mode="flat", bridge="brf2", network_host="ha"
    )
    ia = await c.allocate_fixed_ip("vm-a", network_id=n1["id"], host="ha", project="p1")
    ib = await c.allocate_fixed_ip("vm-b", network_id=n2["id"], host="ha", project="p1")
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.64/28"})
    fip = (await c.request("floating_ip.allocate", {"project": "p1", "pool": "pub"}))["address"]
    await c.request(
        "floating_ip.associate", {"address": fip, "fixed_address": ia["address"], "project": "p1"}
    )
    await asyncio.to_thread(world.executor, nats_url, "ha", ha, *args)

    va = world.instance(ha, "brf1", "va", f"{ia['address']}/24", "10.30.0.1", ia["mac"])
    vb = world.instance(ha, "brf2", "vb", f"{ib['address']}/24", "10.31.0.1", ib["mac"])
    # vb can answer vm-a's fixed address only: a request arriving from the floating IP (or
    # the host's address) gets no reply
    sh("ip", "-n", vb, "route", "del", "default")
    sh("ip", "-n", vb, "route", "add", "10.30.0.0/24", "via", "10.31.0.1")
    assert ping(out, fip), "the floating IP does not answer from outside"
    assert ping(va, ib["address"]), "fixed -> fixed left with the floating IP as its source"

    # A host still running a table in the old order: broken, and repaired by the next pass.
    nft.apply(ha, old_order(nft.render(nft.read(ha)[0] or NatTable())))
    assert postrouting(ha)[:2] == ["fip-snat", "fixed-to-fixed"]
    assert not ping(va, ib["address"]), "the old order did not SNAT fixed -> fixed (test broken)"
    await asyncio.to_thread(world.executor, nats_url, "ha", ha, *args)
    assert postrouting(ha) == ["fixed-to-fixed", "fip-snat", "fixed-snat"]
    assert ping(va, ib["address"])
