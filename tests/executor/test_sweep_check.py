"""The periodic sweep's check of the whole host (executor/sweep.py), pure.

Random histories from the real deciders (tests/executor/test_executor_fragments.py) on a host
that serves some networks and computes in others, its kernel a model (test_executor_diff.py
``simulate``) that the passes converge:

* the check, made in steps (one network's fragment a step, the cache modelled in steps, the
  diff in steps), is the whole pass's computation: the desired state ``full_plan`` builds (and
  the oracle of the whole-host build), the diff against the kernel, the record's fixes, and the
  networks whose fragment the passes keep differently;
* passes of changes between its steps (each one scoped, as the daemon runs them: its diff of
  its networks applied to the model kernel, its events folded into the record) leave nothing
  stale behind: on a kernel the passes keep converged the verdict finds nothing to do, and a
  link or address of ours damaged before the sweep, which no change looked at, is found.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope
from netledger.events.host_events import HostAnnounced, HostEvent
from netledger.events.state import State
from netledger.executor.cache import CachedState
from netledger.executor.converge import HostRead
from netledger.executor.diff import diff
from netledger.executor.host_report import applied_events, record_fixes
from netledger.executor.hosts import HostBook
from netledger.executor.incremental import Fragments, full_plan, incremental_plan, narrow
from netledger.executor.kernel import OpResult
from netledger.executor.model import (
    Conflict,
    CreateLink,
    DeleteAddress,
    DeleteLink,
    DeleteNat,
    HostActual,
    HostDesired,
    LinkSpec,
    LinkState,
    NatTable,
    Op,
    Plan,
    SetForwarding,
    SetNat,
)
from netledger.executor.slices import Slicing, Steps, complete
from netledger.executor.sweep import Check, Swept, Touched, check_steps, left
from tests import desired_oracle
from tests.executor.test_executor_diff import simulate
from tests.executor.test_executor_fragments import HOSTS, config, decide_random

HOST = "h3"  # a network host (serves the networks that name none) with instances too


class World:
    """The log folded as an executor folds it, and a model kernel its passes converge."""

    def __init__(self) -> None:
        self.state = State()
        self.book = HostBook(HOST)
        self.cfg = config(HOST)
        self.seq = 0
        self.log: list[Any] = []  # what the oracle reads besides the fold
        self.kernel = HostActual(
            links=(LinkState("eth1", 1, None, up=True), LinkState("pub0", 2, None, up=True))
        )
        self.frags: Fragments | None = None
        self.nat: Any = None
        for h in HOSTS:
            c = config(h)
            self.fold(HostAnnounced(h, c.vtep_address, "eth1", "pub0", c.network_host), "ann")

    def fold(self, ev: Any, cid: str) -> set[str] | None:
        """Fold one event; the networks it touched as the executor's view says (None: all)."""
        self.seq += 1
        env = Envelope(ev, f"{cid}:{self.seq}", cid, float(self.seq), Actor(role="admin"))
        self.state.apply(self.seq, ev.subject(), env)
        self.log.append(ev)
        if isinstance(ev, HostEvent):
            return None if self.book.apply(env) else set()
        nid = getattr(ev, "network_id", None)
        return {nid} if isinstance(nid, str) else None

    def decide(self, data: st.DataObject, i: int) -> set[str] | None:
        dirty: set[str] | None = set()
        for ev in decide_random(data, self.state, i) or ():
            got = self.fold(ev, f"c{i}")
            dirty = None if dirty is None or got is None else dirty | got
        return dirty

    def record(self, events: list[HostEvent]) -> None:
        for e in events:
            self.seq += 1
            self.book.apply(Envelope(e, f"r:{self.seq}", "r", float(self.seq), Actor()))

    def pass_(self, dirty: set[str] | None, touched: Touched | None = None) -> list[Op]:
        """One pass as the daemon makes it (executor/daemon.py ``reconcile``), on the model."""
        if dirty is None or self.frags is None:
            before = None if self.frags is None else self.frags.frags
            plan = full_plan(self.state, self.book, self.cfg, before, nat=self.nat)
        else:
            plan = incremental_plan(self.state, self.book, self.cfg, self.frags, dirty, self.nat)
        if touched is not None:
            touched.add(plan.scope)
        seen = self.kernel if plan.scope is None else narrow(self.kernel, plan.scope)
        ops = list(diff(plan.desired, seen).ops)
        self.kernel = simulate(self.kernel, tuple(ops))
        events = applied_events(HOST, self.book, plan.prev, [OpResult(op) for op in ops])
        if plan.scope is None:
            events += record_fixes(HOST, self.book, plan.desired, events, self.kernel)
        self.record(events)
        if plan.fragments is not None:
            self.frags = plan.fragments
        elif plan.updates is not None and self.frags is not None:
            self.frags.update(plan.updates)
        self.nat = plan.nat
        return ops


def read_of(k: HostActual) -> HostRead:
    return HostRead(k.nat, k.nat_intact, k.forwarding, k.forwarding_v6)


