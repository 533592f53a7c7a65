"""A running executor reads past what the fold refuses and goes on building its host (a real
nats-server, the command service, a network namespace): garbage on its network's subject and
a ``NetworkCreated`` whose gateway lies outside it are skipped (before Dec 5 the view's fold
raised into its follower, which then stopped reading for good), and an allocation after them on
that network is folded and the kernel is as a full pass wants it."""

from __future__ import annotations

import asyncio

import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_lab import world as world
from tests.poison import stored_network_created

from .test_executor_incremental import HOST, full_diff, running, settled, stop
from .test_executor_lab import Lab

pytestmark = pytest.mark.netns


async def test_an_executor_reads_past_poison_and_goes_on(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    ns = world.ns("poison")
    c = Client(conn)
    [net] = await c.create_networks(
        label="p", cidr="10.91.0.0/24", num_networks=1, mode="vxlan", vni_start=791
    )
    await c.allocate_fixed_ip("vm1", network_id=net["id"], host=HOST)
    ex, task = await running(conn, ns)
    try:
        await settled(ex, conn)
        for subject, data in [
            (f"netledger.evt.network.{net['id']}", b"\xc1 not msgpack"),
            ("netledger.evt.registry", stored_network_created(gateway="10.78.0.1")),
        ]:
            await conn.js.publish(subject, data, stream=conn.stream)
        vm2 = await c.allocate_fixed_ip("vm2", network_id=net["id"], host=HOST)
        await settled(ex, conn)
        assert ex.follower is not None and ex.follower.failure is None
        held = ex.view.state.networks[net["id"]].fixed
        assert vm2["address"] in held and held[vm2["address"]].instance == "vm2"
        assert "77" not in ex.view.state.networks
        assert await asyncio.to_thread(full_diff, ex, ns) == ()
    finally:
        await stop(ex, task)
