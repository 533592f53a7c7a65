"""A share view learns of every deletion from the registry (``NetworkRetired``), the one subject
every executor reads: a network it left while other hosts still had instances there, and one it
never followed, leave its view when they are deleted — not only the networks it follows then.
Real nats-server, real command service, views reading their share next to whole-log views."""

from __future__ import annotations

from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import announce, desired, share_and_whole

HOSTS = ["h1", "h2", "h3"]


async def test_networks_left_or_never_followed_leave_the_share_when_deleted(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    for h in HOSTS:
        await announce(conn, h, 0)
    (net,) = await c.create_networks(
        label="a", cidr="10.70.0.0/24", mode="flat", bridge="br70", multi_host=True
    )
    nid = net["id"]
    share, whole, views = await share_and_whole(conn, HOSTS)
    try:
        for change in (
            c.allocate_fixed_ip("i1", network_id=nid, host="h1"),
            c.allocate_fixed_ip("i2", network_id=nid, host="h2"),
            c.deallocate_fixed_ip("i1", network_id=nid),
        ):
            await change
            for v in views:
                await v.sync()
        # h1 left while h2 is still there: h1's view holds h2's allocation as of then; h3
        # never followed the network.
        assert nid not in share["h1"].networks and nid not in share["h3"].networks
        assert share["h1"].state.networks[nid].host_allocated == {"h2": 1}
        await c.deallocate_fixed_ip("i2", network_id=nid)
        await c.request("network.delete", {"network_id": nid})
        for v in views:
            await v.sync()
        for h in HOSTS:
            assert nid not in share[h].state.networks, h
            assert not share[h].state.instance_ips and not share[h].state.host_macs, h
            assert desired(share[h]) == desired(whole[h]), h
        late = HostView(conn, "h1", share=True)  # a start reads the registry first
        await late.start()
        try:
            assert not late.state.networks
            assert desired(late) == desired(whole["h1"])
        finally:
            await late.close()
    finally:
        for v in views:
            await v.close()
