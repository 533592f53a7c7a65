"""Review h108: whose a freed address was, read back from the deallocation in widening windows
(replay/revert_reads.py ``_read_allocations``) — at its edges.

The address given again to another instance of another project after the deallocation (the
newest allocation *before* the deallocation is the one it ended, not the newest), the windows
reaching seq 1 (the allocation is the network's first message), the network's subject with
gaps (another network's messages between its own), two deallocations of one address in one
range. Each answer is the one a read of the whole subject gives. Real nats-server, the real
command service.
"""

from __future__ import annotations

from netledger.journal.stream import Connection
from netledger.replay.revert_reads import (
    FIRST_WINDOW,
    LogRead,
    events_after,
    events_of_command,
    owners_of,
)
from netledger.service.client import Client
from netledger.service.service import CommandService


async def test_the_allocation_a_deallocation_ended_across_windows_and_reuse(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    (net,) = await c.create_networks(label="w", cidr="10.86.0.0/22", network_size=1024, mode="flat")
    (other,) = await c.create_networks(label="x", cidr="10.87.0.0/24", mode="flat")
    nid = str(net["id"])
    mine = await c.allocate_fixed_ip("i-x", network_id=nid, project="p-x")
    between = 2 * FIRST_WINDOW + 10  # the windows 256, 512 and down to seq 1
    for i in range(between):
        await c.allocate_fixed_ip(f"n-{i}", network_id=nid, project="p-n")
        if i % 16 == 0:  # the subject's gaps: another network's messages
            await c.allocate_fixed_ip(f"o-{i}", network_id=str(other["id"]), project="p-o")
    await c.request("fixed_ip.deallocate", {"instance": "i-x"}, command_id="free-x")
    # The address given again, to another instance of another project, and freed again.
    again = await c.allocate_fixed_ip("i-y", network_id=nid, project="p-y", command_id="y")
    assert again["address"] == mine["address"]
    await c.request("fixed_ip.deallocate", {"instance": "i-y"}, command_id="free-y")

    (free_x,), _ = await events_of_command(conn, "free-x")
    (free_y,), _ = await events_of_command(conn, "free-y")
    (alloc_y,), _ = await events_of_command(conn, "y")

    read = LogRead()
    assert await owners_of(conn, [free_x], read=read) == {free_x.seq: "p-x"}
    assert read.messages >= between  # back to the allocation, down to the subject's start
    read = LogRead()
    assert await owners_of(conn, [free_y], read=read) == {free_y.seq: "p-y"}
    assert read.messages < FIRST_WINDOW  # the reuse is right before it: the first window
    # One range holding both deallocations and the allocation between them: the first
    # deallocation's owner is read back (the range holds its allocation's successor only);
    # the second's allocation is in the range (the service finds it there).
    ranged = [s for s in await events_after(conn, free_x.seq - 1, None) if s.seq >= free_x.seq]
    assert [s.seq for s in ranged] == [free_x.seq, alloc_y.seq, free_y.seq]
    assert await owners_of(conn, ranged) == {free_x.seq: "p-x"}
