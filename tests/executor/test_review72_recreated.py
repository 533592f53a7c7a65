"""Review hrev72: a network id deleted and created again is a new network for every reader.

The deciders never re-use an id (``next_network_number`` only grows), but the fold takes such a
log (events/state.py: a deleted network leaves the fold, a re-created id starts afresh), so
every reader must agree on it: the command service, a whole-log executor view, and a share
view — including one that no longer followed the network when it was deleted (its host's last
address there had gone), which never reads that ``NetworkDeleted`` (it reads the registry's
``NetworkRetired``: events/placement.py). Real nats-server, real command service; the
re-creation is published as a hand-made registry event."""

from __future__ import annotations

import time

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.snapshot import state_to_wire
from netledger.events.types import NetworkCreated
from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import announce, desired, share_and_whole

HOSTS = ["h1", "h2"]


def created(network_id: str, b: str, bridge: str) -> NetworkCreated:
    return NetworkCreated(
        network_id=network_id, label="again", cidr=f"{b}.0/24", netmask="255.255.255.0",
        gateway=f"{b}.1", broadcast=f"{b}.255", dhcp_start=f"{b}.3", mode="flat_dhcp",
        vlan=None, vni=None, bridge=bridge, bridge_interface=None, dns1=None, dns2=None,
        vpn_private_address=None, vpn_public_port=None, project=None, multi_host=True,
        network_host=None, mtu=None, cidr_v6=None,
    )  # fmt: skip


async def test_a_re_created_network_id_is_the_new_network_in_a_share_view(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    for h in HOSTS:
        await announce(conn, h, 0)
    (net,) = await c.create_networks(
        label="a", cidr="10.50.0.0/24", mode="flat_dhcp", bridge="br50", multi_host=True
    )
    nid = net["id"]
    share, whole, views = await share_and_whole(conn, HOSTS)
    try:
        await c.allocate_fixed_ip("i1", network_id=nid, host="h1")
        for v in views:
            await v.sync()
        assert nid in share["h1"].networks
        await c.deallocate_fixed_ip("i1", network_id=nid)
        for v in views:
            await v.sync()
        assert nid not in share["h1"].networks  # its last address there went: not followed
        await c.request("network.delete", {"network_id": nid})
        ev = created(nid, "10.51.0", "br51")
        env = Envelope(ev, "again", "again", time.time(), Actor(role="system"))
        await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)
        await service.follower.catch_up()
        assert service.state.networks[nid].net.cidr == "10.51.0.0/24"
        await c.allocate_fixed_ip("i2", network_id=nid, host="h1")
        end = await service.follower.catch_up()
        for v in views:
            await v.sync()
        assert state_to_wire(await fold_to(conn, end)) == state_to_wire(service.state)
        for h in HOSTS:
            assert whole[h].state.networks[nid].net.cidr == "10.51.0.0/24"
            assert desired(share[h]) == desired(whole[h]), h
    finally:
        for v in views:
            await v.close()


async def test_a_share_view_forgets_the_networks_deleted_after_its_host_left_them(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    await announce(conn, "h1", 0)
    share, whole = HostView(conn, "h1", share=True), HostView(conn, "h1", share=False)
    for v in (share, whole):
        await v.start()
    try:
        for i in range(3):
            (net,) = await c.create_networks(
                label=f"n{i}", cidr=f"10.6{i}.0.0/24", mode="flat", bridge=f"br6{i}"
            )
            await c.allocate_fixed_ip(f"i{i}", network_id=net["id"], host="h1")
            for v in (share, whole):
                await v.sync()
            await c.deallocate_fixed_ip(f"i{i}", network_id=net["id"])
            for v in (share, whole):
                await v.sync()
            await c.request("network.delete", {"network_id": net["id"]})
        for v in (share, whole):
            await v.sync()
        assert not whole.state.networks and not share.networks
        assert set(share.state.networks) == set(whole.state.networks)
    finally:
        for v in (share, whole):
            await v.close()
