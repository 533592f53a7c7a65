"""Review hrev83 (issue 13: costs follow change, not age): the command service's counters kept
an entry per distinct command *name* a request ever used, known or not. Now a name that is no
command is counted as ``unknown`` (service/stats.py ``Stats.count``).

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


async def test_unknown_command_names_do_not_grow_the_counters(
    conn: Connection, service: CommandService
) -> None:
    for i in range(FIRST):
        await _unknown(conn, i)
    before = (len(service.stats.commands), len(service.stats.seconds))
    for i in range(FIRST, THEN):
        await _unknown(conn, i)
    after = (len(service.stats.commands), len(service.stats.seconds))
    # Before the fix +12 each (one per name); the fixed label ("unknown") keeps them flat.
    assert after[0] - before[0] < (THEN - FIRST) // 2, f"counters {before[0]} -> {after[0]}"
    assert after[1] - before[1] < (THEN - FIRST) // 2, f"histograms {before[1]} -> {after[1]}"


async def test_unknown_names_are_counted_under_one_label_and_known_ones_by_name(
    conn: Connection, service: CommandService
) -> None:
    for i in range(4):
        await _unknown(conn, i)
    reply = await conn.nc.request(
        f"{COMMAND_PREFIX}.network.list", msgpack.packb({"args": {}}), timeout=10
    )
    assert msgpack.unpackb(reply.data)["ok"] is True
    st = service.stats
    assert st.commands == {"unknown:unknown_command": 4, "network.list:ok": 1}
    assert {name: b.count for name, b in st.seconds.items()} == {"unknown": 4, "network.list": 1}
