"""A reader caught up when it subscribes has had nothing delivered: nats-py's ordered consumer
then believes it delivered stream seq 0, and recreated after a server restart (the consumer
is lost, heartbeats stop) it started again at seq 1 — the whole log (or share) again, dropped
as redeliveries: a cost that grew with the log's age, at every NATS restart, for the service
and every executor at once. ``seed_ordered`` (journal/stream.py) tells it where it started
(found by review of the projector, which had the same). Real nats-server restarts."""

from __future__ import annotations

import asyncio

import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.journal.follow import Follower
from netledger.journal.stream import connect, ensure_stream, last_seq
from netledger.projector.bench import publish, synthetic
from tests.projector.stream_helpers import publish_event
from tests.projector.test_projector_unit import alloc, net


@pytest.mark.parametrize(
    "subjects",
    [["netledger.evt.>"], ["netledger.evt.network.9", "netledger.evt.registry"]],
    ids=["whole-log", "a-share"],
)
async def test_a_caught_up_follower_does_not_read_from_1_after_a_server_restart(
    nats_server: EmbeddedNats, subjects: list[str]
) -> None:
    conn = await connect(nats_server.url, name="writer")
    own = None
    try:
        await ensure_stream(conn)
        await publish_event(conn, net("9", cidr="10.9.0.0/24"))
        end = await publish(conn, synthetic(4000, seed=5))
        got: list[int] = []
        own = await connect(nats_server.url, name="reader")
        f = Follower(own, lambda seq, subject, env, err, msg: got.append(seq), end + 1, subjects)
        await f.start()  # at the end: nothing is delivered on its subscription
        try:
            await asyncio.sleep(0.3)
            before = own.nc.stats["in_msgs"]
            await asyncio.to_thread(nats_server.stop)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(nats_server.start)
            seq = 0
            for _ in range(100):  # the clients reconnect on their own
                try:
                    seq = await publish_event(conn, alloc("10.9.0.7", "i7", network_id="9"), 7)
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            assert seq == await last_seq(conn) > end
            await f.wait_for(seq, 30)  # the ordered consumer was recreated, and goes on
            await asyncio.sleep(0.5)
            delivered = own.nc.stats["in_msgs"] - before
        finally:
            await f.stop()
        assert got == [seq]
        # the event appended, heartbeats, a few control messages: not the log again
        assert delivered < 300, f"{delivered} messages delivered for 1 new event (log: {end})"
    finally:
        if own is not None:
            await own.close()
        await conn.close()
