"""The release reaper frees every overdue address of a network, also more than one atomic batch
holds (JetStream: 1,000 messages): e.g. a host that died with a thousand leases on it."""

from __future__ import annotations

import asyncio
import time

from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService

N = 1_005


async def test_reap_frees_more_than_one_batch_of_addresses(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(
        label="d", cidr="10.6.0.0/20", network_size=4096, mode="flat_dhcp", bridge="br6"
    )
    nid = net["id"]
    names = [f"i-{k}" for k in range(N)]
    allocated = await asyncio.gather(*(c.allocate_fixed_ip(n, network_id=nid) for n in names))
    await asyncio.gather(
        *(
            c.request("fixed_ip.lease", {"address": a["address"], "mac": a["mac"]})
            for a in allocated
        )
    )
    dealloc = await asyncio.gather(*(c.deallocate_fixed_ip(n) for n in names))
    assert not any(r["deallocated"][0]["freed"] for r in dealloc)  # held until their release

    freed = await service.reap(now=time.time() + service.release_timeout + 1)

    assert sorted(freed) == sorted(a["address"] for a in allocated)
    assert not service.state.awaiting_release