def cached(box: list[HostActual]) -> Steps[CachedState]:
    """The cache's steps: the kernel as it is at their first step."""
    k = box[0]
    yield
    return CachedState(list(k.links), list(k.addresses), list(k.fdb), 0, {})


def history(data: st.DataObject, w: World, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        w.decide(data, i)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_sweeps_check_is_the_whole_pass(data: st.DataObject) -> None:
    w = World()
    history(data, w, 20)
    w.pass_(None)
    history(data, w, 15, start=20)  # the kernel and the kept fragments lag behind these
    assert w.frags is not None
    plan = full_plan(w.state, w.book, w.cfg, w.frags.frags)
    assert plan.fragments is not None
    check = complete(
        check_steps(w.state, w.book, w.cfg, w.frags.frags, read_of(w.kernel), cached([w.kernel]))
    )
    assert check.desired == plan.desired == desired_oracle.build(w.state, w.book, w.cfg, w.log)
    assert check.plan == diff(plan.desired, w.kernel)
    assert check.fixes == record_fixes(HOST, w.book, plan.desired, [], w.kernel)
    now, kept = plan.fragments.frags, w.frags.frags
    assert check.differs == {n for n in {*now, *kept} if now.get(n) != kept.get(n)}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_change_between_two_slices_is_left_to_its_pass(data: st.DataObject) -> None:
    w = World()
    history(data, w, 25)
    w.pass_(None)
    assert w.frags is not None
    # Damage one of our links or addresses before the sweep: drift the sweep must find.
    damaged: tuple[str, str | None] | None = None
    ours = [link for link in w.kernel.links if link.ours]
    if ours and data.draw(st.booleans(), label="drift"):
        link = data.draw(st.sampled_from(ours))
        net = (link.alias or "")[len("netledger:") :]
        on = [a for a in w.kernel.addresses if a.interface == link.name]
        op: Op = DeleteLink(link.name, link.kind or "", None, "test")
        if on and data.draw(st.booleans()):
            op = DeleteAddress(on[0].interface, on[0].address, None, "test")
        w.kernel = simulate(w.kernel, (op,))
        damaged = (link.name, net)
    read = read_of(w.kernel)
    box = [w.kernel]
    touched, writes = Touched(), 0
    steps = check_steps(w.state, w.book, w.cfg, w.frags.frags, read, cached(box))
    changes = data.draw(st.sets(st.integers(0, 12), max_size=4), label="changes after steps")
    i = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            check = done.value
            break
        if i in changes:  # between two slices: a change and its pass
            ops = w.pass_(w.decide(data, 100 + i), touched)
            writes += any(isinstance(o, SetNat | DeleteNat | SetForwarding) for o in ops)
            box[0] = w.kernel
        i += 1
    found = left(Swept(check, read, 0, (), Slicing(), 0.0), touched, writes, read_of(w.kernel))
    if damaged is None:
        # The passes keep the host converged: the whole pass, now, finds nothing to do ...
        assert w.frags is not None
        fresh = full_plan(w.state, w.book, w.cfg, w.frags.frags)
        assert diff(fresh.desired, w.kernel).ops == ()
        # ... (but a record to fix when a pass deleted a link with addresses: the record keeps
        # them, and the whole pass says they are gone) ...
        if not record_fixes(HOST, w.book, fresh.desired, [], w.kernel):
            # ... and neither does the sweep, whatever came between its slices.
            assert not found.work, found
    else:
        name, net = damaged
        if not (touched.everything or name in touched.links or net in touched.networks):
            assert found.work, (damaged, found)


def test_what_the_passes_looked_at_is_dropped_and_the_rest_kept() -> None:
    """``left`` by hand: findings on what a change's pass looked at are dropped (a link by the
    network in its alias), the others kept; the NAT table's only while nothing set it since
    it was read."""
    actual = HostActual(links=(LinkState("br1", 5, "bridge", alias="netledger:1"),))
    mine = DeleteAddress("br1", "10.0.0.1/24", None, "stale")
    other = CreateLink(LinkSpec("br2", "bridge", "2"))
    nat = SetNat(NatTable(fixed_ranges=("10.0.0.0/16",)))
    check = Check(
        desired=HostDesired(),
        actual=actual,
        plan=Plan(ops=(mine, other, nat), conflicts=(Conflict("br1", "foreign"),)),
        fixes=[],
        differs=frozenset({"1", "2"}),
    )
    swept = Swept(check, read_of(actual), 7, (), Slicing(), 0.0)
    everything = Touched()
    everything.add(None)
    got = left(swept, everything, 8, read_of(actual))
    assert got.ops == () and not got.differs and not got.conflicts and not got.work
    got = left(swept, Touched(networks={"1"}), 7, read_of(actual))
    assert got.ops == (other, nat) and got.differs == {"2"} and not got.conflicts
    assert left(swept, Touched(), 7, read_of(actual)).ops == (mine, other, nat)
    drift = HostRead(None, False, False, False)  # the table is not what the passes hold
    assert left(swept, Touched(links={"br1", "br2"}, networks={"2"}), 7, drift).host_drift
    assert not left(swept, Touched(), 8, drift).host_drift  # set again since it was read
