"""`status` and retired hosts (`netledger host retire`, ops/retired.py): a host retired and
silent since is not listed and is no problem (it was "has not reported" for good: nothing could
clear it); one whose executor still reports after its retirement is a problem that says so; one
that announced itself again is listed as any host. Real nats-server, real command service."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

from netledger.events.codec import Envelope, encode
from netledger.events.host_events import HostAnnounced, HostReconciled
from netledger.journal.liveness import LIVE_TTL_S, live_bucket, status_key
from netledger.journal.stream import MSG_ID, Connection, last_seq
from netledger.ops.status import DEFAULT_MAX_LAG, gather, hosts_status
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.ops.test_projector_liveness import NETLEDGER


def hosts_problems(st: dict) -> list[str]:
    # (the fixture's service runs no status responder: "no replica answered" is not ours)
    return [p for p in st["problems"] if p.startswith("host ")]


async def publish(conn: Connection, ev: object, eid: str, when: float) -> None:
    env = Envelope(ev, eid, eid, when)  # type: ignore[arg-type]
    await conn.js.publish(
        ev.subject(),  # type: ignore[attr-defined]
        encode(env),
        stream=conn.stream,
        headers={MSG_ID: eid},
    )


async def status_text(nats_url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        NETLEDGER, "--nats", nats_url, "status", "--wait", "0.1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    out, _ = await proc.communicate()
    return out.decode()


async def test_a_retired_host_is_not_listed_until_it_is_back(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    kv = await live_bucket(conn, create=True)
    then = time.time() - 2 * LIVE_TTL_S  # h1: decommissioned two days ago, its entry expired
    await publish(conn, HostAnnounced("h1", None, "eth1", None, False), "a1", then)
    await publish(conn, HostReconciled("h1", await last_seq(conn), 0, 0, 5.0), "r1", then)
    for h in ("h2", "h3"):  # alive, reporting now
        await publish(conn, HostAnnounced(h, None, "eth1", None, False), f"a-{h}", time.time())
        entry = {"time": time.time(), "applied_seq": await last_seq(conn), "heartbeat": 60}
        await kv.put(status_key(h), json.dumps(entry).encode())

    st = await gather(conn, wait=0.3)
    assert any(p.startswith("host h1 ") for p in st["problems"]), st["problems"]

    c = Client(conn)
    await c.request("host.retire", {"host": "h1"})
    st = await gather(conn, wait=0.3)
    assert [h["host"] for h in st["hosts"]] == ["h2", "h3"]
    assert st["retired_hosts"] == 1 and hosts_problems(st) == []
    # Called by itself, as gather's: full rows only (a retired one's was a partial row, with
    # no applied_seq to read).
    rows = await hosts_status(conn, await last_seq(conn), DEFAULT_MAX_LAG)
    assert [(r["host"], r["applied_seq"] is not None) for r in rows] == [("h2", True), ("h3", True)]

    # h3 is retired while its executor runs: it still reports after the retirement.
    await c.request("host.retire", {"host": "h3"})
    entry = {"time": time.time(), "applied_seq": await last_seq(conn), "heartbeat": 60}
    await kv.put(status_key("h3"), json.dumps(entry).encode())
    st = await gather(conn, wait=0.3)
    [h3] = [h for h in st["hosts"] if h["host"] == "h3"]
    assert h3["retired_seq"] is not None
    assert any("h3 was retired" in p for p in st["problems"]), st["problems"]
    # ... and the text says so: h1 is not listed, h3's row is marked
    text = await status_text(nats_url)
    assert "hosts (2; 1 retired, not listed)" in text
    [row] = [x for x in text.splitlines() if x.startswith("│ h3 ")]
    assert "retired, still reports" in row and "│ h1 " not in text

    # h1 comes back: announced again (its executor restarted), listed as any host.
    await publish(conn, HostAnnounced("h1", None, "eth1", None, False), "a1-again", time.time())
    entry = {"time": time.time(), "applied_seq": await last_seq(conn), "heartbeat": 60}
    await kv.put(status_key("h1"), json.dumps(entry).encode())
    st = await gather(conn, wait=0.3)
    [h1] = [h for h in st["hosts"] if h["host"] == "h1"]
    assert h1.get("retired_seq") is None and h1["live"]
    assert st["retired_hosts"] == 0
