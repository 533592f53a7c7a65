"""Review hrev72: the fold's live-memory change (deleted networks leave it, joins live with
their network, a host without allocations keeps its newest report), folding ahead, legacy
announcement pointers and reassociations, against the promises: the service's fold (own
appends folded from their acks, in any order the log allows) is the log's fold; a snapshot of
any prefix, restored, folds the rest to the same state; keeping one report changes no reclaim.

Histories come from the real deciders, with what the other writers append between: host
reports, announcements (on the host's own subject, as executors from before the announcement
subjects did, or on the announcement subject), the service's pointers to the former, network
deletions and creations, migrations and reclaims."""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import SYSTEM, Actor, Envelope
from netledger.events.commands import Request, parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.host_events import HostAnnounced, HostInstancesSeen
from netledger.events.ids import LEGACY_ANNOUNCEMENTS, REGISTRY_SUBJECT, host_subject
from netledger.events.placement import companions, legacy_indexes
from netledger.events.reclaim import FixedIpReclaim
from netledger.events.revert import RevertConflict, compensate
from netledger.events.revert_compensate import StoredEvent
from netledger.events.revert_events import ChangeReverted
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.types import Event
from tests.events.test_fold_ahead import Service, normal, ownable
from tests.projector.test_projector_props import command

ADMIN = Actor(role="admin", user="ops")
HOSTS = ["h1", "h2"]

Message = tuple[int, str, Envelope]


class History:
    """A log in the log's order: the service's decisions (deciders, with their companions),
    and the other writers' messages (each message's time: its seq)."""

    def __init__(self) -> None:
        self.state = State()
        self.log: list[Message] = []
        #: seq -> the messages (seqs) its decision read beyond its own subject and the registry
        self.read: dict[int, set[int]] = {}
        self.macs: list[str] = []
        self.nets: list[str] = []
        self._ids = itertools.count(1)

    def add(
        self,
        ev: Event,
        subject: str | None = None,
        read: set[int] | None = None,
        command_id: str | None = None,
    ) -> int:
        seq = len(self.log) + 1
        subject = subject or ev.subject()
        env = Envelope(ev, f"e{seq}", command_id or f"c{seq}", 1000.0 + seq, SYSTEM)
        assert self.state.fold_message(seq, subject, env) is None
        self.log.append((seq, subject, env))
        if read:
            self.read[seq] = read
        return seq

    def decided(self, events: list[Event], read: set[int] | None = None) -> str:
        """One decision's events and their companions, as one batch (one command id)."""
        cid = f"cmd-{next(self._ids)}"
        for ev in [*events, *companions(self.state, events, set())]:
            self.add(ev, read=read, command_id=cid)
        return cid

    def run(self, name: str, **args: Any) -> dict[str, Any] | None:
        req = parse_command(
            name, {"command_id": f"cmd-{next(self._ids)}", "actor": ADMIN.to_wire(), "args": args}
        )
        try:
            d = decide(self.state, req)
        except NetledgerError:
            return None
        self.decided(d.events)
        return d.result


def on_subject(log: list[Message], subject: str, upto: int) -> set[int]:
    return {s for s, subj, _ in log[:upto] if subj == subject}


_allocate = st.tuples(
    st.just("allocate"), st.integers(0, 4), st.sampled_from(HOSTS), st.integers(0, 5)
)
_report = st.tuples(
    st.just("report"),
    st.sampled_from(HOSTS),
    st.lists(st.integers(0, 9), max_size=3),
    st.lists(st.integers(0, 5), min_size=1, max_size=2, unique=True),
    st.integers(0, 5).map(lambda k: k == 0),  # now and then an executor's first report
)
_deallocate = st.tuples(st.just("deallocate"), st.integers(0, 4))
op_st = st.one_of(
    st.tuples(st.just("create"), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.integers(0, 5)),
    _allocate,
    _allocate,
    _allocate,
    _deallocate,
    _deallocate,
    st.tuples(st.just("move"), st.integers(0, 4), st.sampled_from(HOSTS)),
    _report,
    _report,
    _report,
    st.tuples(st.just("announce"), st.sampled_from(HOSTS), st.booleans(), st.booleans()),
    st.tuples(st.just("index")),
    st.tuples(st.just("reclaim"), st.sampled_from(HOSTS), st.integers(0, 5)),
    st.tuples(st.just("reclaim"), st.sampled_from(HOSTS), st.integers(0, 5)),
)


