"""Review h97 of events/prune.py in an executor's view, as executor/view.py reads: a start reads
the registry, then each followed network's subject (journal/follow.py ``Follower.start``),
forgetting nothing until it is over; then the share in the log's order, forgetting as it reads
(``HostView._forget_deleted``); a network joins the share at any point — a live one, read from
``read_from`` up to where the view is — and leaves it at any point; the view is restarted
from a snapshot (the wire form) taken at any point after its start, its followed networks
with it. Histories from the real deciders, with hand-made re-creations of deleted ids
(tests/events/test_prune_deleted.py ``churned``).

What must hold (the share-vs-whole-log differential tests' promise, tests/executor/
test_view_snapshot.py): every network the view follows is the whole log's fold of it, no
deleted network is kept, nothing is folded twice (``unretired``), and the restarted view is
the live one."""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netledger.events.ids import REGISTRY_SUBJECT, network_subject
from netledger.events.placement_events import NetworkRetired
from netledger.events.prune import NETWORK_PREFIX, prune, read_from
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from tests.events.test_network_retired import wind_down
from tests.events.test_prune_deleted import churned, whole
from tests.events.test_review72_fold import Message, history_of, op_st


class View:
    """executor/view.py's reading of a share, over a log held in memory."""

    def __init__(self, log: list[Message], state: State, followed: set[str], pos: int) -> None:
        self.log = log
        self.state = state
        self.followed = set(followed)
        self.pos = pos  # everything of the share up to here has been read
        self.ready = False

    def wanted(self, subject: str) -> bool:
        if not subject.startswith(NETWORK_PREFIX):
            return True
        return subject[len(NETWORK_PREFIX) :] in self.followed

    def fold(self, seq: int, subject: str, env: Any) -> None:
        assert self.state.fold_message(seq, subject, env) is None, (seq, subject, env)
        ev = env.event
        if isinstance(ev, NetworkRetired):
            self.state.retire(ev.network_id, seq)
        if self.ready:
            prune(self.state, self.state.last_seq)

    def start(self, upto: int) -> None:
        """Subject by subject, the registry first, up to ``upto``; then forget."""
        todo = [m for m in self.log[self.pos : upto] if self.wanted(m[1])]
        todo.sort(key=lambda m: (m[1] != REGISTRY_SUBJECT, m[1], m[0]))
        for m in todo:
            self.fold(*m)
        self.pos = upto
        self.ready = True
        prune(self.state, self.state.last_seq)

    def read_next(self) -> None:
        seq, subject, env = self.log[self.pos]
        self.pos = seq
        if self.wanted(subject):
            self.fold(seq, subject, env)

    def join(self, nid: str) -> None:
        """A live network the share needs now: read from ``read_from`` up to here."""
        assert nid in self.state.networks and nid not in self.followed
        first = read_from(self.state, nid)
        subject = network_subject(nid)
        for m in self.log[first - 1 : self.pos]:
            if m[1] == subject:
                self.fold(*m)
        self.followed.add(nid)

    def snapshot(self) -> tuple[State, set[str], int]:
        wire = msgpack.unpackb(msgpack.packb(state_to_wire(self.state)))
        return state_from_wire(wire), set(self.followed), self.pos


def check(view: View, end: State, name: str) -> None:
    st_ = view.state
    for nid in view.followed:
        if nid in end.networks:
            assert st_.networks.get(nid) == end.networks[nid], (name, nid)
        else:
            assert nid not in st_.networks, (name, nid)  # its deletion was read
    assert set(st_.networks) <= set(end.networks), name  # no deleted network kept
    assert not st_.unretired, name  # no deletion folded twice
    assert st_.recreated == end.recreated, name
    for subject in st_.subject_seq:  # nothing per deleted network
        if subject.startswith(NETWORK_PREFIX):
            assert subject[len(NETWORK_PREFIX) :] in st_.networks, (name, subject)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, max_size=40), st.data())
