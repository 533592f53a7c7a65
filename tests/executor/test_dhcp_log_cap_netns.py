"""dnsmasq's log is capped, and every executor of a host runs the same dnsmasq, on the real
thing (review hrev83 and its follow-up).

- A log over ``LOG_CAP`` (executor/dhcp.py) is rotated by the executor's next look: it becomes
  ``BR.log.old`` and the running dnsmasq (the same process) writes a new ``BR.log``, made with
  the owner dnsmasq gave the first (it reopens it after dropping root); both go with the
  bridge. What dnsmasq still logs grows with time when something keeps failing (a client no
  entry names, a lease script failing while NATS is away), and nothing trimmed it.
- dnsmasq is found on the system PATH first (executor/cli.py ``_dnsmasq``): an executor whose
  PATH lists /sbin before /usr/sbin started ``/sbin/dnsmasq``, and the first word of the
  command line is compared for adoption, so every other executor of the host replaced it (and
  it theirs). A dnsmasq started by another path to the same file (by such an executor, before)
  is adopted, not replaced.

Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service (root; every
namespace and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.executor.dhcp import LOG_CAP
from netledger.executor.dhcpplan import SYSTEM_PATH
from netledger.journal.stream import Connection
from netledger.service.client import Client

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, read_events, wait_for_event
from .test_executor_dhcp_netns import alive, wait_gone

pytestmark = pytest.mark.netns


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]]


def read(path: Path) -> str | None:
    return path.read_text() if path.exists() else None


def grow(log: Path, lines: int) -> str:
    """Append ``lines`` lines to the log as days of a failing client would; its text then."""
    with log.open("a") as fh:
        fh.writelines(f"filler line {i:06d} of a log that kept growing\n" for i in range(lines))
    return log.read_text()


def restart_as(ns: str, pid: int, alias: Path) -> str:
    """Stop dnsmasq ``pid`` and start it again, in ``ns``, with its command line but another
    path to its program: through ``alias``, made a link to the program's folder (as /sbin is
    to /usr/sbin). That path."""
    program = cmdline(pid)[0]
    alias.symlink_to(os.path.dirname(os.path.realpath(program)))
    name = str(alias / os.path.basename(program))
    argv = [name, *cmdline(pid)[1:]]
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        env={"PATH": SYSTEM_PATH},
        check=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    return name


async def host_dhcp_events(conn: Connection) -> list[tuple[str, int | None]]:
    events = await read_events(conn, "netledger.evt.host.h")
    return [(e.TYPE, e.pid) for e in events if e.TYPE.startswith("HostDhcp")]


async def test_a_log_over_the_cap_is_rotated_and_dnsmasq_writes_a_new_one(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="cap", cidr="10.84.0.0/24", mode="flat_dhcp", bridge="brcap", network_host="h"
    )
    nid, bridge = net["id"], net["bridge"]
    a = await c.allocate_fixed_ip("vm-a", network_id=nid, host="h")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    pid = world.pid("h", bridge)
    assert pid is not None and alive(pid)
    log = Path(world.dhcp_dir("h"), f"{bridge}.log")
    old = Path(world.dhcp_dir("h"), f"{bridge}.log.old")
    made = await asyncio.to_thread(log.stat)

    # Under the cap: left as it is.
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert await asyncio.to_thread(read, old) is None

    # Over it (as a client no entry names, asking for days, leaves it): the next look rotates.
    kept = await asyncio.to_thread(grow, log, 6000)
    assert len(kept) > LOG_CAP
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.pid("h", bridge) == pid and alive(pid)  # the same dnsmasq
    assert await asyncio.to_thread(read, old) == kept
    st = await asyncio.to_thread(log.stat)
    assert (st.st_uid, st.st_gid, st.st_mode) == (made.st_uid, made.st_gid, made.st_mode)

    # dnsmasq writes the new one (it reopened it: SIGUSR2), the old one no more.
    guest = world.guest(h, bridge, "va", a["mac"])
    got = await asyncio.to_thread(world.dhcp, guest)
    assert got is not None and got["ip"] == a["address"], got
    subject = f"netledger.evt.network.{nid}"
    await wait_for_event(
        conn, subject, lambda e: e.TYPE == "FixedIpLeased" and e.address == a["address"]
    )
    deadline = time.monotonic() + DEADLINE
    while f"{a['address']} leased" not in (now := await asyncio.to_thread(read, log) or ""):
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.1)
    assert await asyncio.to_thread(read, old) == kept
    assert len(now) < LOG_CAP

    # The bridge no longer served: dnsmasq stops, both logs go with its other files.
    await c.deallocate_fixed_ip("vm-a")  # held until its release
    await asyncio.to_thread(world.release, guest)
    await wait_for_event(
        conn,
        subject,
        lambda e: e.TYPE == "FixedIpReleased" and e.address == a["address"] and e.freed,
    )
    await asyncio.to_thread(world.run, nats_url, "h", h)
    wait_gone(pid)
    left = sorted(os.listdir(world.dhcp_dir("h")))
    assert not [f for f in left if f.startswith(bridge)], left


async def test_executors_finding_dnsmasq_by_other_names_keep_one_dnsmasq(
    world: DhcpLab,
    conn: Connection,
    service: Any,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    system = shutil.which("dnsmasq", path=SYSTEM_PATH)
    assert system is not None
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="path", cidr="10.85.0.0/24", mode="flat_dhcp", bridge="brpath", network_host="h"
    )
    bridge = net["bridge"]
    await c.allocate_fixed_ip("vm-a", network_id=net["id"], host="h")

    # An operator's shell listing /sbin first starts it; the unit's PATH finds it running.
    monkeypatch.setenv("PATH", f"/sbin:/bin:{os.environ['PATH']}")
    await asyncio.to_thread(world.run, nats_url, "h", h)
    pid = world.pid("h", bridge)
    assert pid is not None and alive(pid)
    assert cmdline(pid)[0] == system
    monkeypatch.setenv("PATH", SYSTEM_PATH)
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.pid("h", bridge) == pid and alive(pid)

    # A dnsmasq started by another path to that file (an executor of the previous version,
    # /sbin first): adopted, not replaced.
    name = await asyncio.to_thread(restart_as, h, pid, tmp_path / "sbin")
    aliased = world.pid("h", bridge)
    assert aliased is not None and aliased != pid and alive(aliased)
    assert cmdline(aliased)[0] == name != system
    await asyncio.to_thread(world.run, nats_url, "h", h)
    assert world.pid("h", bridge) == aliased and alive(aliased)

    events = await host_dhcp_events(conn)
    assert [t for t, _ in events if t == "HostDhcpStopped"] == [], events
    assert [t for t, _ in events if t == "HostDhcpStarted"] == ["HostDhcpStarted"], events
