"""When the service writes a publish at once (issue 15): only with one lane at work and no job
waiting in any lane (``_publish_now``), whose count of waiting jobs (``_queued``) goes back to
nothing after bursts on one network, on many, and a lane carrying a job of another kind; and
every answer is right, on a real nats-server."""

from __future__ import annotations

import asyncio

from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService


async def test_the_waiting_jobs_count_goes_back_to_nothing(
    conn: Connection, service: CommandService
) -> None:
    admin = Client(conn)
    nets = await admin.create_networks(
        label="n", cidr="10.9.0.0/20", num_networks=16, network_size=256
    )
    ids = [n["id"] for n in nets]
    assert service._queued == 0 and service._publish_now()

    # 16 on 16 networks, then 16 on one (rounds of several jobs), each twice over
    got = await asyncio.gather(
        *(admin.allocate_fixed_ip(f"a{k}", network_id=ids[k % 16], host="h1") for k in range(32)),
        *(admin.allocate_fixed_ip(f"b{k}", network_id=ids[0], host="h1") for k in range(32)),
    )
    assert len({r["address"] for r in got}) == 64
    assert service._queued == 0 and service._busy_lanes == 0

    # A lane carrying a deallocation behind allocations (``carry`` in _run_lane).
    mixed = await asyncio.gather(
        admin.allocate_fixed_ip("c0", network_id=ids[1], host="h1"),
        admin.allocate_fixed_ip("c1", network_id=ids[1], host="h1"),
        admin.deallocate_fixed_ip("a1", network_id=ids[1]),
        admin.allocate_fixed_ip("c2", network_id=ids[1], host="h1"),
    )
    assert len(mixed) == 4
    assert service._queued == 0 and service._busy_lanes == 0
    assert service._publish_now()
