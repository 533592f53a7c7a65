"""A network created anywhere joins every NAT host's set of fixed ranges (traffic between fixed
ranges is not NATed) — and the hosts append nothing for it: their record says "the registry's
ranges" (``HostNatApplied.fixed_space``), which still holds. Each NAT host appended a
``HostNatApplied`` and a ``HostReconciled`` per network created before: O(hosts) events for one
command. A real executor daemon in a network namespace (root)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import netaddr
import pytest

from netledger.events.ids import host_subject
from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.executor.test_executor_lab import Lab, ns_exec
from tests.executor.test_executor_lab import world as world


def fixed_set(ns: str) -> netaddr.IPSet:
    p = ns_exec(ns, "nft", "-j", "list", "set", "ip", "netledger", "fixed", check=False)
    if p.returncode != 0:
        return netaddr.IPSet()
    out = netaddr.IPSet()
    for o in json.loads(p.stdout)["nftables"]:
        for e in o.get("set", {}).get("elem", []):
            if isinstance(e, dict) and "prefix" in e:
                out.add(f"{e['prefix']['addr']}/{e['prefix']['len']}")
            elif isinstance(e, str):
                out.add(e)
    return out


async def last_on(conn: Connection, subject: str) -> int:
    return int((await conn.js.get_last_msg(conn.stream, subject)).seq)


async def until(what: Any, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if what():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("not reached in time")


@pytest.mark.netns
async def test_a_restart_after_a_network_was_created_elsewhere_reports_no_drift(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    """The first pass after a restart has no previous desired state: the set that grew while
    the executor was away was reported as a NAT table repaired behind its back (drift) —
    every NAT host at every restart or ``--once`` after a network was created anywhere."""
    from netledger.events.host_events import HostNatApplied, HostReconciled
    from tests.executor.test_executor_netns import host_events

    ha = world.ns("ha")
    c = Client(conn)
    [n1] = await c.create_networks(
        label="one", cidr="10.43.0.0/24", mode="flat", bridge="brs1", network_host="ha"
    )
    await c.allocate_fixed_ip("vm-a", network_id=n1["id"], host="ha", project="p1")
    world.executor(nats_url, "ha", ha, "--public-interface", "lo")
    before = len(await host_events(conn, "ha"))
    [n3] = await c.create_networks(
        label="three", cidr="10.44.0.0/24", mode="flat", bridge="brs3", network_host="hb"
    )
    world.executor(nats_url, "ha", ha, "--public-interface", "lo")
    assert netaddr.IPNetwork(n3["cidr"]) in fixed_set(ha)
    after = (await host_events(conn, "ha"))[before:]
    nat = [e for e in after if isinstance(e, HostNatApplied)]
    assert not any(e.drift for e in nat), nat
    assert not any(e.drift_repairs for e in after if isinstance(e, HostReconciled)), after


@pytest.mark.netns
async def test_a_deletion_and_a_pool_change_the_set_without_drift(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    """A change of the set takes a pass whose previous desired state must have been computed
    with the networks as they were: a set that shrank (a pool cut out of a range, found by
    review; a network deleted, since the set follows the live networks) was reported as the
    NAT table repaired behind the host's back, on every NAT host."""
    from netledger.events.host_events import HostNatApplied
    from tests.executor.test_executor_netns import host_events

    ha = world.ns("ha")
    c = Client(conn)
    [n1] = await c.create_networks(
        label="one", cidr="10.45.0.0/24", mode="flat", bridge="brs1", network_host="ha"
    )
    await c.allocate_fixed_ip("vm-a", network_id=n1["id"], host="ha", project="p1")
    [gone] = await c.create_networks(
        label="gone", cidr="10.46.0.0/24", mode="flat", bridge="brs2", network_host="hb"
    )
    world.executor(nats_url, "ha", ha, "--public-interface", "lo", once=False)
    await until(lambda: netaddr.IPNetwork(gone["cidr"]) in fixed_set(ha))
    await asyncio.sleep(1.5)
    before = len(await host_events(conn, "ha"))
    await c.request("network.delete", {"network_id": gone["id"]})
    await until(lambda: netaddr.IPNetwork(gone["cidr"]) not in fixed_set(ha))
    assert netaddr.IPNetwork(n1["cidr"]) in fixed_set(ha)
    # a pool over the deleted range (allowed: the network is gone) leaves the set as it is
    got = await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "10.46.0.0/29"})
    assert got["cidr"] == "10.46.0.0/29"
    await asyncio.sleep(1.5)
    assert netaddr.IPNetwork(n1["cidr"]) in fixed_set(ha)
    after = (await host_events(conn, "ha"))[before:]
    drift = [e for e in after if isinstance(e, HostNatApplied) and e.drift]
    assert drift == [], after


@pytest.mark.netns
async def test_networks_created_elsewhere_reach_the_set_add_nothing_and_are_applied(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    """Networks created elsewhere join the NAT host's set and the host appends nothing (it
    appended a HostNatApplied and a HostReconciled per network created: O(hosts) events for
    one command). It changed its kernel for them all the same: its liveness status must say
    how far it applied, or ``netledger status`` counts the registry's events after its last
    status as not applied (lagging beyond 100, exit 1) until the heartbeat."""
    from netledger.journal.stream import last_seq
    from netledger.ops.status import DEFAULT_MAX_LAG, hosts_status

    ha = world.ns("ha")
    c = Client(conn)
    [n1] = await c.create_networks(
        label="one", cidr="10.47.0.0/24", mode="flat", bridge="brs1", network_host="ha"
    )
    await c.allocate_fixed_ip("vm-a", network_id=n1["id"], host="ha", project="p1")
    world.executor(nats_url, "ha", ha, "--public-interface", "lo", once=False)
    await until(lambda: netaddr.IPNetwork(n1["cidr"]) in fixed_set(ha))
    subject = host_subject("ha")

    # settled: its first pass reported, its sightings (as the service folds them: whole sets
    # and changes alike) cover the network, a sweep went by
    def covered() -> bool:
        h = service.state.sightings.get("ha")
        return h is not None and bool(h.reports) and n1["id"] in h.reports[-1].networks

    await until(covered)
    await asyncio.sleep(1.2)
    mark = await last_on(conn, subject)
    many = await c.create_networks(
        label="many", cidr="10.60.0.0/16", num_networks=DEFAULT_MAX_LAG + 20,
        network_size=256, mode="vlan", vlan_start=1000, network_host="hb",
    )  # fmt: skip
    await until(lambda: all(netaddr.IPNetwork(n["cidr"]) in fixed_set(ha) for n in many))
    await asyncio.sleep(2.5)  # two sweeps more
    [row] = [h for h in await hosts_status(conn, await last_seq(conn), DEFAULT_MAX_LAG)
             if h["host"] == "ha"]  # fmt: skip
    assert len(many) == DEFAULT_MAX_LAG + 20
    assert not row["lagging"], row
    assert await last_on(conn, subject) == mark, "the host reported networks it does not serve"
    assert netaddr.IPNetwork(n1["cidr"]) in fixed_set(ha)
