"""What a reader forgets of deleted networks once it has read past them (events/prune.py).

Histories from the real deciders (creations, deletions with their retirements, allocations,
host reports), with hand-made re-creations of deleted ids (never decided; the fold takes them).
The command service's two ways into its fold are modelled as service/service.py has them: the
reader skips what the fold holds, folds the rest and forgets what it read past; an own append's
ack folds it ahead, or nothing when the reader was first. Whatever the order, the fold is the
log's fold forgotten the same way (:func:`prune_all`, what a snapshot holds and ``verify
--snapshots`` compares), a deletion folded ahead is never folded twice, and a snapshot at any
settled point, restored, folds the rest to the same state."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netledger.events.fold_ahead import fold_ahead, reach
from netledger.events.ids import network_subject
from netledger.events.prune import (
    NETWORK_PREFIX,
    folded,
    forgettable,
    prune,
    prune_all,
    read_from,
)
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.types import NetworkCreated, NetworkDeleted
from tests.events.test_fold_ahead import normal
from tests.events.test_network_retired import share_fold, wind_down
from tests.events.test_review72_fold import History, Message, history_of, needs_of, op_st
from tests.events.test_review72_fold import own_subject as _own_subject


def _again(h: History, nid: str, k: int) -> int:
    """Network ``nid`` (deleted) created again by hand, on 10.(100+k).0.0/24: its seq."""
    first = next(
        env.event
        for _, _, env in h.log
        if isinstance(env.event, NetworkCreated) and env.event.network_id == nid
    )
    b = f"10.{100 + k}.0"
    ev = dataclasses.replace(first, cidr=f"{b}.0/24", gateway=f"{b}.1",
                             broadcast=f"{b}.255", dhcp_start=f"{b}.3")  # fmt: skip
    return h.add(ev)


def churned(ops: list[tuple[Any, ...]], data: st.DataObject) -> tuple[History, set[int]]:
    """A decider history, some networks wound down and deleted, some deleted ids created
    again by hand (used and maybe deleted again). Returns it and the hand-made seqs."""
    h = history_of(ops)
    for nid in sorted(h.state.networks):
        if data.draw(st.booleans(), label=f"wind down {nid}"):
            wind_down(h, nid)
    made: set[int] = set()
    gone = sorted(set(h.nets) - set(h.state.networks), key=int)
    for k, nid in enumerate(gone):
        if not data.draw(st.booleans(), label=f"create {nid} again"):
            continue
        made.add(_again(h, nid, k))
        if data.draw(st.booleans(), label=f"use {nid}"):
            h.run("fixed_ip.allocate", instance=f"re-{nid}", host="h1", network_id=nid)
        if data.draw(st.booleans(), label=f"delete {nid} again"):
            wind_down(h, nid)
    return h, made


def read_on(state: State, log: list[Message]) -> None:
    """Fold what ``log`` holds after the fold's last message, in order, forgetting as it
    reads."""
    for seq, subject, env in log[state.last_seq :]:
        assert state.fold_message(seq, subject, env) is None
        prune(state, seq)


def whole(log: list[Message], upto: int) -> State:
    """The log's fold up to ``upto``, forgotten as a snapshot there holds it."""
    state = State()
    for seq, subject, env in log[:upto]:
        state.fold_message(seq, subject, env)
    prune_all(state, upto)
    return state


