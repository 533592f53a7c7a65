"""Review h108: the time a command id carries, and ``--since``, at the edges of what a time is.

A client's own command id may be any 32 hex digits — an MD5 digest, say — and one in 64 of
those reads as a UUIDv7 (its version nibble 7, its variant 10): its "time" is whatever its first
48 bits are, up to the year 10889, beyond what a ``datetime`` holds (one MD5 id in ~700).
``revert --command-id`` of such a command failed with ``ValueError: year 10889 is out of
range`` instead of taking the id for one that carries no time (the whole log read). So did a
``--since`` within a minute of the year 1 (the read starts a minute earlier).

Real nats-server and command service.
"""

from __future__ import annotations

import datetime

from netledger.events.ids import command_time
from netledger.journal.stream import Connection
from netledger.replay.revert_reads import events_of_command
from netledger.revert_cli import revert
from netledger.service.client import Client
from netledger.service.service import CommandService

#: 32 hex digits a client may well use (an MD5 digest's shape) that read as a UUIDv7 of the
#: year 10889
NOT_A_TIME = "ffffffffffff7fffbfffffffffffffff"


async def test_an_id_whose_time_no_datetime_holds_reads_the_whole_log(
    conn: Connection, service: CommandService
) -> None:
    made = command_time(NOT_A_TIME)
    assert (
        made is not None and made > datetime.datetime.max.replace(tzinfo=datetime.UTC).timestamp()
    )
    c = Client(conn)
    (net,) = await c.create_networks(label="t", cidr="10.88.0.0/24", mode="flat")
    await c.allocate_fixed_ip("i-md5", network_id=net["id"], command_id=NOT_A_TIME)
    r = await revert(conn, c, command_id=NOT_A_TIME, dry_run=True)
    assert r["events_found_by"] == "log"
    assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]


async def test_a_since_at_the_year_1_reads_from_the_start(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    (net,) = await c.create_networks(label="y", cidr="10.89.0.0/24", mode="flat")
    await c.allocate_fixed_ip("i-1", network_id=net["id"], command_id="early")
    since = datetime.datetime(1, 1, 1, tzinfo=datetime.UTC)
    events, marks = await events_of_command(conn, "early", since=since)
    assert [type(s.event).__name__ for s in events] == ["FixedIpAllocated"] and not marks
