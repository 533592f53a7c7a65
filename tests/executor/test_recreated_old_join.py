"""Review h97: a network created again under a deleted id (never decided: a hand-made log, which
the fold takes: events/state.py ``recreated``) is the new network for a share view that starts
after it — also what the older network's joins said.

A share's start reads the registry first, then the host's placement subject
(journal/follow.py ``Follower.start``): the older network's ``NetworkHostJoined`` of this host
came after the re-creation there, and the fold added the host to the *new* network's
``joined`` — which a whole-log view, reading in the log's order, gave to the older network and
dropped with it. Fixed in the fold (``State._host_joined``: a join at or before the network's
re-creation is the older network's; in the log's order none comes then, so the whole log's
fold is unchanged). Real nats-server, real command service, a share view (a network host:
it serves the new single-host network without joining it) and a whole-log view."""

from __future__ import annotations

import dataclasses
import time

from netledger.events.codec import Actor, Envelope, encode
from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import announce, desired
from tests.executor.test_review72_recreated import created


async def test_a_share_starting_after_a_re_creation_leaves_the_older_networks_joins(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    for h in ("h1", "h2"):
        await announce(conn, h, 0)
    (net,) = await c.create_networks(
        label="old", cidr="10.97.0.0/24", mode="flat", bridge="br97", multi_host=True
    )
    nid = str(net["id"])
    await c.allocate_fixed_ip("vm-old", network_id=nid, host="h2")  # h2 joins the older one
    await c.deallocate_fixed_ip("vm-old", network_id=nid)
    await c.request("network.delete", {"network_id": nid})
    # created again by hand: a single-host network naming no host (the network hosts serve it)
    ev = dataclasses.replace(created(nid, "10.98.0", "br98"), multi_host=False)
    env = Envelope(ev, "again", "again", time.time(), Actor(role="system"))
    await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)
    await service.follower.catch_up()
    assert service.state.networks[nid].joined == set()

    share = HostView(conn, "h2", network_host=True, share=True)
    whole = HostView(conn, "h2", network_host=True, share=False)
    try:
        for v in (share, whole):
            await v.start()
            await v.sync()
        assert nid in share.networks  # served: followed
        assert whole.state.networks[nid] == service.state.networks[nid]
        assert share.state.networks[nid].joined == set()
        assert share.state.networks[nid] == whole.state.networks[nid]
        assert desired(share) == desired(whole)
    finally:
        for v in (share, whole):
            await v.close()
