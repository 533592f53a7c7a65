"""An incremental pass sees the interface a VLAN network's link hangs from.

A VLAN network may name its own interface (``network create --bridge-interface eth2``, nova's
``vlan_interface``): its VLAN link's parent. The incremental pass narrows the kernel's state to
the networks it looks at plus the links it only needs to exist — which were the host's
``--physical-interface`` and ``--public-interface`` alone. A network whose own interface is
another one was then "missing its physical interface" (a conflict) on every incremental pass,
and its VLAN link came only with the next full sweep (``--interval``, 30 s by default). Pure:
the kernel here has no 802.1Q (tests/vm covers VLAN links in a VM); the diff decides it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from netledger.events.codec import Actor, Envelope
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.host_events import HostAnnounced
from netledger.events.placement import companions
from netledger.events.state import State
from netledger.executor.desired import HostConfig
from netledger.executor.diff import diff
from netledger.executor.hosts import HostBook
from netledger.executor.incremental import Fragments, full_plan, incremental_plan, narrow
from netledger.executor.model import CreateLink, HostActual, LinkState
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_incremental import HOST, running, settled, stop
from tests.executor.test_executor_lab import Lab, sh
from tests.executor.test_executor_lab import world as world
from tests.executor.test_executor_netns import host_events


@contextmanager
def caplog_records() -> Iterator[list[logging.LogRecord]]:
    """The executor's log records while the block runs."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler, logger = Keep(level=logging.WARNING), logging.getLogger("netledger.executor")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


CFG = HostConfig(host="h1", physical_interface="eth1", public_interface="pub0", network_host=True)


def _run(state: State, book: HostBook, name: str, args: dict[str, Any], i: int) -> set[str]:
    req = parse_command(
        name, {"command_id": f"c{i}", "args": args, "actor": {"role": "admin", "user": "t"}}
    )
    d = decide(state, req)
    touched: set[str] = set()
    for j, ev in enumerate([*d.events, *companions(state, d.events, set())]):
        seq = i * 100 + j + 1
        env = Envelope(ev, f"c{i}:{j}", f"c{i}", float(seq), Actor(role="admin"))
        state.apply(seq, ev.subject(), env)
        book.apply(env)
        nid = getattr(ev, "network_id", None)
        if nid is not None:
            touched.add(nid)
    return touched


def test_an_incremental_pass_sees_a_vlan_networks_own_interface() -> None:
    state, book = State(), HostBook("h1")
    env = Envelope(HostAnnounced("h1", None, "eth1", "pub0", True), "a", "a", 0.0, Actor())
    state.apply(1, env.event.subject(), env)
    book.apply(env)
    before = Fragments({})
    dirty = _run(state, book, "network.create", {
        "label": "v", "cidr": "10.7.0.0/24", "mode": "vlan", "vlan_start": 307,
        "bridge_interface": "eth2",
    }, 1)  # fmt: skip
    dirty |= _run(state, book, "fixed_ip.allocate", {
        "instance": "i1", "network_id": sorted(state.networks)[0], "host": "h1",
    }, 2)  # fmt: skip
    # The kernel: the host's interfaces (not ours), nothing of the network yet.
    kernel = HostActual(
        links=tuple(
            LinkState(name=n, index=i, kind=None, up=True)
            for i, n in enumerate(("eth1", "eth2", "pub0"), start=2)
        )
    )
    plan = incremental_plan(state, book, CFG, before, dirty)
    assert plan.scope is not None, "an incremental pass"
    seen = narrow(kernel, plan.scope)
    assert "eth2" in {link.name for link in seen.links}
    ops = diff(plan.desired, seen)
    assert ops.conflicts == (), ops.conflicts
    [vlan] = [o.spec for o in ops.ops if isinstance(o, CreateLink) and o.spec.kind == "vlan"]
    assert vlan.parent == "eth2"
    # What a full pass would do with the same kernel.
    whole = diff(full_plan(state, book, CFG, None).desired, kernel)
    assert sorted(map(repr, ops.ops)) == sorted(map(repr, whole.ops))


@pytest.mark.netns
async def test_a_running_executor_builds_a_vlan_network_on_its_own_interface_at_once(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    """The same through a real daemon's incremental pass (its kernel cache narrows by the same
    scope). This kernel has no 802.1Q: the VLAN link itself fails with the kernel's error — what
    shows that the pass tried it on ``eth2``, instead of calling the interface missing."""
    ns = world.ns("vi")
    for name in ("eth1", "eth2"):
        sh("ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
        sh("ip", "-n", ns, "link", "set", name, "up")
    ex, task = await running(conn, ns)
    try:
        c = Client(conn)
        [net] = await c.create_networks(
            label="v", cidr="10.7.0.0/24", mode="vlan", vlan_start=307, bridge_interface="eth2"
        )
        with caplog_records() as records:
            await c.allocate_fixed_ip("i1", network_id=net["id"], host=HOST)
            await settled(ex, conn)
        said = [r.getMessage() for r in records]
        assert not [m for m in said if "eth2 is missing" in m], said
        failed = [e for e in await host_events(conn, HOST) if e.TYPE == "HostApplyFailed"]
        assert [(e.operation, e.target) for e in failed] == [("CreateLink", "vlan307")], failed
    finally:
        await stop(ex, task)
