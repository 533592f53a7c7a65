"""Deletions stored before ``NetworkRetired`` existed, through an upgrade: the command service
retires each on the registry (service/legacy_pointers.py), once, whichever replicas start, and
whenever a service not yet upgraded deletes one later; a share view that never read the
deletion — it had left the network, never followed it, or started later and read the creation
from the registry alone — drops the network. Real nats-server, real command services, share
views next to whole-log views."""

from __future__ import annotations

import asyncio
import time

from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.ids import network_subject
from netledger.events.placement_events import NetworkRetired
from netledger.events.types import NetworkDeleted
from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.legacy_pointers import write_pointers
from netledger.service.service import CommandService
from tests.executor.test_executor_share import _all, announce, desired, share_and_whole

HOSTS = ["h1", "h2", "h3"]


async def old_delete(conn: Connection, nid: str) -> int:
    """A deletion as services before ``NetworkRetired`` wrote it: the network's subject only."""
    env = Envelope(NetworkDeleted(nid), f"old-del-{nid}", f"old-del-{nid}", time.time(), SYSTEM)
    ack = await conn.js.publish(network_subject(nid), encode(env), stream=conn.stream)
    return int(ack.seq)


async def retirements(conn: Connection) -> list[tuple[int, str]]:
    return [(s, e.network_id) for s, e in await _all(conn) if isinstance(e, NetworkRetired)]


async def a_network_h1_left(conn: Connection) -> str:
    """A multi-host network h1 and h2 had instances on; both gone, h1 first (h1's share stopped
    reading it then, h3's never did)."""
    c = Client(conn)
    (net,) = await c.create_networks(
        label="a", cidr="10.71.0.0/24", mode="flat", bridge="br71", multi_host=True
    )
    nid = str(net["id"])
    await c.allocate_fixed_ip("i1", network_id=nid, host="h1")
    await c.allocate_fixed_ip("i2", network_id=nid, host="h2")
    await c.deallocate_fixed_ip("i1", network_id=nid)
    await c.deallocate_fixed_ip("i2", network_id=nid)
    return nid


async def sync(views: list[HostView]) -> None:
    for v in views:
        await v.sync()


async def test_replicas_starting_on_an_old_stream_retire_its_deletions_once(
    conn: Connection,
) -> None:
    for h in HOSTS:
        await announce(conn, h, 0)
    async with CommandService(conn):
        nid = await a_network_h1_left(conn)
        (keep,) = await Client(conn).create_networks(label="b", cidr="10.72.0.0/24", mode="flat")
    share, whole, views = await share_and_whole(conn, HOSTS)
    try:
        deleted = await old_delete(conn, nid)  # written by the old service
        await sync(views)
        # What a view that never read the deletion holds: the network, for good.
        assert nid in share["h1"].state.networks and nid in share["h3"].state.networks
        assert nid not in whole["h1"].state.networks

        # The upgrade: two replicas start together; a third start later writes nothing.
        a, b = CommandService(conn), CommandService(conn)
        await asyncio.gather(a.start(), b.start())
        try:
            assert not a.state.unretired and not b.state.unretired
            done = await retirements(conn)
            assert [n for _, n in done] == [nid] and done[0][0] > deleted
            async with CommandService(conn):
                pass
            assert await retirements(conn) == done
            await sync(views)
            for h in HOSTS:
                assert nid not in share[h].state.networks, h
                assert keep["id"] in share[h].state.networks, h
                assert desired(share[h]) == desired(whole[h]), h
            late = HostView(conn, "h3", share=True)  # reads the registry first
            await late.start()
            try:
                assert set(late.state.networks) == {keep["id"]}
                assert desired(late) == desired(whole["h3"])
            finally:
                await late.close()
        finally:
            await asyncio.gather(a.close(), b.close())
    finally:
        for v in views:
            await v.close()


async def test_a_deletion_by_a_replica_not_yet_upgraded_is_retired_as_it_is_read(
    conn: Connection, service: CommandService
) -> None:
    for h in HOSTS:
        await announce(conn, h, 0)
    nid = await a_network_h1_left(conn)
    share, whole, views = await share_and_whole(conn, HOSTS)
    try:
        deleted = await old_delete(conn, nid)
        for _ in range(200):  # the running service's indexer retires it as it reads it
            if await retirements(conn):
                break
            await asyncio.sleep(0.05)
        done = await retirements(conn)
        assert [n for _, n in done] == [nid] and done[0][0] > deleted
        await sync(views)
        for h in HOSTS:
            assert nid not in share[h].state.networks, h
            assert desired(share[h]) == desired(whole[h]), h
        # A deletion of today is retired in its own batch: the indexer adds nothing to it.
        c = Client(conn)
        (other,) = await c.create_networks(label="c", cidr="10.73.0.0/24", mode="flat")
        await c.request("network.delete", {"network_id": other["id"]})
        await service.follower.catch_up()
        assert not service.state.unretired
        await write_pointers(service)  # what the indexer does when woken: nothing to write
        assert [n for _, n in await retirements(conn)] == [nid, other["id"]]
    finally:
        for v in views:
            await v.close()
