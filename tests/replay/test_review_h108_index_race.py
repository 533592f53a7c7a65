"""Review h108: the projection a revert reads is a running serve's, written while it is read.

``_index_seqs`` read the command's rows of the events index, then — a second statement, another
read transaction — the projection's checkpoint, and read the log after that checkpoint. A
projector commit between the two (a running serve projects as the revert reads) put messages
of the command in neither: at or below the newer checkpoint (not read from the log) but not in
the rows read before it. A command whose first message the projector committed then was found
without it — half a command reverted under its marker. ``_index_allocations`` read the same way
(an allocation committed in between: its deallocation's owner unknown).

The interleaving is forced, not waited for: the revert's read-only connection to the projection
gets a trace callback that, as its second statement starts, has the real projector (its
``Writer``, the serve's own transaction: rows and checkpoint together) commit the next message.
Real nats-server, command service, projection file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from netledger.events.types import FixedIpDeallocated
from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.projector.store import RawTuple, Writer
from netledger.replay import revert_reads
from netledger.replay.reader import read_range
from netledger.replay.revert_reads import events_of_command, owners_of
from netledger.revert_cli import AlreadyReverted, revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.replay.test_review_h108_restored_log import seqs_of


async def raw(conn: Connection, seq: int) -> RawTuple:
    """The message ``seq`` as the projector's reader hands it to its writer."""
    async for m in read_range(conn, seq, seq):
        return (m.seq, m.subject, m.data, m.stream_time, 0)
    raise AssertionError(f"no message {seq}")


def commit_between_statements(
    monkeypatch: pytest.MonkeyPatch, db: Path, messages: list[RawTuple]
) -> list[str]:
    """Have the projector commit ``messages`` into ``db`` as the revert's next read connection
    to it starts its second statement; the statements it ran, in order."""
    opened = revert_reads._open_index
    ran: list[str] = []

    def hooked(path: Path) -> sqlite3.Connection:
        c = opened(path)

        def on_statement(sql: str) -> None:
            ran.append(sql)
            if len(ran) == 2 and messages:
                w = Writer(db)
                try:
                    w.apply(messages)
                finally:
                    w.close()
                messages.clear()

        c.set_trace_callback(on_statement)
        return c

    monkeypatch.setattr(revert_reads, "_open_index", hooked)
    return ran


async def test_a_projector_commit_between_the_index_and_its_checkpoint_loses_nothing(
    conn: Connection, service: CommandService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Client(conn)
    (net,) = await c.create_networks(label="a", cidr="10.82.0.0/24", mode="flat")
    for i in range(3):
        await c.allocate_fixed_ip(f"old-{i}", network_id=net["id"], host="h1")
    db = tmp_path / "projection.db"
    checkpoint = await project_until(conn, db)
    # One command, several messages (one atomic batch), after the projection's checkpoint.
    await c.request(
        "network.create",
        {"label": "s", "cidr": "10.83.0.0/24", "num_networks": 2, "mode": "flat"},
        command_id="two",
    )
    seqs = await seqs_of(conn, "two")
    assert len(seqs) >= 2 and seqs[0] == checkpoint + 1
    whole, _ = await events_of_command(conn, "two")
    assert [s.seq for s in whole] == seqs

    # The serve projects the command's first message while the revert reads the projection.
    ran = commit_between_statements(monkeypatch, db, [await raw(conn, seqs[0])])
    events, marks = await events_of_command(conn, "two", db)
    assert len(ran) == 2  # the commit happened between the revert's two reads
    assert [s.seq for s in events] == seqs and not marks


async def test_an_allocation_committed_between_the_index_and_its_checkpoint_is_found(
    conn: Connection, service: CommandService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = Client(conn)
    (net,) = await c.create_networks(label="o", cidr="10.84.0.0/24", mode="flat")
    await c.allocate_fixed_ip("other", network_id=net["id"], host="h1")
    db = tmp_path / "projection.db"
    checkpoint = await project_until(conn, db)
    await c.allocate_fixed_ip("i-1", network_id=net["id"], host="h1", project="p-1")
    await c.request(
        "fixed_ip.deallocate", {"instance": "i-1", "network_id": net["id"]}, command_id="free"
    )
    freed, _ = await events_of_command(conn, "free")
    (gone,) = [s for s in freed if isinstance(s.event, FixedIpDeallocated)]
    allocated = list(range(checkpoint + 1, gone.seq))
    # The projection takes in the allocation (all the messages up to the deallocation) while
    # the revert asks its index whose the address was.
    ran = commit_between_statements(monkeypatch, db, [await raw(conn, s) for s in allocated])
    owners = await owners_of(conn, freed, db)
    assert len(ran) >= 2
    assert owners == {gone.seq: "p-1"}


async def test_a_revert_marker_in_the_index_is_found(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    """A command reverted once is found reverted through the index (its marker's row), not
    reverted again."""
    c = Client(conn)
    (net,) = await c.create_networks(label="m", cidr="10.85.0.0/24", mode="flat")
    await c.allocate_fixed_ip("i-m", network_id=net["id"], command_id="once")
    await revert(conn, c, command_id="once")
    db = tmp_path / "projection.db"
    await project_until(conn, db)
    _, marks = await events_of_command(conn, "once", db)
    assert [type(s.event).__name__ for s in marks] == ["ChangeReverted"]
    with pytest.raises(AlreadyReverted):
        await revert(conn, c, command_id="once", db=db)
