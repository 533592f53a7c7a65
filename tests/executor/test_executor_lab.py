"""Helpers (no tests) for executor tests on real network namespaces (root).

Every namespace a test makes is named ``nlx-<tag>-<role>`` and deleted at the end, even when the
test fails; executor processes started by a test are killed by their pid.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from netledger.executor import proc

NETLEDGER = str(Path(sys.executable).with_name("netledger"))


def sh(
    *args: str, check: bool = True, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command; one that does not end fails the test instead of hanging it (the wait
    after the kill is bounded too: executor/proc.py)."""
    argv = list(args)
    try:
        p: subprocess.CompletedProcess[str] = proc.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(argv)} did not end within {timeout:.0f}s") from None
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({p.returncode}): {p.stderr.strip()}")
    return p


def ns_exec(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


class Lab:
    """A set of namespaces owned by one test."""

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:5]
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []
        self.taps: dict[str, str] = {}  # instance namespace -> its port on the host's bridge

    def ns(self, role: str) -> str:
        name = f"nlx-{self.tag}-{role}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def wire(
        self,
        a: str,
        a_if: str,
        b: str,
        b_if: str,
        a_addr: str | None = None,
        b_addr: str | None = None,
    ) -> None:
        """A veth pair between two namespaces, up, with optional addresses."""
        tmp = f"nlx{uuid.uuid4().hex[:8]}"
        sh("ip", "link", "add", tmp, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b)
        sh("ip", "-n", a, "link", "set", tmp, "name", a_if)
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            if addr:
                sh("ip", "-n", ns, "addr", "add", addr, "dev", ifname)

    def instance(
        self, host_ns: str, bridge: str, name: str, address: str, gateway: str, mac: str
    ) -> str:
        """An instance stand-in: a namespace plugged into ``bridge`` as a hypervisor would."""
        ns = self.ns(name)
        tap = f"tap{uuid.uuid4().hex[:6]}"
        self.wire(host_ns, tap, ns, "eth0")
        sh("ip", "-n", host_ns, "link", "set", tap, "master", bridge)
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
        sh("ip", "-n", ns, "route", "add", "default", "via", gateway)
        self.taps[ns] = tap
        return ns

    def executor(
        self, nats_url: str, host: str, ns: str, *extra: str, once: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
        argv = [
            NETLEDGER,
            "--nats",
            nats_url,
            "--json",
            "executor",
            "run",
            "--host",
            host,
            "--netns",
            ns,
            *extra,
        ]
        if once:
            p = subprocess.run(
                [*argv, "--once"], capture_output=True, text=True, timeout=120, check=False
            )
            if check and p.returncode != 0:
                raise AssertionError(
                    f"executor {host} failed ({p.returncode}): {p.stdout} {p.stderr}"
                )
            return p
        proc = subprocess.Popen(
            [*argv, "--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:  # held by the kernel: leave it, delete the rest
                pass
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)


@contextmanager
def lab() -> Iterator[Lab]:
    if os.geteuid() != 0:
        raise AssertionError("this test needs root (network namespaces); CI runs as root")
    the_lab = Lab()
    try:
        yield the_lab
    finally:
        the_lab.close()


@pytest.fixture
def world() -> Iterator[Lab]:
    """A lab of namespaces for one test, deleted at its end (imported by the netns tests)."""
    with lab() as the_lab:
        yield the_lab


def links(ns: str) -> dict[str, dict[str, object]]:
    out = json.loads(sh("ip", "-n", ns, "-d", "-j", "link", "show").stdout)
    return {link["ifname"]: link for link in out}


def addresses(ns: str, dev: str) -> list[str]:
    p = sh("ip", "-n", ns, "-j", "-4", "addr", "show", "dev", dev, check=False)
    if p.returncode != 0:
        return []
    out = json.loads(p.stdout)
    return [f"{a['local']}/{a['prefixlen']}" for link in out for a in link.get("addr_info", [])]


def flood(ns: str, dev: str) -> set[str]:
    p = sh("bridge", "-n", ns, "-j", "fdb", "show", "dev", dev, check=False)
    if p.returncode != 0:
        return set()
    return {
        e["dst"] for e in json.loads(p.stdout) if e.get("mac") == "00:00:00:00:00:00" and "dst" in e
    }


def nat_table(ns: str) -> dict[str, object] | None:
    p = ns_exec(ns, "nft", "-j", "list", "table", "ip", "netledger", check=False)
    if p.returncode != 0:
        return None
    out: dict[str, object] = {}
    for o in json.loads(p.stdout)["nftables"]:
        if "map" in o:
            out[o["map"]["name"]] = [tuple(e) for e in o["map"].get("elem", [])]
    return out


def ping(ns: str, address: str, *opts: str) -> bool:
    """Whether ``address`` answers from ``ns``: up to 3 probes, each waited for 1 s (the first
    may be spent on ARP, neighbour discovery and VXLAN flooding), one at a time so that an
    answer ends it at once (``ping -c 3`` took 2 s to say yes; no is 3 s either way)."""
    for _ in range(3):
        p = ns_exec(ns, "busybox", "ping", *opts, "-c", "1", "-W", "1", address, check=False)
        if p.returncode == 0:
            return True
    return False
