"""Helpers shared by the DHCP tests on real network namespaces (``test_executor_dhcp_netns.py``,
``test_ipv6_netns.py``).

A ``DhcpLab`` is a Lab whose namespaces are ``nld-<tag>-<role>`` and whose executors share one
state dir: an instance stand-in (a namespace on the host's bridge with the MAC netledger
allocated) runs busybox ``udhcpc`` (``UDHCPC_SCRIPT`` records what the server handed out). On
close every dnsmasq a test started is killed by the pid in its pid file (after checking the
process is that dnsmasq, ``kill_our_dnsmasq``), and the namespaces are deleted, even when the test
fails. dnsmasq's lease script calls ``netledger dhcp-event``, asynchronously: ``read_events``
reads a subject's events, ``wait_for_event`` waits for the one a test expects.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from netledger.events.codec import decode
from netledger.journal.stream import Connection

from .test_executor_lab import Lab, addresses, ns_exec, sh

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
        """The bridge's host entries, as one hosts file would hold them (the directory's
        files, in name order; dotfiles are not read by dnsmasq, so not here either)."""
        d = Path(self.dhcp_dir(host), f"{bridge}.hostsdir")
        return "".join(f.read_text() for f in sorted(d.iterdir()) if not f.name.startswith("."))

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


def leases6(path: Path) -> str:
    """A DHCPv6 bridge's dnsmasq lease file ("" when there is none). dnsmasq rewrites it in
    place (truncates, then writes), so a read in between finds it empty; once written it always
    holds the server's ``duid`` line, so an empty read is tried again for up to a second."""
    for _ in range(50):
        if not path.exists():
            return ""
        text = path.read_text()
        if text:
            return text
        time.sleep(0.02)
    return ""


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


@contextmanager
def dhcp_lab() -> Iterator[DhcpLab]:
    """A :class:`DhcpLab` for one test (root and dnsmasq required: said, not skipped), every
    namespace and dnsmasq of it removed at the end."""
    if os.geteuid() != 0:
        raise AssertionError("this test needs root (network namespaces); CI runs as root")
    if shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin:/bin") is None:
        raise AssertionError("dnsmasq is missing: apt-get install -y dnsmasq (.ci/run does)")
    the_lab = DhcpLab()
    try:
        yield the_lab
    finally:
        the_lab.close()
