"""``revert --command-id ID --since TIME``: the command's events found among the messages
stored since TIME — a read that costs what follows the command, not the log's age (issue 13).

Against a real nats-server and the real command service; the read is measured by the messages
the revert reports it read (``log_messages_read``), never by a clock."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from netledger.events.codec import Envelope, decode, encode
from netledger.events.revert import NothingToRevert
from netledger.events.types import FixedIpLeased
from netledger.journal.stream import Connection, last_seq
from netledger.replay.reader import first_seq_at, read_range
from netledger.replay.revert_reads import FIRST_WINDOW, LogRead, events_of_command
from netledger.replay.times import iso
from netledger.revert_cli import ConflictingOptions, revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_revert import cli

#: unrelated allocations before the command: what a read from seq 1 pays for
BEFORE = 150
#: and after it, before the revert
AFTER = 10


def utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)


async def command_seqs(conn: Connection, command_id: str) -> tuple[list[int], float]:
    """The sequences of ``command_id``'s messages and the time they carry (a test's own full
    read, not the revert's)."""
    seqs, when = [], 0.0
    async for m in read_range(conn, 1):
        env = decode(m.data)
        if env.command_id == command_id:
            seqs.append(m.seq)
            when = env.time
    return seqs, when


async def busy_log(c: Client) -> tuple[str, str]:
    """A log with BEFORE unrelated allocations, the allocation ``target`` on another network,
    then AFTER unrelated ones; (the busy network, the target's network)."""
    busy = await c.create_networks(label="b", cidr="10.60.0.0/23", num_networks=1, mode="flat")
    other = await c.create_networks(label="t", cidr="10.61.0.0/24", num_networks=1, mode="flat")
    busy_id, target_net = str(busy[0]["id"]), str(other[0]["id"])
    for i in range(BEFORE):
        await c.allocate_fixed_ip(f"old-{i}", network_id=busy_id, host="h1")
    await c.allocate_fixed_ip("i-target", network_id=target_net, host="h2", command_id="target")
    for i in range(AFTER):
        await c.allocate_fixed_ip(f"new-{i}", network_id=busy_id, host="h1")
    return busy_id, target_net


