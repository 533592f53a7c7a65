"""Two executors of one host whose environments differ in PATH and NETLEDGER_CONFIG — the
unit's daemon and an operator's ``executor run --once`` from a shell — leave the same dnsmasq
running (executor/dhcpplan.py ``dnsmasq_env``, a constant).

dnsmasq's environment was taken from the executor's (its PATH, its NETLEDGER_CONFIG), and one
not fitting it was replaced (``env_fits``): each run replaced the other's dnsmasq, DHCP down on
every bridge of the host each time. Here a ``--once`` starts it, a daemon with another PATH and
configuration file adopts it, a second ``--once`` leaves it, and the daemon's passes after that
leave it too: one pid throughout, one HostDhcpStarted, no HostDhcpStopped, and leases reach the
log through the lease script as either run wrote it.

Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service (root; every
namespace, dnsmasq and executor is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, read_events, wait_for_event
from .test_executor_dhcp_netns import alive

pytestmark = pytest.mark.netns


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def environment(tmp_path: Path, who: str) -> dict[str, str]:
    """The PATH and configuration file of one run: its own bin directory first (not there:
    the rest of the PATH finds the tools) and its own file."""
    config = tmp_path / f"{who}.toml"
    config.write_text(f"# the {who}'s configuration file\n")
    return {
        "PATH": f"{tmp_path / who / 'bin'}:{os.environ['PATH']}",
        "NETLEDGER_CONFIG": str(config),
    }


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


async def dhcp_events(conn: Connection) -> list[tuple[str, int | None]]:
    events = await read_events(conn, "netledger.evt.host.h")
    return [(e.TYPE, e.pid) for e in events if e.TYPE.startswith("HostDhcp")]


async def test_a_daemon_and_a_once_with_other_environments_keep_one_dnsmasq(
    world: DhcpLab,
    conn: Connection,
    service: Any,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    daemon_env, shell_env = environment(tmp_path, "daemon"), environment(tmp_path, "shell")
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="tw87", cidr="10.187.0.0/24", mode="flat_dhcp", bridge="brtw87", network_host="h"
    )
    bridge = net["bridge"]
    log = Path(world.dhcp_dir("h"), f"{bridge}.log")

    async def allocate(instance: str) -> dict[str, Any]:
        ip: dict[str, Any] = await c.allocate_fixed_ip(instance, network_id=net["id"], host="h")
        return ip

    async def written(ip: dict[str, Any]) -> None:
        """The daemon wrote the entry of ``ip``: it passed after what came before."""
        deadline = time.monotonic() + DEADLINE
        while ip["mac"] not in await asyncio.to_thread(world.hosts_file, "h", bridge):
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            assert time.monotonic() < deadline, "the daemon did not write the host entry"
            await asyncio.sleep(0.1)

    async def lease(instance: str, ip: dict[str, Any]) -> None:
        """Its lease taken from dnsmasq and in the log (through the lease script)."""
        guest = world.guest(h, bridge, f"g-{instance}", ip["mac"])
        got = await asyncio.to_thread(world.dhcp, guest)
        assert got is not None and got["ip"] == ip["address"], await asyncio.to_thread(tail, log)
        await wait_for_event(
            conn,
            f"netledger.evt.network.{net['id']}",
            lambda e: e.TYPE == "FixedIpLeased" and e.address == ip["address"],
        )

    def once() -> None:
        for k, v in shell_env.items():
            monkeypatch.setenv(k, v)  # the executor (a child of this process) inherits them
        world.run(nats_url, "h", h)

    # an operator's --once starts it
    a = await allocate("vm-a")
    await asyncio.to_thread(once)
    pid = world.pid("h", bridge)
    assert pid is not None and alive(pid)
    await lease("vm-a", a)  # (the script as the --once wrote it: its --config)

    # the unit's daemon, with its own PATH and configuration file, adopts it
    for k, v in daemon_env.items():
        monkeypatch.setenv(k, v)
    daemon = world.executor(
        nats_url, "h", h, "--network-host", "--dhcp", "--state-dir", world.dhcp_dir("h"), once=False
    )
    assert isinstance(daemon, subprocess.Popen)
    b = await allocate("vm-b")
    await written(b)  # (its start pass, then this one)
    await lease("vm-b", b)  # (the script as the daemon wrote it)
    assert world.pid("h", bridge) == pid

    # the operator's --once again, then a pass of the daemon after it
    await asyncio.to_thread(once)
    assert world.pid("h", bridge) == pid
    c3 = await allocate("vm-c")
    await written(c3)
    await lease("vm-c", c3)

    assert world.pid("h", bridge) == pid and alive(pid)
    events = await dhcp_events(conn)
    # started once, reloaded for the entries added, never stopped; always that one dnsmasq
    assert [t for t, _ in events if t != "HostDhcpReloaded"] == ["HostDhcpStarted"], events
    assert {p for _, p in events} == {pid}, events
    os.kill(daemon.pid, signal.SIGTERM)
    assert await asyncio.to_thread(daemon.wait, 30) == 0
