"""DHCP: the pure part (desired dnsmasq specs, command line, plan) and end to end on real
network namespaces (dnsmasq run by the executor, a real client).

An instance stand-in (a namespace on the host's bridge with the MAC netledger allocated) runs
busybox ``udhcpc``; dnsmasq's lease script calls ``netledger dhcp-event``, so leases and
releases come back as events. Namespaces are ``nld-<tag>-<role>``; every dnsmasq a test started
is killed by the pid in its pid file (after checking the process is that dnsmasq), and the
namespaces are deleted, even when the test fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
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

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import Envelope, decode
from netledger.events.host_events import HostDhcpStarted, HostDhcpStopped
from netledger.events.state import State
from netledger.events.types import Event, FixedIpAllocated, FixedIpDeallocated, FixedIpLeased
from netledger.executor.desired import HostConfig, build, hostname_for
from netledger.executor.dhcp import (
    DhcpBook,
    DhcpPaths,
    dnsmasq_argv,
    hosts_digest,
    plan,
    script_text,
)
from netledger.executor.hosts import HostBook
from netledger.executor.model import (
    DhcpHost,
    DhcpSpec,
    DhcpState,
    DhcpSubnet,
    Op,
    ReloadDhcp,
    StartDhcp,
    StopDhcp,
)
from netledger.journal.stream import Connection
from netledger.service.client import Client

from .test_executor_desired import network
from .test_executor_lab import NETLEDGER, Lab, addresses, ns_exec, sh

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
            url, host, ns, "--network-host", "--dhcp", "--state-dir", self.dhcp_dir(host), *extra
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


async def wait_for_event(conn: Connection, subject: str, pred: Any, nth: int = 1) -> Any:
    """The ``nth`` event on ``subject`` matching ``pred`` (the lease script runs
    asynchronously)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        found = [e for e in await read_events(conn, subject) if pred(e)]
        if len(found) >= nth:
            return found[nth - 1]
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

    # The network leaves the host: dnsmasq stops, its files go.
    await c.deallocate_fixed_ip("vm-b")
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


# --- pure: desired specs, command line, lease script, plan --------------------------------


def _fold(*events: Event) -> State:
    st = State()
    for seq, ev in enumerate(events, 1):
        st.apply(seq, ev.subject(), Envelope(ev, f"e{seq}", f"c{seq}", 0.0))
    return st


def _alloc(nid: str, addr: str, inst: str, host: str) -> FixedIpAllocated:
    mac = f"02:16:3E:00:00:{int(addr.rsplit('.', 1)[1]):02x}"
    return FixedIpAllocated(
        network_id=nid, address=addr, instance=inst, mac=mac, host=host, project=None
    )


def test_desired_dhcp_lists_bound_addresses_of_served_dhcp_networks() -> None:
    held = _alloc("1", "10.0.1.4", "gone", "c1")
    freed = _alloc("1", "10.0.1.5", "freed", "c1")
    st = _fold(
        network("1", "10.0.1.0/24", "flat_dhcp", bridge="br100", dns1="192.0.2.1"),
        network("2", "10.0.2.0/24", "flat", bridge="brflat"),
        network("3", "10.0.3.0/24", "vxlan", vni=7, bridge="brvx7", multi_host=True),
        _alloc("1", "10.0.1.3", "vm_B", "c2"),
        _alloc("1", "10.0.1.2", "42", "c1"),
        held,
        FixedIpLeased(network_id="1", address=held.address, mac=held.mac, instance="gone"),
        FixedIpDeallocated(
            network_id="1",
            address=held.address,
            instance="gone",
            mac=held.mac,
            host="c1",
            freed=False,
        ),
        freed,
        FixedIpDeallocated(
            network_id="1",
            address=freed.address,
            instance="freed",
            mac=freed.mac,
            host="c1",
            freed=True,
        ),
        _alloc("2", "10.0.2.2", "flatvm", "c1"),
        _alloc("3", "10.0.3.2", "mine", "c1"),
        _alloc("3", "10.0.3.3", "theirs", "c2"),
    )
    cfg = HostConfig(host="c1", network_host=True, dhcp_lease_time=600)
    d = build(st, HostBook("c1"), cfg)
    assert [s.bridge for s in d.dhcp] == ["br100", "brvx7"]  # plain flat: no DHCP
    br100, brvx7 = d.dhcp
    assert br100.subnets == (
        DhcpSubnet("1", "10.0.1.1", "255.255.255.0", "10.0.1.2", 256, ("192.0.2.1",)),
    )
    # Every host's instances (not multi-host); the held address too; MACs lower case; names
    # start with a letter.
    assert br100.hosts == (
        DhcpHost("02:16:3e:00:00:02", "i-42", "10.0.1.2"),
        DhcpHost("02:16:3e:00:00:03", "vm-b", "10.0.1.3"),
        DhcpHost("02:16:3e:00:00:04", "gone", "10.0.1.4"),
    )
    assert br100.lease_time == 600
    # Multi-host: only this host's own instances.
    assert [h.hostname for h in brvx7.hosts] == ["mine"]
    assert (
        build(st, HostBook("c1"), HostConfig(host="c1", network_host=True, dhcp=False)).dhcp == ()
    )
    # Not serving (no network host role): nothing, except the multi-host network.
    assert [s.bridge for s in build(st, HostBook("c1"), HostConfig(host="c1")).dhcp] == ["brvx7"]


