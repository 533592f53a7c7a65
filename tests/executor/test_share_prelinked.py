"""A share view and a pre-linked join (service/prelink.py: the join stored first, the allocation
right after it): the moment between the two — the server has stored the join, not yet the
allocation (one fsync) — is made to last here, and the view's share updated in it. The network
must stay followed until the allocation is read, whatever made it about to be dropped (found
by review: the host's last address there just went; an orphan join read past; a switch back
from following every network)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from netledger.executor.tasks import stop_task
from netledger.executor.view import HostView
from netledger.journal.append import Outgoing
from netledger.journal.stream import (
    EXPECTED_LAST_MSG_ID,
    EXPECTED_SUBJECT_SEQ,
    MSG_ID,
    Connection,
)
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_prelink import publish_orphan

Append = Callable[[list[Outgoing], Outgoing, dict[str, int]], Awaitable[int]]


async def by_hand(view: HostView) -> HostView:
    """Started, its background share updates stopped: the test updates the share itself."""
    await view.start()
    assert view._task is not None
    await stop_task(view._task)
    view._task = None
    return view


def split(conn: Connection, view: HostView, updates: int = 1) -> Append:
    """The service's pre-linked append with the gap made to last: the join stored and read by
    the view, its share updated ``updates`` times, then the allocation (same headers)."""

    async def append(
        placements: list[Outgoing], message: Outgoing, check: dict[str, int], **_: object
    ) -> int:
        seq = 0
        for p in placements:
            seq = (await conn.js.publish(p.subject, p.data, headers={MSG_ID: p.msg_id})).seq
        assert view.follower is not None
        await view.follower.wait_for(seq)
        for _ in range(updates):
            await view.update_share()
        headers = {
            MSG_ID: message.msg_id,
            EXPECTED_SUBJECT_SEQ: str(check[message.subject]),
            EXPECTED_LAST_MSG_ID: placements[-1].msg_id,
        }
        return (await conn.js.publish(message.subject, message.data, headers=headers)).seq

    return append


async def allocate_split(
    service: CommandService, append: Append, c: Client, *args: str, **kw: str
) -> str:
    real = service.appender.append_prelinked
    service.appender.append_prelinked = append  # type: ignore[method-assign]
    try:
        a = await c.allocate_fixed_ip(*args, **kw)
    finally:
        service.appender.append_prelinked = real  # type: ignore[method-assign]
    assert service.stats.prelinked >= 1
    return str(a["address"])


async def test_a_host_back_in_a_network_it_just_left(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    nid = str(net["id"])
    await c.allocate_fixed_ip("i1", network_id=nid, host="h1")
    view = await by_hand(HostView(conn, "h1", share=True))
    try:
        await c.deallocate_fixed_ip("i1", network_id=nid)
        assert view.follower is not None
        await view.follower.catch_up()
        assert nid in view.networks  # the next share update would drop it
        address = await allocate_split(
            service, split(conn, view), c, "i2", network_id=nid, host="h1"
        )
        await asyncio.wait_for(view.sync(), 10)
        assert view.state.networks[nid].fixed[address].host == "h1"
        assert nid in view.networks
    finally:
        await view.close()


async def test_a_retry_after_an_orphan_join_read_past(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    nid = str(net["id"])
    view = await by_hand(HostView(conn, "h1", share=True))
    try:
        await publish_orphan(c, nid, "h1", "a-1")
        await view.sync()
        await c.create_networks(label="m", cidr="10.8.0.0/24", mode="flat", bridge="br8")
        await view.sync()  # read past the orphan: followed, no longer joining
        assert nid in view.networks and nid not in view._joining
        address = await allocate_split(
            service, split(conn, view), c, "i1", network_id=nid, host="h1", command_id="a-1"
        )
        await asyncio.wait_for(view.sync(), 10)
        assert view.state.networks[nid].fixed[address].host == "h1"
    finally:
        await view.close()


async def test_back_from_following_every_network(conn: Connection, service: CommandService) -> None:
    c = Client(conn)
    nets = await c.create_networks(
        label="p", cidr="10.20.0.0/16", num_networks=70, network_size=16, mode="flat"
    )
    ids = [str(n["id"]) for n in nets]
    for k, nid in enumerate(ids[:64]):
        await c.allocate_fixed_ip(f"i{k}", network_id=nid, host="h1")
    view = await by_hand(HostView(conn, "h1", share=True))
    try:
        assert view.every, "64 of 70 networks: every network"
        for k in range(33):  # 31 left: the second share update leaves 'every'
            await c.deallocate_fixed_ip(f"i{k}", network_id=ids[k])
        assert view.follower is not None
        await view.follower.catch_up()
        target = ids[69]
        address = await allocate_split(
            service, split(conn, view, updates=2), c, "x1", network_id=target, host="h1"
        )
        await asyncio.wait_for(view.sync(), 10)
        assert view.state.networks[target].fixed[address].host == "h1"
    finally:
        await view.close()