class Service:
    """service/service.py's ways into its fold (``_Follower._handle``, ``_fold_appended``),
    with what it forgets."""

    def __init__(self, log: list[Message]) -> None:
        self.state = State()
        self.log = log
        self.read = 0  # the follower's applied_seq

    def read_next(self) -> None:
        seq, subject, env = self.log[self.read]
        state = self.state
        if seq <= state.subject_seq.get(subject, 0):
            reach(state, seq)  # one of ours, folded from its ack
        else:
            reach(state, seq - 1)
            assert state.fold_message(seq, subject, env) is None
        self.read = seq
        prune(state, seq)

    def acked(self, seq: int) -> None:
        if seq <= self.read:
            return  # the reader was first
        _, subject, env = self.log[seq - 1]
        if seq <= self.state.subject_seq.get(subject, 0):
            return
        if seq > self.read + 1:
            assert fold_ahead(self.state, seq, subject, env) is None
        else:
            assert self.state.fold_message(seq, subject, env) is None

    def settled(self) -> bool:
        return not self.state.held and self.state.last_seq <= self.read


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, max_size=40), st.data())
def test_the_service_forgets_what_the_logs_fold_forgets_whatever_overtook_what(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    h, made = churned(ops, data)
    event(f"re-created ids: {min(len(made), 2)}")
    log = h.log
    own = {
        seq
        for seq, subject, _ in log
        if seq not in made and _own_subject(subject) and data.draw(st.booleans(), label=f"{seq}")
    }
    needs = {s: needs_of(h, s) for s in own}
    svc = Service(log)
    acked: set[int] = set()
    snapshot_at = data.draw(st.integers(0, len(log)), label="snapshot at")
    restored: tuple[int, State] | None = None
    while svc.read < len(log) or own - acked:
        # an ack once stored (every message it was decided on folded), also after the reader
        # read it back (a late ack: the reader was first)
        ready = [
            s
            for s in sorted(own - acked)
            if s <= svc.read or all(x in acked or x <= svc.read for x in needs[s])
        ]
        moves = ready + ([0] if svc.read < len(log) else [])
        pick = data.draw(st.sampled_from(moves))
        if pick == 0:
            svc.read_next()
        else:
            if pick <= svc.read:
                event("an ack after the reader read it")
            elif pick > svc.read + 1:
                event("an ack folded ahead")
            svc.acked(pick)
            acked.add(pick)
        if restored is None and svc.read >= snapshot_at and svc.settled():
            # the snapshotter: settled at the reader's position, everything forgotten
            forgot = any(isinstance(env.event, NetworkDeleted) for _, _, env in log[: svc.read])
            prune_all(svc.state, svc.read)
            assert normal(svc.state) == normal(whole(log, svc.read))
            wire = msgpack.unpackb(msgpack.packb(state_to_wire(svc.state)))
            restored = (svc.read, state_from_wire(wire))
            event("a snapshot with networks forgotten" if forgot else "a snapshot")
    assert not svc.state.held
    end = whole(log, len(log))
    # Nothing folded twice (a deletion to retire again: ``unretired``), nothing else apart.
    assert normal(svc.state) == normal(end)
    if restored is not None:  # a start from the snapshot: the tail, read in order
        at, state = restored
        for seq, subject, env in log[at:]:
            state.fold_message(seq, subject, env)
            prune(state, seq)
        assert normal(state) == normal(end)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, max_size=40), st.data())