def test_flat_networks_sharing_a_bridge_share_one_dnsmasq() -> None:
    st = _fold(
        network("2", "10.0.2.0/24", "flat_dhcp", bridge="br100"),
        network("1", "10.0.1.0/24", "flat_dhcp", bridge="br100", mtu=1400),
        _alloc("1", "10.0.1.2", "a", "h"),
        _alloc("2", "10.0.2.2", "a", "h"),
    )
    [spec] = build(st, HostBook("h"), HostConfig(host="h", network_host=True)).dhcp
    assert spec.network_id == "1" and [s.network_id for s in spec.subnets] == ["1", "2"]
    # Two instances with one name: dnsmasq must never see a name twice.
    assert [h.hostname for h in spec.hosts] == ["a", "a-10-0-2-2"]
    argv = dnsmasq_argv(spec, DhcpPaths("/run/x", "/usr/sbin/dnsmasq"))
    assert argv[0] == "/usr/sbin/dnsmasq"
    for flag in (
        "--strict-order",
        "--bind-interfaces",
        "--interface=br100",
        "--except-interface=lo",
        "--listen-address=10.0.1.1",
        "--listen-address=10.0.2.1",
        "--pid-file=/run/x/br100.pid",
        "--dhcp-hostsfile=/run/x/br100.hosts",
        "--dhcp-leasefile=/run/x/br100.leases",
        "--dhcp-script=/run/x/dhcp-script",
        "--dhcp-lease-max=512",
        "--dhcp-range=set:net1,10.0.1.2,static,255.255.255.0,86400s",
        "--dhcp-range=set:net2,10.0.2.2,static,255.255.255.0,86400s",
        "--dhcp-option=tag:net1,3,10.0.1.1",
        "--dhcp-option=tag:net2,3,10.0.2.1",
        "--dhcp-option-force=tag:net1,26,1400",
        "--no-resolv",
        "--no-hosts",
    ):
        assert flag in argv, flag
    assert not any(a.startswith("--dhcp-option=tag:net1,6") for a in argv)  # no DNS given


@pytest.mark.parametrize(
    ("instance", "name"),
    [
        ("vm-a", "vm-a"),
        ("VM_1", "vm-1"),
        ("3600", "i-3600"),
        ("__", "instance"),
        ("a" * 80, "a" * 63),
    ],
)
def test_hostname_is_a_dns_label_starting_with_a_letter(instance: str, name: str) -> None:
    assert hostname_for(instance) == name


def test_lease_script_calls_dhcp_event_in_the_executors_namespace() -> None:
    text = script_text(
        ["/v/bin/netledger", "--nats", "nats://h:1", "--creds", "/c d"],
        {"NETLEDGER_PASSWORD": "p w"},
        "/run/x/executor.netns",
    )
    assert text.startswith("#!/bin/sh\n")
    assert "NETLEDGER_PASSWORD='p w'; export NETLEDGER_PASSWORD" in text
    assert text.rstrip().endswith(
        "exec nsenter --net=/run/x/executor.netns -- /v/bin/netledger --nats nats://h:1"
        " --creds '/c d' dhcp-event \"$@\""
    )
    assert "nsenter" not in script_text(["netledger"])


# A small world of bridges, hosts files and processes for the plan's property test.
BRIDGES = ("br1", "br2", "br3")
PATHS = DhcpPaths("/run/t")


def _argv(spec: DhcpSpec) -> tuple[str, ...]:
    return dnsmasq_argv(spec, PATHS)


specs_st = st.builds(
    lambda bridge, n, lease, hosts: DhcpSpec(
        bridge=bridge,
        network_id=str(n),
        subnets=(DhcpSubnet(str(n), f"10.0.{n}.1", "255.255.255.0", f"10.0.{n}.2", 256),),
        hosts=tuple(
            sorted(DhcpHost(f"02:00:00:00:00:{i:02x}", f"h{i}", f"10.0.{n}.{i}") for i in hosts)
        ),
        lease_time=lease,
    ),
    st.sampled_from(BRIDGES),
    st.integers(1, 3),
    st.sampled_from([600, 86400]),
    st.sets(st.integers(2, 6), max_size=3),
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[DhcpSpec], list[DhcpState], dict[str, str]]:
    desired = {s.bridge: s for s in draw(st.lists(specs_st, max_size=3))}
    actual = []
    for b in draw(st.sets(st.sampled_from(BRIDGES))):
        pid = draw(st.one_of(st.none(), st.integers(100, 105)))
        spec = desired.get(b) or draw(specs_st)
        argv = _argv(spec) if draw(st.booleans()) else _argv(draw(specs_st))
        d = draw(st.sampled_from([None, hosts_digest(spec), "0" * 16]))
        if pid is None and d is None:
            d = "0" * 16  # a state entry exists because a pid or hosts file does
        actual.append(
            DhcpState(b, pid, argv if pid else (), d, elsewhere=bool(pid) and draw(st.booleans()))
        )
    recorded = {
        b: draw(st.sampled_from([hosts_digest(desired[b]) if b in desired else "x", "y" * 16]))
        for b in draw(st.sets(st.sampled_from(BRIDGES)))
    }
    return list(desired.values()), actual, recorded


