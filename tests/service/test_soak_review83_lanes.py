"""Review hrev83 (issue 13: costs follow change, not age): the command service kept a lane — a
queue and an asyncio task waiting on it forever — for every network that was ever allocated
in, deleted or not. Now an idle lane ends (``Lanes._end_idle_lanes``) and an allocation naming
an unknown network waits in the registry's lane (tests/service/test_lanes_end.py).

``Lanes._submit_nowait`` (service/lanes.py) created ``_lanes["network:<id>"]`` and its worker
task the first time a command of that network arrived, and nothing ever removed them: a cloud
that creates and deletes networks at a steady rate (the live ones constant) gains one task per
network, for good, each holding its last job (the request, its payload and its answer) in
its frame. Measured in a churn soak (create -> allocate -> deallocate -> delete): lane tasks
11 -> 61 -> 151 at cycles 10/60/150, ~3.4 KB of Python memory per lane (freed when the idle
lanes were dropped by hand), a third of ``serve``'s steady ~10 KB of RSS per cycle.
A lane for an unknown network id (``fixed_ip.allocate`` naming one that never existed) was made
alike, so any client could grow it. Real nats-server, real command service."""

from __future__ import annotations

import asyncio

import pytest

from netledger.events.errors import NetworkNotFound
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_soak_review83_deleted_networks import _cycle

#: live networks stay 0 throughout: each cycle creates one, allocates and frees an address in
#: it, deletes it
FIRST, THEN = 3, 15


def _lane_tasks() -> int:
    """The service's tasks that wait for work of one lane (all of them: none has work now)."""
    return sum(
        1
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "").endswith("_run_lane")
    )


async def test_balanced_network_churn_leaves_no_task_per_network(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    for i in range(FIRST):
        await _cycle(c, i)
    tasks_before = len(asyncio.all_tasks())
    lanes_before = _lane_tasks()
    for i in range(FIRST, THEN):
        await _cycle(c, i)
    assert service.state.networks == {}  # nothing live: only the churn happened
    grown = len(asyncio.all_tasks()) - tasks_before
    lanes_grown = _lane_tasks() - lanes_before
    # Flat would be 0; each cycle left its network's lane behind (+12 here) before the fix.
    assert lanes_grown < (THEN - FIRST) // 2, f"{lanes_grown} lane tasks more"
    assert grown < (THEN - FIRST) // 2, f"{grown} asyncio tasks more after {THEN - FIRST} cycles"


async def test_refused_allocations_for_unknown_networks_leave_no_task(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    with pytest.raises(NetworkNotFound):  # the first one's transient tasks come and go
        await c.allocate_fixed_ip("vm", network_id="nope", host="h1")
    lanes_before, tasks_before = _lane_tasks(), len(asyncio.all_tasks())
    for i in range(12):
        with pytest.raises(NetworkNotFound):
            await c.allocate_fixed_ip(f"vm{i}", network_id=f"nope{i}", host="h1")
    assert _lane_tasks() - lanes_before < 6, f"{_lane_tasks() - lanes_before} lane tasks more"
    grown = len(asyncio.all_tasks()) - tasks_before
    assert grown < 6, f"{grown} asyncio tasks more"
