"""Review hrev83 (issue 13: costs follow change, not age): the command service's counters keep
an entry per distinct command *name* a request ever used, known or not.

``Requests._on_request`` (service/requests.py) takes the name from the subject's tail
(``netledger.cmd.<name>``, ``netledger.project.<p>.cmd.<name>``...) and, when parsing refuses
it (``unknown_command``), counts it under that name: ``Stats.commands["<name>:<code>"]`` and a
``Buckets`` histogram in ``Stats.seconds[<name>]`` (service/stats.py), kept for the life of
the replica and exported as metric labels (``netledger status``, /metrics). Any client that
may send a command can grow the service's memory and the metrics' cardinality without bound,
one misspelt or made-up name at a time — nothing in the cloud changes meanwhile.
Real nats-server, real command service."""

from __future__ import annotations

import msgpack
import pytest

from netledger.events.ids import COMMAND_PREFIX
from netledger.journal.stream import Connection
from netledger.service.service import CommandService

FIRST, THEN = 3, 15


async def _unknown(conn: Connection, i: int) -> None:
    reply = await conn.nc.request(
        f"{COMMAND_PREFIX}.no_such_command_{i}", msgpack.packb({"args": {}}), timeout=10
    )
    answer = msgpack.unpackb(reply.data)
    assert answer["ok"] is False, answer  # refused (and answered)


@pytest.mark.xfail(
    strict=True,
    reason="review83: Stats keeps a counter and a histogram per unknown command name requested",
)
async def test_unknown_command_names_do_not_grow_the_counters(
    conn: Connection, service: CommandService
) -> None:
    for i in range(FIRST):
        await _unknown(conn, i)
    before = (len(service.stats.commands), len(service.stats.seconds))
    for i in range(FIRST, THEN):
        await _unknown(conn, i)
    after = (len(service.stats.commands), len(service.stats.seconds))
    # Today +12 each (one per name); a fixed label ("unknown") would keep them flat.
    assert after[0] - before[0] < (THEN - FIRST) // 2, f"counters {before[0]} -> {after[0]}"
    assert after[1] - before[1] < (THEN - FIRST) // 2, f"histograms {before[1]} -> {after[1]}"
