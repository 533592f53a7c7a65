"""Folding ahead (events/fold_ahead.py): the command service folds its own appends from their
acks, before its reader has folded the earlier messages of other writers. Whatever overtook
what, once the reader has caught up the fold is the log's fold in the log's order — the host's
sightings and ``event_time`` too (review hrev14: they were not)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import SYSTEM, Actor, Envelope
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.fold_ahead import fold_ahead, reach
from netledger.events.host_events import HostInstancesSeen
from netledger.events.ids import REGISTRY_SUBJECT, host_subject
from netledger.events.placement import joins, unchecked
from netledger.events.snapshot import state_to_wire
from netledger.events.state import State
from netledger.events.types import Event

ADMIN = Actor(role="admin", user="ops")
HOSTS = ["h1", "h2"]
NETS = ["1", "2"]

Message = tuple[int, str, Envelope]


class History:
    """A log built by the deciders in the log's order (each message's time: its seq)."""

    def __init__(self) -> None:
        self.state = State()
        self.log: list[Message] = []
        self.macs: list[str] = []
        self.addresses: list[tuple[str, str]] = []
        self._ids = itertools.count(1)

    def add(self, ev: Event) -> None:
        seq = len(self.log) + 1
        env = Envelope(ev, f"e{seq}", f"c{seq}", 1000.0 + seq, SYSTEM)
        assert self.state.fold_message(seq, ev.subject(), env) is None
        self.log.append((seq, ev.subject(), env))

    def run(self, name: str, **args: Any) -> dict[str, Any] | None:
        req = parse_command(
            name, {"command_id": f"cmd-{next(self._ids)}", "actor": ADMIN.to_wire(), "args": args}
        )
        try:
            d = decide(self.state, req)
        except NetledgerError:
            return None
        for ev in [*d.events, *joins(self.state, d.events, set())]:  # as the lanes append
            self.add(ev)
        return d.result


def world() -> History:
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat_dhcp", bridge="br6")
    h.run("network.create", label="b", cidr="10.7.0.0/24", mode="flat", bridge="br7")
    return h


op_st = st.one_of(
    st.tuples(
        st.just("allocate"), st.integers(0, 4), st.sampled_from(HOSTS), st.sampled_from(NETS)
    ),
    st.tuples(st.just("deallocate"), st.integers(0, 4), st.sampled_from(NETS)),
    st.tuples(st.sampled_from(["lease", "release"]), st.integers(0, 9)),
    st.tuples(
        st.just("report"),
        st.sampled_from(HOSTS),
        st.lists(st.integers(0, 9), max_size=4),
        st.lists(st.sampled_from(NETS), min_size=1, unique=True),
    ),
)


def history_of(ops: list[tuple[Any, ...]]) -> History:
    h = world()
    for op in ops:
        if op[0] == "allocate":
            got = h.run("fixed_ip.allocate", instance=f"vm-{op[1]}", host=op[2], network_id=op[3])
            if got is not None and got.get("mac") and got["mac"] not in h.macs:
                h.macs.append(got["mac"])
                h.addresses.append((got["address"], got["mac"]))
        elif op[0] == "deallocate":
            h.run("fixed_ip.deallocate", instance=f"vm-{op[1]}", network_id=op[2])
        elif op[0] in ("lease", "release"):  # dnsmasq's (a leased address is held after
            if op[1] < len(h.addresses):  # its deallocation until released)
                address, mac = h.addresses[op[1]]
                h.run(f"fixed_ip.{op[0]}", address=address, mac=mac)
        else:
            macs = sorted({h.macs[i].lower() for i in op[2] if i < len(h.macs)})
            h.add(HostInstancesSeen(host=op[1], macs=macs, networks=op[3], reason="change"))
    return h


def ownable(subject: str) -> bool:
    """A subject the service appends to with the OCC check (so folds from the ack)."""
    return not unchecked(subject) and not subject.startswith(host_subject(""))


def normal(s: State) -> dict[str, Any]:
    w = state_to_wire(s)
    w["awaiting_release"] = sorted(w["awaiting_release"])  # a dict's order: the fold's history
    w["host_macs"] = s.host_macs
    return w


class Service:
    """The service's two ways into its fold: the reader (``_Follower._handle``, in the log's
    order) and the acks of its own appends (``_fold_appended``), ahead of the reader."""

    def __init__(self, log: list[Message], hold: bool = True) -> None:
        self.state = State()
        self.log = log
        self.read = 0  # the reader's applied_seq
        self.hold = hold

    def read_next(self) -> None:
        seq, subject, env = self.log[self.read]
        state = self.state
        if seq <= state.subject_seq.get(subject, 0):
            reach(state, seq)  # one of ours, folded from its ack
        else:
            reach(state, seq - 1)
            assert state.fold_message(seq, subject, env) is None
        self.read = seq

    def acked(self, seq: int) -> None:
        _, subject, env = self.log[seq - 1]
        if self.hold and seq > self.read + 1:
            assert fold_ahead(self.state, seq, subject, env) is None
        else:
            assert self.state.fold_message(seq, subject, env) is None


def ack_order(log: list[Message], own: set[int], data: st.DataObject, hold: bool) -> State:
    """The log folded by a service whose own appends (``own``) are acked in any order the log
    allows: one is acked once stored, so after every earlier message on its subject."""
    svc = Service(log, hold)
    acked: set[int] = set()
    # Each is decided on a fold holding every message of its subject before it (the OCC
    # check) and the registry's (its network's creation); the reader may be anywhere behind.
    needs = {
        s: [x for x, subj, _ in log[: s - 1] if subj in (log[s - 1][1], REGISTRY_SUBJECT)]
        for s in own
    }
    while svc.read < len(log) or own - acked:
        ready = [
            s
            for s in sorted(own - acked)
            if s > svc.read and all(x in acked or x <= svc.read for x in needs[s])
        ]
        moves = ready + ([0] if svc.read < len(log) else [])
        pick = data.draw(st.sampled_from(moves))
        if pick == 0:
            svc.read_next()
            acked |= {s for s in own if s <= svc.read}  # read back before its ack: no-op
        else:
            svc.acked(pick)
            acked.add(pick)
    assert not svc.state.held
    return svc.state


@settings(max_examples=200, deadline=None)
@given(st.lists(op_st, max_size=24), st.data())
def test_folded_ahead_in_any_order_the_fold_is_the_logs(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    h = history_of(ops)
    own = {
        seq
        for seq, subject, _ in h.log
        if ownable(subject) and data.draw(st.booleans(), label=f"own {seq}")
    }
    assert normal(ack_order(h.log, own, data, hold=True)) == normal(h.state)


def test_a_deallocation_folded_before_the_report_it_follows_forgets_the_sighting() -> None:
    """The review's case: a host's report is stored, then this service's deallocation of an
    address it saw; the deallocation is folded from its ack before the reader gets the report."""
    h = world()
    a = h.run("fixed_ip.allocate", instance="vm-0", host="h1", network_id="1")
    assert a is not None
    h.add(HostInstancesSeen(host="h1", macs=[a["mac"].lower()], networks=["1"], reason="change"))
    h.run("fixed_ip.deallocate", instance="vm-0", network_id="1")
    last = len(h.log)
    assert h.state.sightings["h1"].seen == {}  # the log's fold forgot the sighting

    def overtaken(hold: bool) -> State:
        svc = Service(h.log, hold)
        while svc.read < last - 2:  # the reader has not got the report yet
            svc.read_next()
        svc.acked(last)  # the deallocation, from its ack
        while svc.read < last:
            svc.read_next()
        return svc.state

    held = overtaken(hold=True)
    assert normal(held) == normal(h.state)
    assert held.event_time == 1000.0 + last
    # Without holding, the report folded after the deallocation kept what the log forgot, and
    # event_time was the report's.
    plain = overtaken(hold=False)
    assert plain.sightings["h1"].seen == {a["mac"].lower(): last - 1}
    assert plain.event_time == 1000.0 + last - 1
