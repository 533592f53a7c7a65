"""A subscription dropped while NATS is away stays dropped once it is back.

While the connection is reconnecting nats-py queues what it would send — among it the SUB of an
ordered consumer's new delivery subject, and the request that makes that consumer again (two
missed heartbeats: its ``reset_ordered_consumer``) — and sends the queue once reconnected. An
unsubscribe meanwhile removes the subscription from the client but sends no UNSUB (the server
forgot the connection's subscriptions with it): the queued SUB then reached the server alone,
and the consumer made again delivered to it, bound for good, to a connection that drops every
message (a follower stopped, or an executor's share or a projector's reading changed, during a
NATS restart). Real nats-server stopped and started on the same port and store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from netledger.common.natsserver import EmbeddedNats
from netledger.events.ids import network_subject
from netledger.journal.follow import Follower
from netledger.journal.stream import Connection, connect, ensure_stream


async def _bound_consumers(conn: Connection) -> list[str]:
    """The stream's consumers someone listens to, once the server has taken in what the
    reconnected client sent (asked for up to 10 s: a consumer's interest is updated a moment
    after the SUB or UNSUB). One without interest goes after its inactivity threshold."""
    for _ in range(200):
        bound = [c.name for c in await conn.js.consumers_info(conn.stream) if c.push_bound]
        if not bound:
            break
        await asyncio.sleep(0.05)
    return bound


async def _until(cond: Callable[[], bool], what: str) -> None:
    """Wait for ``cond`` (a bound only for a failure: 30 s)."""
    for _ in range(600):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {what} within 30 s")


async def test_a_follower_stopped_while_nats_is_away_leaves_no_consumer_bound(
    nats_server: EmbeddedNats,
) -> None:
    setup = await connect(nats_server.url, name="setup")
    await ensure_stream(setup)
    await setup.close()
    conn = await connect(nats_server.url, name="follower")
    try:
        follower = Follower(conn, lambda *x: None, subject=network_subject("a"), heartbeat=0.2)
        await follower.start()
        sid = follower._sub._id
        await asyncio.to_thread(nats_server.stop)
        # nats-py makes the consumer again (a new subscription id, its SUB queued) while away
        await _until(lambda: follower._sub._id != sid, "the consumer made again")
        assert conn.nc.is_reconnecting
        made_again = follower._sub._id
        await follower.stop()
        assert made_again not in conn.nc._subs
        await asyncio.to_thread(nats_server.start)
        await _until(lambda: conn.nc.is_connected, "the reconnect")
        await conn.nc.flush()
        assert await _bound_consumers(conn) == []
    finally:
        await conn.close()
