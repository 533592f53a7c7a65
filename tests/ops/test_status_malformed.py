"""``netledger status`` reports what a host wrote wrong instead of failing on it.

A host's liveness entry (``host.<h>.status`` in ``NETLEDGER_LIVE``) is written by whatever
executor runs there — another version, a bug, a clock set to the year 5000 — and an event's
time is whatever its writer put. Before, a time ``datetime`` cannot hold (``1e20``, inf), a
string time or an entry that is not a JSON object ended ``status`` in a traceback: the health
check failed for one host's sake and said nothing about the others; an entry that is not JSON
was dropped without a word, one with a field of the wrong type shown as if it were a report.
Now such an entry is that host's problem ("host h2: its liveness status ...", the row's
``error``), the other hosts are shown as always, and the exit code keeps its meaning (1:
something is wrong, listed under problems).

Real parts: a nats-server, a command service with its status responder, the liveness bucket.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time

import pytest

from netledger.events.codec import Envelope, encode
from netledger.events.host_events import HostReconciled
from netledger.journal.liveness import live_bucket, status_key
from netledger.journal.stream import MSG_ID, Connection, last_seq
from netledger.ops.status import StatusResponder, gather
from netledger.service.service import CommandService

from .test_ops_status import NETLEDGER

BAD_ENTRIES = {
    "wild_clock": json.dumps({"time": 1e20, "applied_seq": 0}).encode(),
    "string_time": json.dumps({"time": "yesterday", "applied_seq": 0}).encode(),
    "no_time": json.dumps({"applied_seq": 0}).encode(),
    "not_an_object": json.dumps([1, 2, 3]).encode(),
    "null": b"null",
    "not_json": b"\xff{not json",
    "bad_applied_seq": json.dumps({"time": time.time(), "applied_seq": "7"}).encode(),
    "bad_heartbeat": json.dumps({"time": time.time(), "applied_seq": 0, "heartbeat": 0}).encode(),
    "bad_share": json.dumps({"time": time.time(), "applied_seq": 0, "share": [1]}).encode(),
}


async def _good_host(conn: Connection, host: str) -> None:
    kv = await live_bucket(conn, create=True)
    entry = {"time": time.time(), "applied_seq": await last_seq(conn), "heartbeat": 60}
    await kv.put(status_key(host), json.dumps(entry).encode())


@pytest.mark.parametrize("kind", sorted(BAD_ENTRIES))
async def test_a_malformed_liveness_entry_is_that_hosts_problem(
    conn: Connection, kind: str
) -> None:
    await _good_host(conn, "h1")
    kv = await live_bucket(conn, create=True)
    await kv.put(status_key("h2"), BAD_ENTRIES[kind])

    st = await gather(conn, wait=0.1)

    hosts = {h["host"]: h for h in st["hosts"]}
    assert set(hosts) == {"h1", "h2"}
    assert hosts["h1"]["error"] is None and hosts["h1"]["live"] is True
    assert hosts["h2"]["error"] and hosts["h2"]["lagging"]
    assert hosts["h2"]["reconciled_at"] is None
    problems = [p for p in st["problems"] if "host" in p]
    assert problems == [f"host h2: {hosts['h2']['error']}"]
    json.dumps(st, allow_nan=False)  # what --json prints is JSON


async def test_an_event_time_no_date_can_hold_is_shown_as_none(conn: Connection) -> None:
    """A host's last event (no liveness entry: the log's HostReconciled is used) timed inf."""
    env = Envelope(HostReconciled("h3", 0, 1, 0, 5.0), "h3-1", "h3-cmd-1", float("inf"))
    await conn.js.publish(
        env.event.subject(), encode(env), stream=conn.stream, headers={MSG_ID: env.event_id}
    )

    st = await gather(conn, wait=0.1)

    [h3] = st["hosts"]
    assert h3["last_event"] == "HostReconciled" and h3["applied_seq"] == 0
    assert h3["last_event_at"] is None and h3["reconciled_at"] is None and h3["age_s"] is None


async def test_the_command_reports_and_exits_1_with_a_wild_clock(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    """The command line as a health check calls it: JSON (and the screen) with the problem,
    exit 1 — not a traceback."""
    await _good_host(conn, "h1")
    kv = await live_bucket(conn, create=True)
    await kv.put(status_key("h2"), BAD_ENTRIES["wild_clock"])
    async with StatusResponder.for_service(conn, service):
        await service.follower.wait_for(await last_seq(conn))
        runs = []
        for fmt in (["--json"], []):
            proc = await asyncio.create_subprocess_exec(
                NETLEDGER, "--nats", nats_url, "status", *fmt, "--wait", "0.3",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            runs.append((proc.returncode, out.decode(), err.decode()))

    (code, out, err), (text_code, text, text_err) = runs
    assert code == 1, err
    st = json.loads(out)
    assert st["problems"] == ["host h2: its liveness status has no usable time (1e+20)"]
    assert {h["host"]: h["error"] for h in st["hosts"]} == {"h1": None, "h2": st["problems"][0][9:]}
    assert text_code == 1, text_err
    assert "Traceback" not in text_err and "no usable time" in text and "h1" in text
