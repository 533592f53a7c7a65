"""Review hrev10: pure tests of revert's compensations (no NATS) that found bugs."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.ids import network_subject, project_subject
from netledger.events.revert import RevertConflict, compensate
from netledger.events.revert_events import NetworkReassociated
from netledger.events.state import State
from netledger.events.types import FixedIpAllocated, NetworkAssociated, NetworkDisassociated
from tests.events.test_revert_compensate import History, snapshot


def vlan_history() -> History:
    h = History()
    h.run(
        "network.create",
        {
            "label": "v",
            "cidr": "10.20.0.0/24",
            "num_networks": 2,
            "network_size": 128,
            "mode": "vlan",
            "vlan_start": 300,
        },
    )
    return h


def test_revert_of_a_disassociation_refuses_a_network_with_addresses_in_use() -> None:
    """docs/revert.md: NetworkAssociated <-> NetworkDisassociated is refused when addresses are
    in use. An admin allocation by network id on the network left free since (allowed: no
    project holds it) must keep the revert from handing that segment, with another instance
    on it, back to the project (the allocator never does: decide_fixed._pick_network)."""
    h = vlan_history()
    assert h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"}) is not None
    nid = h.state.project_networks["p1"]
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    assert h.run("network.disassociate", {"network_id": nid}) is not None
    disassoc = h.stored[-1]
    assert isinstance(disassoc.event, NetworkDisassociated)
    # An admin allocates on the free network by id (no project): allowed.
    got = h.run("fixed_ip.allocate", {"instance": "i-admin", "network_id": nid})
    assert got is not None and got["project"] is None
    assert h.state.networks[nid].project is None and h.state.networks[nid].fixed

    with pytest.raises(RevertConflict) as info:
        plan = compensate(h.state, [disassoc])
        # (what the bug does: hands the network, i-admin on it, to p1)
        assert not any(isinstance(e, NetworkAssociated) for e in plan.events)
    assert "in use" in info.value.message


# --- property: a revert the compensations accept never leaves the fold inconsistent ----------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["alloc_p", "alloc_n", "dealloc", "disassoc", "lease", "release", "move"]),
        st.integers(0, 4),
        st.integers(0, 2),
    ),
    max_size=25,
)


def dhcp_vlan_history() -> History:
    h = History()
    h.run(
        "network.create",
        {
            "label": "v",
            "cidr": "10.21.0.0/24",
            "num_networks": 3,
            "network_size": 32,
            "mode": "vlan",
            "vlan_start": 400,
        },
    )
    return h


def play(h: History, ops: list[tuple[str, int, int]]) -> None:
    nets = sorted(h.state.networks)
    for op, i, j in ops:
        if op == "alloc_p":
            h.run("fixed_ip.allocate", {"instance": f"i{i}", "project": f"p{j}", "host": "h1"})
        elif op == "alloc_n":
            h.run(
                "fixed_ip.allocate",
                {"instance": f"a{i}", "network_id": nets[j % len(nets)], "host": "h1"},
            )
        elif op == "move":
            h.run("fixed_ip.allocate", {"instance": f"i{i}", "project": f"p{j}", "host": "h2"})
        elif op == "dealloc":
            h.run("fixed_ip.deallocate", {"instance": f"i{i}" if j else f"a{i}"})
        elif op == "disassoc":
            h.run("network.disassociate", {"network_id": nets[j % len(nets)]})
        else:
            held = sorted((a, ip) for n in h.state.networks.values() for a, ip in n.fixed.items())
            if held:
                a, ip = held[i % len(held)]
                h.run(f"fixed_ip.{op}", {"address": a, "mac": ip.mac})


def check_consistent(state: State) -> None:
    for p, nid in state.project_networks.items():
        n = state.networks[nid]
        assert n.project == p, (p, nid, n.project)
    for nid, n in state.networks.items():
        if n.project is not None:
            assert state.project_networks.get(n.project) == nid, (nid, n.project)
        for inst, a in n.by_instance.items():
            assert n.fixed[a].instance == inst and n.fixed[a].allocated
        for mac, a in n.macs.items():
            assert n.fixed[a].mac == mac


@settings(max_examples=100, deadline=None)
@given(ops=OPS, pick=st.integers(0, 10_000))
def test_an_accepted_revert_of_any_command_keeps_the_fold_consistent(
    ops: list[tuple[str, int, int]], pick: int
) -> None:
    h = dhcp_vlan_history()
    play(h, ops)
    cids = sorted({s.command_id for s in h.stored})
    cid = cids[pick % len(cids)]
    mine = [s for s in h.stored if s.command_id == cid]
    try:
        plan = compensate(h.state, mine)
    except RevertConflict:
        return
    for ev in plan.events:
        if isinstance(ev, NetworkAssociated):
            # what the allocator guarantees of every association (decide_fixed._pick_network)
            assert not h.state.networks[ev.network_id].fixed, "associated while in use"
        h.fold(ev, f"revert-{cid}")
    check_consistent(h.state)


def test_revert_of_a_deallocation_on_a_vlan_network_another_project_holds_now() -> None:
    h = vlan_history()
    h.run("fixed_ip.allocate", {"instance": "i-0", "project": "p1"})
    got = h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"})
    assert got is not None
    nid = got["network_id"]
    assert h.run("fixed_ip.deallocate", {"instance": "i-0"}) is not None
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    dealloc = h.stored[-1]
    assert h.run("network.disassociate", {"network_id": nid}) is not None
    # p2's first use: the lowest free network is the one p1 gave up.
    other = h.run("fixed_ip.allocate", {"instance": "j-0", "project": "p2"})
    assert other is not None and other["network_id"] == nid
    assert other["address"] != got["address"]  # i-1's address is still free
    try:
        plan = compensate(h.state, [dealloc])
    except RevertConflict:
        return  # refusing is right: the segment is another project's now
    projects = [e.project for e in plan.events if isinstance(e, FixedIpAllocated)]
    assert projects == ["p1"], projects


@settings(max_examples=100, deadline=None)
@given(before=OPS, after=OPS)
def test_reverting_a_suffix_on_vlan_networks_restores_the_state_before_it(
    before: list[tuple[str, int, int]], after: list[tuple[str, int, int]]
) -> None:
    """As tests/events/test_revert_compensate.py's, on VLAN networks: first uses by project
    (associations), admin allocations by network id, moves, disassociations. (Leases are
    reported facts a revert leaves: a leased address stays held, so they are left out.)"""
    h = dhcp_vlan_history()
    play(h, [o for o in before if o[0] not in ("lease", "release")])
    cut = len(h.stored)
    expected = snapshot(h.state)
    play(h, [o for o in after if o[0] not in ("lease", "release")])
    plan = compensate(h.state, h.stored[cut:])
    for ev in plan.events:
        h.fold(ev, "revert")
    assert snapshot(h.state) == expected


# --- the fixes of the two hrev10 findings above: what a revert writes now --------------------


def test_revert_of_a_disassociation_writes_the_networks_side_too() -> None:
    """NetworkAssociated lives on the project's subject; the revert appends NetworkReassociated
    on the network's with it (one batch: both OCC checks, as the allocator's association and
    first allocation). The fold gives the network back once; the revert of that revert undoes
    the pair with one NetworkDisassociated."""
    h = vlan_history()
    assert h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"}) is not None
    nid = h.state.project_networks["p1"]
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    assert h.run("network.disassociate", {"network_id": nid}) is not None
    before = snapshot(h.state)
    plan = compensate(h.state, [h.stored[-1]])
    assert plan.events == [
        NetworkAssociated(network_id=nid, project="p1"),
        NetworkReassociated(network_id=nid, project="p1"),
    ]
    assert [e.subject() for e in plan.events] == [project_subject("p1"), network_subject(nid)]
    cut = len(h.stored)
    for ev in plan.events:
        h.fold(ev, "revert-dis")
    assert h.state.project_networks == {"p1": nid} and h.state.networks[nid].project == "p1"
    # and back: the pair's compensation is one disassociation
    again = compensate(h.state, h.stored[cut:])
    assert again.events == [NetworkDisassociated(network_id=nid, project="p1")]
    assert again.reverted == [s.seq for s in h.stored[cut:]]
    for ev in again.events:
        h.fold(ev, "revert-revert-dis")
    assert snapshot(h.state) == before


def test_a_reassociation_with_a_reallocation_needs_no_network_side() -> None:
    """The revert of the revert of a first allocation re-associates *and* re-allocates on the
    network: the allocation is on the network's subject (as in the allocator's batch), so no
    NetworkReassociated is made up."""
    h = vlan_history()
    assert h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"}) is not None
    first = [s for s in h.stored if s.command_id == h.stored[-1].command_id]
    assert [type(s.event) for s in first] == [NetworkAssociated, FixedIpAllocated]
    undo = compensate(h.state, first)
    cut = len(h.stored)
    for ev in undo.events:
        h.fold(ev, "revert-a1")
    redo = compensate(h.state, h.stored[cut:])
    assert [type(e) for e in redo.events] == [NetworkAssociated, FixedIpAllocated]


def test_revert_of_a_deallocation_on_a_network_its_project_held_throughout() -> None:
    h = vlan_history()
    got = h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"})
    assert got is not None
    assert h.run("fixed_ip.allocate", {"instance": "i-2", "project": "p1"}) is not None
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    plan = compensate(h.state, [h.stored[-1]])
    assert [(type(e), getattr(e, "project", None)) for e in plan.events] == [
        (FixedIpAllocated, "p1")
    ]


def test_revert_of_a_deallocation_with_the_networks_later_changes_restores_its_project() -> None:
    """The range holding the deallocation, the disassociation and another project's first use
    undoes them newest first: the network is p1's again when the deallocation is undone."""
    h = vlan_history()
    assert h.run("fixed_ip.allocate", {"instance": "i-0", "project": "p1"}) is not None
    got = h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"})
    assert got is not None
    nid = got["network_id"]
    assert h.run("fixed_ip.deallocate", {"instance": "i-0"}) is not None
    cut = len(h.stored)
    before = snapshot(h.state)
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    assert h.run("network.disassociate", {"network_id": nid}) is not None
    other = h.run("fixed_ip.allocate", {"instance": "j-0", "project": "p2"})
    assert other is not None and other["network_id"] == nid
    plan = compensate(h.state, h.stored[cut:])
    for ev in plan.events:
        h.fold(ev, "revert")
    assert snapshot(h.state) == before
    assert h.state.networks[nid].fixed[got["address"]].project == "p1"