def test_a_view_joining_leaving_and_restarted_holds_the_whole_logs_networks(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    h, made = churned(ops, data)
    log = h.log
    n = len(log)
    event(f"re-created ids: {min(len(made), 2)}")
    start = data.draw(st.integers(0, n), label="start at")
    early = whole(log, start)  # what a start from an older snapshot would know...
    followed = {nid for nid in early.networks if data.draw(st.booleans(), label=f"f {nid}")}
    live = View(log, State(), followed, 0)
    live.start(start)
    restarted: View | None = None
    snap: tuple[State, set[str], int] | None = None
    while live.pos < n or (snap is not None and restarted is None):
        moves = ["read"] if live.pos < n else []
        joinable = sorted(set(live.state.networks) - live.followed, key=int)
        if joinable:
            moves.append("join")
        if live.followed:
            moves.append("leave")
        if snap is None:
            moves.append("snapshot")
        elif restarted is None:
            moves.append("restart")
        move = data.draw(st.sampled_from(moves), label="move")
        if move == "read":
            live.read_next()
        elif move == "join":
            live.join(data.draw(st.sampled_from(joinable), label="join"))
        elif move == "leave":
            live.followed.discard(data.draw(st.sampled_from(sorted(live.followed)), label="leave"))
        elif move == "snapshot":
            snap = live.snapshot()
        else:
            assert snap is not None
            state, was, at = snap
            restarted = View(log, state, was, at)
            restarted.start(live.pos)  # reads the tail up to where the live view is
            event("restarted from a snapshot")
    end = whole(log, n)
    check(live, end, "live")
    if restarted is not None:
        while restarted.pos < n:
            restarted.read_next()
        # the live view's share now: the restarted view's grows to it as the real one does
        for nid in sorted(live.followed - restarted.followed, key=int):
            if nid in restarted.state.networks:
                restarted.join(nid)
        check(restarted, end, "restarted")


def delayed_retirements(log: list[Message], data: st.DataObject) -> tuple[list[Message], int]:
    """The log as a service from before ``NetworkRetired`` and an upgraded one wrote it: each
    retirement not in its deletion's batch but later, where the upgraded service's pointer
    writer put it (service/legacy_pointers.py), the messages renumbered. How many moved."""
    out = list(log)
    moved = 0
    for seq, _, env in log:
        if not isinstance(env.event, NetworkRetired) or not data.draw(
            st.booleans(), label=f"delay {seq}"
        ):
            continue
        i = next(k for k, m in enumerate(out) if m[2] is env)
        to = data.draw(st.integers(i, len(out) - 1), label=f"to {seq}")
        out.insert(to, out.pop(i))
        moved += 1
    return [(k + 1, subject, env) for k, (_, subject, env) in enumerate(out)], moved


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(op_st.filter(lambda op: op[0] not in ("index", "create")), max_size=40),
    st.data(),
)
def test_a_view_of_a_legacy_log_holds_the_whole_logs_networks(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    """Deletions retired later (no re-created id: the pointer writer writes none for one, and
    no pointer names a renumbered message)."""
    h = history_of(ops)
    for nid in sorted(h.state.networks):
        if data.draw(st.booleans(), label=f"wind down {nid}"):
            wind_down(h, nid)
    log, moved = delayed_retirements(h.log, data)
    event(f"retirements delayed: {min(moved, 2)}")
    n = len(log)
    start = data.draw(st.integers(0, n), label="start at")
    early = whole(log, start)
    followed = {nid for nid in early.networks if data.draw(st.booleans(), label=f"f {nid}")}
    view = View(log, State(), followed, 0)
    view.start(start)
    snap = None
    while view.pos < n:
        move = data.draw(st.sampled_from(["read", "join", "leave", "snapshot"]), label="move")
        joinable = sorted(set(view.state.networks) - view.followed, key=int)
        if move == "join" and joinable:
            view.join(data.draw(st.sampled_from(joinable), label="join"))
        elif move == "leave" and view.followed:
            view.followed.discard(data.draw(st.sampled_from(sorted(view.followed)), label="l"))
        elif move == "snapshot" and snap is None:
            snap = view.snapshot()
        else:
            view.read_next()
    end = whole(log, n)
    check(view, end, "live")
    if snap is not None:
        state, was, at = snap
        restarted = View(log, state, was, at)
        restarted.start(n)
        check(restarted, end, "restarted")
