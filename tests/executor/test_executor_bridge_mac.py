"""A bridge the executor makes keeps its MAC when ports come and go.

A Linux bridge without an address of its own takes the lowest MAC of its ports and changes it
when a port leaves: instances then ARP-cache a gateway MAC that no longer exists (found by the
reclaim test: the live instance lost its gateway when the orphan's port went away).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_lab import lab, links, sh

NETLEDGER = str(Path(sys.executable).with_name("netledger"))


async def test_bridge_mac_is_pinned(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(
        label="m", cidr="10.47.0.0/24", mode="flat", bridge="brmac", network_host="hm"
    )
    await c.allocate_fixed_ip("vm", network_id=net["id"], host="hm")
    with lab() as world:
        h = world.ns("h")
        p = await asyncio.to_thread(
            subprocess.run,
            [
                NETLEDGER,
                "--nats",
                nats_url,
                "executor",
                "run",
                "--host",
                "hm",
                "--netns",
                h,
                "--network-host",
                "--once",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        before = links(h)["brmac"]["address"]
        # A port with a lower MAC joins, then leaves: the bridge's MAC does not move.
        sh(
            "ip",
            "-n",
            h,
            "link",
            "add",
            "p1",
            "address",
            "02:00:00:00:00:01",
            "type",
            "veth",
            "peer",
            "name",
            "p1b",
        )
        sh("ip", "-n", h, "link", "set", "p1", "master", "brmac", "up")
        assert links(h)["brmac"]["address"] == before
        sh("ip", "-n", h, "link", "del", "p1")
        assert links(h)["brmac"]["address"] == before
        assert int(before.split(":")[0], 16) & 0x03 == 0x02  # locally administered unicast
