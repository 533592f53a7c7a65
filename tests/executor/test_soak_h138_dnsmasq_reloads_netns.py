"""Soak h138: a long-lived bridge's dnsmasq grew with every host entry ever taken out of it.

The executor SIGHUPs a bridge's dnsmasq at every entry taken out (an address freed: dnsmasq
forgets a host no other way, executor/hostsdir.py), and dnsmasq 2.90 keeps ~77 bytes it never
frees for each entry it re-reads then. Measured in a churn soak (``netledger serve``, two
executors in namespaces, ~25 commands a second, 30 instances live on two DHCP bridges): each
bridge's dnsmasq went 2.3 -> 4.7 MB in 7 minutes, ~6 KB a second, linearly, the live state flat.
Now a dnsmasq that re-read more than a cap of entries is replaced at its next reload
(executor/dhcpreloads.py).

Here one bridge of ENTRIES hosts, one taken out and one added at each step (a deallocation and
an allocation), through ``Dnsmasq.apply`` as a pass does, STEPS times: the RSS of the bridge's
dnsmasq (whichever runs) stays near where it was after the first steps. Before, it grew by
~ENTRIES * 77 bytes a step (~2.2 MB here). Each step waits until dnsmasq logged having read
every entry again (no SIGHUP coalesced, nothing timed). Real dnsmasq in a namespace, root."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from netledger.executor import hostsdir
from netledger.executor.dhcp import Dnsmasq
from netledger.executor.dhcpplan import DhcpPaths
from netledger.executor.dhcpreloads import SIGHUP_COST, Rereads
from netledger.executor.model import DhcpHost, DhcpSpec, DhcpSubnet, ReloadDhcp, StartDhcp, StopDhcp
from tests.conftest import needs_root

DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
BRIDGE = "brrl0"
ENTRIES, FIRST, STEPS = 100, 20, 300
#: a replacement after 9 reloads of this bridge (ENTRIES re-read at each, and SIGHUP_COST)
CAP = 10 * ENTRIES

pytestmark = pytest.mark.netns


def sh(*a: str, check: bool = True) -> str:
    return subprocess.run(a, check=check, capture_output=True, text=True).stdout


@pytest.fixture
def ns() -> Iterator[str]:
    needs_root()
    if not os.path.exists(DNSMASQ):  # as every DHCP test (dhcp_helpers.dhcp_lab): never skipped
        pytest.fail("dnsmasq is missing: apt-get install -y dnsmasq (.ci/run does)")
    name = f"nl-rl-{uuid.uuid4().hex[:6]}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "add", BRIDGE, "type", "veth", "peer", "name", "brrl0p")
        sh("ip", "-n", name, "addr", "add", "10.138.0.1/24", "dev", BRIDGE)
        sh("ip", "-n", name, "link", "set", BRIDGE, "up")
        sh("ip", "-n", name, "link", "set", "brrl0p", "up")
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def dnsmasq(ns: str) -> Iterator[Dnsmasq]:
    state = tempfile.mkdtemp(prefix="nl-rl-", dir="/tmp")
    os.chmod(state, 0o755)  # dnsmasq reads its entries after dropping root
    d = Dnsmasq(DhcpPaths(state, DNSMASQ), ns, "#!/bin/sh\nexit 0\n")
    try:
        yield d
    finally:
        raw = Path(d.paths.file(BRIDGE, "pid"))
        pid = int(raw.read_text()) if raw.exists() else None
        d.apply([StopDhcp(BRIDGE, pid, "1", "stale")])
        shutil.rmtree(state, ignore_errors=True)


def _spec(first: int) -> DhcpSpec:
    sub = DhcpSubnet("1", "10.138.0.1", "255.255.255.0", "10.138.0.2", 256)
    hosts = tuple(
        sorted(
            DhcpHost(f"02:16:3e:00:{i // 256 % 256:02x}:{i % 256:02x}", f"vm{i}", _address(i))
            for i in range(first, first + ENTRIES)
        )
    )
    return DhcpSpec(BRIDGE, "1", (sub,), hosts)


def _address(i: int) -> str:
    # ENTRIES + 1 addresses in turn: the one taken out is never the one added in its place
    return f"10.138.0.{2 + i % (ENTRIES + 1)}"


def _pid(d: Dnsmasq) -> int:
    return int(Path(d.paths.file(BRIDGE, "pid")).read_text())


def _rss_kb(pid: int) -> int:
    m = re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())
    assert m is not None
    return int(m.group(1))


def _reads(d: Dnsmasq) -> int:
    """Host entries read, as dnsmasq logged them (its log starts afresh with each dnsmasq)."""
    log = Path(d.paths.file(BRIDGE, "log"))
    text = log.read_text(errors="replace") if log.exists() else ""
    return text.count(f"{hostsdir.KIND}/")


def _until_read(d: Dnsmasq, n: int) -> None:
    deadline = time.monotonic() + 60  # (a bound on a hang, not on the time taken)
    while _reads(d) < n:
        assert time.monotonic() < deadline, f"dnsmasq read {_reads(d)} entries, not {n}"
        time.sleep(0.005)


def test_a_bridge_dnsmasq_stays_the_same_size_however_many_reloads(dnsmasq: Dnsmasq) -> None:
    d = dnsmasq
    d.rereads = Rereads(cap=CAP)
    [(started, _)] = d.apply([StartDhcp(_spec(0))])
    assert started.ok, started
    pid, expected = _pid(d), ENTRIES
    _until_read(d, expected)
    pids, rss = {pid}, {}
    for step in range(1, STEPS + 1):
        [(r, now)] = d.apply([ReloadDhcp(_spec(step), pid, "hosts")])
        assert r.ok and now is not None, r
        if now != pid:  # replaced: a fresh dnsmasq read them all once
            pid, expected = now, ENTRIES
        else:  # the one added (inotify), then all of them again (the SIGHUP)
            expected += 1 + ENTRIES
        pids.add(pid)
        _until_read(d, expected)
        if step in (FIRST, STEPS):
            rss[step] = _rss_kb(pid)
    grown = rss[STEPS] - rss[FIRST]
    # Before: ~ENTRIES * 77 bytes a step, ~2.2 MB here; now whatever runs re-read at most CAP
    # entries at SIGHUPs (~80 KB).
    assert grown < 1024, f"dnsmasq RSS {rss[FIRST]} -> {rss[STEPS]} KB"
    # CAP / (ENTRIES + SIGHUP_COST) reloads, then a replacement at the next one
    assert len(pids) == STEPS // (CAP // (ENTRIES + SIGHUP_COST) + 1) + 1
    names = sorted(os.listdir(d.paths.file(BRIDGE, hostsdir.KIND)))
    assert names == sorted(hostsdir.entry(h) for h in _spec(STEPS).hosts)  # none left over
