"""A change is applied while the periodic sweep reads the kernel or checks the host, not after.

The sweep dumps every link, address and flood entry of the host (~0.1 s at 2,000 links, more on
a bigger host); a change that came meanwhile waited for the whole sweep — the open-loop
command → kernel run saw p99 175 ms against a 14 ms median (bench/RESULTS.md). The dump now runs
beside the passes. Then the sweep diffs the whole host (~25 ms at 1,200 networks), which a
change still waited for (p99 71.5 ms): that check now runs in slices of ~2 ms on the event loop,
a change's pass between two of them (executor/sweeping.py). Here the dump, then the check, is
made slow on purpose and the order is checked: the new network's bridge is in the kernel before
the dump ends, before the check has been through the host's networks.

Real nats-server, command service and namespace (root; deleted at the end).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from netledger.executor import fragments as fragments_module
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


SLOW_FRAGMENT_S = 0.004
NETWORKS = 120  # the host serves them all; instances in 4 of them: 8 links in its kernel
IN_USE = 4


async def test_a_change_during_the_sweeps_check_is_applied_between_two_slices(
    world: Lab, conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep's check of the whole host is made slow on purpose (each network's desired
    state costs 4 ms: a host far bigger than this one, ~0.5 s for the check); a change that comes
    while it runs reaches the kernel before the check has been through the host's networks,
    and the sweep, whose view of that network went stale meanwhile, finds nothing to do."""
    h = world.ns("sc")
    c = Client(conn)
    nets = await c.create_networks(
        label="sc", cidr="10.51.0.0/16", mode="vxlan", vni_start=5100, num_networks=NETWORKS,
        network_size=64, network_host="sc",
    )  # fmt: skip
    for i, n in enumerate(nets[:IN_USE]):
        await c.allocate_fixed_ip(f"vm{i}", network_id=n["id"], host="c1")
    late = nets[-1]
    cfg = HostConfig(host="sc", network_host=True, dhcp=False, vtep_address="192.0.2.1")
    ex = Executor(conn, cfg, Options(netns=h, interval=0.3, heartbeat=5.0))
    await ex.start()
    runner = asyncio.create_task(ex.run_forever())
    verdicts: list[object] = []
    real_end = ex._sweep_end

    def sweep_end(sweeping: asyncio.Future[object]) -> object:
        verdicts.append(real_end(sweeping))  # type: ignore[arg-type]
        return verdicts[-1]

    monkeypatch.setattr(ex, "_sweep_end", sweep_end)
    try:
        deadline = time.monotonic() + 30
        while nets[IN_USE - 1]["bridge"] not in links(h) or ex.passes < 1:  # the first pass
            assert time.monotonic() < deadline and not runner.done()
            await asyncio.sleep(0.05)
        real = fragments_module.fragment
        others = {n["id"] for n in nets} - {late["id"]}
        swept: list[str] = []  # the networks the sweep has been through

        def slow(state: Any, n: Any, *args: Any) -> Any:
            time.sleep(SLOW_FRAGMENT_S)
            if n.network_id in others:
                swept.append(n.network_id)
            return real(state, n, *args)

        monkeypatch.setattr(fragments_module, "fragment", slow)
        while not swept:  # the next sweep's check has begun
            assert time.monotonic() < deadline and not runner.done()
            await asyncio.sleep(0.005)
        await c.allocate_fixed_ip("vm-late", network_id=late["id"], host="c1")
        while late["bridge"] not in links(h):
            assert not runner.done()
            await asyncio.sleep(0.01)
        assert len(swept) < len(others), "the change waited for the sweep's check"
        n_verdicts = len(verdicts)
        while len(verdicts) == n_verdicts:  # and that sweep ends after it
            assert time.monotonic() < deadline and not runner.done()
            await asyncio.sleep(0.02)
        assert len(swept) >= len(others)
        # Its view of the late network was stale; the change's pass had it: nothing to do.
        assert verdicts[-1] is not None
    finally:
        ex.stop()
        await asyncio.wait_for(asyncio.gather(runner, return_exceptions=True), 60)
        await asyncio.wait_for(ex.close(), 30)
    assert runner.exception() is None
