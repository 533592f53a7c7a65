"""Review hrev8 (reclaim under races), on a real nats-server with the command service.

An executor that restarts and finds the set of its host's newest report adopts that report
(appends nothing, heartbeats "still report N" with ``since`` = its start). Its *next* report —
a change — is then an ordinary report: in the log, nothing marks that the host was not watched
between the old report and the restart, so the absence of an instance reaches back across the
executor's downtime (docs/reclaim.md: "No absence reaches back across time nobody watched").
"""

from __future__ import annotations

import asyncio
import time
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from netledger.events.codec import Envelope, encode
from netledger.events.ids import host_subject
from netledger.events.reclaim import FixedIpReclaimSweep
from netledger.events.reclaim_events import FixedIpReclaimed
from netledger.executor import sightings
from netledger.executor.sightings import Sighting, SightingReporter
from netledger.journal.stream import Connection, connect
from netledger.service.client import Client
from netledger.service.reclaim_run import sweep as reclaim_sweep
from netledger.service.service import CommandService
from tests.service.test_reclaim_service import EXECUTOR, all_events, prove_gone, report

GRACE = 3600.0
OTHER = "02:16:3e:77:00:01"


class _NoKernel:
    def close(self) -> None:
        pass


def _executor(conn: Connection, svc: CommandService, host: str) -> Any:
    """What a SightingReporter uses of an executor: the real log and liveness bucket, the
    service's fold as its view (it folds this host's subject too), publishing as the executor
    does (envelope time: this host's clock, now)."""

    async def publish(events: list[Any]) -> int:
        last = 0
        for ev in events:
            env = Envelope(ev, uuid.uuid4().hex, uuid.uuid4().hex, time.time(), EXECUTOR)
            ack = await conn.js.publish(
                host_subject(host),
                encode(env),
                stream=conn.stream,
                headers={"Nats-Msg-Id": env.event_id},
            )
            last = int(ack.seq)
        await svc.follower.wait_for(last)
        return last

    return SimpleNamespace(
        conn=conn,
        opts=SimpleNamespace(netns=None, dhcp_paths=None, sighting_changes=True),
        cfg=SimpleNamespace(host=host),
        sightings=None,
        state=svc.state,
        _publish=publish,
    )


async def test_a_change_after_a_restart_that_adopted_the_log_does_not_reach_back(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sightings, "Kernel", lambda netns: _NoKernel())
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.48.0.0/24", mode="flat")
    nid = net["id"]
    vm = await c.allocate_fixed_ip("vm", network_id=nid, host="h1")
    # The executor's last report before it went down for ~2 h (the host rebooted): vm not
    # booted yet. (Its time is the host's clock; the allocation came before it in the log.)
    seq = await report(conn, "h1", [], time.time() - 8000.0, [nid])
    await service.follower.wait_for(seq)

    r = SightingReporter(_executor(conn, service, "h1"), poll=5.0, heartbeat=60.0)
    views = iter(
        [
            Sighting(frozenset(), frozenset({nid}), 0),  # as the log's newest report: adopted
            Sighting(frozenset({OTHER}), frozenset({nid}), 0),  # another instance came up
        ]
    )
    r.observe = lambda bridges: next(views)  # type: ignore[method-assign]
    assert await r.report_once() is False  # adopted: nothing appended, a heartbeat instead
    assert r.reports == 0 and r.heartbeats == 1
    for _ in range(500):  # the service's heartbeat book has it (no timed assertion)
        if "h1" in service.heartbeats_now():
            break
        await asyncio.sleep(0.02)
    assert await r.report_once() is True  # the change: appended

    # vm may be booting still: the host has watched for a few seconds, not for an hour.
    res = await c.request("fixed_ip.reclaim", {"grace": GRACE})
    assert [x["address"] for x in res["reclaimed"]] == [], res
    assert vm["address"] in service.state.networks[nid].fixed


async def test_two_replicas_sweeping_at_once_reclaim_each_orphan_once_and_no_live_one(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    """Checked correct: two command services (replicas) sweep the same orphans at once; the
    network's OCC check lets each reclaim land once, and a live address is never freed."""
    other_conn = await connect(nats_url, name="replica-2")
    other = CommandService(other_conn)
    await other.start()
    try:
        c = Client(conn)
        [net] = await c.create_networks(label="n", cidr="10.49.0.0/24", mode="flat")
        nid = net["id"]
        live = [await c.allocate_fixed_ip(f"live{i}", network_id=nid, host="h1") for i in range(3)]
        gone = [await c.allocate_fixed_ip(f"gone{i}", network_id=nid, host="h1") for i in range(3)]
        seq = await prove_gone(conn, service, "h1", [x["mac"] for x in live], nid)
        await other.follower.wait_for(seq)
        sweep = FixedIpReclaimSweep(grace=2.0)
        a, b = await asyncio.gather(reclaim_sweep(service, sweep), reclaim_sweep(other, sweep))
        assert not a.get("failed") and not b.get("failed")
        got = [x["address"] for x in [*a["reclaimed"], *b["reclaimed"]]]
        assert sorted(got) == sorted(x["address"] for x in gone)
        reclaimed = [e for _, _, e in await all_events(conn) if isinstance(e, FixedIpReclaimed)]
        assert sorted(e.address for e in reclaimed) == sorted(x["address"] for x in gone)
        await other.follower.catch_up()
        for svc in (service, other):
            held = set(svc.state.networks[nid].fixed)
            assert held == {x["address"] for x in live}
    finally:
        await other.close()
        await other_conn.close()
