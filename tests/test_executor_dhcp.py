"""DHCP end to end on real network namespaces: dnsmasq run by the executor, a real client.

An instance stand-in (a namespace on the host's bridge with the MAC netledger allocated) runs
busybox ``udhcpc``; dnsmasq's lease script calls ``netledger dhcp-event``, so leases and
releases come back as events. Namespaces are ``nld-<tag>-<role>``; every dnsmasq a test started
is killed by the pid in its pid file (after checking the process is that dnsmasq), and the
namespaces are deleted, even when the test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.events.client import Client
from netledger.events.codec import decode
from netledger.events.stream import Connection

from .test_executor_lab import NETLEDGER, Lab, addresses, ns_exec, sh

pytestmark = pytest.mark.netns

DEADLINE = 60.0  # generous: only ever waited out when something is broken

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc's event script: configure the address, record what the server said.
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$subnet" dev "$interface"
    printf '{"ip": "%s", "subnet": "%s", "router": "%s", "dns": "%s"}\\n' \\
      "$ip" "$subnet" "$router" "$dns" > "$(dirname "$0")/$interface-$(ip netns identify).json"
    ;;
esac
exit 0
"""


class DhcpLab(Lab):
    """A Lab whose namespaces are ``nld-...`` and whose executors share one state dir."""

    def __init__(self) -> None:
        super().__init__()
        # Under /tmp (world-traversable): dnsmasq re-reads the hosts file after dropping root.
        self.state_dir = tempfile.mkdtemp(prefix=f"nld-{self.tag}-")
        os.chmod(self.state_dir, 0o755)
        self.script = os.path.join(self.state_dir, "udhcpc.sh")
        Path(self.script).write_text(UDHCPC_SCRIPT)
        os.chmod(self.script, 0o755)

    def ns(self, role: str) -> str:
        name = f"nld-{self.tag}-{role}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def run(self, url: str, host: str, ns: str, *extra: str) -> dict[str, Any]:
        p = self.executor(
            url, host, ns, "--network-host", "--state-dir", self.dhcp_dir(host), *extra
        )
        assert isinstance(p, subprocess.CompletedProcess)
        out: dict[str, Any] = json.loads(p.stdout)
        return out

    def dhcp_dir(self, host: str) -> str:
        return os.path.join(self.state_dir, host)

    def pid(self, host: str, bridge: str) -> int | None:
        try:
            return int(Path(self.dhcp_dir(host), f"{bridge}.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def hosts_file(self, host: str, bridge: str) -> str:
        return Path(self.dhcp_dir(host), f"{bridge}.hosts").read_text()

    def guest(self, host_ns: str, bridge: str, name: str, mac: str) -> str:
        """An instance stand-in with no address: it must get one by DHCP."""
        ns = self.ns(name)
        tap = f"tap{uuid.uuid4().hex[:6]}"
        self.wire(host_ns, tap, ns, "eth0")
        sh("ip", "-n", host_ns, "link", "set", tap, "master", bridge)
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        return ns

    def dhcp(self, ns: str, *extra: str) -> dict[str, str] | None:
        """Run udhcpc once in ``ns``; what the server handed out (None: no lease)."""
        result = Path(self.state_dir, f"eth0-{ns}.json")
        result.unlink(missing_ok=True)
        p = ns_exec(
            ns,
            "busybox",
            "udhcpc",
            "-i",
            "eth0",
            "-n",
            "-q",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            self.script,
            *extra,
            check=False,
        )
        if p.returncode != 0 or not result.exists():
            return None
        out: dict[str, str] = json.loads(result.read_text())
        return out

    def release(self, ns: str) -> None:
        """A client that holds its lease, then releases it (SIGUSR2: DHCPRELEASE) and quits."""
        result = Path(self.state_dir, f"eth0-{ns}.json")
        result.unlink(missing_ok=True)
        argv = ["ip", "netns", "exec", ns, "busybox", "udhcpc", "-i", "eth0", "-f"]
        proc = subprocess.Popen(
            [*argv, "-t", "5", "-T", "1", "-s", self.script],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + DEADLINE
            while not result.exists():
                assert proc.poll() is None, "udhcpc gave up"
                assert time.monotonic() < deadline, "udhcpc got no lease"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGUSR2)  # ip netns exec execs busybox: same pid
            deadline = time.monotonic() + DEADLINE
            while addresses(ns, "eth0"):  # deconfigured once the release is sent
                assert time.monotonic() < deadline, "udhcpc did not release"
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait()

    def close(self) -> None:
        kill_our_dnsmasq(self.state_dir)
        super().close()
        for handle in Path(self.state_dir).rglob("*.netns"):
            sh("umount", str(handle), check=False)
        shutil.rmtree(self.state_dir, ignore_errors=True)


def kill_our_dnsmasq(state_dir: str) -> None:
    """SIGKILL every dnsmasq started with a pid file under ``state_dir`` (and only those)."""
    for pidfile in Path(state_dir).rglob("*.pid"):
        try:
            pid = int(pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            continue
        if f"--pid-file={pidfile}".encode() in cmdline:
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    if os.geteuid() != 0:
        raise AssertionError("this test needs root (network namespaces); CI runs as root")
    if shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        raise AssertionError("dnsmasq is missing: apt-get install -y dnsmasq (.ci/run does)")
    the_lab = DhcpLab()
    try:
        yield the_lab
    finally:
        the_lab.close()


async def read_events(conn: Connection, subject: str) -> list[Any]:
    sub = await conn.js.subscribe(subject, ordered_consumer=True, stream=conn.stream)
    out = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.5)
            except Exception:
                break
            out.append(decode(msg.data).event)
    finally:
        await sub.unsubscribe()
    return out


async def wait_for_event(conn: Connection, subject: str, pred: Any) -> Any:
    """The first event on ``subject`` matching ``pred`` (the lease script runs asynchronously)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        for e in await read_events(conn, subject):
            if pred(e):
                return e
        assert time.monotonic() < deadline, f"no matching event on {subject}"
        await asyncio.sleep(0.2)


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

    # The network leaves the host: dnsmasq stops, its files go.
    await c.deallocate_fixed_ip("vm-a")
    await c.deallocate_fixed_ip("vm-b")
    await c.request("fixed_ip.release", {"address": b["address"], "mac": b["mac"]})
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
        ("HostDhcpStopped", None, "stale"),
    ]
    assert dhcp[0].pid == pid and dhcp[2].pid == new_pid and dhcp[1].hosts == 2


async def test_dnsmasq_survives_the_executor_and_is_adopted(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """A running executor stopped (SIGTERM) leaves dnsmasq serving; the next one adopts it
    without a restart. A dnsmasq whose options changed (lease time) is replaced."""
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="vx", cidr="10.62.0.0/24", mode="vxlan", vni_start=620, network_host="h"
    )
    bridge = net["bridge"]
    a = await c.allocate_fixed_ip("vm-1", network_id=net["id"], host="h")
    proc = world.executor(
        nats_url, "h", h, "--network-host", "--state-dir", world.dhcp_dir("h"), once=False
    )
    assert isinstance(proc, subprocess.Popen)
    deadline = time.monotonic() + DEADLINE
    while not alive(world.pid("h", bridge)):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the daemon started no dnsmasq"
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
    assert [(e.TYPE, getattr(e, "reason", None)) for e in evs if "Dhcp" in e.TYPE] == [
        ("HostDhcpStarted", None),
        ("HostDhcpStopped", "replaced"),
        ("HostDhcpStarted", None),
    ]
