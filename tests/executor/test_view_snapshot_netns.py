"""A real executor writes its view snapshot, and its restart reads only the tail of the log.

``netledger executor run`` processes in a network namespace, through the command service: a
host with a past (hundreds of its own reports on its host subject) runs its daemon, which writes
``STATE_DIR/view.snapshot`` after its first pass; the next start (``--once``) begins from it and
reads exactly the messages of its share appended after it — not its whole host subject again —
and still applies what the tail changed. ``--ignore-snapshot`` reads everything again.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import HostReconciled
from netledger.events.ids import ALL_EVENTS
from netledger.executor.share import Share
from netledger.executor.snapshot import ViewKind, ViewSnapshots
from netledger.journal.follow import iter_subject
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from tests.executor.test_executor_lab import world as world

from .test_executor_lab import Lab, addresses, links

pytestmark = pytest.mark.netns

HOST = "h"


async def own_reports(conn: Connection, n: int, tag: str) -> None:
    """``n`` reports on the host's own subject, as years of passes would leave."""
    for i in range(n):
        ev = HostReconciled(HOST, i, 1, 0, 1.0)
        env = Envelope(ev, f"{tag}-{i}:0", f"{tag}-{i}", time.time(), Actor(role="system"))
        await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)


async def share_messages_after(conn: Connection, seq: int, networks: set[str]) -> int:
    """How many messages of the host's share the stream holds after ``seq``."""
    subjects = Share(HOST).subjects(networks)
    exact = {s for s in subjects if not s.endswith(">")}
    prefixes = [s[:-1] for s in subjects if s.endswith(">")]
    n = 0
    async for _, subject, _, _ in iter_subject(conn, ALL_EVENTS, seq + 1, await last_seq(conn)):
        n += subject in exact or any(subject.startswith(p) for p in prefixes)
    return n


async def test_the_daemon_writes_its_snapshot_and_a_restart_reads_only_the_tail(
    world: Lab, conn: Connection, service: object, nats_url: str, tmp_path: Path
) -> None:
    ns = world.ns("h")
    c = Client(conn)
    nets = await c.create_networks(
        label="n", cidr="10.31.0.0/23", mode="vxlan", vni_start=810, num_networks=2,
        network_size=256, multi_host=True,
    )  # fmt: skip
    first, second = nets[0]["id"], nets[1]["id"]
    await c.allocate_fixed_ip("vm0", network_id=first, host=HOST)
    await own_reports(conn, 300, "past")
    state = tmp_path / "state"
    path = state / "view.snapshot"
    proc = world.executor(
        nats_url, HOST, ns, "--state-dir", str(state), "--snapshot-every", "100", once=False
    )
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "no snapshot written"
        await asyncio.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "none written yet" in stderr  # its own start had none: said, then the log read

    # The snapshot as the next start will find it.
    snap = await ViewSnapshots(conn, str(path), ViewKind(HOST, True, False)).load()
    assert snap is not None and snap.networks == {first}

    # Life goes on: the host joins the second network, and reports some more.
    await c.allocate_fixed_ip("vm1", network_id=second, host=HOST)
    await own_reports(conn, 5, "later")
    tail = await share_messages_after(conn, snap.seq, {first, second})
    p = world.executor(nats_url, HOST, ns, "--state-dir", str(state))
    out = json.loads(p.stdout)
    assert out["snapshot_seq"] == snap.seq
    # The tail of its share (a network joined in it is read from its start: its creation is
    # in the registry, its allocations after the snapshot), not 300 reports of its own again.
    assert out["events_read"] == tail
    assert tail < 50
    bridges = {n["bridge"] for n in nets}
    assert bridges <= set(links(ns))
    assert addresses(ns, nets[1]["bridge"]) == ["10.31.1.1/24"]

    # --ignore-snapshot: the share from the start again (a repair) — and --once writes a new
    # snapshot when it read enough: of its view as of its sync, before its own pass's report.
    before = await last_seq(conn)
    p = world.executor(
        nats_url, HOST, ns, "--state-dir", str(state), "--ignore-snapshot",
        "--snapshot-every", "100",
    )  # fmt: skip
    out = json.loads(p.stdout)
    assert out["snapshot_seq"] is None
    assert out["events_read"] > 300
    again = await ViewSnapshots(conn, str(path), ViewKind(HOST, True, False)).load()
    assert again is not None and again.seq == before == out["applied_seq"]
    assert again.networks == {first, second}

    # A plain --once (no --snapshot-every) that reads more than the default 1,000 messages
    # writes none: beside its pass the write cost --once tens of milliseconds (executor/cli.py).
    await own_reports(conn, 1100, "more")
    p = world.executor(nats_url, HOST, ns, "--state-dir", str(state), "--ignore-snapshot")
    out = json.loads(p.stdout)
    assert out["events_read"] > 1000
    kept = await ViewSnapshots(conn, str(path), ViewKind(HOST, True, False)).load()
    assert kept is not None and kept.seq == again.seq
