"""Review hrev21: metrics docs/deploy.md lists that nothing ever filled.

``netledger_command_seconds``, ``netledger_append_batch_events`` and
``netledger_append_retries_total`` were registered and served, but their hooks were called by
no component — the service's room may not import ``common`` — so under any load they stayed at
zero observations while ``netledger_commands_total`` counted the same commands
(tests/ops/test_ops_metrics.py called the hooks by hand). ``netledger_projector_batch_*``
likewise. Now the service, its appender and the projector keep them (``journal/buckets.py``,
``service/stats.py``) and the scrape reads them; these tests drive real commands, a real
conflict between two replicas and a real projector.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netledger.common import metrics
from netledger.events.commands import parse_command
from netledger.journal.append import WrongLastSequence
from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import Projector
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.projector.stream_helpers import publish_event
from tests.projector.test_projector_unit import alloc, net
from tests.service.test_write_path_rare_rounds import two_replicas

from .test_ops_metrics import scrape, value


@pytest.fixture
def server():
    s = metrics.start_metrics_server(0, "127.0.0.1")
    try:
        yield s
    finally:
        s.close()


def moved_between(before: dict, after: dict) -> Callable[..., float]:
    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    return moved


async def test_documented_command_metrics_move_with_real_commands(  # fixed: service/stats.py
    conn: Connection, service: CommandService, server: metrics.MetricsServer
) -> None:
    metrics.watch_service(service)
    try:
        before = await asyncio.to_thread(scrape, server.url)
        c = Client(conn)
        [net] = await c.create_networks(label="n", cidr="10.0.0.0/24", mode="flat", bridge="b1")
        for i in range(3):
            await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"])
        after = await asyncio.to_thread(scrape, server.url)
    finally:
        metrics.unwatch(service)

    moved = moved_between(before, after)
    # the counter the same scrape serves sees them
    assert moved("netledger_commands_total", command="fixed_ip.allocate", outcome="ok") == 3
    assert moved("netledger_command_seconds_count", command="fixed_ip.allocate") == 3
    assert moved("netledger_append_batch_events_count") >= 1
    # every answer timed falls in some bucket: the +Inf one holds them all
    assert moved("netledger_command_seconds_bucket", command="fixed_ip.allocate", le="+Inf") == 3
    assert moved("netledger_command_seconds_sum", command="fixed_ip.allocate") > 0


def _allocate(instance: str, network_id: str, command_id: str) -> Any:
    return parse_command(
        "fixed_ip.allocate",
        {
            "command_id": command_id,
            "actor": {"role": "admin"},
            "args": {"instance": instance, "network_id": network_id},
        },
    )


async def test_a_conflict_between_replicas_is_a_decision_taken_again(
    conn: Connection, nats_url: str, server: metrics.MetricsServer
) -> None:
    """Replica a decides on a network replica b has just allocated in, which a has not read
    (its reader holds what comes until a's append is refused): the log refuses a's append (OCC),
    a catches up and decides again — one retry, reason ``conflict``."""
    async with two_replicas(nats_url) as (a, b):
        [n] = await Client(conn).create_networks(
            label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9"
        )
        nid = str(n["id"])
        top = await last_seq(conn)
        for s in (a, b):
            await s.follower.wait_for(top)
        # a's reader holds what comes from here on, until a's append is refused
        real_on_msg = a.follower._on_msg
        held: list[Any] = []
        a.follower._on_msg = held.append  # type: ignore[method-assign]
        real_append = a.appender.append

        async def append(*args: Any, **kw: Any) -> int:
            try:
                return await real_append(*args, **kw)
            except WrongLastSequence:
                a.follower._on_msg = real_on_msg  # type: ignore[method-assign]
                for m in held:
                    real_on_msg(m)
                raise

        a.appender.append = append  # type: ignore[method-assign]
        metrics.watch_service(a)
        try:
            before = await asyncio.to_thread(scrape, server.url)
            first = await b._submit(_allocate("i1", nid, "b-1"))
            second = await a._submit(_allocate("i2", nid, "a-1"))
            after = await asyncio.to_thread(scrape, server.url)
        finally:
            metrics.unwatch(a)
    assert first["address"] != second["address"]
    assert a.stats.conflicts == 1
    moved = moved_between(before, after)
    assert moved("netledger_append_retries_total", reason="conflict") == 1
    assert moved("netledger_append_retries_total", reason="maybe_applied") == 0
    assert moved("netledger_occ_conflicts_total") == 1
    # a's one append that landed (the refused one stored nothing)
    assert moved("netledger_append_batch_events_count") == 1


async def test_projector_batches_fill_their_histograms(
    conn: Connection, tmp_path: Path, server: metrics.MetricsServer
) -> None:
    await publish_event(conn, net("1"))
    for i in range(2, 6):
        await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
    # one message no projection can use: a rejection, in its batch all the same
    await conn.js.publish("netledger.evt.network.1", b"garbage", stream=conn.stream)
    db = tmp_path / "p.db"
    p = Projector(conn, db, batch_size=2, linger=0)
    p.max_batch = 2  # (no growing while the committer is busy: 04746db)
    before = await asyncio.to_thread(scrape, server.url)
    await p.start()
    metrics.watch_projector(p, str(db))
    try:
        await p.wait_for(6, 30)
        after = await asyncio.to_thread(scrape, server.url)
    finally:
        metrics.unwatch(p)
        await p.close()
    moved = moved_between(before, after)
    assert p.rejected == 1 and p.batches >= 3  # at most 2 messages a transaction
    assert moved("netledger_projector_batch_events_sum", db=str(db)) == 6
    assert moved("netledger_projector_batch_events_count", db=str(db)) == p.batches
    # 1 or 2 messages each: every batch within the bucket up to 10 (bounds 1, 10, 100, ...)
    assert moved("netledger_projector_batch_events_bucket", db=str(db), le="10.0") == p.batches
    assert moved("netledger_projector_batch_seconds_count", db=str(db)) == p.batches
    assert moved("netledger_projector_batch_seconds_sum", db=str(db)) > 0
