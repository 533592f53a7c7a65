"""Review h107 of ``revert --command-id`` reading from the time a UUIDv7 command id carries
(a0accb7): the time is the client's, a hint — any id of that shape must still be reverted,
whatever its 48 bits of time say. Real nats-server, real command service."""

from __future__ import annotations

import time

from netledger.journal.stream import Connection
from netledger.revert_cli import revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.replay.test_revert_command_time import v7

#: the last millisecond a UUIDv7 can carry: year 10889, past Python's datetime (year 9999)
LAST_MS = (1 << 48) - 1


async def allocated(c: Client, command_id: str) -> None:
    [net] = await c.create_networks(label="t", cidr="10.62.0.0/24", mode="flat", bridge="brt")
    await c.allocate_fixed_ip("i-t", network_id=str(net["id"]), host="h2", command_id=command_id)


async def test_an_id_whose_time_is_past_the_year_9999_is_reverted(
    conn: Connection, service: CommandService
) -> None:
    """A command id a client made itself (any 32 hex digits; one in 64 random ones has the
    version and variant of a UUIDv7) may carry a time Python's datetime cannot hold: the
    revert raised ValueError ("year 10889 is out of range") instead of reading the whole
    log."""
    c = Client(conn)
    cid = v7(LAST_MS, 12345)
    await allocated(c, cid)
    r = await revert(conn, c, command_id=cid, dry_run=True)
    assert r["events_found_by"] == "log"
    assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]


async def test_ids_at_the_edges_of_time_are_reverted(
    conn: Connection, service: CommandService
) -> None:
    """The epoch itself (read from the log's start: found there), and the last moment
    datetime holds (nothing is stored then; nats-server, whose times hold only to the year
    2262, starts its read by time anywhere: found, from there or by the whole log)."""
    c = Client(conn)
    [net] = await c.create_networks(label="e", cidr="10.63.0.0/24", mode="flat", bridge="bre")
    last = int(253402300799.999 * 1000)  # 9999-12-31T23:59:59.999Z
    for k, (ms, how) in enumerate(((0, {"command_time"}), (last, {"command_time", "log"}))):
        cid = v7(ms, 777 + k)
        await c.allocate_fixed_ip(f"i-e{k}", network_id=str(net["id"]), host="h2", command_id=cid)
        r = await revert(conn, c, command_id=cid, dry_run=True)
        assert r["events_found_by"] in how, ms
        assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]


async def test_a_revert_of_a_revert_is_found(conn: Connection, service: CommandService) -> None:
    """A revert's own command id is ``revert-<ID>``: made after ``<ID>``, whose time bounds
    the read (it read the whole log before); the revert of a revert undoes the first revert."""
    c = Client(conn)
    cid = v7(int(time.time() * 1000), 4242)
    await allocated(c, cid)
    first = await revert(conn, c, command_id=cid)
    assert first["events_found_by"] == "command_time"
    again = await revert(conn, c, command_id=f"revert-{cid}", dry_run=True)
    assert again["events_found_by"] == "command_time"
    assert [e["type"] for e in again["events"]][-1] == "ChangeReverted"
    assert "FixedIpAllocated" in [e["type"] for e in again["events"]]
