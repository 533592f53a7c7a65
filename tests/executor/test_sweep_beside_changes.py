"""A change is applied while the periodic sweep reads the kernel, not after it.

The sweep dumps every link, address and flood entry of the host (~0.1 s at 2,000 links, more on
a bigger host); a change that came meanwhile waited for the whole sweep — the open-loop
command → kernel run saw p99 175 ms against a 14 ms median (bench/RESULTS.md). The dump now runs
beside the passes, and the sweep's diff follows it. Here the dump is made slow on purpose and
the order is checked: the new network's bridge is in the kernel before the dump ends.

Real nats-server, command service and namespace (root; deleted at the end).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from netledger.executor.daemon import Executor
from netledger.executor.desired import HostConfig
from netledger.executor.options import Options
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_lab import Lab, links
from tests.executor.test_executor_lab import world as world

pytestmark = pytest.mark.netns

SLOW_DUMP_S = 1.5


async def test_a_change_during_the_sweeps_dump_is_applied_before_the_dump_ends(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    h = world.ns("sw")
    c = Client(conn)
    first, second = await c.create_networks(
        label="sw", cidr="10.49.0.0/23", mode="vxlan", vni_start=4900, num_networks=2,
        network_size=256, network_host="sw",
    )  # fmt: skip
    await c.allocate_fixed_ip("vm0", network_id=first["id"], host="c1")
    cfg = HostConfig(host="sw", network_host=True, dhcp=False, vtep_address="192.0.2.1")
    ex = Executor(conn, cfg, Options(netns=h, interval=0.5, heartbeat=5.0))
    await ex.start()
    runner = asyncio.create_task(ex.run_forever())
    try:
        deadline = time.monotonic() + 30
        while first["bridge"] not in links(h):  # the first pass is done
            assert time.monotonic() < deadline and not runner.done()
            await asyncio.sleep(0.05)
        assert ex.cache is not None
        real = ex.cache.resync
        started, ended = threading.Event(), threading.Event()

        def slow_resync() -> None:
            if threading.current_thread() is threading.main_thread() or started.is_set():
                real()
                return
            started.set()
            time.sleep(SLOW_DUMP_S)  # a host far bigger than this one
            real()
            ended.set()

        ex.cache.resync = slow_resync  # type: ignore[method-assign]
        while not started.is_set():  # the next sweep's dump has begun
            assert time.monotonic() < deadline and not runner.done()
            await asyncio.sleep(0.02)
        await c.allocate_fixed_ip("vm1", network_id=second["id"], host="c1")
        while second["bridge"] not in links(h):
            assert not runner.done()
            assert not ended.is_set(), "the change waited for the sweep's dump"
            await asyncio.sleep(0.02)
        assert not ended.is_set(), "the change waited for the sweep's dump"
        while not ended.is_set():  # and the sweep still runs, after its dump
            assert not runner.done()
            await asyncio.sleep(0.05)
    finally:
        ex.stop()
        await asyncio.wait_for(asyncio.gather(runner, return_exceptions=True), 60)
        await asyncio.wait_for(ex.close(), 30)
    assert runner.exception() is None
