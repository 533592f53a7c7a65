"""DHCP-mode deallocation: held until release, freed by the release or by the log-driven timeout."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_service import read_all

NETLEDGER = str(Path(sys.executable).parent / "netledger")


async def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI without blocking the event loop the in-process service runs on."""
    return await asyncio.to_thread(
        subprocess.run,
        [NETLEDGER, "--nats", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def _setup(conn: Connection) -> tuple[Client, str]:
    c = Client(conn)
    [net] = await c.create_networks(
        label="d", cidr="10.5.0.0/29", network_size=8, mode="flat_dhcp", bridge="br5"
    )
    return c, net["id"]


async def test_leased_address_is_held_until_release(
    conn: Connection, service: CommandService
) -> None:
    c, nid = await _setup(conn)
    a = await c.allocate_fixed_ip("i-1", network_id=nid)
    await c.request("fixed_ip.lease", {"address": a["address"], "mac": a["mac"]})
    r = await c.deallocate_fixed_ip("i-1")
    assert r["deallocated"][0]["freed"] is False
    b = await c.allocate_fixed_ip("i-2", network_id=nid)
    assert b["address"] != a["address"], "a held address must not be handed out"
    rel = await c.request("fixed_ip.release", {"address": a["address"], "mac": a["mac"]})
    assert rel["freed"] is True
    d = await c.allocate_fixed_ip("i-3", network_id=nid)
    assert d["address"] == a["address"], "the released address is the lowest free again"


async def test_never_leased_address_is_freed_at_once(
    conn: Connection, service: CommandService
) -> None:
    c, nid = await _setup(conn)
    a = await c.allocate_fixed_ip("i-1", network_id=nid)
    r = await c.deallocate_fixed_ip("i-1")
    assert r["deallocated"][0]["freed"] is True
    assert (await c.allocate_fixed_ip("i-2", network_id=nid))["address"] == a["address"]


async def test_release_timeout_frees_from_the_log(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    c, nid = await _setup(conn)
    a = await c.allocate_fixed_ip("i-1", network_id=nid)
    await c.request("fixed_ip.lease", {"address": a["address"], "mac": a["mac"]})
    await c.deallocate_fixed_ip("i-1")
    # Not yet overdue: nothing happens, nothing appended.
    before = await last_seq(conn)
    assert await service.reap(now=time.time() + 10) == []
    assert await last_seq(conn) == before
    freed = await service.reap(now=time.time() + service.release_timeout + 1)
    assert freed == [a["address"]]
    events = [e.event for _, _, e in await read_all(conn) if e is not None]
    assert events[-1].TYPE == "FixedIpFreed" and events[-1].address == a["address"]
    # Reaping again (another replica with the same view) frees nothing twice.
    assert await service.reap(now=time.time() + service.release_timeout + 1) == []
    # A late release of a freed address is refused (no longer allocated).
    late = await _cli(nats_url, "--json", "dhcp-event", "del", a["mac"], a["address"])
    assert late.returncode == 1 and "fixed_ip_not_found" in late.stdout


async def test_dhcp_event_script(conn: Connection, service: CommandService, nats_url: str) -> None:
    c, nid = await _setup(conn)
    a = await c.allocate_fixed_ip("i-1", network_id=nid)

    async def script(*args: str) -> subprocess.CompletedProcess[str]:
        return await _cli(nats_url, "dhcp-event", *args)

    assert (await script("add", a["mac"], a["address"], "host-1")).returncode == 0
    assert (await script("old", a["mac"], a["address"])).returncode == 0  # idempotent
    assert (await script("init", "x", "y")).returncode == 0  # ignored action
    bad = await script("add", "02:16:3e:00:00:99", a["address"])
    assert bad.returncode == 1 and "mac_mismatch" in bad.stderr
    types = [e.event.TYPE for _, _, e in await read_all(conn) if e is not None]
    assert types.count("FixedIpLeased") == 1
    await c.deallocate_fixed_ip("i-1")
    assert (await script("del", a["mac"], a["address"])).returncode == 0
    types = [e.event.TYPE for _, _, e in await read_all(conn) if e is not None]
    assert types[-2:] == ["FixedIpDeallocated", "FixedIpReleased"]
