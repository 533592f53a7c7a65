"""A DHCP server that cannot start is an error the executor reports, with the path and the fix.

dnsmasq drops root to ``nobody``: a state folder below a folder closed to others (a checkout
under ``mktemp -d``, a home folder) leaves it unable to read its hosts file, and no instance
gets an address — silently, before. Now the executor refuses to start it, says at the default
log level which folder and how to fix it, appends ``HostApplyFailed`` and counts the failure in
its liveness status; ``--once`` exits with ``apply_incomplete``. And ``--netns`` without
``--dhcp`` says that DHCP is off.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from netledger.events.host_events import HostApplyFailed
from netledger.journal.liveness import read_all
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.fault_helpers import NETLEDGER

from .test_executor_lab import lab
from .test_executor_netns import host_events

pytestmark = pytest.mark.netns


async def test_a_dnsmasq_that_cannot_read_its_files_is_reported(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    os.chmod(closed, 0o700)
    state = closed / "dhcp"
    c = Client(conn)
    [net] = await c.create_networks(
        label="d", cidr="10.91.0.0/24", mode="flat_dhcp", bridge="brdf", network_host="df"
    )
    await c.allocate_fixed_ip("vm", network_id=net["id"], host="df")
    with lab() as world:
        ns, other = world.ns("df"), world.ns("dfo")
        world.wire(ns, "eth1", other, "eth1")
        p = await asyncio.to_thread(
            subprocess.run,
            [NETLEDGER, "--nats", nats_url, "--json", "executor", "run", "--host", "df",
             "--netns", ns, "--physical-interface", "eth1", "--dhcp", "--state-dir", str(state),
             "--once"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    assert json.loads(p.stdout)["error"]["code"] == "apply_incomplete"
    # At the default log level: the first folder on the way that blocks it, and the fix.
    blocking = next(
        f for f in [*reversed(state.parents), state] if f.exists() and not f.stat().st_mode & 0o001
    )
    assert blocking in (closed, *closed.parents)  # closed itself, or a closed parent of it
    assert f"{blocking} is mode 0700" in p.stderr and f"chmod o+x {blocking}" in p.stderr
    failed = [e for e in await host_events(conn, "df") if isinstance(e, HostApplyFailed)]
    assert failed and failed[0].operation == "StartDhcp" and str(blocking) in failed[0].error
    status = json.loads((await read_all(conn))["host.df.status"][0])
    assert status["failures"] >= 1


async def test_netns_without_dhcp_says_dhcp_is_off(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    with lab() as world:
        ns = world.ns("dn")
        p = await asyncio.to_thread(
            subprocess.run,
            [NETLEDGER, "--nats", nats_url, "executor", "run", "--host", "dn", "--netns", ns,
             "--once"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "DHCP is off" in p.stderr and "--dhcp" in p.stderr
