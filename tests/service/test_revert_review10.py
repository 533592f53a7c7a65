"""Review hrev10: revert against a real nats-server and the real command service."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.errors import NetledgerError
from netledger.events.host_events import HostInstancesSeen
from netledger.events.revert import pack_events
from netledger.events.snapshot import state_to_wire
from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import project_until
from netledger.replay.audit import from_index
from netledger.replay.verify_snapshot import fold_to as fold_from_log
from netledger.revert_cli import AlreadyReverted, events_of_command, render, revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy


def query_rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return list(c.execute(sql))


async def gather(calls: list[Any], chunk: int = 50) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(calls), chunk):
        out += await asyncio.gather(*calls[i : i + chunk])
    return out


async def test_a_revert_whose_placements_overflow_one_batch_is_refused_as_too_large(
    conn: Connection, service: CommandService
) -> None:
    """500 floating associations: 500 compensations + the marker fit one atomic batch (the
    decider's check), but each disassociation brings its FloatingIpUnmapped (placement.py):
    1001 messages. The service must refuse it with ``revert_too_large`` (a stable code the CLI
    does not retry), not spin its lane 64 times and answer ``conflict_retries_exhausted``
    ("too many concurrent changes; try again": retrying never helps)."""
    c = Client(conn)
    nets = await c.create_networks(label="f", cidr="10.7.0.0/24", num_networks=1, mode="flat")
    a = await c.allocate_fixed_ip("i-1", network_id=str(nets[0]["id"]), project="p1")
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.18.0.0/23"})
    n = 500
    floats = await gather(
        [
            c.request("floating_ip.allocate", {"project": "p1"}, command_id=f"fa-{i}")
            for i in range(n)
        ]
    )
    start = await last_seq(conn)
    await gather(
        [
            c.request(
                "floating_ip.associate",
                {"address": f["address"], "fixed_address": a["address"], "project": "p1"},
            )
            for f in floats
        ]
    )
    before = await last_seq(conn)
    for dry_run in (True, False):
        with pytest.raises(NetledgerError) as info:
            await revert(conn, c, to_seq=start, scope="pool:pub", dry_run=dry_run)
        assert info.value.code == "revert_too_large", (info.value.code, info.value.message)
    assert await last_seq(conn) == before


async def test_a_reassociation_racing_another_projects_first_allocation(
    conn: Connection, service: CommandService
) -> None:
    """The allocator's association is NetworkAssociated (project subject) + FixedIpAllocated
    (network subject) in one batch: the two checks keep a network from two projects. The
    revert decides on the network's project (its subject) but writes only the project's.
    The interleaving is forced, not timed: p2's allocation is decided and appended while the
    revert's batch (decided on the state before it) waits to be appended."""
    c = Client(conn)
    await c.create_networks(
        label="v", cidr="10.30.0.0/24", num_networks=2, network_size=64, mode="vlan", vlan_start=500
    )
    await c.allocate_fixed_ip("i-1", project="p1")
    nid = service.state.project_networks["p1"]
    await c.deallocate_fixed_ip("i-1")
    await c.request("network.disassociate", {"network_id": nid}, command_id="dis-1")

    real = service.appender.append
    raced: dict[str, Any] = {}

    async def append(messages: list[Any], expected: dict[str, int], *a: Any, **kw: Any) -> int:
        if not raced and any(m.subject.endswith(".revert") for m in messages):
            # p2's first allocation, decided on the state without the revert: the lowest
            # free network is the one the revert gives back to p1.
            raced["p2"] = await c.allocate_fixed_ip("i-2", project="p2")
        return await real(messages, expected, *a, **kw)

    service.appender.append = append  # type: ignore[method-assign]
    try:
        await revert(conn, c, command_id="dis-1")
    except NetledgerError as err:
        raced["refused"] = err.code
    finally:
        service.appender.append = real  # type: ignore[method-assign]
    assert raced["p2"]["network_id"] == nid
    await service.follower.catch_up()
    holders = sorted(p for p, n in service.state.project_networks.items() if n == nid)
    # Correct: the revert conflicts on the network's subject, is decided again and refused
    # (network now associated with p2); the network has one project.
    assert holders == ["p2"], holders
    assert raced.get("refused") == "revert_conflict"


async def test_a_reassociation_folds_projects_audits_and_reverts(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    """The revert of a disassociation appends NetworkAssociated (project's subject) and
    NetworkReassociated (network's subject): the fold from the log, the service's fold and the
    projection agree, the audit of the network names both as the revert's, and the revert of
    the revert undoes the pair with one NetworkDisassociated."""
    c = Client(conn)
    await c.create_networks(
        label="v", cidr="10.33.0.0/24", num_networks=2, network_size=64, mode="vlan", vlan_start=700
    )
    await c.allocate_fixed_ip("i-1", project="p1")
    nid = service.state.project_networks["p1"]
    await c.deallocate_fixed_ip("i-1")
    await c.request("network.disassociate", {"network_id": nid}, command_id="dis-1")
    r = await revert(conn, c, command_id="dis-1")
    assert [(e["type"], e["subject"]) for e in r["events"]] == [
        ("NetworkAssociated", "netledger.evt.project.p1"),
        ("NetworkReassociated", f"netledger.evt.network.{nid}"),
        ("ChangeReverted", "netledger.evt.revert"),
    ]
    assert f"network {nid} given back to project p1" in render(r)
    await service.follower.catch_up()
    assert service.state.project_networks == {"p1": nid}
    assert not service.rejected
    last = await last_seq(conn)
    assert state_to_wire(service.state) == state_to_wire(await fold_from_log(conn, last))
    db = tmp_path / "p.db"
    await project_until(conn, db)
    rows = query_rows(db, "SELECT network_id, project FROM networks WHERE project IS NOT NULL")
    assert rows == [(nid, "p1")]
    audited = {row["type"]: row for row in from_index(db, "network", nid)}
    assert audited["NetworkReassociated"]["reverts"]["command_id"] == "dis-1"
    assert audited["NetworkDisassociated"]["reverted_by"]["command_id"] == "revert-dis-1"

    back = await revert(conn, c, command_id="revert-dis-1")
    assert [e["type"] for e in back["events"]] == ["NetworkDisassociated", "ChangeReverted"]
    await service.follower.catch_up()
    assert service.state.project_networks == {}
    assert service.state.networks[nid].project is None


async def test_revert_of_a_deallocation_on_a_segment_another_project_holds_now(
    conn: Connection, service: CommandService
) -> None:
    """The service refuses it with ``revert_conflict`` (a stable code the CLI does not retry),
    naming why, and appends nothing; p2's network keeps only p2's instances."""
    c = Client(conn)
    await c.create_networks(
        label="v", cidr="10.34.0.0/24", num_networks=2, network_size=64, mode="vlan", vlan_start=800
    )
    await c.allocate_fixed_ip("i-0", project="p1")
    got = await c.allocate_fixed_ip("i-1", project="p1")
    nid = got["network_id"]
    await c.deallocate_fixed_ip("i-0")
    await c.request("fixed_ip.deallocate", {"instance": "i-1"}, command_id="d1")
    await c.request("network.disassociate", {"network_id": nid})
    other = await c.allocate_fixed_ip("j-0", project="p2")
    assert other["network_id"] == nid
    before = await last_seq(conn)
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, command_id="d1")
    assert info.value.code == "revert_conflict"
    assert f"network {nid} is project p2's only since" in info.value.message
    assert await last_seq(conn) == before
    assert {ip.instance for ip in service.state.networks[nid].fixed.values()} == {"j-0"}


async def test_a_revert_across_a_snapshot_boundary(conn: Connection, tmp_path: Path) -> None:
    """A replica started from a snapshot taken after a revert: a retry of the revert (same
    command id) appends nothing, the CLI finds the marker, the revert of the revert is decided
    on the loaded state, and the fold equals the whole log's; so does the projection."""
    # written by hand below, in the event loop (no timing)
    policy = SnapshotPolicy(every_events=0, fork=False)
    a = CommandService(conn, reap_interval=None, snapshots=policy)
    await a.start()
    c = Client(conn)
    try:
        await c.create_networks(
            label="v", cidr="10.31.0.0/24", num_networks=2, network_size=64, mode="vlan"
        )
        got = await c.allocate_fixed_ip("i-1", project="p1", host="h1", command_id="a1")
        first = await revert(conn, c, command_id="a1")
        assert [e["type"] for e in first["events"]] == [
            "FixedIpDeallocated",
            "NetworkDisassociated",
            "ChangeReverted",
        ]
        end = await last_seq(conn)
        await a.follower.wait_for(end)
        assert a.snapshotter is not None and a._settled_seq() == end
        written = await a.snapshotter.write()
        assert written is not None
    finally:
        await a.close()
    b = CommandService(
        conn, reap_interval=None, snapshots=SnapshotPolicy(every_events=0, load=True)
    )
    await b.start()
    try:
        assert b.snapshotter is not None and b.snapshotter.stats.loaded_seq == end
        # The retry of the same revert (same command id, as the CLI sends it) appends nothing.
        again = await c.request(
            "revert",
            {
                "reverted_command_id": "a1",
                "events": pack_events((await events_of_command(conn, "a1"))[0]),
            },
            command_id="revert-a1",
        )
        assert again.get("already_applied") is True
        assert await last_seq(conn) == end
        with pytest.raises(AlreadyReverted):
            await revert(conn, c, command_id="a1")
        redo = await revert(conn, c, command_id="revert-a1")
        assert [e["type"] for e in redo["events"]] == [
            "NetworkAssociated",
            "FixedIpAllocated",
            "ChangeReverted",
        ]
        n = b.state.networks[got["network_id"]]
        assert n.project == "p1" and n.fixed[got["address"]].instance == "i-1"
        await b.follower.catch_up()
        last = await last_seq(conn)
        assert state_to_wire(b.state) == state_to_wire(await fold_from_log(conn, last))
    finally:
        await b.close()
    db = tmp_path / "p.db"
    await project_until(conn, db)
    rows = query_rows(db, "SELECT network_id, project FROM networks WHERE project IS NOT NULL")
    assert rows == [(got["network_id"], "p1")]
    fixed = query_rows(db, "SELECT address, instance, allocated FROM fixed_ips")
    assert fixed == [(got["address"], "i-1", 1)]


async def test_a_reconfirmed_allocation_reverts(conn: Connection, service: CommandService) -> None:
    """An allocation retried while its host does not see the instance appends
    FixedIpReconfirmed (events/decide_fixed.py: it restarts the reclaim grace). That renewal
    is not a change a revert can or need undo — undoing the allocation ends it — yet it had no
    compensation and was not skipped: ``revert --to-seq`` over the allocation was refused as a
    conflict, with no later change conflicting."""
    c = Client(conn)
    nets = await c.create_networks(label="f", cidr="10.8.0.0/24", num_networks=1, mode="flat")
    nid = str(nets[0]["id"])
    start = await last_seq(conn)
    got = await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id="a1")
    # h1's executor reports its bridge of the network without the instance's MAC.
    seen = HostInstancesSeen(host="h1", macs=[], networks=[nid], reason="change")
    env = Envelope(seen, "seen-1:0", "seen-1", time.time(), SYSTEM)
    await conn.js.publish(seen.subject(), encode(env))
    await service.follower.catch_up()
    await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id="a1-again")
    types = [s.event.TYPE for s in (await events_of_command(conn, "a1-again"))[0]]
    assert types == ["FixedIpReconfirmed"]

    r = await revert(conn, c, to_seq=start)
    assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    assert got["address"] not in service.state.networks[nid].fixed
    with pytest.raises(NetledgerError) as info:  # the renewal alone: nothing to undo
        await revert(conn, c, command_id="a1-again")
    assert info.value.code == "nothing_to_revert"


