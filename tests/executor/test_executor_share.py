"""An executor reading only its share of the log sees exactly what it would from the whole log.

Differential, on a real nats-server with a real command service: random histories (networks in
every mode, with and without a network host, multi-host or not; allocations on random hosts,
deallocations, migrations (an allocation moving to another host), deletions, floating IPs,
announcements), and for every host a view reading only its share (executor/share.py: its
networks come and go as instances do) next to a view reading the whole stream. After every step both are caught up and the desired state each builds for the
host — links, addresses, flood entries, NAT, DHCP — must be equal. A share view started last,
from the whole history, must agree too; and a share view reads fewer events.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.errors import NetledgerError
from netledger.events.host_events import HostAnnounced
from netledger.executor.desired import HostConfig, build
from netledger.executor.view import HostView
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService

HOSTS = ["h1", "h2", "h3", "h4"]
NETWORK_HOST = "h4"  # runs with --network-host


def config(host: str) -> HostConfig:
    return HostConfig(
        host=host,
        physical_interface="eth1",
        public_interface="pub0",
        network_host=host == NETWORK_HOST,
        vtep_address=f"192.0.2.{HOSTS.index(host) + 1}",
        snat_address="198.51.100.1",
    )


async def announce(conn: Connection, host: str, n: int) -> None:
    cfg = config(host)
    ev = HostAnnounced(host, cfg.vtep_address, "eth1", "pub0", cfg.network_host)
    env = Envelope(ev, f"ann-{host}-{n}", f"ann-{host}-{n}", time.time(), Actor(role="system"))
    await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)


async def step(
    c: Client, conn: Connection, rnd: random.Random, i: int, live: dict[str, Any]
) -> None:
    """One random command (errors are part of the history: they append nothing)."""
    kind = rnd.choice(
        ["net", "alloc", "alloc", "alloc", "alloc", "dealloc", "dealloc", "delete", "pool",
         "fl_alloc", "fl_assoc", "fl_disassoc", "announce", "move"]
    )  # fmt: skip
    try:
        if kind == "net" or not live["nets"]:
            mode = rnd.choice(["vxlan", "vxlan", "flat_dhcp", "vlan"])
            args: dict[str, Any] = {
                "label": f"n{i}", "cidr": f"10.{i % 250}.0.0/24", "mode": mode,
                "num_networks": 1, "network_size": 256,
                "multi_host": rnd.random() < 0.5,
            }  # fmt: skip
            if mode == "vxlan":
                args["vni_start"] = 1000 + i
            if mode == "vlan":
                args["vlan_start"] = 100 + i
            if mode == "flat_dhcp":
                args["bridge"] = f"br{i}"
            if rnd.random() < 0.4:
                args["network_host"] = rnd.choice(HOSTS[:3])
            r = await c.request("network.create", args)
            live["nets"] += [n["id"] for n in r["networks"]]
        elif kind == "alloc":
            inst = f"i{i}"
            r = await c.allocate_fixed_ip(
                inst, network_id=rnd.choice(live["nets"]), host=rnd.choice(HOSTS)
            )
            live["fixed"].append((inst, r["address"], r["network_id"]))
        elif kind == "dealloc" and live["fixed"]:
            inst, _, _ = live["fixed"].pop(rnd.randrange(len(live["fixed"])))
            await c.request("fixed_ip.deallocate", {"instance": inst})
        elif kind == "move" and live["fixed"]:
            # the instance migrated: its allocation follows it to another host (FixedIpMoved)
            inst, _, net = rnd.choice(live["fixed"])
            await c.allocate_fixed_ip(inst, network_id=net, host=rnd.choice(HOSTS))
        elif kind == "delete":
            await c.request("network.delete", {"network_id": rnd.choice(live["nets"])})
        elif kind == "pool" and not live["pool"]:
            await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/26"})
            live["pool"] = True
        elif kind == "fl_alloc" and live["pool"]:
            r = await c.request("floating_ip.allocate", {"project": "p1"})
            live["floating"].append(r["address"])
        elif kind == "fl_assoc" and live["floating"] and live["fixed"]:
            await c.request(
                "floating_ip.associate",
                {"address": rnd.choice(live["floating"]), "project": "p1",
                 "fixed_address": rnd.choice(live["fixed"])[1]},
            )  # fmt: skip
        elif kind == "fl_disassoc" and live["floating"]:
            await c.request(
                "floating_ip.disassociate",
                {"address": rnd.choice(live["floating"]), "project": "p1"},
            )
        elif kind == "announce":
            await announce(conn, rnd.choice(HOSTS), i)
    except NetledgerError:
        pass


async def views(conn: Connection, share: bool) -> dict[str, HostView]:
    out = {}
    for h in HOSTS:
        v = HostView(conn, h, network_host=h == NETWORK_HOST, share=share)
        await v.start()
        out[h] = v
    return out


async def share_and_whole(
    conn: Connection, hosts: list[str]
) -> tuple[dict[str, HostView], dict[str, HostView], list[HostView]]:
    """A share view and a whole-log view of each of ``hosts``, started: (share, whole, all)."""
    share = {h: HostView(conn, h, share=True) for h in hosts}
    whole = {h: HostView(conn, h, share=False) for h in hosts}
    every = [*share.values(), *whole.values()]
    for v in every:
        await v.start()
    return share, whole, every


def desired(v: HostView) -> Any:
    return build(v.state, v.book, config(v.host))


@pytest.mark.parametrize("seed", range(1, 9))
async def test_a_share_view_builds_what_a_whole_log_view_builds(
    conn: Connection, service: CommandService, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(seed)
    if seed % 2:
        # A host of many networks follows every network: switched to and back often here.
        monkeypatch.setattr("netledger.executor.share.EVERY_MIN_NETWORKS", 2)
    c = Client(conn)
    for h in HOSTS:
        await announce(conn, h, 0)
    shared, whole = await views(conn, True), await views(conn, False)
    live: dict[str, Any] = {"nets": [], "fixed": [], "floating": [], "pool": False}
    served = 0
    every = False
    try:
        for i in range(1, 100):
            await step(c, conn, rnd, i, live)
            if i % 3 and i < 90:
                continue  # several changes land between two looks, as in a real burst
            for h in HOSTS:
                await shared[h].sync()
                await whole[h].sync()
                want = desired(whole[h])
                assert desired(shared[h]) == want, f"{h} after step {i}"
                # and the same networks: a deleted one leaves every view (NetworkRetired)
                assert set(shared[h].state.networks) == set(whole[h].state.networks), h
                served += len(want.links)
                every |= shared[h].every
        late = await views(conn, True)  # from the whole history at once
        try:
            for h in HOSTS:
                assert desired(late[h]) == desired(whole[h]), f"{h} started last"
                assert late[h].networks == shared[h].networks
                assert set(late[h].state.networks) == set(whole[h].state.networks), h
        finally:
            for v in late.values():
                await v.close()
        # Something was served, and a share view read less than a whole-log view.
        assert served > 0
        assert every == bool(seed % 2)
        for h in HOSTS[:3]:
            assert shared[h].follower is not None and whole[h].follower is not None
            assert shared[h].follower.handled < whole[h].follower.handled
    finally:
        for v in [*shared.values(), *whole.values()]:
            await v.close()


async def test_a_stream_from_before_placements_is_upgraded_in_place(conn: Connection) -> None:
    """A log written by the previous version (allocations without joins, associations without
    network mappings): the first service start records what is missing, once, and share views
    then agree with whole-log views."""
    from netledger.events.placement_events import FloatingIpMapped, NetworkHostJoined
    from netledger.events.types import (
        FixedIpAllocated,
        FloatingIpAllocated,
        FloatingIpAssociated,
        FloatingPoolCreated,
        NetworkCreated,
    )

    net = NetworkCreated(
        network_id="1", label="old", cidr="10.77.0.0/24", netmask="255.255.255.0",
        gateway="10.77.0.1", broadcast="10.77.0.255", dhcp_start="10.77.0.2", mode="vxlan",
        vlan=None, vni=77, bridge="brvx77", bridge_interface=None, dns1=None, dns2=None,
        vpn_private_address=None, vpn_public_port=None, project=None, multi_host=True,
        network_host=None, mtu=None, cidr_v6=None,
    )  # fmt: skip
    old = [
        net,
        FloatingPoolCreated(pool="pub", cidr="198.51.100.0/28", public_interface=None),
        FixedIpAllocated("1", "10.77.0.2", "i-a", "02:00:00:00:00:0a", "h1", None),
        FixedIpAllocated("1", "10.77.0.3", "i-b", "02:00:00:00:00:0b", "h2", None),
        FloatingIpAllocated(pool="pub", address="198.51.100.1", project="p1"),
        FloatingIpAssociated("pub", "198.51.100.1", "p1", "10.77.0.2", "1", "i-a"),
    ]
    for i, ev in enumerate(old):
        env = Envelope(ev, f"old-{i}:0", f"old-{i}", time.time(), Actor(role="admin"))
        await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)
    for h in HOSTS:
        await announce(conn, h, 0)

    for _ in range(2):  # the second start finds nothing missing: appends nothing
        svc = CommandService(conn)
        await svc.start()
        await svc.close()
    events = [(s, e) for s, e in await _all(conn)]
    joins = [e for _, e in events if isinstance(e, NetworkHostJoined)]
    maps = [e for _, e in events if isinstance(e, FloatingIpMapped)]
    assert sorted((j.host, j.reason) for j in joins) == [("h1", "backfill"), ("h2", "backfill")]
    assert [(m.floating, m.fixed, m.reason) for m in maps] == [
        ("198.51.100.1", "10.77.0.2", "backfill")
    ]
    shared, whole = await views(conn, True), await views(conn, False)
    try:
        for h in HOSTS:
            assert desired(shared[h]) == desired(whole[h]), h
        assert desired(shared["h1"]).nat.floating == (("198.51.100.1", "10.77.0.2"),)
    finally:
        for v in [*shared.values(), *whole.values()]:
            await v.close()


async def _all(conn: Connection) -> list[tuple[int, Any]]:
    from netledger.events.codec import decode

    sub = await conn.js.subscribe("netledger.evt.>", ordered_consumer=True, stream=conn.stream)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            out.append((msg.metadata.sequence.stream, decode(msg.data).event))
    finally:
        await sub.unsubscribe()
    return out
