"""A stream replica whose node was SIGKILLed is said to be silent long before nats-server marks
it offline (review h135: `status` showed it "online, behind" for 41 s): ops/status.py
``SILENT_S``, ``replica_state``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import nats.errors

from netledger.journal.stream import connect, ensure_stream
from netledger.ops.status import SILENT_S, problems_of, replica_state, stream_status
from tests.fault_helpers import Cluster, replicas_current, stream_leader


def peer(**kw: Any) -> dict[str, Any]:
    return {"name": "n2", "current": True, "offline": False, "lag": 0, "active_s": 0.2,
            "silent": False, **kw}  # fmt: skip


def test_a_replica_in_words() -> None:
    assert replica_state(peer()) == "online"
    assert replica_state(peer(offline=True, current=False)) == "offline"
    assert replica_state(peer(silent=True, current=False, active_s=12.4)) == (
        "not heard from for 12 s"
    )
    stream = {"name": "NETLEDGER", "replicas": 3, "leader": "n0"}
    said = problems_of({**stream, "peers": [peer(silent=True, current=False, active_s=7)]},
                       [{"component": "command-service", "id": "s", "lag": 0, "lagging": False}], [], [], 0)  # fmt: skip
    assert "stream replica n2 is not heard from for 7 s" in said, said
    said = problems_of({**stream, "peers": [peer(current=False)]},
                       [{"component": "command-service", "id": "s", "lag": 0, "lagging": False}], [], [], 0)  # fmt: skip
    assert "stream replica n2 is behind" in said, said


async def test_a_sigkilled_replica_is_said_silent_before_it_is_offline(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.start()
    admin = None
    try:
        admin = await connect(cluster.urls, name="admin")
        await cluster.wait_formed(admin)
        await ensure_stream(admin, replicas=3)
        await stream_leader(admin)
        # A follower the leader hears from (a leader elected after the kill has never heard
        # from the dead node: no "active" to go by, and nats-server says nothing until offline)
        reps = await replicas_current(admin)
        victim = cluster.node(reps[0].name)
        before = {p["name"]: p for p in (await stream_status(admin))["peers"]}
        assert replica_state(before[victim.server_name]) == "online", before
        await asyncio.to_thread(victim.kill)
        deadline = time.monotonic() + 60
        while True:
            try:
                peers = {p["name"]: p for p in (await stream_status(admin))["peers"]}
            except nats.errors.TimeoutError:  # connected to the node killed: reconnecting
                assert time.monotonic() < deadline, "no stream info since the kill"
                continue
            p = peers[victim.server_name]
            if p["silent"] or p["offline"]:
                break
            assert time.monotonic() < deadline, json.dumps(peers)
            await asyncio.sleep(0.5)
        # Said the moment the leader has not heard from it for SILENT_S (nats-server's own
        # "offline" comes tens of seconds later)
        assert p["offline"] or p["active_s"] > SILENT_S, p
        assert replica_state(p) in ("offline", f"not heard from for {p['active_s']:.0f} s")
        assert replica_state(p) != "online"
    finally:
        if admin is not None:
            await admin.close()
        cluster.stop()
