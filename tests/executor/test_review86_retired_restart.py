"""Review 86: a retired host's executor, restarted, is not back (real nats-server, real command
service, real views).

`host retire` while the host's executor runs: the executor logs "restart it to bring the host
back", and its own view drops its announcement, so that its daemon announces again at the next
start (executor/daemon.py ``announce``: only when the book's announcement differs). Meanwhile
it keeps writing on its own subject (a pass's ``HostReconciled``, a sighting report). A share
view reads its history subject by subject (journal/follow.py), ``netledger.evt.host.<host>``
before ``netledger.evt.retired.>``: by the time it reads the retirement, the host's later
reports make ``State.retired`` say it is back, and the view keeps the old announcement — the
daemon does not announce, and every other host keeps the host's VTEP dropped. A whole-log view
of the same host, reading in the log's order, drops it.
"""

from __future__ import annotations

import time

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import HostAnnounced, HostReconciled
from netledger.executor.view import HostView
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import announce, config


async def report(conn: Connection, host: str, n: int) -> None:
    """What the host's still-running executor writes after a pass that changed something."""
    ev = HostReconciled(host, await last_seq(conn), 1, 0, 5.0)
    env = Envelope(ev, f"rec-{host}-{n}", f"rec-{host}-{n}", time.time(), Actor(role="system"))
    await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)


async def test_a_retired_host_restarted_announces_again(
    conn: Connection, service: CommandService
) -> None:
    for h in ("h1", "h2"):
        await announce(conn, h, 0)
    c = Client(conn)
    assert await c.request("host.retire", {"host": "h2"}) == {"retired": "h2"}
    await report(conn, "h2", 1)  # its executor still ran for a while after the retirement

    # h2's executor restarts (no snapshot): what does its view say about its own announcement?
    shared = HostView(conn, "h2", share=True)
    whole = HostView(conn, "h2", share=False)
    peer = HostView(conn, "h1", share=True)
    for v in (shared, whole, peer):
        await v.start()
    try:
        cfg = config("h2")
        mine = HostAnnounced("h2", cfg.vtep_address, "eth1", "pub0", cfg.network_host)
        # Every other host dropped h2's VTEP at the retirement: only an announcement brings it
        # back.
        assert "h2" not in peer.book.announced
        # The whole log's view of h2 agrees: its daemon would announce again.
        assert whole.book.announced.get("h2") != mine
        # The share view (what an executor runs) must agree with it.
        assert set(shared.book.announced) == set(whole.book.announced)
        assert shared.book.announced.get("h2") != mine
    finally:
        for v in (shared, whole, peer):
            await v.close()
