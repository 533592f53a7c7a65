"""The lease script's mark and the executor's unmark race (executor/leasemarks.py), with the
real dnsmasq: a lease reported while the executor takes its entry out must not come back
marked, or the new allocation's lease under it waits for the client's renewal.

The window: the script reports a lease (``dhcp-event`` returns: the log has it) and marks it
after. An executor pass in between — the address freed and given again to the same MAC under
another name: its entry changes, its mark is removed, dnsmasq gets SIGHUP and queues the
script's ``old`` for the lease — found no mark to remove, and the script's mark, written after,
made that ``old`` end in the shell: the new allocation unleased in the log (a deallocation
would free it at once under a live lease).

The window is held open here, not hoped for: the lease script in place when the client takes
its lease is :func:`script_text`'s own (the code under test), its command ``netledger ...
dhcp-event`` wrapped to wait, once it returned, for a gate file the test creates after the
executor's pass. Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service
(root; every namespace and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.executor import leasemarks
from netledger.executor.dhcp import DhcpPaths, script_text
from netledger.executor.hostsdir import STATE_DIR_ENV, write_atomic
from netledger.journal.stream import Connection

from .dhcp_helpers import DhcpLab, dhcp_lab, read_events
from .test_dhcp_lease_marks_netns import Bridge, text
from .test_executor_lab import NETLEDGER

pytestmark = pytest.mark.netns

#: how long the held script waits for its gate at most (a failing test must not leave it
#: behind): 1200 x 0.05 s
GATE_TRIES = 1200


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def held_script(world: DhcpLab, nats_url: str, gate: Path) -> str:
    """The lease script of host ``h`` (as the executor writes it for the lab: ``--netns``, no
    credentials) whose ``netledger`` call, once returned, waits for ``gate`` and then exits
    with the call's status."""
    wrapper = Path(world.state_dir, "held.sh")
    wrapper.write_text(
        '"$@"; nl_rc=$?; nl_i=0\n'
        f'while [ ! -e {gate} ] && [ "$nl_i" -lt {GATE_TRIES} ]; do\n'
        "  sleep 0.05; nl_i=$((nl_i + 1))\n"
        "done\n"
        'exit "$nl_rc"\n'
    )
    paths = DhcpPaths(world.dhcp_dir("h"))
    env = {"NETLEDGER_AS_HOST": "h", STATE_DIR_ENV: paths.state_dir}
    command = ["/bin/sh", str(wrapper), NETLEDGER, "--nats", nats_url]
    return script_text(command, env, paths.handle, paths.marks)


async def leases_of(conn: Connection, br: Bridge, address: str) -> int:
    events = await read_events(conn, br.subject)
    return sum(1 for e in events if e.TYPE == "FixedIpLeased" and e.address == address)


async def test_a_lease_reported_while_its_entry_changes_is_reported_again(
    world: DhcpLab, conn: Connection, service: Any, nats_url: str
) -> None:
    br = Bridge(world, conn, nats_url)
    await br.create(85)
    a = await br.allocate("vm-a")
    await br.apply()  # dnsmasq runs, the executor's lease script in place
    gate = Path(world.state_dir, "gate")
    script = DhcpPaths(world.dhcp_dir("h")).script
    write_atomic(script, held_script(world, nats_url, gate), 0o700)
    try:
        va = world.guest(br.h, br.bridge, "va", a["mac"])
        got = await asyncio.to_thread(world.dhcp, va)  # quits holding its lease
        assert got is not None and got["ip"] == a["address"], await text(br.log)
        await br.leased(a)  # reported: the script now waits at its gate, before its mark

        # Freed (the reaper) and given again to the same MAC under another name; the pass
        # changes the entry under the lease: the address's marks go, SIGHUP (dnsmasq queues
        # the lease's 'old' behind the script still running).
        dealloc = await br.c.deallocate_fixed_ip("vm-a")
        assert dealloc["deallocated"][0]["freed"] is False  # held until its release
        assert await service.reap(now=time.time() + service.release_timeout + 1) == [a["address"]]
        again = await br.allocate("vm-again", mac=a["mac"])
        assert again["address"] == a["address"]
        pid = world.pid("h", br.bridge)
        await br.apply()
        assert world.pid("h", br.bridge) == pid  # a reload, no restart: the lease kept
        assert await text(Path(script)) != held_script(world, nats_url, gate)  # its own again
    finally:
        await asyncio.to_thread(gate.touch)

    # Every script run queued so far has run (one after the other) once a later lease is in
    # the log: the SIGHUP's 'old' put the new allocation's lease in the log.
    await br.settle("vm-s")
    assert await leases_of(conn, br, a["address"]) == 2, await text(br.log)
    assert br.mark(a["address"]) == br.lease(a["address"])
    dealloc = await br.c.deallocate_fixed_ip("vm-again")
    assert dealloc["deallocated"][0]["freed"] is False, await text(br.log)
    marks = await asyncio.to_thread(os.listdir, Path(world.dhcp_dir("h"), leasemarks.DIR))
    assert not [n for n in marks if leasemarks.SENDING in n]  # each one made a mark or went
