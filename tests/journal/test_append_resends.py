"""The appender's own re-sends are counted (``Appender.resends``,
``netledger_append_resends_total{reason}``), not only logged: a publish whose answer never
comes (``no_answer``) and a publish no stream takes (``unavailable``: no responders, a 503),
each met for real — a relay that loses the server's answers, a server without the stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from nats.js.errors import NotFoundError

from netledger.common import metrics
from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.journal.append import RESEND_REASONS, Appender, Outgoing
from netledger.journal.stream import connect, ensure_stream, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.journal.test_append_outcome_review11 import AckDropper
from tests.ops.test_metrics_review21 import _allocate
from tests.ops.test_ops_metrics import scrape, value
from tests.ops.test_ops_metrics import server as server  # the fixture: a metrics server

#: a guard against a hang only: every wait below ends when what it waits for happens
HANG_S = 60.0


async def until(what: str, check: Callable[[], object]) -> None:
    end = time.monotonic() + HANG_S
    while not check():
        assert time.monotonic() < end, f"never happened: {what}"
        await asyncio.sleep(0.01)


async def test_a_publish_no_stream_takes_is_counted_unavailable(tmp_path: Path) -> None:
    """A server whose JetStream holds no netledger stream yet (restarted, the stream not
    recovered): every publish meets no responders and is sent again within the budget; once
    the stream is there the append lands."""
    bare = EmbeddedNats(tmp_path / "bare", port=free_port())
    await asyncio.to_thread(bare.start)
    conn = await connect(bare.url)
    try:
        appender = Appender(conn, publish_timeout=1.0, budget=HANG_S)
        assert appender.resends == dict.fromkeys(RESEND_REASONS, 0)
        subject = "netledger.evt.network.resend-unavailable"
        task = asyncio.create_task(
            appender.append([Outgoing(subject, b"x", "resend-u-cmd:0")], {subject: 0})
        )
        await until("a re-send after no responders", lambda: appender.resends["unavailable"])
        await ensure_stream(conn)
        seq = await task
        assert seq == await last_seq(conn) == 1
        assert appender.resends["unavailable"] >= 1
        assert appender.resends["no_answer"] == 0  # every attempt was answered: no stream
    finally:
        await conn.close()
        await asyncio.to_thread(bare.stop)


async def test_an_unanswered_publish_moves_the_resends_metric(
    nats_server: EmbeddedNats, server: metrics.MetricsServer
) -> None:
    """A command service's append is stored but its acknowledgement lost on the way back; the
    appender sends it again (same ids) until one is answered: after the link is cut and the
    service reconnected, as the duplicate it is. ``/metrics`` shows the re-send."""
    relay = AckDropper(nats_server.port)
    port = await relay.start()
    direct = await connect(nats_server.url)
    await ensure_stream(direct)
    conn = await connect(f"nats://127.0.0.1:{port}")
    svc = CommandService(conn, append_budget=HANG_S)
    metrics.watch_service(svc)
    try:
        await svc.start()
        svc.pipeline = False  # one append, its retries in Appender.append
        svc.appender.publish_timeout = 0.5  # an answer lost is known sooner than in 5 s
        [net] = await Client(direct).create_networks(
            label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9"
        )
        await svc.follower.wait_for(await last_seq(direct))
        before = await asyncio.to_thread(scrape, server.url)

        relay.dropping = True
        answer = asyncio.create_task(svc._submit(_allocate("i1", net["id"], "resend-1")))
        subject = f"netledger.evt.network.{net['id']}"
        while True:  # stored on the server, its answer lost
            try:
                m = await direct.js.get_last_msg(direct.stream, subject)
            except NotFoundError:
                m = None
            if m is not None and (m.headers or {}).get("Nats-Msg-Id", "").startswith("resend-1"):
                break
            await asyncio.sleep(0.01)
        await until("a re-send after no answer", lambda: svc.appender.resends["no_answer"])
        relay.cut(nats_server.port)  # the link dies; the service reconnects through the relay
        got = await answer
        after = await asyncio.to_thread(scrape, server.url)
    finally:
        metrics.unwatch(svc)
        await svc.close()
        await conn.close()
        await direct.close()
        await relay.close()

    assert got["address"]
    moved = value(after, "netledger_append_resends_total", reason="no_answer") - value(
        before, "netledger_append_resends_total", reason="no_answer"
    )
    assert moved >= 1
    unavailable = ("netledger_append_resends_total", (("reason", "unavailable"),))
    assert after[unavailable] == 0  # served, and not moved: every publish reached the stream
    # one allocation stored once: the re-sends were its duplicates, answered as such
    events = await _allocations(nats_server.url, net["id"])
    assert events == 1


async def _allocations(url: str, network_id: str) -> int:
    from netledger.events.types import FixedIpAllocated
    from tests.fault_helpers import read_all

    conn = await connect(url)
    try:
        return sum(
            1
            for _, _, env in await read_all(conn)
            if isinstance(getattr(env, "event", None), FixedIpAllocated)
            and env.event.network_id == network_id
        )
    finally:
        await conn.close()
