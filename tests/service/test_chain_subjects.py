"""A pipelined chain (Appender.append_chain) of single-event decisions on *different* subjects:
only its first message carries an OCC check on its subject, the others only
``Nats-Expected-Last-Msg-Id`` (nothing between them and the message before). A decision on a
second subject that another writer changed after the decision, but before the chain's first
message landed, must not land: the service re-decides it instead of handing out an address
that is already taken."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from netledger.events.codec import Envelope
from netledger.events.commands import Request, parse_command
from netledger.events.types import FixedIpAllocated
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_service import read_all


def allocate(
    instance: str, *, project: str | None = None, network_id: str | None = None
) -> Request:
    args: dict[str, Any] = {"instance": instance}
    if project is not None:
        args["project"] = project
    if network_id is not None:
        args["network_id"] = network_id
    return parse_command(
        "fixed_ip.allocate",
        {"command_id": f"cmd-{instance}", "actor": {"role": "admin"}, "args": args},
    )


async def test_chain_over_two_networks_checks_the_second_network(
    conn: Connection, nats_url: str
) -> None:
    conns = [await connect(nats_url, name=f"r{i}") for i in range(2)]
    a, b = svcs = [CommandService(c) for c in conns]
    try:
        for c in conns:
            await ensure_stream(c)
        for s in svcs:
            s.pipeline = True
            await s.start()
        nets = await Client(conn).create_networks(
            label="v", cidr="10.1.0.0/16", num_networks=2, mode="vlan"
        )
        for s in svcs:
            await s.follower.wait_for(await last_seq(conn))

        # Round 1 in a's registry lane (p1, p2 have no network yet): each allocation assigns
        # its project a network (an atomic batch). While it is on its way, two more
        # allocations for p1 and p2 queue in the same lane (the projects still have none);
        # decided after round 1 is folded, each is one event, on p1's and on p2's network.
        real_append = a.appender.append
        later: list[asyncio.Future[dict[str, Any]]] = []

        async def append(*args: Any, **kw: Any) -> int:
            if not later:
                later.append(a._submit_nowait(allocate("i-c", project="p1")))
                later.append(a._submit_nowait(allocate("i-d", project="p2")))
            else:
                await b_allocates()
            return await real_append(*args, **kw)

        a.appender.append = append  # type: ignore[method-assign]

        # Round 2 goes as a chain (before the fix: one chain over both networks); just before
        # its first publish, replica b (having read round 1) allocates on p2's network:
        # another writer after a's decision on it.
        by_b: dict[str, Any] = {}

        async def b_allocates() -> None:
            if later and not by_b:
                await b.follower.wait_for(await last_seq(conn))
                by_b.update(await b._submit(allocate("i-e", project="p2")))

        real_chain = a.appender.append_chain

        async def append_chain(*args: Any, **kw: Any) -> Any:
            await b_allocates()
            return await real_chain(*args, **kw)

        a.appender.append_chain = append_chain  # type: ignore[method-assign]

        first = await asyncio.gather(
            a._submit(allocate("i-a", project="p1")), a._submit(allocate("i-b", project="p2"))
        )
        second = await asyncio.gather(*later)
        assert by_b, "replica b did not allocate"
        got = {"i-a": first[0], "i-b": first[1], "i-c": second[0], "i-d": second[1]}
        got["i-e"] = by_b
        assert {r["network_id"] for r in first} == {n["id"] for n in nets}
        assert got["i-a"]["network_id"] == got["i-c"]["network_id"]
        assert got["i-b"]["network_id"] == got["i-d"]["network_id"] == by_b["network_id"]

        allocs = [
            env.event
            for _, _, env in await read_all(conn)
            if isinstance(env, Envelope) and isinstance(env.event, FixedIpAllocated)
        ]
        held = Counter((ev.network_id, ev.address) for ev in allocs)
        assert max(held.values()) == 1, f"an address was handed out twice: {held}"
        assert len({(r["network_id"], r["address"]) for r in got.values()}) == 5, got
        top = await last_seq(conn)
        for s in svcs:
            await s.follower.wait_for(top)
        net2 = a.state.networks[by_b["network_id"]]
        for name in ("i-b", "i-d", "i-e"):
            assert net2.fixed[net2.by_instance[name]].address == got[name]["address"]
    finally:
        for s in svcs:
            await s.close()
        for c in conns:
            await c.close()
