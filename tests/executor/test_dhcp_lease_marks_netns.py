"""The lease script's marks (executor/leasemarks.py) with the real dnsmasq: a SIGHUP or a
restart runs no ``netledger`` for a lease the log has, and every lease the log may miss still
reaches it.

dnsmasq runs the lease script (``old``) for every lease of the bridge at each SIGHUP (an entry
taken out) and at each start. Each run was a ``netledger dhcp-event`` process (Python: 0.3-1 s
of CPU) and a request appending nothing. What counts them: every ``dhcp-event`` prints one line
(``<address> leased (<mac>)``, or its error), which dnsmasq writes to its log as
``dnsmasq-script``; a skipped run prints nothing. (A renewal of a lease already reported runs
with its answer thrown away, review hrev83: its runs are counted on NATS, ``requests``.)
dnsmasq runs its script for one event after the other: once a later lease (another
instance's, ``settle``) is in the log, every event queued before it has run.

Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service (root; every namespace
and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
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

import msgpack
import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, wait_for_event
from .test_executor_dhcp_netns import alive, wait_gone

pytestmark = pytest.mark.netns


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


async def text(path: Path) -> str:
    return await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")


class Bridge:
    """One flat_dhcp network served by host ``h``: allocate, lease, count script runs."""

    def __init__(self, world: DhcpLab, conn: Connection, nats_url: str) -> None:
        self.world, self.conn, self.nats_url = world, conn, nats_url
        self.h = world.ns("h")
        self.c = Client(conn)
        self.n = 0

    async def create(self, octet: int) -> None:
        [net] = await self.c.create_networks(
            label=f"m{octet}",
            cidr=f"10.{octet}.0.0/24",
            mode="flat_dhcp",
            bridge=f"brm{octet}",
            network_host="h",
        )
        self.nid, self.bridge = net["id"], net["bridge"]
        self.subject = f"netledger.evt.network.{self.nid}"
        self.log = Path(self.world.dhcp_dir("h"), f"{self.bridge}.log")

    async def apply(self) -> None:
        await asyncio.to_thread(self.world.run, self.nats_url, "h", self.h)

    async def allocate(self, instance: str, mac: str | None = None) -> dict[str, Any]:
        ip: dict[str, Any] = await self.c.allocate_fixed_ip(
            instance, network_id=self.nid, host="h", mac=mac
        )
        return ip

    async def leased(self, ip: dict[str, Any], nth: int = 1) -> None:
        await wait_for_event(
            self.conn,
            self.subject,
            lambda e: e.TYPE == "FixedIpLeased" and e.address == ip["address"],
            nth=nth,
        )

    async def boot(self, instance: str) -> tuple[dict[str, Any], str]:
        """A new instance: allocated, its entry written, its lease taken (udhcpc -q: it quits
        holding it) and in the log."""
        ip = await self.allocate(instance)
        await self.apply()
        self.n += 1
        ns = self.world.guest(self.h, self.bridge, f"g{self.n}", ip["mac"])
        got = await asyncio.to_thread(self.world.dhcp, ns)
        assert got is not None and got["ip"] == ip["address"], await text(self.log)
        await self.leased(ip)
        deadline = time.monotonic() + DEADLINE
        while self.mark(ip["address"]) is None:  # written once dhcp-event has returned
            assert time.monotonic() < deadline, await text(self.log)
            await asyncio.sleep(0.05)
        return ip, ns

    async def sighup(self, instance: str) -> None:
        """An entry taken out: an instance allocated, written, deallocated (never leased:
        freed at once), taken out — dnsmasq gets SIGHUP."""
        await self.allocate(instance)
        await self.apply()
        pid = self.world.pid("h", self.bridge)
        await self.c.deallocate_fixed_ip(instance)
        await self.apply()
        assert self.world.pid("h", self.bridge) == pid  # a reload, no restart

    async def settle(self, instance: str) -> None:
        """Every script run queued so far has run (one after the other: a later lease in
        the log)."""
        await self.boot(instance)

    async def runs(self, since: int, ips: list[dict[str, Any]]) -> dict[str, int]:
        """How many ``netledger dhcp-event`` ran for each address since log line ``since``."""
        lines = (await text(self.log)).splitlines()[since:]
        return {
            ip["address"]: sum(
                1 for line in lines if "dnsmasq-script" in line and f" {ip['address']} " in line
            )
            for ip in ips
        }

    async def lines(self) -> int:
        return len((await text(self.log)).splitlines())

    async def requests(self, address: str) -> tuple[Any, set[str]]:
        """A subscription beside the service's on the host's command subject, and the ids of
        the ``fixed_ip.lease`` commands it sees for ``address`` (one per ``dhcp-event`` run:
        a retry keeps its id)."""
        ids: set[str] = set()

        async def seen(msg: Any) -> None:
            request = msgpack.unpackb(msg.data)
            if request["args"].get("address") == address:
                ids.add(request["command_id"])

        sub = await self.conn.nc.subscribe("netledger.host.h.cmd.fixed_ip.lease", cb=seen)
        return sub, ids

    def mark(self, address: str) -> str | None:
        p = Path(self.world.dhcp_dir("h"), "reported", address)
        return p.read_text().strip() if p.exists() else None

    def lease(self, address: str) -> str:
        """``<mac> <expiry>`` of the address's lease in dnsmasq's lease file: its mark.

        dnsmasq rewrites the file in place (truncates, then writes): a read in between finds it
        empty, so a read without the address is tried again for up to a second."""
        path = Path(self.world.dhcp_dir("h"), f"{self.bridge}.leases")
        for _ in range(50):
            for line in path.read_text().splitlines():
                expiry, mac, ip = line.split()[:3]
                if ip == address:
                    return f"{mac} {expiry}"
            time.sleep(0.02)
        raise AssertionError(f"no lease of {address}: {path.read_text()}")


async def test_a_sighup_or_a_restart_runs_netledger_for_no_lease_the_log_has(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    br = Bridge(world, conn, nats_url)
    await br.create(81)
    booted = [await br.boot(f"vm-{i}") for i in range(4)]
    leased = [ip for ip, _ in booted]
    for ip in leased:  # reported: marked with the lease's MAC and expiry
        assert br.mark(ip["address"]) == br.lease(ip["address"])
        assert br.lease(ip["address"]).split()[0] == ip["mac"]

    # An entry taken out: SIGHUP, dnsmasq runs the script for the 4 leases (and the settling
    # lease's own 'add'): no netledger for them.
    since = await br.lines()
    await br.sighup("vm-out")
    await br.settle("vm-s1")
    assert await br.runs(since, leased) == {ip["address"]: 0 for ip in leased}

    # dnsmasq dies; the next pass starts it again: it reads the leases back and runs the
    # script for each ('old', same expiry): no netledger either. (Each pass here is an
    # executor of its own, --once: an executor restart changes nothing.)
    pid = world.pid("h", br.bridge)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    since = await br.lines()
    await br.apply()
    assert alive(world.pid("h", br.bridge)) and world.pid("h", br.bridge) != pid
    await br.settle("vm-s2")
    assert await br.runs(since, leased) == {ip["address"]: 0 for ip in leased}

    # The marks wiped (a state dir wiped): the next SIGHUP reports every lease again, once.
    shutil.rmtree(Path(world.dhcp_dir("h"), "reported"))
    since = await br.lines()
    await br.sighup("vm-out2")
    await br.settle("vm-s3")
    assert await br.runs(since, leased) == {ip["address"]: 1 for ip in leased}
    for ip in leased:
        assert br.mark(ip["address"]) == br.lease(ip["address"])

    # A release ('del') takes its mark away.
    await asyncio.to_thread(world.release, booted[0][1])
    await wait_for_event(
        conn,
        br.subject,
        lambda e: e.TYPE == "FixedIpReleased" and e.address == leased[0]["address"],
    )
    assert br.mark(leased[0]["address"]) is None


async def test_a_lease_the_service_missed_is_reported_at_the_next_sighup(
    world: DhcpLab, conn: Connection, nats_url: str
) -> None:
    """No command service when the lease was made: ``dhcp-event`` failed, no mark; the next
    SIGHUP's ``old`` runs it."""
    br = Bridge(world, conn, nats_url)
    svc = CommandService(conn)
    await svc.start()
    try:
        await br.create(82)
        a = await br.allocate("vm-a")
        await br.apply()
    finally:
        await svc.close()
    va = world.guest(br.h, br.bridge, "va", a["mac"])
    got = await asyncio.to_thread(world.dhcp, va)  # quits holding its lease
    assert got is not None and got["ip"] == a["address"]
    deadline = time.monotonic() + DEADLINE
    while "script process exited with status 1" not in await text(br.log):
        assert time.monotonic() < deadline, await text(br.log)
        await asyncio.sleep(0.2)
    assert br.mark(a["address"]) is None

    svc = CommandService(conn)
    await svc.start()
    try:
        await br.sighup("vm-out")
        await br.leased(a)
        assert br.mark(a["address"]) == br.lease(a["address"])
    finally:
        await svc.close()


