"""Review 86: ``status`` calls a retired host whose executor still runs "back" as soon as that
executor writes anything to its own subject (real nats-server, real command service, real
views).

``host retire`` while the executor runs is meant to be a problem ("was retired but its executor
still reports": docs/domain.md). ops/retired.py counts any message on
``netledger.evt.host.<host>`` after the retirement as the host being back, and lists it as any
host, without a problem. The executors only take a host back on an announcement
(executor/view.py, executor/hosts.py): every peer has dropped its VTEP and role for good. A
running executor writes on its subject at the first pass that changes something (its own
announcement gone from its book is one) or sighting change.
"""

from __future__ import annotations

import json
import time

from netledger.events.host_events import HostAnnounced, HostReconciled
from netledger.executor.view import HostView
from netledger.journal.liveness import live_bucket, status_key
from netledger.journal.stream import Connection, last_seq
from netledger.ops.status import gather
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.ops.test_status_retired import publish


async def test_a_retired_host_still_writing_is_a_problem_until_it_announces(
    conn: Connection, service: CommandService
) -> None:
    kv = await live_bucket(conn, create=True)
    for h in ("h1", "h3"):
        await publish(conn, HostAnnounced(h, f"192.0.2.{h[1]}", "eth1", None, False), f"a-{h}",
                      time.time())  # fmt: skip
        entry = {"time": time.time(), "applied_seq": await last_seq(conn), "heartbeat": 60}
        await kv.put(status_key(h), json.dumps(entry).encode())
    c = Client(conn)
    await c.request("host.retire", {"host": "h3"})
    # h3's executor runs on: its pass (its own announcement left its book) writes a report, and
    # its liveness entry.
    await publish(conn, HostReconciled("h3", await last_seq(conn), 1, 0, 5.0), "r-h3", time.time())
    entry = {"time": time.time(), "applied_seq": await last_seq(conn), "heartbeat": 60}
    await kv.put(status_key("h3"), json.dumps(entry).encode())

    peer = HostView(conn, "h1", share=True)
    await peer.start()
    try:
        in_peers_view = "h3" in peer.book.announced
    finally:
        await peer.close()
    assert not in_peers_view  # h1 dropped h3's VTEP at the retirement

    st = await gather(conn, wait=0.3)
    flagged = [p for p in st["problems"] if p.startswith("host h3 ")]
    # Listed as a healthy host of the cloud only if the cloud takes it as one again.
    assert flagged, st["hosts"]

    # ... until it announces itself (its executor restarted): listed as any host again.
    await publish(conn, HostAnnounced("h3", "192.0.2.3", "eth1", None, False), "a-h3-again",
                  time.time())  # fmt: skip
    entry = {"time": time.time(), "applied_seq": await last_seq(conn), "heartbeat": 60}
    await kv.put(status_key("h3"), json.dumps(entry).encode())
    st = await gather(conn, wait=0.3)
    assert not [p for p in st["problems"] if p.startswith("host h3 ")], st["problems"]
    [h3] = [h for h in st["hosts"] if h["host"] == "h3"]
    assert h3.get("retired_seq") is None and st["retired_hosts"] == 0
