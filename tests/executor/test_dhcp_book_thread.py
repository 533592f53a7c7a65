"""A pass plans dnsmasq in a worker thread on a copy of the DHCP book (review hrev9's note).

The executor's event loop folds the host's DHCP events into its ``DhcpBook`` (which bridges
run a dnsmasq, their hosts files' digests) while a pass's DHCP step runs in a worker thread;
that step iterated the book's live dicts, so an event folded meanwhile could change a dict
being iterated — a ``RuntimeError`` the pass loop does not catch, which stopped the daemon. The
periodic sweep already handed the thread copies; the pass now does too. Checked here on a
running executor with a real dnsmasq: every plan a pass makes gets mappings that are not the
book's own, and the book goes on being folded into (an event folded mid-plan changes nothing
the thread holds).

Real nats-server, command service, namespace and dnsmasq (root; the dnsmasq processes and the
namespace are removed at the end).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import pytest

from netledger.executor.daemon import Executor
from netledger.executor.desired import HostConfig
from netledger.executor.dhcp import DhcpPaths, script_text
from netledger.executor.options import Options
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_incremental import HOST, settled, stop
from tests.executor.test_executor_lab import Lab
from tests.executor.test_executor_lab import world as world

pytestmark = pytest.mark.netns


def _state_dir() -> Path:
    """dnsmasq drops root to nobody: its folder must be reachable by others (not pytest's)."""
    d = Path(tempfile.mkdtemp(prefix="nl-dbk-"))
    d.chmod(0o755)
    return d


async def test_a_pass_plans_dnsmasq_on_a_copy_of_the_book(
    world: Lab, conn: Connection, service: CommandService
) -> None:
    dnsmasq = shutil.which("dnsmasq")
    assert dnsmasq, "dnsmasq: installed by .ci/vm-deps"
    ns = world.ns("dbk")
    c = Client(conn)
    [net] = await c.create_networks(
        label="dbk", cidr="10.95.0.0/24", mode="flat_dhcp", bridge="brdbk", network_host=HOST
    )
    await c.allocate_fixed_ip("vm-1", network_id=net["id"], host=HOST)
    state = _state_dir()
    cfg = HostConfig(host=HOST, network_host=True, dhcp=True)
    opts = Options(
        netns=ns, interval=3600.0, sightings_poll=None,
        dhcp_paths=DhcpPaths(state_dir=str(state), dnsmasq=dnsmasq),
        dhcp_script=script_text(["/bin/true"]),
    )  # fmt: skip
    ex = Executor(conn, cfg, opts)
    await ex.start()
    assert ex.dnsmasq is not None
    real_planned = ex.dnsmasq.planned
    seen: list[tuple[bool, bool]] = []

    def planned(desired: Any, kernel: Any, running: Any, network: Any, bridges: Any) -> Any:
        book = ex.dhcp_book
        seen.append((running is book.running, network is book.network))
        # The loop folding a DHCP event of this host meanwhile: the book changes, not the plan.
        book.running["brother"] = "digest"
        book.network["brother"] = None
        try:
            return real_planned(desired, kernel, running, network, bridges)
        finally:
            book.running.pop("brother", None)
            book.network.pop("brother", None)

    ex.dnsmasq.planned = planned  # type: ignore[method-assign]
    task = asyncio.create_task(ex.run_forever())
    try:
        await settled(ex, conn)
        await c.allocate_fixed_ip("vm-2", network_id=net["id"], host=HOST)
        await settled(ex, conn)
        assert not task.done(), "the daemon stopped"
        assert seen, "no pass planned dnsmasq"
        assert not any(a or b for a, b in seen), f"a plan got the book's own mappings: {seen}"
        assert (state / "brdbk.pid").exists(), "dnsmasq was not started"
    finally:
        await stop(ex, task)
        for pid_file in state.glob("*.pid"):
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        shutil.rmtree(state, ignore_errors=True)