async def test_a_renewal_is_reported_with_its_new_expiry(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """A renewal moves the lease's expiry: ``dhcp-event`` runs (the safety net for a lease
    the log lost without the executor seeing its entry go) and the mark follows."""
    br = Bridge(world, conn, nats_url)
    await br.create(83)
    a = await br.allocate("vm-a")
    await br.apply()
    va = world.guest(br.h, br.bridge, "va", a["mac"])
    client = subprocess.Popen(
        ["ip", "netns", "exec", va, "busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T",
         "1", "-s", world.script],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await br.leased(a)
        deadline = time.monotonic() + DEADLINE
        while br.mark(a["address"]) is None:  # written once dhcp-event has returned
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        first = br.mark(a["address"])
        assert first == br.lease(a["address"])
        await asyncio.sleep(1.1)  # the expiry has a second's resolution
        sub, runs = await br.requests(a["address"])
        os.kill(client.pid, signal.SIGUSR1)  # renew
        # acked: dnsmasq wrote the new expiry to its lease file (it logs no DHCPACK any more)
        while br.lease(a["address"]) == first:
            assert client.poll() is None, "udhcpc gave up"
            assert time.monotonic() < deadline, await text(br.log)
            await asyncio.sleep(0.1)
        await br.settle("vm-s")
        await sub.unsubscribe()
        assert len(runs) == 1, runs
        assert br.mark(a["address"]) == br.lease(a["address"]) != first
    finally:
        client.terminate()
        client.wait()


async def test_an_entry_changed_under_its_lease_is_reported_again(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    """An address freed (the reaper) and given again to the same MAC, under another name, in
    one executor pass: its entry changes (taken out, added), dnsmasq keeps the lease (its MAC
    and address still wanted: no dhcp_release), and the SIGHUP's ``old`` of it — its mark
    taken away with the old entry — puts the new allocation's lease in the log. Had the mark
    stayed, the log would hold it unleased until the client's renewal, and a deallocation
    would free it at once under a live lease."""
    br = Bridge(world, conn, nats_url)
    await br.create(84)
    a, _ = await br.boot("vm-a")
    assert br.mark(a["address"]) is not None
    dealloc = await br.c.deallocate_fixed_ip("vm-a")
    assert dealloc["deallocated"][0]["freed"] is False  # held until its release
    assert await service.reap(now=time.time() + service.release_timeout + 1) == [a["address"]]
    again = await br.allocate("vm-again", mac=a["mac"])
    assert again["address"] == a["address"]

    await br.apply()  # "<mac>,vm-a,<ip>" out, "<mac>,vm-again,<ip>" in: SIGHUP
    await br.leased(again, nth=2)
    dealloc = await br.c.deallocate_fixed_ip("vm-again")
    assert dealloc["deallocated"][0]["freed"] is False, await text(br.log)