def history_of(ops: list[tuple[Any, ...]]) -> History:
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat_dhcp", bridge="br6")
    h.run("network.create", label="b", cidr="10.7.0.0/24", mode="flat", bridge="br7")
    h.nets = ["1", "2"]
    for op in ops:
        kind = op[0]
        if kind == "create":
            r = h.run(
                "network.create",
                label=f"n{len(h.nets)}",
                cidr=f"10.{op[1]}.0.0/24",  # a deleted network's range is free again
                mode="flat_dhcp",
                bridge=f"br{op[1]}",
                multi_host=True,
            )
            if r is not None:
                h.nets += [n["id"] for n in r["networks"]]
        elif kind == "delete" and h.nets:
            h.run("network.delete", network_id=h.nets[op[1] % len(h.nets)])
        elif kind == "allocate" and h.nets:
            got = h.run(
                "fixed_ip.allocate",
                instance=f"vm-{op[1]}",
                host=op[2],
                network_id=h.nets[op[3] % len(h.nets)],
            )
            if got is not None and got.get("mac") and got["mac"].lower() not in h.macs:
                h.macs.append(got["mac"].lower())
        elif kind == "deallocate":
            h.run("fixed_ip.deallocate", instance=f"vm-{op[1]}")
        elif kind == "move" and h.nets:
            # the instance migrated: its allocation asked for again on another host
            for nid in h.nets:
                h.run("fixed_ip.allocate", instance=f"vm-{op[1]}", host=op[2], network_id=nid)
        elif kind == "report":
            macs = sorted({h.macs[i] for i in op[2] if i < len(h.macs)})
            nets = sorted({h.nets[i % len(h.nets)] for i in op[3]}) if h.nets else ["1"]
            h.add(
                HostInstancesSeen(
                    host=op[1], macs=macs, networks=nets, reason="start" if op[4] else "change"
                )
            )
        elif kind == "announce":
            ev = HostAnnounced(op[1], "192.0.2.1", "eth0", None, op[2])
            h.add(ev, subject=host_subject(op[1]) if op[3] else None)
        elif kind == "index":  # the service's pointers (service/legacy_pointers.py)
            pointed = set(h.state.legacy_announced.values())
            evs: list[Event] = list(legacy_indexes(h.state))
            cid = f"index-{next(h._ids)}"  # one batch
            for ev in evs:
                h.add(ev, read=pointed, command_id=cid)
        elif kind == "reclaim" and h.nets:
            nid, host = h.nets[op[2] % len(h.nets)], op[1]
            req = Request(FixedIpReclaim(nid, host, 1.0), f"r-{next(h._ids)}", SYSTEM)
            d = decide(h.state, req)
            # decided on the host's subject as of the decision (the seal's check)
            h.decided(d.events, read=on_subject(h.log, host_subject(host), len(h.log)))
    return h


def needs_of(h: History, seq: int) -> list[int]:
    """What the decision appending ``seq`` was decided on: every message before it on its
    subject, on the registry, and what else it read."""
    subject = h.log[seq - 1][1]
    first = seq
    # a batch's messages were decided together: on what was before the batch's first
    env = h.log[seq - 1][2]
    while first > 1 and h.log[first - 2][2].command_id == env.command_id:
        first -= 1
    last = seq
    while last < len(h.log) and h.log[last][2].command_id == env.command_id:
        last += 1
    # ...on every subject of the batch: the service folds a batch whole from one ack, so no
    # message of it is acked before what any other of it was decided on (one acked alone let
    # a NetworkAssociated overtake its replica's earlier NetworkDisassociated: a failure of
    # this test, not of the service)
    subjects = {subject, REGISTRY_SUBJECT} | {h.log[s - 1][1] for s in range(first, last + 1)}
    out = [s for s, subj, _ in h.log[: seq - 1] if subj in subjects]
    for s in range(first, seq + 1):
        out += sorted(h.read.get(s, ()))
    return sorted(x for x in set(out) if x != seq)


def ack_order(h: History, own: set[int], data: st.DataObject) -> State:
    log = h.log
    svc = Service(log)
    acked: set[int] = set()
    needs = {s: needs_of(h, s) for s in own}
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
            acked |= {s for s in own if s <= svc.read}
        else:
            svc.acked(pick)
            acked.add(pick)
    assert not svc.state.held
    return svc.state


