"""The command service on a real nats-server: replicas in separate processes, crashes, retries."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import netaddr
import pytest

from netledger.events.codec import decode
from netledger.events.errors import InstanceNotFound
from netledger.events.types import FixedIpAllocated, NetworkAssociated
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.service.client import Client

NETLEDGER = str(Path(sys.executable).parent / "netledger")


def start_replica(url: str, tmp: Path, i: int) -> subprocess.Popen[bytes]:
    log = open(tmp / f"replica{i}.log", "wb")
    return subprocess.Popen(
        [NETLEDGER, "--nats", url, "serve", "--no-projector"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def wait_ready(tmp: Path, i: int) -> None:
    for _ in range(300):
        p = tmp / f"replica{i}.log"
        if p.exists() and b"netledger ready" in p.read_bytes():
            return
        await asyncio.sleep(0.05)
    raise AssertionError((tmp / f"replica{i}.log").read_text())


async def read_all(conn: Connection) -> list[tuple[int, str, object]]:
    """Every event in the stream, decoded (a fresh ordered consumer)."""
    from netledger.journal.follow import Follower

    out: list[tuple[int, str, object]] = []
    f = Follower(conn, lambda seq, subj, env, err, msg: out.append((seq, subj, env)))
    await f.start()
    await f.catch_up()
    await f.stop()
    return out


async def allocate_many(
    url: str, n_clients: int, instances: list[tuple[str, str]]
) -> dict[str, dict]:
    """``instances`` are (instance, network_id); each client retries on its own."""
    results: dict[str, dict] = {}
    queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    for item in instances:
        queue.put_nowait(item)

    async def worker() -> None:
        c = await Client.connect(url)
        c.timeout = 2.0
        try:
            while not queue.empty():
                inst, net = queue.get_nowait()
                cid = f"cmd-{inst}"
                results[inst] = await c.allocate_fixed_ip(
                    inst, network_id=net, host="h1", command_id=cid
                )
        finally:
            await c.close()

    await asyncio.gather(*(worker() for _ in range(n_clients)))
    return results


def check_allocations(events: list, results: dict[str, dict], networks: list[dict]) -> None:
    allocs = [
        e.event for _, _, e in events if e is not None and isinstance(e.event, FixedIpAllocated)
    ]
    per_instance = Counter(a.instance for a in allocs)
    assert max(per_instance.values()) == 1, "an instance got two allocation events"
    addrs = [a.address for a in allocs]
    assert len(addrs) == len(set(addrs)), "an address was handed out twice"
    assert len(allocs) == len(results)
    nets = {n["id"]: n for n in networks}
    for a in allocs:
        n = nets[a.network_id]
        ip = netaddr.IPAddress(a.address)
        block = netaddr.IPNetwork(n["cidr"])
        assert ip in block
        assert ip not in (block.network, block.broadcast, netaddr.IPAddress(n["gateway"]))
        assert ip >= netaddr.IPAddress(n["dhcp_start"])
        assert results[a.instance]["address"] == a.address


@pytest.mark.slow
async def test_four_replicas_sixteen_clients(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    procs = [start_replica(nats_url, tmp_path, i) for i in range(4)]
    try:
        await asyncio.gather(*(wait_ready(tmp_path, i) for i in range(4)))
        admin = Client(conn)
        nets = await admin.create_networks(
            label="big",
            cidr="10.8.0.0/19",
            num_networks=2,
            network_size=4096,
            mode="flat_dhcp",
            bridge="br100",
        )
        instances = [(f"i-{k}", nets[k % 2]["id"]) for k in range(4000)]
        results = await allocate_many(nats_url, 16, instances)
        events = await read_all(conn)
        check_allocations(events, results, nets)
        assert len(results) == 4000
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


@pytest.mark.slow
async def test_replica_killed_half_way(conn: Connection, nats_url: str, tmp_path: Path) -> None:
    procs = [start_replica(nats_url, tmp_path, i) for i in range(4)]
    try:
        await asyncio.gather(*(wait_ready(tmp_path, i) for i in range(4)))
        nets = await Client(conn).create_networks(
            label="big",
            cidr="10.16.0.0/19",
            num_networks=2,
            network_size=4096,
            mode="flat",
            bridge="br200",
        )
        instances = [(f"i-{k}", nets[k % 2]["id"]) for k in range(4000)]

        async def killer() -> None:
            while await last_seq(conn) < 2000:
                await asyncio.sleep(0.02)
            procs[0].send_signal(signal.SIGKILL)

        results, _ = await asyncio.gather(allocate_many(nats_url, 16, instances), killer())
        assert procs[0].wait(5) == -signal.SIGKILL
        events = await read_all(conn)
        check_allocations(events, results, nets)
        assert len(results) == 4000
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


async def test_retry_same_command_appends_nothing(conn: Connection, service: object) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.0.0.0/24", mode="flat")
    first = await c.allocate_fixed_ip("i-1", network_id=net["id"], command_id="c-1")
    before = await last_seq(conn)
    again = await c.allocate_fixed_ip("i-1", network_id=net["id"], command_id="c-1")
    assert again == first
    # A new command for the same instance: natural key, same answer, nothing appended.
    third = await c.allocate_fixed_ip("i-1", network_id=net["id"])
    assert third["address"] == first["address"]
    assert await last_seq(conn) == before
    # A retried floating allocation (no natural key) returns the first answer too.
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    f1 = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-1")
    s = await last_seq(conn)
    f2 = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-1")
    assert f1 == f2
    assert await last_seq(conn) == s


async def test_vlan_assignment_and_deallocation_disassociates(
    conn: Connection, service: object
) -> None:
    c = Client(conn)
    nets = await c.create_networks(label="v", cidr="10.1.0.0/16", num_networks=3, mode="vlan")
    a = await c.allocate_fixed_ip("i-a", project="p1", host="h1")
    b = await c.allocate_fixed_ip("i-b", project="p2", host="h1")
    a2 = await c.allocate_fixed_ip("i-a2", project="p1", host="h2")
    assert a["network_id"] == a2["network_id"] == nets[0]["id"]
    assert b["network_id"] == nets[1]["id"]
    assert a["address"] == "10.1.0.3" and a2["address"] == "10.1.0.4"
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    f = await c.request("floating_ip.allocate", {"project": "p1"})
    await c.request(
        "floating_ip.associate",
        {"address": f["address"], "fixed_address": a["address"], "project": "p1"},
    )
    r = await c.deallocate_fixed_ip("i-a")
    assert r["deallocated"][0]["address"] == a["address"]
    events = await read_all(conn)
    types = [e.event.TYPE for _, _, e in events if e is not None]
    assert types.count("NetworkAssociated") == 2
    # (the network's NAT mapping goes with it, in the same batch: events/placement.py)
    assert types[-3:] == ["FloatingIpDisassociated", "FixedIpDeallocated", "FloatingIpUnmapped"]
    with pytest.raises(InstanceNotFound):
        await c.deallocate_fixed_ip("i-a")


async def test_concurrent_first_use_assigns_one_network(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    """Two replicas race to give projects their first network: each project gets exactly one."""
    procs = [start_replica(nats_url, tmp_path, i) for i in range(2)]
    try:
        await asyncio.gather(*(wait_ready(tmp_path, i) for i in range(2)))
        await Client(conn).create_networks(
            label="v", cidr="10.2.0.0/16", num_networks=20, mode="vlan"
        )
        clients = [await Client.connect(nats_url) for _ in range(8)]
        try:
            jobs = [
                clients[k % 8].allocate_fixed_ip(f"i-{k}", project=f"p{k % 10}") for k in range(80)
            ]
            results = await asyncio.gather(*jobs)
        finally:
            for cl in clients:
                await cl.close()
        by_project: dict[str, set[str]] = {}
        for k, r in enumerate(results):
            by_project.setdefault(f"p{k % 10}", set()).add(r["network_id"])
        assert all(len(v) == 1 for v in by_project.values()), by_project
        assert len({next(iter(v)) for v in by_project.values()}) == 10
        events = await read_all(conn)
        assoc = [
            e.event
            for _, _, e in events
            if e is not None and isinstance(e.event, NetworkAssociated)
        ]
        assert len(assoc) == 10
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


async def test_log_is_decodable_and_subjects_match(conn: Connection, service: object) -> None:
    c = Client(conn)
    await c.create_networks(label="n", cidr="10.3.0.0/24", mode="flat")
    await c.allocate_fixed_ip("i-1", project="p1")
    msgs = await read_all(conn)
    assert msgs and all(env is not None for _, _, env in msgs)
    for _, subject, env in msgs:
        assert env.event.subject() == subject  # type: ignore[union-attr]


async def test_stream_config(conn: Connection) -> None:
    info = await conn.js.stream_info(conn.stream)
    cfg = info.config
    assert cfg.deny_delete and cfg.deny_purge and cfg.allow_direct and cfg.allow_atomic
    assert cfg.subjects == ["netledger.evt.>"]
    await ensure_stream(conn)  # idempotent


async def test_raw_message_decodes(conn: Connection, service: object) -> None:
    await Client(conn).create_networks(label="n", cidr="10.4.0.0/24", mode="flat")
    m = await conn.js.get_last_msg(conn.stream, "netledger.evt.registry", direct=True)
    env = decode(m.data)
    assert env.event.TYPE == "NetworkCreated"
    assert m.headers["Nats-Msg-Id"] == env.event_id


async def test_second_connection_sees_service(nats_url: str, service: object) -> None:
    c2 = await connect(nats_url)
    try:
        nets = await Client(c2).list_networks()
        assert nets == []
    finally:
        await c2.close()
