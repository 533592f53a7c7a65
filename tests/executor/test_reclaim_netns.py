"""Reclaiming end to end on real network namespaces: a real executor reports what its bridge
learned, an instance stand-in disappears, and after the grace period (the log's times) the
reclaim frees exactly its address — not the live neighbour's.

Namespaces are named ``nlr-<tag>-<role>`` and always deleted; the executor runs in-process
(short sighting poll / heartbeat) and is stopped by the test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from netledger.events.host_events import HostInstancesChanged, HostInstancesSeen
from netledger.events.reclaim_events import FixedIpReclaimed, macs_digest
from netledger.executor.daemon import Executor
from netledger.executor.desired import HostConfig
from netledger.executor.options import Options
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_reclaim_service import all_events

from .test_executor_lab import Lab, lab, ping, sh

pytestmark = pytest.mark.netns

GRACE = 2.0


class ReclaimLab(Lab):
    def ns(self, role: str) -> str:
        name = f"nlr-{self.tag}-{role}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name


@pytest.fixture
def world() -> Iterator[Lab]:
    with lab() as the_lab:
        the_lab.__class__ = ReclaimLab
        yield the_lab


async def wait_until(pred: Any, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await pred()
        if got:
            return got
        await asyncio.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}")


async def test_an_instance_gone_from_its_host_is_reclaimed_after_the_grace(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    h, other = world.ns("h"), world.ns("o")
    world.wire(h, "eth1", other, "eth1")
    c = Client(conn)
    [net] = await c.create_networks(
        label="flat", cidr="10.46.0.0/24", mode="flat_dhcp", bridge="brrc", network_host="rh"
    )
    nid = net["id"]
    keep = await c.allocate_fixed_ip("vm-keep", network_id=nid, host="rh")
    gone = await c.allocate_fixed_ip("vm-gone", network_id=nid, host="rh")

    cfg = HostConfig(host="rh", physical_interface="eth1", network_host=True, dhcp=False)
    opts = Options(netns=h, interval=0.5, sightings_poll=0.2, sightings_heartbeat=0.5)
    ex = Executor(conn, cfg, opts)
    await ex.start()
    runner = asyncio.create_task(ex.run_forever())
    try:
        await wait_until(lambda: _has_bridge(h), "the executor's bridge")
        vk = world.instance(h, "brrc", "vk", f"{keep['address']}/24", "10.46.0.1", keep["mac"])
        vg = world.instance(h, "brrc", "vg", f"{gone['address']}/24", "10.46.0.1", gone["mac"])
        assert ping(vk, "10.46.0.1") and ping(vg, "10.46.0.1")

        async def both_seen() -> bool:
            s = service.state.sightings.get("rh")
            return s is not None and {keep["mac"], gone["mac"]} <= s.last_macs

        await wait_until(both_seen, "a report with both instances")
        # Nothing is a candidate while both are seen, however long we look.
        dry = await c.request("fixed_ip.reclaim", {"grace": GRACE, "dry_run": True})
        assert dry["candidates"] == []

        # The hypervisor tears vm-gone down: its port leaves the bridge, the entries the
        # bridge learned on that port with it (what deleting the tap does too, without making
        # this test wait on a device unregistration in the kernel).
        sh("ip", "-n", h, "link", "set", world.taps[vg], "down")
        sh("ip", "-n", h, "link", "set", world.taps[vg], "nomaster")

        async def candidate() -> list[dict[str, Any]]:
            r = await c.request("fixed_ip.reclaim", {"grace": GRACE, "dry_run": True})
            return list(r["candidates"])

        found = await wait_until(candidate, "the orphan to become a candidate")
        assert [x["address"] for x in found] == [gone["address"]]
        assert found[0]["unseen_for"] >= GRACE
        res = await c.request("fixed_ip.reclaim", {"grace": GRACE, "host": "rh"})
        assert [x["address"] for x in res["reclaimed"]] == [gone["address"]]
        fixed = service.state.networks[nid].fixed
        assert gone["address"] not in fixed and keep["address"] in fixed
        assert ping(vk, "10.46.0.1"), "the live instance lost its network"
    finally:
        ex.stop()
        # Bounded: a runner that does not stop must fail this test, not hang the suite.
        await asyncio.wait_for(asyncio.gather(runner, return_exceptions=True), 90)
        await asyncio.wait_for(ex.close(), 30)

    [ev] = [e for _, _, e in await all_events(conn) if isinstance(e, FixedIpReclaimed)]
    assert (ev.address, ev.instance, ev.host, ev.mac) == (
        gone["address"],
        "vm-gone",
        "rh",
        gone["mac"],
    )
    assert ev.report_at - ev.first_absent_at >= GRACE
    # The host appended a report only when its set changed; the grace was proven by a
    # heartbeat from the liveness bucket, which the reclaim names as its evidence.
    assert ev.heartbeat_revision is not None and ev.heartbeat_digest
    assert "heartbeat rev" in ev.reason
    # whether the host reported whole sets or what changed, the evidence names the whole set
    # of the report it confirmed (rebuilt here from the reports up to it)
    macs: set[str] = set()
    for seq, _, e in await all_events(conn):
        if seq > ev.report_seq:
            break
        if isinstance(e, HostInstancesSeen):
            macs = set(e.macs)
        elif isinstance(e, HostInstancesChanged):
            macs = (macs - set(e.removed)) | set(e.added)
    assert keep["mac"] in macs and gone["mac"] not in macs
    assert ev.heartbeat_digest == macs_digest(macs)


async def _has_bridge(ns: str) -> bool:
    p = sh("ip", "-n", ns, "link", "show", "brrc", check=False)
    return p.returncode == 0