async def test_since_reads_what_was_stored_since_not_the_log(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    _, target_net = await busy_log(c)
    seqs, when = await command_seqs(conn, "target")
    end = await last_seq(conn)
    assert end > BEFORE  # the log before the command is long

    # From seq 1: the whole log is read.
    whole = LogRead()
    events, marks = await events_of_command(conn, "target", read=whole)
    assert [s.seq for s in events] == seqs and not marks
    assert whole.messages == end

    # From the command's time (the one the service stamped on it, as audit shows it): only
    # what was stored from the command on; nothing before it.
    since = utc(when)
    bounded = LogRead()
    events, marks = await events_of_command(conn, "target", since=since, read=bounded, slack=0)
    assert [s.seq for s in events] == seqs and not marks
    assert bounded.messages == end - seqs[0] + 1
    assert bounded.messages < BEFORE

    # The revert itself, end to end, with the count in its result.
    r = await revert(conn, c, command_id="target", since=since, slack=0)
    assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    assert r["log_messages_read"] == end - seqs[0] + 1
    assert "i-target" not in service.state.networks[target_net].by_instance
    # Its marker is stored after the command: a second revert from the same time finds it.
    again = LogRead()
    events, marks = await events_of_command(conn, "target", since=since, read=again, slack=0)
    assert [m.command_id for m in marks] == ["revert-target"]
    assert again.messages == await last_seq(conn) - seqs[0] + 1


async def test_a_since_after_the_command_finds_nothing_and_says_so(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    await busy_log(c)
    last = await conn.js.get_msg(conn.stream, await last_seq(conn))
    assert last.data is not None
    after = utc(decode(last.data).time + 1.0)  # after everything stored: nothing to read
    assert await first_seq_at(conn, after) is None
    with pytest.raises(NothingToRevert, match="give an earlier --since"):
        await revert(conn, c, command_id="target", since=after, slack=0)


async def test_a_since_inside_a_command_reads_back_to_its_start(conn: Connection) -> None:
    """A command's events all carry the time it was decided; one stored after ``since`` but
    stamped before it began earlier, and its events stored before ``since`` are read too:
    never half a command."""

    def lease(n: int, when: float, command_id: str) -> bytes:
        ev = FixedIpLeased(
            network_id="7", address=f"10.0.0.{n}", mac="02:00:00:00:00:01", instance="i"
        )
        return encode(Envelope(ev, f"e{n}", command_id, when))

    subject = "netledger.evt.network.7"
    for n in range(1, 21):  # unrelated, stored before the command began
        await conn.js.publish(subject, lease(n, time.time(), f"old-{n}"))
    began = time.time()  # after those were acknowledged: stored before it
    first = await conn.js.publish(subject, lease(100, began, "split"))
    for n in range(21, 26):  # others' messages between the command's two parts
        await conn.js.publish(subject, lease(n, time.time(), f"mid-{n}"))
    second = await conn.js.publish(subject, lease(101, began, "split"))
    stored = await conn.js.get_msg(conn.stream, second.seq)
    assert stored.time is not None
    # --since the second part's store time (to the microsecond): after the first part's.
    since = stored.time.replace(tzinfo=stored.time.tzinfo or datetime.UTC)
    assert await first_seq_at(conn, since) == second.seq

    read = LogRead()
    events, _ = await events_of_command(conn, "split", since=since, read=read, slack=0)
    assert [s.seq for s in events] == [first.seq, second.seq]
    # back to the command's own time, not to seq 1: the 20 older messages are not read
    assert read.messages == second.seq - first.seq + 1


async def test_conflicting_options_are_refused(conn: Connection, service: CommandService) -> None:
    c = Client(conn)
    now = datetime.datetime.now(datetime.UTC)
    with pytest.raises(ConflictingOptions, match="--command-id"):
        await revert(conn, c, to_seq=0, since=now)
    with pytest.raises(ConflictingOptions, match="not both"):
        await revert(conn, c, command_id="x", since=now, db=__file__)  # type: ignore[arg-type]


async def test_the_cli(conn: Connection, service: CommandService, nats_url: str) -> None:
    c = Client(conn)
    await busy_log(c)
    seqs, when = await command_seqs(conn, "target")
    end = await last_seq(conn)
    shown = iso(when)  # as `netledger audit` prints it (to the millisecond)
    assert shown is not None
    rc, out, err = await cli(
        nats_url, "revert", "--command-id", "target", "--since", shown, "--dry-run", "--json"
    )
    assert rc == 0, err
    got = json.loads(out)
    assert [e["type"] for e in got["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    # The default minute of slack for clocks reaches back before the command here (the whole
    # test ran within it); what --since bounds is shown by the tests above.
    assert 0 < got["log_messages_read"] <= end
    assert "read the whole log" not in err

    rc, out, err = await cli(nats_url, "revert", "--command-id", "target", "--dry-run")
    assert rc == 0, err
    assert f"read the whole log ({end} messages) for command target" in err

    rc, _, err = await cli(nats_url, "revert", "--to-seq", "3", "--since", shown)
    assert rc == 1 and "error [conflicting_options]" in err
    rc, _, err = await cli(nats_url, "revert", "--command-id", "target", "--since", "yesterday")
    assert rc == 1 and "error [bad_time]" in err
    rc, _, err = await cli(
        nats_url, "revert", "--command-id", "target", "--since", "2026-01-01T10:00:00"
    )
    assert rc == 1 and "error [naive_time]" in err
    assert seqs  # (nothing was appended by the dry runs and the refusals)
    assert await last_seq(conn) == end


async def test_whose_a_freed_address_was_is_read_back_from_the_deallocation(
    conn: Connection, service: CommandService
) -> None:
    """The project of the allocation a deallocation ended (docs/revert.md "whose it was") is
    read from the network's subject back from the deallocation, in widening windows: the
    read stops at the allocation, whatever the network's history before it."""
    c = Client(conn)
    nets = await c.create_networks(
        label="f", cidr="10.62.0.0/22", num_networks=1, network_size=1024, mode="flat"
    )
    nid = str(nets[0]["id"])
    history = 3 * FIRST_WINDOW
    for i in range(history):  # the network's history before the allocation
        await c.allocate_fixed_ip(f"old-{i}", network_id=nid, project="p-old")
    mine = await c.allocate_fixed_ip("i-x", network_id=nid, project="p-x", command_id="alloc-x")
    for i in range(AFTER):
        await c.allocate_fixed_ip(f"mid-{i}", network_id=nid, project="p-old")
    await c.request("fixed_ip.deallocate", {"instance": "i-x"}, command_id="dealloc-x")
    (alloc,), _ = await command_seqs(conn, "alloc-x")
    (dealloc,), when = await command_seqs(conn, "dealloc-x")
    end = await last_seq(conn)

    r = await revert(conn, c, command_id="dealloc-x", since=utc(when), slack=0, dry_run=True)
    back = r["events"][0]
    assert (back["type"], back["data"]["address"]) == ("FixedIpAllocated", mine["address"])
    assert back["data"]["project"] == "p-x"  # the allocation's own: the network holds none
    # The command from its time on, then the subject back to the allocation: within the
    # first window here, which is all that is read of the network's history.
    assert dealloc - alloc < FIRST_WINDOW
    assert r["log_messages_read"] <= (end - dealloc + 1) + FIRST_WINDOW
    assert r["log_messages_read"] < history
