"""A running dnsmasq is adopted only with the environment it would be started with now
(executor/dhcpplan.py ``env_fits``), with the real dnsmasq.

One started before ``dnsmasq_env`` — here by hand, with the executor's command line and the
whole environment of this process plus a planted secret — has the command line the executor
wants: it was adopted as it was, its lease script runs holding the secret. Now the executor
replaces it (its leases file kept) by one with the minimal environment, and a lease still
reaches the log. One started by hand with exactly that environment is adopted: its pid stays,
and so does the executor's own at a second run (no restart at each executor start; with another
environment of the executor's own too: test_dhcp_env_two_runs_netns.py).

Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service (root; every
namespace and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.executor.dhcpplan import dnsmasq_env
from netledger.journal.stream import Connection

from .dhcp_helpers import DhcpLab, dhcp_lab, read_events
from .test_dhcp_lease_marks_netns import Bridge
from .test_executor_dhcp_netns import alive, wait_gone

pytestmark = pytest.mark.netns

SECRET = {"NETLEDGER_PASSWORD": "planted-secret"}


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(e.decode().split("=", 1) for e in raw.split(b"\0") if e)


def restart_by_hand(world: DhcpLab, ns: str, bridge: str, env: dict[str, str]) -> int:
    """Stop the bridge's dnsmasq and start the same command line again with ``env``, as
    something else than the executor would (an older executor): the new pid."""
    old = world.pid("h", bridge)
    assert old is not None and alive(old)
    argv = Path(f"/proc/{old}/cmdline").read_bytes().decode().split("\0")[:-1]
    os.kill(old, signal.SIGTERM)
    wait_gone(old)
    # dnsmasq daemonizes: the command returns once it serves
    subprocess.run(
        ["ip", "netns", "exec", ns, *argv],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
        check=True,
    )
    pid = world.pid("h", bridge)
    assert pid is not None and pid != old and alive(pid)
    return pid


async def dhcp_events(conn: Connection) -> list[Any]:
    return [
        e for e in await read_events(conn, "netledger.evt.host.h") if e.TYPE.startswith("HostDhcp")
    ]


async def test_a_dnsmasq_with_another_environment_is_replaced_one_with_it_adopted(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    want = dnsmasq_env()  # what the executor gives it, whatever its own environment
    br = Bridge(world, conn, nats_url)
    await br.create(88)
    await br.boot("vm-a")  # dnsmasq started by the executor, a lease in the log
    started = world.pid("h", br.bridge)
    assert started is not None
    assert await asyncio.to_thread(environ, started) == want

    # the executor again, unchanged: its own dnsmasq is left running
    before = await dhcp_events(conn)
    await br.apply()
    assert world.pid("h", br.bridge) == started
    assert await dhcp_events(conn) == before

    # started as before dnsmasq_env: the whole environment, a secret in it
    old = await asyncio.to_thread(restart_by_hand, world, br.h, br.bridge, {**os.environ, **SECRET})
    assert (await asyncio.to_thread(environ, old)).items() >= SECRET.items()
    before = await dhcp_events(conn)
    await br.apply()
    new = world.pid("h", br.bridge)
    assert new is not None and new != old and not alive(old)
    assert await asyncio.to_thread(environ, new) == want
    after = await dhcp_events(conn)
    assert [(e.TYPE, e.pid, getattr(e, "reason", None)) for e in after[len(before) :]] == [
        ("HostDhcpStopped", old, "replaced"),
        ("HostDhcpStarted", new, None),
    ]
    await br.boot("vm-b")  # the replacement serves, and its lease script reports

    # started by hand with the environment the executor gives: adopted as it is
    right = await asyncio.to_thread(restart_by_hand, world, br.h, br.bridge, want)
    before = await dhcp_events(conn)
    await br.apply()
    assert world.pid("h", br.bridge) == right and alive(right)
    assert await dhcp_events(conn) == before