def own_subject(subject: str) -> bool:
    return ownable(subject) or subject == LEGACY_ANNOUNCEMENTS


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, max_size=50), st.data())
def test_folded_ahead_with_deletions_moves_reclaims_and_pointers_the_fold_is_the_logs(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    h = history_of(ops)
    own = {
        seq
        for seq, subject, env in h.log
        if own_subject(subject) and data.draw(st.booleans(), label=f"own {seq}")
    }
    assert normal(ack_order(h, own, data)) == normal(h.state)


def _fold(log: list[Message], state: State | None = None) -> State:
    state = state or State()
    for seq, subject, env in log:
        state.fold_message(seq, subject, env)
    return state


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op_st, max_size=50), st.data())
def test_a_snapshot_of_any_prefix_folds_the_rest_to_the_logs_fold(
    ops: list[tuple[Any, ...]], data: st.DataObject
) -> None:
    h = history_of(ops)
    cut = data.draw(st.integers(0, len(h.log)))
    head = _fold(h.log[:cut])
    restored = state_from_wire(msgpack.unpackb(msgpack.packb(state_to_wire(head))))
    assert restored == head
    assert restored.host_macs == head.host_macs
    assert normal(_fold(h.log[cut:], restored)) == normal(h.state)


# --- with projects, floating IPs, leases and reverts (NetworkReassociated) --------------------


def mixed_history(data: st.DataObject, steps: int) -> History:
    """The projection's random commands (projects, VLANs, floating IPs, IPv6, leases, network
    deletions and disassociations) and reverts of random earlier commands, with host reports
    and announcements between."""
    h = History()
    commands: list[str] = []
    for i in range(steps):
        kind = data.draw(
            st.sampled_from(["cmd", "cmd", "cmd", "report", "revert", "undo", "give_back"])
        )
        if kind == "give_back":
            # a project's network used, emptied and disassociated (then "undo": given back)
            project = data.draw(st.sampled_from(["p0", "p1"]))
            got = h.run("fixed_ip.allocate", instance=f"gb{i}", project=project, host="c1")
            if got is not None:
                h.run("fixed_ip.deallocate", instance=f"gb{i}")
                if h.run("network.disassociate", network_id=got["network_id"]) is not None:
                    commands.append(h.log[-1][2].command_id)
            continue
        if kind == "report":
            host = data.draw(st.sampled_from(["c1", "c2"]))
            macs = sorted(
                ip.mac.lower()
                for n in h.state.networks.values()
                for ip in n.fixed.values()
                if ip.host == host and data.draw(st.booleans())
            )
            nets = data.draw(st.lists(st.sampled_from(sorted(h.state.networks) or ["1"])))
            h.add(HostInstancesSeen(host=host, macs=macs, networks=nets, reason="change"))
            continue
        if kind in ("revert", "undo") and commands:
            # any earlier command, or the last one (a disassociation given back: its
            # NetworkReassociated)
            cid = data.draw(st.sampled_from(commands)) if kind == "revert" else commands[-1]
            stored = [
                StoredEvent(s, subj, env.event, env.command_id)
                for s, subj, env in h.log
                if env.command_id == cid
            ]
            try:
                plan = compensate(h.state, stored)
            except RevertConflict:
                continue
            marker = ChangeReverted(cid, None, None, None, plan.reverted, plan.skipped)
            commands.append(h.decided([*plan.events, marker], read={s.seq for s in stored}))
            continue
        name, args = data.draw(command(h.state))
        before = len(h.log)
        if h.run(name, **args) is not None and len(h.log) > before:
            commands.append(h.log[-1][2].command_id)
    return h


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_with_projects_floating_ips_and_reverts_ahead_and_from_a_snapshot_the_fold_is_the_logs(
    data: st.DataObject,
) -> None:
    h = mixed_history(data, 40)
    own = {
        seq
        for seq, subject, _ in h.log
        if own_subject(subject) and data.draw(st.booleans(), label=f"own {seq}")
    }
    assert normal(ack_order(h, own, data)) == normal(h.state)
    cut = data.draw(st.integers(0, len(h.log)))
    head = _fold(h.log[:cut])
    restored = state_from_wire(msgpack.unpackb(msgpack.packb(state_to_wire(head))))
    assert restored == head
    assert normal(_fold(h.log[cut:], restored)) == normal(h.state)
