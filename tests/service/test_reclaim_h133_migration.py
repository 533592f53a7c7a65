"""Review h133, through the command service on a real nats-server: an instance whose allocation
was moved to h2 while it stayed on h1 (a failed live migration) keeps its address while h1
reports it, however long h2 has not seen it — and loses it once h1 stops listing it too.

Host reports are published as an executor publishes them (tests/service/test_reclaim_service.py).
"""

from __future__ import annotations

import logging
import time

import pytest

from netledger.events.reclaim_events import FixedIpReclaimed
from netledger.journal.stream import Connection
from netledger.reclaim_cli import render
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_reclaim_service import GRACE, all_events, prove_gone, report


async def test_a_migrated_instance_still_on_its_old_host_keeps_its_address(
    conn: Connection, service: CommandService, caplog: pytest.LogCaptureFixture
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.43.0.0/24", mode="flat_dhcp")
    nid = net["id"]
    vm = await c.allocate_fixed_ip("vm", network_id=nid, host="h1")
    other = await c.allocate_fixed_ip("other", network_id=nid, host="h1")
    moved = await c.allocate_fixed_ip("vm", network_id=nid, host="h2")  # migrate_instance_finish
    assert (moved["address"], moved["host"]) == (vm["address"], "h2")
    # The live migration failed: h1 goes on seeing the instance (upper case: as any executor
    # may write it), h2 never sees it, for longer than the grace.
    await report(conn, "h1", [vm["mac"].upper(), other["mac"]], time.time() - 5, [nid])
    await prove_gone(conn, service, "h2", [], nid)

    dry = await c.request("fixed_ip.reclaim", {"grace": GRACE, "dry_run": True})
    assert dry["candidates"] == []
    [held] = dry["held_back"]
    assert (held["address"], held["host"], held["seen_on"]) == (vm["address"], "h2", ["h1"])
    assert held["unseen_for"] >= GRACE
    with caplog.at_level(logging.WARNING, logger="netledger.reclaim"):
        res = await c.request("fixed_ip.reclaim", {"grace": GRACE})
    assert res["reclaimed"] == [] and [h["address"] for h in res["held_back"]] == [vm["address"]]
    assert "listed by the newest report of h1" in caplog.text
    assert f"{vm['address']}" in render(res) and "seen on h1" in render(res)
    assert service.state.networks[nid].fixed[vm["address"]].instance == "vm"

    # h1 stops listing it: h2's absence, past the grace already, frees it.
    seq = await report(conn, "h1", [other["mac"]], time.time(), [nid])
    await service.follower.wait_for(seq)
    res = await c.request("fixed_ip.reclaim", {"grace": GRACE})
    assert [(r["address"], r["host"]) for r in res["reclaimed"]] == [(vm["address"], "h2")]
    assert res["held_back"] == []
    assert vm["address"] not in service.state.networks[nid].fixed
    [ev] = [e for _, _, e in await all_events(conn) if isinstance(e, FixedIpReclaimed)]
    assert (ev.instance, ev.host) == ("vm", "h2")
