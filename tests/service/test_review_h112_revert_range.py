"""Review h112: ``revert --command-id X`` after a ``--to-seq`` range revert that covered X.

A range revert writes its marker under its own command id (``revert-seq-N-M``), so the look
for ``revert-X`` alone missed it: X was compensated a second time where the state allowed it
(undoing a later change), else refused with a conflict that did not say why. Against a real
nats-server and the real command service."""

from __future__ import annotations

import pytest

from netledger.events.errors import NetledgerError
from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.replay.revert_reads import LogRead, events_of_command
from netledger.revert_cli import AlreadyReverted, revert
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_revert import flat


async def test_an_address_freed_by_a_range_and_held_by_another_instance_is_not_freed(
    conn: Connection, service: CommandService
) -> None:
    """X's address, freed by the range revert and since allocated to another instance: the
    revert of X is told X was reverted (by the range's id), appending nothing. Before: a
    ``revert_conflict`` ('no longer allocated to i-1: now i-2'), which said nothing of the
    range revert that had already undone X."""
    c = Client(conn)
    nid = await flat(c)
    n = await last_seq(conn)
    x = new_command_id()
    a = await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id=x)
    ranged = await revert(conn, c, to_seq=n)
    assert ranged["revert_command_id"] == f"revert-seq-{n}-{ranged['upto_seq']}"
    b = await c.allocate_fixed_ip("i-2", network_id=nid, host="h1")
    assert b["address"] == a["address"]  # the lowest free address: X's
    before = await last_seq(conn)

    with pytest.raises(AlreadyReverted) as info:
        await revert(conn, c, command_id=x)
    assert info.value.code == "already_reverted"
    assert ranged["revert_command_id"] in info.value.message
    assert info.value.details["command_id"] == ranged["revert_command_id"]
    assert await last_seq(conn) == before
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-2"


async def test_a_deallocation_reverted_by_a_range_is_not_compensated_twice(
    conn: Connection, service: CommandService
) -> None:
    """X deallocated i-1; the range revert gave the address back; i-1 was deallocated again
    since (a later change). Before: the revert of X allocated the address to i-1 once more —
    X compensated twice, the later deallocation undone."""
    c = Client(conn)
    nid = await flat(c)
    a = await c.allocate_fixed_ip("i-1", network_id=nid, host="h1")
    n = await last_seq(conn)
    x = new_command_id()
    await c.request("fixed_ip.deallocate", {"instance": "i-1", "network_id": nid}, command_id=x)
    ranged = await revert(conn, c, to_seq=n)
    assert [e["type"] for e in ranged["events"]] == ["FixedIpAllocated", "ChangeReverted"]
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-1"
    await c.deallocate_fixed_ip("i-1", nid)  # a later change
    assert a["address"] not in service.state.networks[nid].fixed
    before = await last_seq(conn)

    with pytest.raises(AlreadyReverted) as info:
        await revert(conn, c, command_id=x, dry_run=True)
    assert info.value.details["command_id"] == ranged["revert_command_id"]
    with pytest.raises(AlreadyReverted):
        await revert(conn, c, command_id=x)
    assert await last_seq(conn) == before
    assert a["address"] not in service.state.networks[nid].fixed


async def test_a_command_partly_reverted_by_a_scoped_range_is_refused_naming_what(
    conn: Connection, service: CommandService
) -> None:
    """A range revert within one network's scope undid part of a command that created two:
    the revert of the command is refused as already (partly) reverted, naming the sequences
    the range undid — not a conflict about a network that 'no longer exists'."""
    c = Client(conn)
    n = await last_seq(conn)
    x = new_command_id()
    nets = await c.request(
        "network.create",
        {"label": "two", "cidr": "10.9.0.0/24", "num_networks": 2, "network_size": 64},
        command_id=x,
    )
    first = str(nets["networks"][0]["id"])
    ranged = await revert(conn, c, to_seq=n, scope=f"network:{first}")
    assert first not in service.state.networks
    before = await last_seq(conn)
    with pytest.raises(AlreadyReverted) as info:
        await revert(conn, c, command_id=x)
    assert info.value.details["command_id"] == ranged["revert_command_id"]
    assert info.value.details["seqs"] == ranged["reverted_seqs"]
    assert await last_seq(conn) == before


async def test_the_range_marker_is_found_from_the_revert_subject_after_the_command(
    conn: Connection, service: CommandService
) -> None:
    """The look for a range marker reads only the revert markers' subject from the command on:
    what it costs is the reverts since the command, not the log before it (nor its length)."""
    from netledger.replay.revert_reads import reverted_by  # (added by review h112)

    c = Client(conn)
    nid = await flat(c)
    for i in range(40):  # the log before the command
        await c.allocate_fixed_ip(f"old-{i}", network_id=nid, host="h1")
    n = await last_seq(conn)
    x = new_command_id()
    await c.allocate_fixed_ip("i-x", network_id=nid, host="h1", command_id=x)
    for i in range(20):  # and after it
        await c.allocate_fixed_ip(f"new-{i}", network_id=nid, host="h1")
    events, marks = await events_of_command(conn, x)
    assert events and not marks
    read = LogRead()
    assert await reverted_by(conn, events, read) == []
    assert read.messages == 0  # no revert since the command: nothing on the markers' subject
    ranged = await revert(conn, c, to_seq=n, scope=f"network:{nid}")
    read = LogRead()
    got = await reverted_by(conn, events, read)
    assert [m.command_id for m in got] == [ranged["revert_command_id"]]
    assert read.messages == 1  # the one marker since
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, command_id=x)
    assert info.value.code == "already_reverted"
