"""Idle lanes end (service/lanes.py ``_end_idle_lanes``, review hrev83): when a lane is added, the
lanes that took no job since the addition before and hold none are ended. A lane at work between
two additions is kept (no lane re-made per job of a burst); a job arriving for a lane in the
very pass its lane is ended gets a new lane and its answer; refused allocations naming unknown
networks make no lane. Real nats-server, real command service; the interleavings are made by
queueing in one synchronous step, never by timing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netledger.events.commands import Request, parse_command
from netledger.events.errors import NetworkNotFound
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService


def _allocate(instance: str, nid: str) -> Request:
    return parse_command(
        "fixed_ip.allocate",
        {
            "command_id": f"alloc-{instance}",
            "actor": {"role": "admin"},
            "args": {"instance": instance, "network_id": nid, "host": "h1"},
        },
    )


async def _networks(c: Client, n: int) -> list[str]:
    nets = await c.create_networks(
        label="l", cidr="10.84.0.0/20", num_networks=n, network_size=256, mode="flat"
    )
    return [str(x["id"]) for x in nets]


async def test_a_lane_at_work_between_additions_is_kept_and_an_idle_one_ends(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    hot, *others = await _networks(c, 6)
    await c.allocate_fixed_ip("h-0", network_id=hot, host="h1")
    worker = service._workers[f"network:{hot}"]
    for i, nid in enumerate(others[:3]):  # each adds a lane; the hot one took a job since
        await c.allocate_fixed_ip(f"o-{i}", network_id=nid, host="h1")
        await c.allocate_fixed_ip(f"h-{i + 1}", network_id=hot, host="h1")
        assert service._workers[f"network:{hot}"] is worker, "a lane at work was re-made"
    # Idle across two additions: kept at the first (it took a job since the one before),
    # ended at the second; its worker returns (not cancelled).
    await c.allocate_fixed_ip("o-3", network_id=others[3], host="h1")
    assert service._workers[f"network:{hot}"] is worker
    await c.allocate_fixed_ip("o-4", network_id=others[4], host="h1")
    assert f"network:{hot}" not in service._lanes
    await asyncio.wait_for(worker, 10)
    assert not worker.cancelled()
    assert set(service._lanes) == {f"network:{n}" for n in others[3:]}
    got = await c.allocate_fixed_ip("h-again", network_id=hot, host="h1")  # a new lane
    assert got["address"] and service._workers[f"network:{hot}"] is not worker


async def test_a_job_arriving_as_its_lane_ends_gets_a_new_lane_and_its_answer(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    a, x1, x2 = await _networks(c, 3)
    await c.allocate_fixed_ip("a-0", network_id=a, host="h1")
    old = service._workers[f"network:{a}"]
    await c.allocate_fixed_ip("x1-0", network_id=x1, host="h1")  # a's lane: idle since
    # One synchronous step: the addition of x2's lane ends a's (idle, no job since the last
    # addition), and a job for a arrives before a's old worker has run again.
    futs: list[asyncio.Future[dict[str, Any]]] = [
        service._submit_nowait(_allocate("x2-0", x2)),
        service._submit_nowait(_allocate("a-1", a)),
    ]
    assert old.done() is False and service._workers[f"network:{a}"] is not old
    answers = await asyncio.wait_for(asyncio.gather(*futs), 30)
    assert all(r["address"] for r in answers)
    await asyncio.wait_for(old, 10)
    assert service.state.networks[a].fixed[answers[1]["address"]].instance == "a-1"


async def test_refused_allocations_for_unknown_networks_make_no_lane(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    for i in range(5):
        with pytest.raises(NetworkNotFound):
            await c.allocate_fixed_ip(f"vm{i}", network_id=f"nope{i}", host="h1")
    assert not [k for k in service._lanes if k.startswith("network:")]
