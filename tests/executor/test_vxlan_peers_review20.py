"""Review hrev20: a running executor keeps its VXLAN flood entries equal to the peers serving its
networks, as the peers re-announce (a new VTEP, a VTEP shared with another host), migrate and
leave — on a real namespace, the peers' announcements written to the log as their executors
write them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import HostAnnounced
from netledger.journal.stream import Connection
from netledger.service.client import Client
from tests.executor.test_executor_lab import Lab, flood, links
from tests.executor.test_executor_lab import world as world

pytestmark = pytest.mark.netns


async def announce(conn: Connection, host: str, vtep: str | None) -> None:
    ev = HostAnnounced(host, vtep, "eth0", None, False)
    eid = f"ann-{host}-{vtep}-{time.monotonic_ns()}"
    env = Envelope(ev, eid, eid, time.time(), Actor(role="system", user=f"executor:{host}"))
    await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)


async def until(what: Any, proc: Any, why: str, timeout: float = 60.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if what():
            return
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        await asyncio.sleep(0.1)
    raise AssertionError(why)


async def test_flood_entries_follow_reannouncements_moves_and_leaves(
    world: Lab, conn: Connection, service: Any, nats_url: str
) -> None:
    ha, peer = world.ns("ha"), world.ns("peer")
    world.wire(ha, "eth0", peer, "eth0", "192.168.61.1/24", "192.168.61.2/24")
    c = Client(conn)
    [net] = await c.create_networks(
        label="fl", cidr="10.61.0.0/24", mode="vxlan", vni_start=4611, multi_host=True,
        project="p1",
    )  # fmt: skip
    vx = "vx4611"
    await c.allocate_fixed_ip("v1", network_id=net["id"], host="ha")
    await c.allocate_fixed_ip("v2", network_id=net["id"], host="hb")
    await c.allocate_fixed_ip("v3", network_id=net["id"], host="hc")
    await announce(conn, "hb", "192.168.61.2")
    await announce(conn, "hc", "192.168.61.3")
    proc = world.executor(
        nats_url, "ha", ha, "--physical-interface", "eth0", "--vtep-address", "192.168.61.1",
        "--no-dhcp", once=False,
    )  # fmt: skip

    def entries() -> set[str]:
        return flood(ha, vx)

    await until(lambda: entries() == {"192.168.61.2", "192.168.61.3"}, proc, "first pass")
    # hb restarted with another VTEP: the old entry goes, the new one comes.
    await announce(conn, "hb", "192.168.61.22")
    await until(lambda: entries() == {"192.168.61.22", "192.168.61.3"}, proc, "new VTEP")
    # hc (mis)configured with hb's VTEP: one entry for both.
    await announce(conn, "hc", "192.168.61.22")
    await until(lambda: entries() == {"192.168.61.22"}, proc, "shared VTEP")
    await announce(conn, "hc", "192.168.61.3")
    await until(lambda: entries() == {"192.168.61.22", "192.168.61.3"}, proc, "hc back")
    # hb's instance migrates to hc: hb serves the network no more.
    await c.allocate_fixed_ip("v2", network_id=net["id"], host="hc")
    await until(lambda: entries() == {"192.168.61.3"}, proc, "hb left by migration")
    # ... and back to hb, then hc's last instance goes: only hb remains.
    await c.allocate_fixed_ip("v3", network_id=net["id"], host="hb")
    await until(lambda: entries() == {"192.168.61.22", "192.168.61.3"}, proc, "moved back")
    await c.request("fixed_ip.deallocate", {"instance": "v2"})
    await until(lambda: entries() == {"192.168.61.22"}, proc, "hc left by deallocation")
    # A VTEP announced as none (the peer's interface lost its address): no entry to it.
    await announce(conn, "hb", None)
    await until(lambda: entries() == set(), proc, "a peer without a VTEP")
    await announce(conn, "hb", "192.168.61.2")
    await until(lambda: entries() == {"192.168.61.2"}, proc, "hb announced again")
    # ha's own instance migrates away: the network leaves ha altogether.
    await c.allocate_fixed_ip("v1", network_id=net["id"], host="hb")
    await until(lambda: vx not in links(ha) and net["bridge"] not in links(ha), proc, "ha left")
