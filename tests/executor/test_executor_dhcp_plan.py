"""DHCP, the pure part: the plan that brings the running dnsmasqs to the desired ones.

A property test over small worlds of bridges, hosts files and processes: the plan converges (a
second plan after it has nothing to do) and signals only processes it found; the reason of each
start, reload and stop; and ``DhcpBook``, which folds this host's DHCP events into what the log
says is running.
"""

from __future__ import annotations

import dataclasses

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import Envelope
from netledger.events.host_events import HostDhcpStarted, HostDhcpStopped
from netledger.executor.dhcp import DhcpBook, DhcpPaths, dnsmasq_argv, hosts_digest, plan
from netledger.executor.model import (
    DhcpHost,
    DhcpSpec,
    DhcpState,
    DhcpSubnet,
    Op,
    ReloadDhcp,
    StartDhcp,
    StopDhcp,
)

# A small world of bridges, hosts files and processes for the plan's property test.
BRIDGES = ("br1", "br2", "br3")
PATHS = DhcpPaths("/run/t")


def _argv(spec: DhcpSpec) -> tuple[str, ...]:
    return dnsmasq_argv(spec, PATHS)


specs_st = st.builds(
    lambda bridge, n, lease, hosts: DhcpSpec(
        bridge=bridge,
        network_id=str(n),
        subnets=(DhcpSubnet(str(n), f"10.0.{n}.1", "255.255.255.0", f"10.0.{n}.2", 256),),
        hosts=tuple(
            sorted(DhcpHost(f"02:00:00:00:00:{i:02x}", f"h{i}", f"10.0.{n}.{i}") for i in hosts)
        ),
        lease_time=lease,
    ),
    st.sampled_from(BRIDGES),
    st.integers(1, 3),
    st.sampled_from([600, 86400]),
    st.sets(st.integers(2, 6), max_size=3),
)


@st.composite
def worlds(draw: st.DrawFn) -> tuple[list[DhcpSpec], list[DhcpState], dict[str, str]]:
    desired = {s.bridge: s for s in draw(st.lists(specs_st, max_size=3))}
    actual = []
    for b in draw(st.sets(st.sampled_from(BRIDGES))):
        pid = draw(st.one_of(st.none(), st.integers(100, 105)))
        spec = desired.get(b) or draw(specs_st)
        argv = _argv(spec) if draw(st.booleans()) else _argv(draw(specs_st))
        d = draw(st.sampled_from([None, hosts_digest(spec), "0" * 16]))
        if pid is None and d is None:
            d = "0" * 16  # a state entry exists because a pid or hosts file does
        actual.append(
            DhcpState(b, pid, argv if pid else (), d, elsewhere=bool(pid) and draw(st.booleans()))
        )
    recorded = {
        b: draw(st.sampled_from([hosts_digest(desired[b]) if b in desired else "x", "y" * 16]))
        for b in draw(st.sets(st.sampled_from(BRIDGES)))
    }
    return list(desired.values()), actual, recorded


def _apply_model(
    ops: tuple[Op, ...], actual: list[DhcpState], recorded: dict[str, str]
) -> tuple[list[DhcpState], dict[str, str]]:
    have = {a.bridge: a for a in actual}
    rec = dict(recorded)
    next_pid = 1000
    for op in ops:
        if isinstance(op, StopDhcp):
            have.pop(op.bridge, None)
            rec.pop(op.bridge, None)
        elif isinstance(op, StartDhcp):
            assert op.spec.bridge not in have or have[op.spec.bridge].pid is None
            next_pid += 1
            d = hosts_digest(op.spec)
            have[op.spec.bridge] = DhcpState(op.spec.bridge, next_pid, _argv(op.spec), d)
            rec[op.spec.bridge] = d
        elif isinstance(op, ReloadDhcp):
            a = have[op.spec.bridge]
            assert a.pid == op.pid
            d = hosts_digest(op.spec)
            have[op.spec.bridge] = msgspec.structs.replace(a, hosts_digest=d)
            rec[op.spec.bridge] = d
    return list(have.values()), rec


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_plan_converges_and_signals_only_processes_it_found(
    w: tuple[list[DhcpSpec], list[DhcpState], dict[str, str]],
) -> None:
    desired, actual, recorded = w
    ops = plan(desired, actual, _argv, recorded)
    found = {a.pid for a in actual if a.pid is not None}
    for op in ops:
        if isinstance(op, ReloadDhcp | StopDhcp) and op.pid is not None:
            assert op.pid in found
        if isinstance(op, StartDhcp):
            # Drift only when the log says it ran and nothing was replaced on purpose.
            assert not op.drift or op.spec.bridge in recorded
    after, rec = _apply_model(ops, actual, recorded)
    assert plan(desired, after, _argv, rec) == ()
    assert {a.bridge for a in after} == {s.bridge for s in desired} == set(rec)