def _apply_model(
    ops: tuple[Op, ...], actual: list[DhcpState], recorded: dict[str, str]
) -> tuple[list[DhcpState], dict[str, str]]:
    have = {a.bridge: a for a in actual}
    rec = dict(recorded)
    next_pid = 1000
    for op in ops:
        if isinstance(op, StopDhcp):
            have.pop(op.bridge, None)
            rec.pop(op.bridge, None)
        elif isinstance(op, StartDhcp):
            assert op.spec.bridge not in have or have[op.spec.bridge].pid is None
            next_pid += 1
            d = hosts_digest(op.spec)
            have[op.spec.bridge] = DhcpState(op.spec.bridge, next_pid, _argv(op.spec), d)
            rec[op.spec.bridge] = d
        elif isinstance(op, ReloadDhcp):
            a = have[op.spec.bridge]
            assert a.pid == op.pid
            d = hosts_digest(op.spec)
            have[op.spec.bridge] = msgspec.structs.replace(a, hosts_digest=d)
            rec[op.spec.bridge] = d
    return list(have.values()), rec


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_plan_converges_and_signals_only_processes_it_found(
    w: tuple[list[DhcpSpec], list[DhcpState], dict[str, str]],
) -> None:
    desired, actual, recorded = w
    ops = plan(desired, actual, _argv, recorded)
    found = {a.pid for a in actual if a.pid is not None}
    for op in ops:
        if isinstance(op, ReloadDhcp | StopDhcp) and op.pid is not None:
            assert op.pid in found
        if isinstance(op, StartDhcp):
            # Drift only when the log says it ran and nothing was replaced on purpose.
            assert not op.drift or op.spec.bridge in recorded
    after, rec = _apply_model(ops, actual, recorded)
    assert plan(desired, after, _argv, rec) == ()
    assert {a.bridge for a in after} == {s.bridge for s in desired} == set(rec)


def test_plan_reasons() -> None:
    spec = DhcpSpec(
        bridge="br1",
        network_id="1",
        subnets=(DhcpSubnet("1", "10.0.1.1", "255.255.255.0", "10.0.1.2", 256),),
        hosts=(DhcpHost("02:00:00:00:00:02", "a", "10.0.1.2"),),
    )
    d = hosts_digest(spec)
    running = DhcpState("br1", 7, _argv(spec), d)
    assert plan([spec], [running], _argv, {"br1": d}) == ()
    assert plan([spec], [running], _argv, {}) == (ReloadDhcp(spec, 7, "adopted"),)
    assert plan([spec], [running], _argv, {"br1": "old"}) == (ReloadDhcp(spec, 7, "hosts"),)
    edited = msgspec.structs.replace(running, hosts_digest="edited")
    assert plan([spec], [edited], _argv, {"br1": d}) == (ReloadDhcp(spec, 7, "drift"),)
    dead = DhcpState("br1", None, (), d)
    assert plan([spec], [dead], _argv, {"br1": d}) == (StartDhcp(spec, drift=True),)
    assert plan([spec], [], _argv, {}) == (StartDhcp(spec, drift=False),)
    assert plan([], [running], _argv, {"br1": d}, {"br1": "1"}) == (
        StopDhcp("br1", 7, "1", "stale"),
    )
    assert plan([], [], _argv, {"br1": d}) == (StopDhcp("br1", None, None, "found-gone"),)
    moved = msgspec.structs.replace(running, elsewhere=True)
    assert plan([spec], [moved], _argv, {"br1": d}) == (
        StopDhcp("br1", 7, spec.network_id, "replaced"),
        StartDhcp(spec, drift=False),
    )


def test_book_folds_this_hosts_dhcp_events() -> None:
    book = DhcpBook("h")
    started = HostDhcpStarted(
        host="h", bridge="br1", network_id="1", pid=5, hosts=1, digest="d1", drift=False
    )
    other = dataclasses.replace(started, host="g", bridge="br9")
    for ev in (started, other):
        book.apply(Envelope(ev, "x", "x", 0.0))
    assert book.running == {"br1": "d1"} and book.network == {"br1": "1"}
    book.apply(Envelope(HostDhcpStopped("h", "br1", "1", 5, "stale"), "y", "y", 0.0))
    assert book.running == {}
