"""Review hrev20: peers announced only on their host subject (a stream written before
``netledger.evt.announce.<host>``) are unknown to an executor reading its share.

An upgraded executor reads announcements on ``netledger.evt.announce.>`` only; a peer's
announcement from before the upgrade is on ``netledger.evt.host.<peer>``, which it does not
read. The service backfills joins and floating mappings for old streams, but no announcement
(it may not write the announcement subjects: docs/security.md); each executor re-announces
itself only when it restarts upgraded. So during a rolling upgrade the first host upgraded
builds no flood entry toward any peer not yet restarted — it *removes* the ones its old
executor made from the whole log — and a peer whose executor is down (or retired, its
instances still in the log) stays unreachable over the overlay until it comes back. A
whole-log reader of the same stream has the entry: the share is not the whole log here
(docs/executor.md: "an executor only reads its share yet learns every peer it needs").

Fixed: the service points at every announcement that is on its host subject only
(``LegacyAnnouncementIndexed``, service/legacy_pointers.py) as it reads it, and a share view
fetches the messages pointed at (executor/view.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import HostAnnounced
from netledger.events.ids import LEGACY_ANNOUNCEMENTS, host_subject
from netledger.events.placement_events import LegacyAnnouncementIndexed
from netledger.executor.desired import build
from netledger.executor.view import HostView
from netledger.journal.follow import Follower
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import config


async def legacy_announce(conn: Connection, host: str) -> None:
    """As executors before the announcement subject wrote it: on the host's own subject."""
    cfg = config(host)
    ev = HostAnnounced(host, cfg.vtep_address, "eth1", "pub0", cfg.network_host)
    env = Envelope(ev, f"old-ann-{host}", f"old-ann-{host}", time.time(), Actor(role="system"))
    await conn.js.publish(host_subject(host), encode(env), stream=conn.stream)


async def indexed(conn: Connection, hosts: set[str]) -> None:
    """Wait until the service has pointed at the announcements of ``hosts`` (it does as soon as
    it has read them; the executors then find them where they read)."""
    seen: set[str] = set()
    done = asyncio.Event()

    def on(seq: int, subject: str, env: Any, err: Any, msg: Any) -> None:
        if env is not None and isinstance(env.event, LegacyAnnouncementIndexed):
            seen.add(env.event.host)
            if seen >= hosts:
                done.set()

    f = Follower(conn, on, subject=LEGACY_ANNOUNCEMENTS)
    await f.start()
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await f.stop()


async def test_a_peer_announced_before_the_upgrade_gets_its_flood_entry(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(
        label="old", cidr="10.78.0.0/24", mode="vxlan", vni_start=780, multi_host=True,
        project="p1",
    )  # fmt: skip
    await c.allocate_fixed_ip("i-a", network_id=net["id"], host="h1")
    await c.allocate_fixed_ip("i-b", network_id=net["id"], host="h2")
    for h in ("h1", "h2"):
        await legacy_announce(conn, h)
    await indexed(conn, {"h1", "h2"})
    views = {share: HostView(conn, "h1", share=share) for share in (True, False)}
    try:
        for v in views.values():
            await v.start()
        whole = build(views[False].state, views[False].book, config("h1"))
        assert [f.dst for f in whole.fdb] == [config("h2").vtep_address]
        shared = build(views[True].state, views[True].book, config("h1"))
        assert shared.fdb == whole.fdb
    finally:
        for v in views.values():
            await v.close()
