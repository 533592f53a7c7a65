"""Review hrev20: a peer announcing a VTEP of the other address family (IPv6 while this host's
underlay is IPv4: its executor found no IPv4 on its physical interface at start, and took its
first global IPv6 — docs/executor.md) gets a flood entry here that the kernel refuses
(EAFNOSUPPORT: a VXLAN device's remotes are of its own family). Every pass of every host sharing
a network with it then fails — ``executor run --once`` ends with ``apply_incomplete`` — as one
announcing a VTEP that is no address did before that got no flood entries, with a warning
(HostBook.vteps: "instead of failing this host's kernel work at every pass")."""

from __future__ import annotations

from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.executor.test_executor_lab import Lab, flood
from tests.executor.test_executor_lab import world as world
from tests.executor.test_vxlan_peers_review20 import announce

pytestmark = pytest.mark.netns


async def test_a_peer_vtep_of_the_other_family_does_not_fail_every_pass(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    ha, peer = world.ns("ha"), world.ns("peer")
    world.wire(ha, "eth0", peer, "eth0", "192.168.62.1/24", "192.168.62.2/24")
    c = Client(conn)
    [net] = await c.create_networks(
        label="fam", cidr="10.62.0.0/24", mode="vxlan", vni_start=4621, multi_host=True,
        project="p1",
    )  # fmt: skip
    await c.allocate_fixed_ip("v1", network_id=net["id"], host="ha")
    await c.allocate_fixed_ip("v2", network_id=net["id"], host="hb")
    await c.allocate_fixed_ip("v3", network_id=net["id"], host="hc")
    await announce(conn, "hb", "fd00::2")  # hb's underlay is IPv6
    await announce(conn, "hc", "192.168.62.3")
    p = world.executor(nats_url, "ha", ha, "--physical-interface", "eth0", "--no-dhcp", check=False)
    assert flood(ha, "vx4621") == {"192.168.62.3"}
    assert p.returncode == 0, p.stdout