def test_plan_reasons() -> None:
    spec = DhcpSpec(
        bridge="br1",
        network_id="1",
        subnets=(DhcpSubnet("1", "10.0.1.1", "255.255.255.0", "10.0.1.2", 256),),
        hosts=(DhcpHost("02:00:00:00:00:02", "a", "10.0.1.2"),),
    )
    d = hosts_digest(spec)
    running = DhcpState("br1", 7, _argv(spec), d)
    assert plan([spec], [running], _argv, {"br1": d}) == ()
    assert plan([spec], [running], _argv, {}) == (ReloadDhcp(spec, 7, "adopted"),)
    assert plan([spec], [running], _argv, {"br1": "old"}) == (ReloadDhcp(spec, 7, "hosts"),)
    edited = msgspec.structs.replace(running, hosts_digest="edited")
    assert plan([spec], [edited], _argv, {"br1": d}) == (ReloadDhcp(spec, 7, "drift"),)
    dead = DhcpState("br1", None, (), d)
    assert plan([spec], [dead], _argv, {"br1": d}) == (StartDhcp(spec, drift=True),)
    assert plan([spec], [], _argv, {}) == (StartDhcp(spec, drift=False),)
    assert plan([], [running], _argv, {"br1": d}, {"br1": "1"}) == (
        StopDhcp("br1", 7, "1", "stale"),
    )
    assert plan([], [], _argv, {"br1": d}) == (StopDhcp("br1", None, None, "found-gone"),)
    moved = msgspec.structs.replace(running, elsewhere=True)
    assert plan([spec], [moved], _argv, {"br1": d}) == (
        StopDhcp("br1", 7, spec.network_id, "replaced"),
        StartDhcp(spec, drift=False),
    )


def test_book_folds_this_hosts_dhcp_events() -> None:
    book = DhcpBook("h")
    started = HostDhcpStarted(
        host="h", bridge="br1", network_id="1", pid=5, hosts=1, digest="d1", drift=False
    )
    other = dataclasses.replace(started, host="g", bridge="br9")
    for ev in (started, other):
        book.apply(Envelope(ev, "x", "x", 0.0))
    assert book.running == {"br1": "d1"} and book.network == {"br1": "1"}
    book.apply(Envelope(HostDhcpStopped("h", "br1", "1", 5, "stale"), "y", "y", 0.0))
    assert book.running == {}


def test_stale_leases_are_those_no_host_entry_gives() -> None:
    """The leases the executor has dnsmasq drop (``dhcp_release``, review hrev19): an IPv4
    lease whose (MAC, address) no host entry gives — a freed address reallocated to another MAC,
    one freed without a release — never one still given (a held address), never IPv6 leases."""
    from netledger.executor.dhcp import stale_leases

    spec = DhcpSpec(
        bridge="br1",
        network_id="1",
        subnets=(DhcpSubnet("1", "10.0.1.1", "255.255.255.0", "10.0.1.2", 256),),
        hosts=(
            DhcpHost("02:00:00:00:00:0b", "b", "10.0.1.2"),
            DhcpHost("02:00:00:00:00:0c", "c", "10.0.1.3", "fd00::3"),
        ),
    )
    leases = (
        "1900000000 02:00:00:00:00:0a 10.0.1.2 a 01:02:00:00:00:00:0a\n"  # reallocated: stale
        "1900000000 02:00:00:00:00:0C 10.0.1.3 c *\n"  # still given (case aside)
        "1900000000 02:00:00:00:00:0d 10.0.1.9 d *\n"  # freed, no entry: stale
        "duid 00:01:00:01:2c:5f:aa:bb:02:00:00:00:00:01\n"
        "1900000000 3 fd00::3 c 00:03:00:01:02:00:00:00:00:0c\n"  # IPv6: not ours to judge
        "garbage\n"
    )
    assert stale_leases(leases, spec) == [
        ("02:00:00:00:00:0a", "10.0.1.2"),
        ("02:00:00:00:00:0d", "10.0.1.9"),
    ]
    assert stale_leases("", spec) == []