def test_forgetting_as_it_reads_is_forgetting_at_the_end(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    h, _ = churned(ops, data)
    state = State()
    for seq, subject, env in h.log:
        assert state.fold_message(seq, subject, env) is None
        if data.draw(st.booleans(), label=f"prune at {seq}"):
            prune(state, seq)
    prune(state, len(h.log))
    end = whole(h.log, len(h.log))
    assert state_to_wire(state) == state_to_wire(end)
    # What stays of the networks: the live ones' subjects (a re-created one's once it has a
    # message of its own), never a deleted one's.
    for subject in state.subject_seq:
        if subject.startswith(NETWORK_PREFIX):
            nid = subject[len(NETWORK_PREFIX) :]
            assert nid in state.networks
            assert state.subject_seq[subject] > state.recreated.get(nid, 0)


def _deleted_ahead() -> tuple[History, int]:
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat")
    h.run("network.create", label="b", cidr="10.7.0.0/24", mode="flat")
    h.run("fixed_ip.allocate", instance="vm-b", host="h1", network_id="2")  # another writer
    h.run("network.delete", network_id="1")
    deleted = len(h.log) - 1  # its NetworkRetired after it
    return h, deleted


def test_a_deletion_folded_ahead_past_the_prune_is_not_folded_twice() -> None:
    h, deleted = _deleted_ahead()
    svc = Service(h.log)
    while svc.read < deleted - 2:  # the allocation on network 2 not read yet
        svc.read_next()
    svc.acked(deleted)  # the deletion and its retirement, from their acks
    svc.acked(deleted + 1)
    subject = network_subject("1")
    assert svc.state.subject_seq[subject] == deleted
    # forgotten only once read past: a prune up to the reader's position keeps it
    prune(svc.state, svc.read)
    prune_all(svc.state, svc.read)
    assert svc.state.subject_seq[subject] == deleted
    while svc.read < len(h.log):
        svc.read_next()
    assert subject not in svc.state.subject_seq
    assert not svc.state.unretired  # folded once: nothing to retire again
    assert normal(svc.state) == normal(whole(h.log, len(h.log)))


def test_the_reader_first_then_the_ack_folds_nothing_again() -> None:
    h, deleted = _deleted_ahead()
    svc = Service(h.log)
    while svc.read < len(h.log):
        svc.read_next()
    assert network_subject("1") not in svc.state.subject_seq
    svc.acked(deleted)  # the late ack: the service skips it (seq <= the reader's position)
    svc.acked(deleted + 1)
    assert not svc.state.unretired
    assert normal(svc.state) == normal(whole(h.log, len(h.log)))


def test_what_the_fold_forgets() -> None:
    h, deleted = _deleted_ahead()
    state = copy.deepcopy(h.state)
    assert forgettable(state, "1", deleted)  # deleted, an id given out
    assert not forgettable(state, "2", 99)  # live
    assert not forgettable(state, "3", 1)  # the next id: its first append checks its entry
    assert not forgettable(state, "x", 1)  # never given out by the deciders: kept
    assert prune_all(state, deleted - 1) == 0  # not read past yet
    assert prune_all(state, len(h.log)) == 1
    assert network_subject("1") not in state.subject_seq
    # A revert's check: the deleted network's messages are in the fold's past still
    assert folded(state, deleted, network_subject("1"))
    assert not folded(state, len(h.log) + 1, network_subject("1"))  # not read yet
    assert not folded(state, 1, network_subject("3"))  # a network not created yet


def test_a_re_created_id_starts_after_its_creation() -> None:
    h, deleted = _deleted_ahead()
    c = _again(h, "1", 0)
    state = whole(h.log, len(h.log))
    subject = network_subject("1")
    assert state.recreated == {"1": c}
    assert subject not in state.subject_seq  # the older network's entry: forgotten
    assert state.seq_of(subject) == 0
    assert read_from(state, "1") == c + 1  # a share reads the new network only
    assert folded(state, deleted, subject)  # the older network's messages: in the past
    state.learned[subject] = deleted  # the service asked the log (service/recreated.py)
    assert state.seq_of(subject) == deleted  # its first append's OCC check
    got = h.run("fixed_ip.allocate", instance="vm-c", host="h1", network_id="1")
    assert got is not None and got["address"].startswith("10.100.0.")
    allocated = next(s for s, subj, _ in h.log[c:] if subj == subject)
    read_on(state, h.log)
    assert state.seq_of(subject) == allocated == read_from(state, "1") - 1
    # deleted again: the id's re-creation and what was learned go with it
    wind_down(h, "1")
    read_on(state, h.log)
    assert not state.recreated and not state.learned and subject not in state.subject_seq


def test_a_share_that_forgot_a_retired_network_reads_a_re_created_id_from_its_creation() -> None:
    """The view's guard (executor/view.py): a share that never read network 1's subject takes
    its retirement (``State.retire``: the subject read up to it), forgets it once its start is
    over, and later needs network 1 created again: read from ``read_from``, the older
    network's messages are not folded into the new one."""
    h, deleted = _deleted_ahead()
    start = len(h.log)
    share = share_fold(h.log, {network_subject("1"): 0}, registry_first=True)
    assert share.subject_seq[network_subject("1")] == deleted + 1  # the retirement's
    prune(share, start)  # the start read the share: forgotten
    assert network_subject("1") not in share.subject_seq
    c = _again(h, "1", 0)
    got = h.run("fixed_ip.allocate", instance="vm-c", host="h1", network_id="1")
    assert got is not None
    share.fold_message(c, h.log[c - 1][1], h.log[c - 1][2])  # the registry, followed
    first = read_from(share, "1")
    assert first == c + 1
    for seq, subject, env in h.log[first - 1 :]:  # the backfill of network 1's subject
        if subject == network_subject("1"):
            assert share.fold_message(seq, subject, env) is None
    assert set(share.networks["1"].fixed) == {got["address"]}
    # read from where the forgotten entry says (the start of the log), the old network's
    # deletion would take the new network away
    wrong = share_fold(h.log[:start], {network_subject("1"): 0}, registry_first=True)
    prune(wrong, start)
    wrong.fold_message(c, h.log[c - 1][1], h.log[c - 1][2])
    for seq, subject, env in h.log[wrong.seq_of(network_subject("1")) :]:
        if subject == network_subject("1"):
            wrong.fold_message(seq, subject, env)
    assert "1" not in wrong.networks


def test_a_snapshot_keeps_the_re_created_ids() -> None:
    h, _ = _deleted_ahead()
    c = _again(h, "1", 0)
    state = whole(h.log, len(h.log))
    back = state_from_wire(msgpack.unpackb(msgpack.packb(state_to_wire(state))))
    assert back == state and back.recreated == {"1": c}


@pytest.mark.parametrize("upto", [0, 3])
def test_nothing_to_forget_changes_nothing(upto: int) -> None:
    state = State()
    assert prune(state, upto) == 0 and prune_all(state, upto) == 0
    assert state == State()
