"""Reverting a deallocation gives a freed address back with the project it had.

``FixedIpDeallocated`` records no project; the allocation it ended does. The revert client
finds that allocation in the log (the network's subject, or the projection's events index with
``--db``) and sends its project with the events (``owners``); the service takes it where the
network's own project cannot say (no project holds the network now, or holds it only since
the deallocation). Against a real nats-server and the real command service, plus the pure rule
on a bare State.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.errors import InvalidField, NetledgerError
from netledger.events.revert import (
    RevertConflict,
    StoredEvent,
    compensate,
    pack_events,
    pack_owners,
)
from netledger.events.snapshot import state_to_wire
from netledger.events.state import State
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated
from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import project_until
from netledger.replay import audit
from netledger.replay.verify_snapshot import fold_to as fold_from_log
from netledger.revert_cli import _owners, _undone_in, events_of_command, owners_of, revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.events.test_revert_compensate import History, snapshot


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as c:
        return list(c.execute(sql, args))


async def vlan(c: Client, cidr: str, vlan_start: int) -> None:
    await c.create_networks(
        label="v", cidr=cidr, num_networks=2, network_size=64, mode="vlan", vlan_start=vlan_start
    )


async def freed_on_a_network_no_project_holds(
    c: Client, service: CommandService, cidr: str, vlan_start: int
) -> tuple[str, str]:
    """i-1 allocated for p1 on p1's segment, deallocated (command d1: freed, no lease), then
    the segment disassociated (it must be empty for that): (network, address). (i-0 before
    it, gone first, leaves a lower address free for the segment's next user.)"""
    await vlan(c, cidr, vlan_start)
    await c.allocate_fixed_ip("i-0", project="p1", host="h1")
    got = await c.allocate_fixed_ip("i-1", project="p1", host="h1")
    nid = got["network_id"]
    await c.deallocate_fixed_ip("i-0")
    await c.request("fixed_ip.deallocate", {"instance": "i-1"}, command_id="d1")
    await c.request("network.disassociate", {"network_id": nid})
    assert service.state.networks[nid].project is None
    assert got["address"] not in service.state.networks[nid].fixed
    return nid, got["address"]


@pytest.mark.parametrize("through", ["log", "index", "index-behind"])
async def test_a_freed_address_goes_back_with_its_project_on_a_network_no_project_holds(
    conn: Connection, service: CommandService, tmp_path: Path, through: str
) -> None:
    """The service's fold, the fold of the whole log, the projection and the audit (index and
    log) all say p1. ``through``: how the client finds the allocation — the network's subject,
    the projection's index, or an index whose checkpoint lies before the allocation (the
    subject after it)."""
    c = Client(conn)
    nid, address = await freed_on_a_network_no_project_holds(c, service, "10.40.0.0/24", 900)
    db: Path | None = None
    if through != "log":
        db = tmp_path / "index.db"
        alloc = [s for s in await log_of(conn) if isinstance(s.event, FixedIpAllocated)]
        await project_until(
            conn, db, to_seq=alloc[0].seq - 1 if through == "index-behind" else None
        )
    events, _ = await events_of_command(conn, "d1", db)
    assert await owners_of(conn, events, db) == {events[0].seq: "p1"}

    r = await revert(conn, c, command_id="d1", db=db)
    assert [(e["type"], e["data"].get("project")) for e in r["events"]] == [
        ("FixedIpAllocated", "p1"),
        ("ChangeReverted", None),
    ]
    n = service.state.networks[nid]
    assert n.project is None  # the segment is not handed back: the disassociation stands
    ip = n.fixed[address]
    assert (ip.instance, ip.project, ip.allocated) == ("i-1", "p1", True)
    await service.follower.catch_up()
    assert not service.rejected
    assert state_to_wire(service.state) == state_to_wire(
        await fold_from_log(conn, await last_seq(conn))
    )

    projection = tmp_path / "after.db"
    await project_until(conn, projection)
    assert query(
        projection, "SELECT instance, project FROM fixed_ips WHERE address = ?", address
    ) == [("i-1", "p1")]
    assert query(projection, "SELECT project FROM networks WHERE network_id = ?", nid) == [(None,)]
    by_index = [audit.present(x) for x in audit.from_index(projection, "address", address)]
    by_log = [audit.present(x) for x in await audit.from_log(conn, "address", address)]
    for shown in (by_index, by_log):
        assert [(p["type"], p["data"].get("project")) for p in shown] == [
            ("FixedIpAllocated", "p1"),
            ("FixedIpDeallocated", None),
            ("FixedIpAllocated", "p1"),
        ]
        assert shown[1]["reverted_by"]["command_id"] == "revert-d1"
        assert shown[2]["reverts"]["command_id"] == "d1"
    # It names its project now, so an audit by project finds it too.
    by_project = [audit.present(x) for x in audit.from_index(projection, "project", "p1")]
    assert any(p.get("reverts", {}).get("command_id") == "d1" for p in by_project)


async def log_of(conn: Connection) -> list[StoredEvent]:
    from netledger.revert_cli import _scan

    return await _scan(conn, 1, lambda s: True)


async def test_a_range_revert_on_a_flat_network_keeps_each_allocations_project(
    conn: Connection, service: CommandService
) -> None:
    """Flat networks hold no project; each allocation names its own. A revert of everything
    after the allocations (their deallocations) gives each its own project back, read from
    the network's subject before the range."""
    c = Client(conn)
    nets = await c.create_networks(label="f", cidr="10.41.0.0/24", num_networks=1, mode="flat")
    nid = str(nets[0]["id"])
    got = {p: await c.allocate_fixed_ip(f"i-{p}", network_id=nid, project=p) for p in ("p1", "p2")}
    start = await last_seq(conn)
    for p in got:
        await c.deallocate_fixed_ip(f"i-{p}")
    r = await revert(conn, c, to_seq=start)
    back = {e["data"]["instance"]: e["data"]["project"] for e in r["events"][:-1]}
    assert back == {"i-p1": "p1", "i-p2": "p2"}
    fixed = service.state.networks[nid].fixed
    assert {fixed[g["address"]].project for g in got.values()} == {"p1", "p2"}


async def test_a_network_given_back_to_the_same_project_since_takes_the_address_back(
    conn: Connection, service: CommandService
) -> None:
    """Refused while the project of the allocation was unknown (the network p1's only since
    the deallocation: it might have been another's between); known now to be p1's, it goes
    back. Given to p2 meanwhile, it is refused, naming whose it was."""
    c = Client(conn)
    await vlan(c, "10.42.0.0/24", 950)
    await c.allocate_fixed_ip("i-0", project="p1")
    got = await c.allocate_fixed_ip("i-1", project="p1")
    nid = got["network_id"]
    await c.deallocate_fixed_ip("i-0")
    await c.request("fixed_ip.deallocate", {"instance": "i-1"}, command_id="d1")
    await c.request("network.disassociate", {"network_id": nid})
    again = await c.allocate_fixed_ip("i-9", project="p1")
    assert again["network_id"] == nid and again["address"] != got["address"]
    r = await revert(conn, c, command_id="d1")
    first = r["events"][0]
    assert (first["type"], first["data"]["project"]) == ("FixedIpAllocated", "p1")
    assert service.state.networks[nid].fixed[got["address"]].project == "p1"


async def test_another_projects_segment_now_is_refused_naming_whose_it_was(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid, address = await freed_on_a_network_no_project_holds(c, service, "10.43.0.0/24", 980)
    other = await c.allocate_fixed_ip("j-0", project="p2")
    assert other["network_id"] == nid
    before = await last_seq(conn)
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, command_id="d1")
    assert info.value.code == "revert_conflict"
    assert f"network {nid} is project p2's only since" in info.value.message
    assert "i-1 was project p1's" in info.value.message
    assert await last_seq(conn) == before
    assert address not in service.state.networks[nid].fixed


async def test_a_request_without_owners_is_decided_as_before(
    conn: Connection, service: CommandService
) -> None:
    """A client older than ``owners`` sends only the events: the address goes back without
    a project (the network holds none), as it did."""
    c = Client(conn)
    nid, address = await freed_on_a_network_no_project_holds(c, service, "10.44.0.0/24", 990)
    events, _ = await events_of_command(conn, "d1")
    args = {"reverted_command_id": "d1", "events": pack_events(events)}
    r = await c.request("revert", args, command_id="revert-d1")
    assert r["events"][0]["data"]["project"] is None
    assert service.state.networks[nid].fixed[address].project is None


async def test_owners_name_valid_projects(conn: Connection, service: CommandService) -> None:
    c = Client(conn)
    await freed_on_a_network_no_project_holds(c, service, "10.45.0.0/24", 1000)
    events, _ = await events_of_command(conn, "d1")
    before = await last_seq(conn)
    for owners in ({events[0].seq: "no such.project"}, {0: "p1"}):
        args = {
            "reverted_command_id": "d1",
            "events": pack_events(events),
            "owners": pack_owners(owners),
        }
        with pytest.raises(NetledgerError) as info:
            await c.request("revert", args, command_id="revert-d1")
        assert info.value.code == InvalidField.code and "owners" in info.value.message
    assert await last_seq(conn) == before


# --- the rule on a bare State ---------------------------------------------------------------


def vlan_history() -> tuple[History, StoredEvent, StoredEvent]:
    """i-1's allocation for p1 and its deallocation, the segment disassociated since (i-0's
    address, freed first, is the lower one the segment's next user gets)."""
    h = History()
    h.run(
        "network.create",
        {"label": "v", "cidr": "10.20.0.0/24", "num_networks": 2, "network_size": 128,
         "mode": "vlan", "vlan_start": 300},
    )  # fmt: skip
    assert h.run("fixed_ip.allocate", {"instance": "i-0", "project": "p1"}) is not None
    assert h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"}) is not None
    alloc = h.stored[-1]
    assert h.run("fixed_ip.deallocate", {"instance": "i-0"}) is not None
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    dealloc = h.stored[-1]
    assert isinstance(alloc.event, FixedIpAllocated)
    assert isinstance(dealloc.event, FixedIpDeallocated)
    assert h.run("network.disassociate", {"network_id": alloc.event.network_id}) is not None
    return h, alloc, dealloc


def allocated_projects(events: list[Any]) -> list[str | None]:
    return [e.project for e in events if isinstance(e, FixedIpAllocated)]


def test_the_owner_of_the_deallocation_counts_or_the_allocation_reverted_with_it() -> None:
    h, alloc, dealloc = vlan_history()
    one = compensate(h.state, [dealloc], owners={dealloc.seq: "p1"})
    assert allocated_projects(one.events) == ["p1"]
    for owners in ({}, {dealloc.seq + 1: "p1"}, {alloc.seq: "p1"}):  # not this deallocation's
        plan = compensate(h.state, [dealloc], owners=owners)
        assert allocated_projects(plan.events) == [None], owners
    # Reverted with its allocation (a range holding both): read from that allocation.
    both = compensate(h.state, [alloc, dealloc])
    assert [(type(e), getattr(e, "project", None)) for e in both.events][:1] == [
        (FixedIpAllocated, "p1")
    ]


def test_a_network_held_throughout_keeps_its_projects_word() -> None:
    """Held by its project since before the deallocation, the network's project is the
    address's, whatever the client says (as an admin's allocation on it would be recorded)."""
    h = History()
    h.run(
        "network.create",
        {"label": "v", "cidr": "10.20.0.0/24", "num_networks": 1, "network_size": 128,
         "mode": "vlan", "vlan_start": 300},
    )  # fmt: skip
    assert h.run("fixed_ip.allocate", {"instance": "i-0", "project": "p1"}) is not None
    assert h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"}) is not None
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    dealloc = h.stored[-1]
    plan = compensate(h.state, [dealloc], owners={dealloc.seq: "p7"})
    assert allocated_projects(plan.events) == ["p1"]


def test_refused_on_another_projects_network_whoever_owned_it() -> None:
    h, _, dealloc = vlan_history()
    assert h.run("fixed_ip.allocate", {"instance": "j-0", "project": "p2"}) is not None
    for owners, was in (
        ({}, "does not record i-1's project"),
        ({dealloc.seq: "p1"}, "i-1 was project p1's"),
    ):
        with pytest.raises(RevertConflict) as info:
            compensate(h.state, [dealloc], owners=owners)
        assert "is project p2's only since" in info.value.message
        assert was in info.value.message


def flat_history() -> History:
    h = History()
    h.run(
        "network.create", {"label": "f", "cidr": "10.0.0.0/28", "mode": "flat", "network_size": 16}
    )
    return h


def projects_of(state: State) -> dict[str, tuple[str, str | None]]:
    return {a: (ip.instance, ip.project) for a, ip in state.networks["1"].fixed.items()}


FLAT_OPS = st.lists(
    st.tuples(st.sampled_from(["alloc", "dealloc"]), st.integers(0, 5), st.integers(0, 2)),
    max_size=30,
)


def play_flat(h: History, ops: list[tuple[str, int, int]]) -> None:
    for op, i, j in ops:
        if op == "alloc":
            h.run("fixed_ip.allocate", {"instance": f"i{i}", "network_id": "1", "project": f"p{j}"})
        else:
            h.run("fixed_ip.deallocate", {"instance": f"i{i}"})


@settings(max_examples=100, deadline=None)
@given(before=FLAT_OPS, after=FLAT_OPS)
def test_reverting_a_suffix_on_a_flat_network_restores_every_addresss_project(
    before: list[tuple[str, int, int]], after: list[tuple[str, int, int]]
) -> None:
    """tests/events/test_revert_compensate.py's suffix property, with projects: each
    allocation on a flat network names its own (the network none), and the revert of any
    suffix, given the owners the client finds in the log, restores them all."""
    h = flat_history()
    play_flat(h, before)
    cut = len(h.stored)
    expected = (snapshot(h.state), projects_of(h.state))
    play_flat(h, after)
    suffix = h.stored[cut:]
    # what the client sends: the owners of the deallocations whose allocation precedes it
    owners = _owners(_undone_in(suffix), h.stored)
    plan = compensate(h.state, suffix, owners=owners)
    for ev in plan.events:
        h.fold(ev, "revert")
    assert (snapshot(h.state), projects_of(h.state)) == expected


async def test_the_index_is_read_wherever_the_projection_lies(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    """``--db`` in a directory whose name holds what a SQLite URI reads as its own (``#``, ``?``,
    ``%``): the index is read from that file, not from a path cut at the ``#`` or decoded."""
    c = Client(conn)
    await freed_on_a_network_no_project_holds(c, service, "10.46.0.0/24", 1010)
    db = tmp_path / "cloud #1 ?a=b %41" / "index.db"
    db.parent.mkdir()
    await project_until(conn, db)
    events, _ = await events_of_command(conn, "d1", db)
    assert [type(s.event) for s in events] == [FixedIpDeallocated]
    assert await owners_of(conn, events, db) == {events[0].seq: "p1"}
