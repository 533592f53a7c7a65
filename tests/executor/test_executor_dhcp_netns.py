"""DHCP end to end on real network namespaces: dnsmasq run by the executor, a real client.

An instance stand-in (a namespace on the host's bridge with the MAC netledger allocated) runs
busybox ``udhcpc``; dnsmasq's lease script calls ``netledger dhcp-event``, so leases and
releases come back as events. A killed dnsmasq is started again (a drift repair), a hosts change
reloads it, a stopped executor leaves it serving and the next one adopts it, a changed option
replaces it. Namespaces are ``nld-<tag>-<role>`` (``dhcp_helpers.DhcpLab``); every dnsmasq a test
started is killed and the namespaces are deleted, even when the test fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, read_events, wait_for_event
from .test_executor_lab import NETLEDGER, addresses, sh


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int | None) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} did not exit"
        time.sleep(0.05)


@pytest.mark.netns
async def test_instances_get_their_addresses_and_leases_become_events(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str, tmp_path: Path
) -> None:
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="dhcp",
        cidr="10.61.0.0/24",
        mode="flat_dhcp",
        bridge="brdhcp",
        network_host="h",
        dns1="192.0.2.53",
    )
    nid, bridge = net["id"], net["bridge"]
    a = await c.allocate_fixed_ip("vm-a", network_id=nid, host="h")

    out = await asyncio.to_thread(world.run, nats_url, "h", h)
    assert out["changes"] >= 1
    pid = world.pid("h", bridge)
    assert alive(pid), "--once must leave dnsmasq running"
    hosts = world.hosts_file("h", bridge)
    assert hosts == f"{a['mac']},vm-a,{a['address']}\n"
    assert addresses(h, bridge) == ["10.61.0.1/24"]

    # The first instance: exactly its address, the gateway as router, the network's DNS.
    va = world.guest(h, bridge, "va", a["mac"])
    got = await asyncio.to_thread(world.dhcp, va)
    assert got is not None, "the instance got no DHCP lease"
    assert got["ip"] == a["address"]
    assert got["router"] == "10.61.0.1"
    assert got["subnet"] == "255.255.255.0"
    assert got["dns"].split() == ["192.0.2.53"]
    assert addresses(va, "eth0") == [f"{a['address']}/24"]
    subject = f"netledger.evt.network.{nid}"
    leased = await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == a["address"]
    )
    assert leased.mac == a["mac"] and leased.instance == "vm-a"

    # A second instance allocated later: the executor rewrites the hosts file and SIGHUPs.
    b = await c.allocate_fixed_ip("vm-b", network_id=nid, host="h")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.pid("h", bridge) == pid, "a hosts change must reload, not restart"
    vb = world.guest(h, bridge, "vb", b["mac"])
    got_b = await asyncio.to_thread(world.dhcp, vb)
    assert got_b is not None and got_b["ip"] == b["address"], got_b
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == b["address"]
    )

    # A MAC the log does not know gets nothing (static range: hosts-file entries only).
    stranger = world.guest(h, bridge, "vx", "02:16:3e:00:00:99")
    assert await asyncio.to_thread(world.dhcp, stranger) is None

    # The first instance releases (udhcpc -R on exit): the release is in the log.
    await asyncio.to_thread(world.release, va)
    released = await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpReleased" and e.address == a["address"]
    )
    assert released.mac == a["mac"] and released.freed is False  # still allocated

    # The projection has the lease (b) and the release (a).
    db = tmp_path / "projection.db"
    p = await asyncio.to_thread(
        sh, NETLEDGER, "--nats", nats_url, "projector", "run", "--db", str(db), "--once"
    )
    assert p.returncode == 0
    with sqlite3.connect(db) as q:
        rows = dict(
            q.execute("SELECT instance, leased FROM fixed_ips WHERE network_id = ?", (nid,))
        )
    assert rows == {"vm-a": 0, "vm-b": 1}

    # dnsmasq killed: the next pass starts it again, logged as a drift repair.
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    out = await asyncio.to_thread(world.run, nats_url, "h", h)
    assert out["drift_repairs"] >= 1
    new_pid = world.pid("h", bridge)
    assert new_pid != pid and alive(new_pid)
    got_b = await asyncio.to_thread(world.dhcp, vb)
    assert got_b is not None and got_b["ip"] == b["address"]

    # Nothing to do: a re-run changes nothing and does not touch dnsmasq.
    out = await asyncio.to_thread(world.run, nats_url, "h", h)
    assert out["changes"] == 0 and world.pid("h", bridge) == new_pid

    # Deallocated while leased: the address is held, stays in the hosts file, and the client's
    # release through dnsmasq frees it (the release timeout is only for releases never sent).
    got_a = await asyncio.to_thread(world.dhcp, va)
    assert got_a is not None and got_a["ip"] == a["address"]
    await wait_for_event(  # its second lease (the first was released above)
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == a["address"], nth=2
    )
    dealloc = await c.deallocate_fixed_ip("vm-a")
    assert dealloc["deallocated"][0]["freed"] is False
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert f"{a['mac']},vm-a,{a['address']}" in world.hosts_file("h", bridge)
    await asyncio.to_thread(world.release, va)
    freed = await wait_for_event(
        conn,
        subject,
        lambda e: e.TYPE == "FixedIpReleased" and e.address == a["address"] and e.freed,
    )
    assert freed.instance == "vm-a"
    again = await c.allocate_fixed_ip("vm-c", network_id=nid, host="h")
    assert again["address"] == a["address"], "the released address is free again"
    await c.deallocate_fixed_ip("vm-c")

    # The last instance is deallocated while leased: held, so the network (and its dnsmasq,
    # which reports the release) stays until the release; then it leaves the host: dnsmasq
    # stops, its files go.
    await c.deallocate_fixed_ip("vm-b")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.pid("h", bridge) == new_pid and alive(new_pid)
    await asyncio.to_thread(world.release, vb)
    await wait_for_event(
        conn,
        subject,
        lambda e: e.TYPE == "FixedIpReleased" and e.address == b["address"] and e.freed,
    )
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert new_pid is not None
    wait_gone(new_pid)
    left = sorted(os.listdir(world.dhcp_dir("h")))
    assert not [f for f in left if f.startswith(bridge)], left

    evs = await read_events(conn, "netledger.evt.host.h")
    dhcp = [e for e in evs if e.TYPE.startswith("HostDhcp")]
    assert [(e.TYPE, getattr(e, "drift", None), getattr(e, "reason", None)) for e in dhcp] == [
        ("HostDhcpStarted", False, None),
        ("HostDhcpReloaded", None, "hosts"),
        ("HostDhcpStarted", True, None),
        ("HostDhcpReloaded", None, "hosts"),  # vm-a's line gone (freed), vm-b's held
        ("HostDhcpStopped", None, "stale"),
    ]
    assert dhcp[0].pid == pid and dhcp[2].pid == new_pid and dhcp[1].hosts == 2


@pytest.mark.netns
async def test_dnsmasq_survives_the_executor_and_is_adopted(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """A running executor repairs a killed dnsmasq by itself; stopped (SIGTERM), it leaves
    dnsmasq serving and the next one adopts it without a restart. A dnsmasq whose options
    changed (lease time) is replaced."""
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="vx", cidr="10.62.0.0/24", mode="vxlan", vni_start=620, network_host="h"
    )
    bridge = net["bridge"]
    a = await c.allocate_fixed_ip("vm-1", network_id=net["id"], host="h")
    proc = world.executor(
        nats_url,
        "h",
        h,
        "--network-host",
        "--dhcp",
        "--state-dir",
        world.dhcp_dir("h"),
        once=False,
    )
    assert isinstance(proc, subprocess.Popen)
    deadline = time.monotonic() + DEADLINE
    while not alive(world.pid("h", bridge)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the daemon started no dnsmasq"
        await asyncio.sleep(0.1)
    # Killed under a running daemon: its next periodic pass (--interval 1) starts it again.
    first = world.pid("h", bridge)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_gone(first)
    while world.pid("h", bridge) == first or not alive(world.pid("h", bridge)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline + DEADLINE, "the daemon did not restart dnsmasq"
        await asyncio.sleep(0.1)
    pid = world.pid("h", bridge)
    os.kill(proc.pid, signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0
    assert alive(pid), "dnsmasq must survive the executor"

    out = await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.pid("h", bridge) == pid and out["changes"] == 0
    guest = world.guest(h, bridge, "g", a["mac"])
    got = await asyncio.to_thread(world.dhcp, guest)
    assert got is not None and got["ip"] == a["address"] and got["router"] == "10.62.0.1"

    await asyncio.to_thread(world.run, nats_url, "h", h, "--dhcp-lease-time", "600")
    assert pid is not None
    wait_gone(pid)
    new_pid = world.pid("h", bridge)
    assert alive(new_pid)
    assert "--dhcp-range=set:net1,10.62.0.2,static,255.255.255.0,600s" in cmdline(new_pid)
    evs = await read_events(conn, "netledger.evt.host.h")
    assert [
        (e.TYPE, getattr(e, "reason", None), getattr(e, "drift", None))
        for e in evs
        if "Dhcp" in e.TYPE
    ] == [
        ("HostDhcpStarted", None, False),
        ("HostDhcpStarted", None, True),  # the repair of the killed one
        ("HostDhcpStopped", "replaced", None),
        ("HostDhcpStarted", None, False),
    ]
