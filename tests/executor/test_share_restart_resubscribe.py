"""A NATS server restart while a share view resubscribes (review hrev5).

``Follower.set_subjects`` drops the old subscription first, then reads the networks added
(one-off consumers), then subscribes again. When NATS goes away in that window the backfill
read fails (``iter_subject``'s ``consumer_info`` is not retried: the consumer it just created is
lost with the server), ``set_subjects`` raises with no subscription left, and the view's
background task logs it and waits for the next change — which can only come from the follower
it left unsubscribed. The executor then stops reading its share for good, silently (the view
even says it is settled). Real nats-server restart, timed at the backfill's subscription."""

from __future__ import annotations

import asyncio
from typing import Any

from netledger.common.natsserver import EmbeddedNats
from netledger.events.ids import network_subject
from netledger.executor.view import HostView
from netledger.journal.stream import Connection, connect
from netledger.service.client import Client
from netledger.service.service import CommandService


async def _retry(fn: Any, tries: int = 100) -> Any:
    for k in range(tries):
        try:
            return await fn()
        except Exception:
            if k == tries - 1:
                raise
            await asyncio.sleep(0.2)


async def test_a_restart_during_the_backfill_of_a_network_does_not_stop_the_share(
    nats_server: EmbeddedNats, conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    [n1] = await c.create_networks(label="a", cidr="10.1.0.0/24", mode="flat", bridge="br1")
    [n2] = await c.create_networks(label="b", cidr="10.2.0.0/24", mode="flat", bridge="br2")
    id1, id2 = str(n1["id"]), str(n2["id"])
    await c.allocate_fixed_ip("i1", network_id=id1, host="h1")

    vconn = await connect(nats_server.url, name="view")
    real = vconn.js.subscribe
    restarted = asyncio.Event()

    async def subscribe(subject: str, *a: Any, **kw: Any) -> Any:
        sub = await real(subject, *a, **kw)
        if subject == network_subject(id2) and not restarted.is_set():
            # The backfill of the network just joined has its consumer: NATS restarts now.
            await asyncio.to_thread(nats_server.stop)
            await asyncio.to_thread(nats_server.start)
            restarted.set()
        return sub

    vconn.js.subscribe = subscribe  # type: ignore[method-assign]
    view = HostView(vconn, "h1", share=True)
    await view.start()
    try:
        assert view.networks == {id1}
        await c.allocate_fixed_ip("i2", network_id=id2, host="h1")  # joins n2: backfill
        await asyncio.wait_for(restarted.wait(), 20)
        # NATS is back: a new address of h1 in the network it followed all along.
        a3 = await _retry(lambda: c.allocate_fixed_ip("i3", network_id=id1, host="h1"))
        address = str(a3["address"])
        for _ in range(150):
            if address in view.state.networks[id1].fixed and id2 in view.networks:
                break
            await asyncio.sleep(0.1)
        assert view.follower is not None
        assert address in view.state.networks[id1].fixed, (
            f"the share is no longer read (subscription: {view.follower._sub},"
            f" settled: {view.settled()})"
        )
        assert id2 in view.networks
    finally:
        await view.close()
        await vconn.close()


async def test_a_restart_right_after_a_resubscription_reads_the_new_network_once(
    nats_server: EmbeddedNats, conn: Connection, service: CommandService
) -> None:
    """Checked correct (hrev5): the share's multi-subject consumer, recreated by nats-py before
    it delivered anything, goes on from where the resubscription started (seed_ordered)."""
    c = Client(conn)
    [n1] = await c.create_networks(label="a", cidr="10.1.0.0/24", mode="flat", bridge="br1")
    [n2] = await c.create_networks(label="b", cidr="10.2.0.0/24", mode="flat", bridge="br2")
    id1, id2 = str(n1["id"]), str(n2["id"])
    await c.allocate_fixed_ip("i1", network_id=id1, host="h1")
    vconn = await connect(nats_server.url, name="view")
    seen: list[tuple[int, str]] = []
    view = HostView(vconn, "h1", share=True)
    fold = view._on_message

    def on_message(seq: int, subject: str, *rest: Any) -> None:
        seen.append((seq, subject))
        fold(seq, subject, *rest)

    view._on_message = on_message  # type: ignore[method-assign]
    await view.start()
    try:
        await c.allocate_fixed_ip("i2", network_id=id2, host="h1")
        await asyncio.wait_for(view.sync(), 10)
        assert view.networks == {id1, id2}
        await asyncio.to_thread(nats_server.stop)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(nats_server.start)
        a3 = await _retry(lambda: c.allocate_fixed_ip("i3", network_id=id2, host="h1"))
        for _ in range(150):
            if str(a3["address"]) in view.state.networks[id2].fixed:
                break
            await asyncio.sleep(0.1)
        assert str(a3["address"]) in view.state.networks[id2].fixed
        seqs = [s for s, _ in seen]
        assert seqs == sorted(set(seqs)) or len(seqs) == len(set(seqs)), seen
    finally:
        await view.close()
        await vconn.close()
