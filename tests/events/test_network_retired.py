"""``NetworkRetired``: the registry's record of a network's deletion (events/placement.py), and
``State.retire``, what a reader of a share makes of it (executor/view.py).

An executor reads a network's subject only while it needs the network, so it may never read the
``NetworkDeleted``; every executor reads the registry. Checked here on the pure fold: a reader
that read any part of each network's subject (nothing, a prefix: its host left, or all of it),
in the log's order or the registry first (a share's start, journal/follow.py), holds exactly the
whole log's networks, and nothing of a dropped one is left anywhere in its fold. The real share
against the whole log, on a real nats-server: tests/executor/test_review72_recreated.py,
tests/executor/test_network_retired_share.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.ids import REGISTRY_SUBJECT, network_subject, subject_kind
from netledger.events.placement import companions, legacy_retirements
from netledger.events.placement_events import NetworkRetired
from netledger.events.revert import RevertConflict, compensate
from netledger.events.revert_compensate import StoredEvent
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.types import NetworkCreated, NetworkDeleted
from tests.events.test_review72_fold import History, Message, history_of, op_st

ADMIN = Actor(role="admin", user="ops")


def share_fold(log: list[Message], cuts: dict[str, int], registry_first: bool) -> State:
    """The fold of a reader that reads network ``n``'s subject up to ``cuts[n]`` only (0:
    never), every other subject whole, and takes each retirement as the view does."""
    state = State()
    wanted = [m for m in log if subject_kind(m[1])[0] != "network" or m[0] <= cuts.get(m[1], 0)]
    if registry_first:  # Follower.start: subject by subject, the registry first
        wanted.sort(key=lambda m: (m[1] != REGISTRY_SUBJECT, m[1], m[0]))
    for seq, subject, env in wanted:
        assert state.fold_message(seq, subject, env) is None, (seq, env)
        if isinstance(env.event, NetworkRetired):
            state.retire(env.event.network_id, seq)
    return state


def assert_nothing_left_of_dropped(state: State) -> None:
    """Nothing in the fold names a network it no longer holds; the derived host MAC counts
    are what the networks left say."""
    live = set(state.networks)
    assert {nid for held in state.instance_ips.values() for nid, _ in held} <= live
    assert {nid for nid, _ in state.awaiting_release} <= live
    assert set(state.project_networks.values()) <= live
    counted = state.host_macs
    state.rebuild_host_macs()
    assert counted == state.host_macs


def wind_down(h: History, nid: str) -> None:
    """Every instance of network ``nid`` goes (a held address released) and it is deleted."""
    n = h.state.networks[nid]
    for instance in sorted(n.by_instance):
        h.run("fixed_ip.deallocate", instance=instance, network_id=nid)
    for address, ip in sorted(n.fixed.items()):
        h.run("fixed_ip.release", address=address, mac=ip.mac)
    assert h.run("network.delete", network_id=nid) == {"deleted": nid}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, max_size=40), data=st.data())
def test_a_share_holds_the_whole_logs_networks_whatever_it_read_of_them(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    h = history_of(ops)
    for nid in sorted(h.state.networks):
        if data.draw(st.booleans(), label=f"wind down {nid}"):
            wind_down(h, nid)
    last = len(h.log)
    on: dict[str, list[int]] = {}
    for seq, subject, _ in h.log:
        if subject_kind(subject)[0] == "network":
            on.setdefault(subject, []).append(seq)
    # never read, read whole, or read up to one of its messages (a host leaving there)
    cuts = {s: data.draw(st.sampled_from([0, last, *seqs]), label=s) for s, seqs in on.items()}
    share = share_fold(h.log, cuts, data.draw(st.booleans(), label="registry first"))
    assert set(share.networks) == set(h.state.networks)
    assert_nothing_left_of_dropped(share)
    for nid, n in share.networks.items():
        if cuts.get(network_subject(nid)) == last:  # read whole: the whole log's network
            assert n.fixed.keys() == h.state.networks[nid].fixed.keys()
    # Every deletion has its retirement on the registry, right after it (one batch).
    for i, (_, _, env) in enumerate(h.log):
        if isinstance(env.event, NetworkDeleted):
            _, subject, after = h.log[i + 1]
            assert subject == REGISTRY_SUBJECT and after.command_id == env.command_id
            assert after.event == NetworkRetired(env.event.network_id)


def _two_hosts_then_delete() -> tuple[History, list[int]]:
    """Network 1 (flat_dhcp, multi-host) with vm-a on h1 and vm-b on h2 (leased); vm-a goes,
    then vm-b (held for its DHCP release), its release frees it and the network is deleted.
    Returns the log and where a reader may have stopped reading network 1: right after vm-a
    went (h1's share: its last address there), and after vm-b's deallocation (still held)."""
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat_dhcp", multi_host=True)
    h.run("fixed_ip.allocate", instance="vm-a", host="h1", network_id="1")
    b = h.run("fixed_ip.allocate", instance="vm-b", host="h2", network_id="1")
    assert b is not None
    h.run("fixed_ip.lease", address=b["address"], mac=b["mac"])
    h.run("fixed_ip.deallocate", instance="vm-a")
    stops = [len(h.log)]
    h.run("fixed_ip.deallocate", instance="vm-b")
    stops.append(len(h.log))
    h.run("fixed_ip.release", address=b["address"], mac=b["mac"])
    assert h.run("network.delete", network_id="1") == {"deleted": "1"}
    return h, stops


def test_retiring_drops_what_the_share_held_of_other_hosts() -> None:
    h, (allocated, held) = _two_hosts_then_delete()
    for stop, what in ((allocated, "instance_ips"), (held, "awaiting_release")):
        cut = {network_subject("1"): stop}
        before = share_fold(h.log[: stop + 1], cut, False)
        assert getattr(before, what) and before.networks["1"].fixed  # vm-b's
        share = share_fold(h.log, cut, False)
        assert "1" not in share.networks and not getattr(share, what)
        assert not share.host_macs and not share.instance_ips and not share.awaiting_release
        assert_nothing_left_of_dropped(share)
        # The network's subject counts as read up to the retirement: its deletion, before
        # it, is never read after a later creation of the same id.
        assert share.seq_of(network_subject("1")) == len(h.log)
        assert share.seq_of(network_subject("1")) > h.state.seq_of(network_subject("1"))


def test_retiring_a_network_the_reader_no_longer_holds_changes_nothing() -> None:
    h, _ = _two_hosts_then_delete()
    whole = share_fold(h.log, {network_subject("1"): len(h.log)}, False)  # read it all
    before = state_to_wire(whole)
    assert not whole.retire("1", len(h.log) + 1)
    assert not whole.retire("99", len(h.log) + 1)
    assert state_to_wire(whole) == before


def test_the_fold_takes_a_retirement_as_a_no_op() -> None:
    # A reader of the whole log (the service, the verify fold) has folded the deletion first;
    # a retirement of a network still there is not a deletion to it (one with addresses in use
    # would not be deleted either): only the registry's position moves.
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat")
    h.run("fixed_ip.allocate", instance="vm-a", host="h1", network_id="1")
    before = state_to_wire(h.state)
    seq = h.add(NetworkRetired("1"))
    after = state_to_wire(h.state)
    assert after.pop("subject_seq")[REGISTRY_SUBJECT] == seq
    for k in ("subject_seq", "last_seq", "event_time"):
        before.pop(k), after.pop(k, None)
    assert after == before


def test_a_re_created_id_read_registry_first_is_the_new_network() -> None:
    """A share starting on a log where id 1 was deleted and created again (never decided: ids
    only grow; the fold takes such a log): the registry first, then the network's subject."""
    h, _ = _two_hosts_then_delete()
    again = dataclasses.replace(h.log[0][2].event, cidr="10.9.0.0/24", gateway="10.9.0.1",
                                broadcast="10.9.0.255", dhcp_start="10.9.0.2")  # fmt: skip
    assert isinstance(again, NetworkCreated)
    h.add(again)
    got = h.run("fixed_ip.allocate", instance="vm-c", host="h1", network_id="1")
    assert got is not None and got["address"].startswith("10.9.0.")
    share = share_fold(h.log, {network_subject("1"): len(h.log)}, True)
    assert share.networks["1"].net.cidr == "10.9.0.0/24"
    assert set(share.networks["1"].fixed) == set(h.state.networks["1"].fixed) == {got["address"]}


def test_a_deletion_is_retired_in_its_batch() -> None:
    state = State()
    ev = NetworkDeleted("7")
    assert companions(state, [ev], set()) == [NetworkRetired("7")]


def test_a_revert_of_a_deletion_is_refused_for_the_deletion_alone() -> None:
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat")
    req = parse_command(
        "network.delete",
        {"command_id": "del", "actor": ADMIN.to_wire(), "args": {"network_id": "1"}},
    )
    d = decide(h.state, req)
    cid = h.decided(d.events)
    stored = [
        StoredEvent(seq, subject, env.event) for seq, subject, env in h.log
        if env.command_id == cid
    ]  # fmt: skip
    assert [type(s.event) for s in stored] == [NetworkDeleted, NetworkRetired]
    with pytest.raises(RevertConflict) as info:
        compensate(h.state, stored)
    reasons = info.value.details["reasons"]
    assert len(reasons) == 1 and "NetworkDeleted" in reasons[0], reasons


# --- deletions without a retirement (a log from before them): events/placement.py
# ``legacy_retirements``, written by the service (service/legacy_pointers.py) -----------------


def test_a_deletion_retired_in_its_batch_leaves_nothing_to_retire() -> None:
    h, _ = _two_hosts_then_delete()
    assert not h.state.unretired and legacy_retirements(h.state) == []


def test_an_old_deletion_is_retired_once_and_a_share_then_drops_the_network() -> None:
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat")
    h.run("network.create", label="b", cidr="10.7.0.0/24", mode="flat")
    deleted = h.add(NetworkDeleted("1"))  # as the service wrote it before retirements
    assert h.state.unretired == {"1": deleted}
    assert legacy_retirements(h.state) == [(NetworkRetired("1"), deleted)]
    # It survives a snapshot (the service writes its retirement after a restart too).
    assert state_from_wire(state_to_wire(h.state)).unretired == {"1": deleted}
    share = share_fold(h.log, {}, True)  # never read network 1's subject
    assert "1" in share.networks
    h.add(NetworkRetired("1"))
    assert not h.state.unretired and legacy_retirements(h.state) == []
    share = share_fold(h.log, {}, True)
    assert set(share.networks) == set(h.state.networks) == {"2"}


def test_an_id_created_again_is_not_retired() -> None:
    """Its retirement, read after the new creation, would take the new network out of every
    view (never decided: ids only grow; the fold takes such a log)."""
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat")
    first = h.log[0][2].event
    h.add(NetworkDeleted("1"))
    h.add(dataclasses.replace(first, cidr="10.9.0.0/24", gateway="10.9.0.1",
                              broadcast="10.9.0.255", dhcp_start="10.9.0.2"))  # fmt: skip
    assert not h.state.unretired and legacy_retirements(h.state) == []


def test_old_deletions_are_retired_oldest_first() -> None:
    h = History()
    for i in range(3):
        h.run("network.create", label=f"n{i}", cidr=f"10.{10 + i}.0.0/24", mode="flat")
    seqs = {nid: h.add(NetworkDeleted(nid)) for nid in ("3", "1", "2")}
    assert legacy_retirements(h.state) == [
        (NetworkRetired(nid), seqs[nid]) for nid in ("3", "1", "2")
    ]
