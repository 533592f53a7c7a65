"""``revert --command-id ID`` for an id netledger's client made: a UUIDv7 carries the
millisecond it was made, so the command's events are read from then on — no ``--since``, no
projection, and not the whole log (issue 13: a cost that follows the command, not the log's age).

Against a real nats-server and the real command service; the read is measured by the messages
the revert reports it read (``log_messages_read``), never by a clock."""

from __future__ import annotations

import json
import time
import uuid

from hypothesis import given
from hypothesis import strategies as st

from netledger.events.ids import command_time
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import revert
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.replay.test_revert_since import BEFORE, busy_log
from tests.service.test_revert import cli


def v7(ms: int, rand: int = 0) -> str:
    """A UUIDv7 of millisecond ``ms`` (RFC 9562's layout), as 32 hex digits."""
    n = ms << 80 | 7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return uuid.UUID(int=n).hex


def test_a_new_command_id_is_a_uuid7_of_now() -> None:
    before = time.time()
    ids = [new_command_id() for _ in range(10_000)]
    after = time.time()
    assert len(set(ids)) == len(ids)
    for i in ids[:100]:
        u = uuid.UUID(hex=i)
        assert (u.version, u.variant, len(i), i) == (7, uuid.RFC_4122, 32, u.hex)
        made = command_time(i)
        assert made is not None and int(before * 1000) / 1000 <= made <= after


@given(st.integers(0, (1 << 48) - 1), st.integers(0, (1 << 80) - 1))
def test_command_time_is_the_ids_millisecond(ms: int, rand: int) -> None:
    assert command_time(v7(ms, rand)) == ms / 1000


@given(st.text(max_size=40))
def test_any_other_id_has_no_time(text: str) -> None:
    got = command_time(text)
    assert got is None or (len(text) == 32 and uuid.UUID(hex=text).version == 7)


def test_ids_that_carry_no_time() -> None:
    seven = v7(1_700_000_000_000, 12345)
    for other in (
        uuid.uuid4().hex,  # what the client gave before
        "target",
        seven.upper(),  # not as the client writes it
        str(uuid.UUID(hex=seven)),  # with dashes
        "0x" + seven[2:],  # int() would take it
        seven[:12] + "4" + seven[13:],  # version 4
        seven[:16] + "c" + seven[17:],  # another variant
    ):
        assert command_time(other) is None, other


async def test_revert_reads_from_the_time_the_id_carries(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    _, net = await busy_log(c)
    cid = new_command_id()
    await c.allocate_fixed_ip("i-made", network_id=net, host="h2", command_id=cid)
    end = await last_seq(conn)
    # slack 0: the BEFORE allocations were stored before the id was made; the default minute
    # of slack for clocks would reach back over this whole test.
    r = await revert(conn, c, command_id=cid, slack=0, dry_run=True)
    assert r["events_found_by"] == "command_time"
    assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    assert r["log_messages_read"] <= 3 < BEFORE < end


async def test_an_id_whose_time_finds_nothing_reads_the_whole_log(
    conn: Connection, service: CommandService
) -> None:
    """The id's time is the client's clock: an hour ahead, the read from it finds nothing, and
    the whole log is read rather than the command called missing."""
    c = Client(conn)
    _, net = await busy_log(c)
    ahead = v7(int((time.time() + 3600) * 1000), 99)
    await c.allocate_fixed_ip("i-ahead", network_id=net, host="h2", command_id=ahead)
    end = await last_seq(conn)
    r = await revert(conn, c, command_id=ahead, slack=0, dry_run=True)
    assert r["events_found_by"] == "log"
    assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    assert r["log_messages_read"] >= end


async def test_the_cli_says_nothing_of_a_whole_read(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    c = Client(conn)
    _, net = await busy_log(c)
    cid = new_command_id()
    await c.allocate_fixed_ip("i-cli", network_id=net, host="h2", command_id=cid)
    rc, out, err = await cli(nats_url, "revert", "--command-id", cid, "--dry-run", "--json")
    assert rc == 0, err
    got = json.loads(out)
    assert got["events_found_by"] == "command_time"
    assert "read the whole log" not in err
