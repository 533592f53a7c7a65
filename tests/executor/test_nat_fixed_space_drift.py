"""A NAT host whose record says "the registry's fixed ranges" (HostNatApplied.fixed_space) and
whose set changes because a network or pool was created elsewhere had nothing changed behind
its back: no drift to report, nothing to append. Only incremental passes knew it — a full pass
(the first after a restart or of ``--once``, the periodic sweep, a new pool or announcement)
reported the registry's change as the NAT table repaired behind the host's back (``drift``),
on every NAT host. The daemon's side: tests/executor/test_nat_fixed_space_netns.py."""

from __future__ import annotations

from netledger.events.codec import Actor, Envelope
from netledger.events.host_events import HostNatApplied
from netledger.events.state import State
from netledger.executor.desired import build
from netledger.executor.diff import diff
from netledger.executor.fragments import Fragment, fragments
from netledger.executor.host_report import applied_events, space_only
from netledger.executor.hosts import HostBook
from netledger.executor.incremental import full_plan
from netledger.executor.kernel import OpResult
from netledger.executor.model import HostActual, HostDesired, NatTable, SetNat
from tests.executor.test_nat_fixed_ranges import _two_hosts_world, cfg

ACTOR = Actor(project=None, role="system", user="executor:h1")


def _recorded() -> tuple[State, HostBook, dict[str, Fragment], NatTable]:
    """h1 applied its table and recorded it (fixed_space); then a network is created that h2
    serves. Returns the state, h1's record, its fragments and its table before the network."""
    led, _, _ = _two_hosts_world()
    host = cfg("h1")
    before = fragments(led.state, HostBook("h1"), host)
    book = HostBook("h1")
    nat = build(led.state, book, host).nat
    [record] = applied_events("h1", book, None, [OpResult(SetNat(table=nat))])
    assert isinstance(record, HostNatApplied) and record.fixed_space
    book.apply(Envelope(event=record, event_id="x:0", command_id="x", time=0.0, actor=ACTOR))
    led.networks(cidr="172.16.0.0/24", mode="vlan", vlan_start=300, network_host="h2")
    return led.state, book, before, nat


def _set_nat(desired: HostDesired, kernel: NatTable | None) -> list[OpResult]:
    """The diff's SetNat against a kernel that holds ``kernel``."""
    ops = diff(desired, HostActual(nat=kernel, nat_intact=True)).ops
    return [OpResult(op) for op in ops if isinstance(op, SetNat)]


def test_a_sweep_that_takes_a_network_created_elsewhere_reports_nothing() -> None:
    state, book, before, nat = _recorded()
    # the daemon's sweep: every fragment again, the last pass's table the one before
    plan = full_plan(state, book, cfg("h1"), before, nat=nat)
    assert plan.prev is not None
    events = applied_events("h1", book, plan.prev, _set_nat(plan.desired, nat))
    assert events == []
    # nothing of the host's own changed: no HostReconciled either (the daemon's condition)
    assert plan.changed and space_only(plan.prev, plan.desired)
    # the set edited by hand, the registry unchanged: drift, said so
    [repaired] = applied_events("h1", book, plan.desired, _set_nat(plan.desired, nat))
    assert isinstance(repaired, HostNatApplied) and repaired.drift


def test_the_first_pass_after_a_network_was_created_meanwhile_reports_no_drift() -> None:
    state, book, _, nat = _recorded()
    plan = full_plan(state, book, cfg("h1"), None)
    assert plan.prev is None
    assert applied_events("h1", book, None, _set_nat(plan.desired, nat)) == []
    # the table gone meanwhile is drift still
    [made] = applied_events("h1", book, None, _set_nat(plan.desired, None))
    assert isinstance(made, HostNatApplied) and made.drift