async def test_revert_through_a_projection_behind_inside_the_commands_batch(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    c = Client(conn)
    await c.request(
        "network.create",
        {
            "label": "v",
            "cidr": "10.32.0.0/24",
            "num_networks": 2,
            "network_size": 64,
            "mode": "vlan",
            "vlan_start": 600,
        },
        command_id="mk",
    )
    seqs = [s.seq for s in (await events_of_command(conn, "mk"))[0]]
    assert len(seqs) == 2
    db = tmp_path / "p.db"
    await project_until(conn, db, to_seq=seqs[0])  # a projector that has read half the batch
    try:
        await revert(conn, c, command_id="mk", db=db)
    except NetledgerError:
        pass  # refusing (the projection is behind) would be right too
    live = sorted(n.network_id for n in service.state.live_networks())
    reverted = not live
    untouched = len(live) == 2
    # Never half: either the whole command is undone, or nothing is and it still can be.
    assert reverted or untouched, live
    # Fixed: the index up to the projection's checkpoint, the log after it — the whole command.
    assert reverted


async def test_a_retried_revert_gets_the_first_answer(
    conn: Connection, service: CommandService
) -> None:
    """The client resends a request with the same command id when an answer is late
    (Client.request); the service answers a command that landed from ``seen``
    (service/answers.py: "a retry with the same command id gets the first answer"). For a
    revert that answer lacked what the CLI prints and ``--json`` carries: the reverted command,
    the range, the compensating events, ``appended``."""
    c = Client(conn)
    nets = await c.create_networks(label="f", cidr="10.7.0.0/24", num_networks=1, mode="flat")
    a = await c.allocate_fixed_ip("i-1", network_id=str(nets[0]["id"]), command_id="a1")
    events, _ = await events_of_command(conn, "a1")
    args = {"reverted_command_id": "a1", "events": pack_events(events)}
    first = await c.request("revert", args, command_id="revert-a1")
    end = await last_seq(conn)
    again = await c.request("revert", args, command_id="revert-a1")
    assert await last_seq(conn) == end  # nothing appended twice
    assert {k: again.get(k) for k in first} == first
    text = render(again)
    assert text.startswith("reverted command a1 as command revert-a1:"), text
    assert f"{a['address']} deallocated from i-1" in text