def test_revert_of_a_deallocation_refuses_a_network_associated_again_since() -> None:
    """Given back to the *same* project after the deallocation, the network is refused too: the
    fold cannot tell whose it was between (FixedIpDeallocated records no project), and a
    refusal is safe where a wrong project is not (docs/revert.md)."""
    h = vlan_history()
    assert h.run("fixed_ip.allocate", {"instance": "i-0", "project": "p1"}) is not None
    assert h.run("fixed_ip.allocate", {"instance": "i-1", "project": "p1"}) is not None
    assert h.run("fixed_ip.deallocate", {"instance": "i-0"}) is not None
    assert h.run("fixed_ip.deallocate", {"instance": "i-1"}) is not None
    dealloc = h.stored[-1]  # i-1's address stays free: i-9 takes i-0's
    nid = h.state.project_networks["p1"]
    assert h.run("network.disassociate", {"network_id": nid}) is not None
    assert h.run("fixed_ip.allocate", {"instance": "i-9", "project": "p1"}) is not None
    assert h.state.project_networks["p1"] == nid
    with pytest.raises(RevertConflict) as info:
        compensate(h.state, [dealloc])
    assert f"network {nid} is project p1's only since" in info.value.message


def test_stored_network_side_payloads_decode_as_recorded() -> None:
    """Frozen payloads of NetworkReassociated (never regenerate: deployed streams hold these);
    both decoders read them, and the fold takes one after its NetworkAssociated."""
    import base64
    import json
    from pathlib import Path

    from netledger.events.codec import decode
    from netledger.events.wire_fast import decode_fast

    path = Path(__file__).parent.parent / "fixtures" / "revert"
    lines = [
        json.loads(x)
        for x in (path / "network-reassociated-2026-12.jsonl").read_text().splitlines()
        if x.strip()
    ]
    assert lines
    for line in lines:
        raw = base64.b64decode(line["payload"])
        for env in (decode(raw), decode_fast(raw)):
            assert env.type == line["type"] == "NetworkReassociated"
            assert env.event.subject() == line["subject"]
            assert env.event.to_data() == line["data"]
