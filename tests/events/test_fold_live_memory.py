"""The fold's memory follows what is live, not the cloud's past (issue 13: "memory of the
service stays proportional to live state"): a deleted network leaves the fold, and a host
holding no allocation keeps only its newest sighting report — with every answer unchanged."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope
from netledger.events.host_events import HostInstancesSeen
from netledger.events.placement import backfill
from netledger.events.placement_events import NetworkHostJoined
from netledger.events.reclaim_events import Heartbeat, HostSightings, macs_digest
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpMoved,
    NetworkCreated,
    NetworkDeleted,
)
from netledger.executor.fragments import fixed_space

ADMIN = Actor(role="admin", user="t")


def created(i: int, **kw: Any) -> NetworkCreated:
    b = f"10.{i // 256 % 256}.{i % 256}"
    fields: dict[str, Any] = dict(
        network_id=str(i), label=f"n{i}", cidr=f"{b}.0/24", netmask="255.255.255.0",
        gateway=f"{b}.1", broadcast=f"{b}.255", dhcp_start=f"{b}.3", mode="flat_dhcp",
        vlan=None, vni=None, bridge=f"br{i}", bridge_interface=None, dns1=None, dns2=None,
        vpn_private_address=None, vpn_public_port=None, project=None, multi_host=True,
        network_host=None, mtu=None, cidr_v6=None,
    )  # fmt: skip
    fields.update(kw)
    return NetworkCreated(**fields)


@dataclass
class Log:
    state: State = field(default_factory=State)
    seq: int = 0

    def add(self, ev: Event, time: float | None = None) -> int:
        self.seq += 1
        env = Envelope(
            ev, f"e{self.seq}", f"c{self.seq}", float(self.seq if time is None else time), ADMIN
        )
        assert self.state.apply(self.seq, ev.subject(), env)
        return self.seq


def test_a_deleted_network_leaves_the_fold_with_its_range() -> None:
    log = Log()
    log.add(created(1))
    log.add(created(2))
    log.add(NetworkDeleted(network_id="2"))
    assert list(log.state.networks) == ["1"]
    assert fixed_space(log.state) == ("10.0.1.0/24",)  # the NAT set: live networks only
    assert log.state.seq_of("netledger.evt.network.2") == 3  # the next append's OCC check
    assert log.state.next_network_number == 3


def test_a_re_created_network_starts_afresh_its_joins_too() -> None:
    """The joins are kept with their network: a re-created id used to find the old network's
    (host, network) pair and never backfilled its host's join."""
    log = Log()
    log.add(created(1))
    log.add(NetworkHostJoined(network_id="1", host="h1"))
    log.add(FixedIpAllocated("1", "10.0.1.3", "i1", "02:00:00:00:00:01", "h1", None))
    log.add(FixedIpDeallocated("1", "10.0.1.3", "i1", "02:00:00:00:00:01", "h1", True))
    log.add(NetworkDeleted(network_id="1"))
    log.add(created(1))
    log.add(FixedIpAllocated("1", "10.0.1.3", "i2", "02:00:00:00:00:02", "h1", None))
    n = log.state.networks["1"]
    assert n.joined == set() and set(n.fixed) == {"10.0.1.3"}
    assert [(e.network_id, e.host) for e in backfill(log.state)] == [("1", "h1")]  # type: ignore[attr-defined]


def test_memory_of_deleted_networks_is_a_tenth_of_what_it_was() -> None:
    """10,000 networks created and deleted: what stays is each subject's sequence and range
    (~250 B each), not each network's state (~2.4 KB each before)."""
    log = Log()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(1, 10_001):
            log.add(created(i))
            log.add(NetworkDeleted(network_id=str(i)))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert not log.state.networks
    assert held / 10_000 < 600, f"{held / 10_000:.0f} B per deleted network"


def test_a_host_without_allocations_keeps_its_newest_report_only() -> None:
    log = Log()
    log.add(created(1))
    mac = "02:00:00:00:00:01"
    log.add(FixedIpAllocated("1", "10.0.1.3", "i1", mac, "h1", None))
    for k in range(40):
        log.add(
            HostInstancesSeen(
                host="h1", macs=[mac] if k % 2 else [], networks=["1"], reason="change"
            )
        )
    assert len(log.state.sightings["h1"].reports) == 40
    log.add(FixedIpDeallocated("1", "10.0.1.3", "i1", mac, "h1", True))
    h = log.state.sightings["h1"]
    assert [r.seq for r in h.reports] == [log.seq - 1] and not h.past
    for _ in range(5):  # a host with nothing allocated reporting on: still one report
        log.add(HostInstancesSeen(host="h1", macs=[], networks=["1"], reason="change"))
    assert [r.seq for r in log.state.sightings["h1"].reports] == [log.seq]


# --- the differential: keeping one report changes no reclaim answer --------------------------

HOSTS = ("h1", "h2")
MACS = tuple(f"02:00:00:00:00:0{i}" for i in range(1, 5))

op = st.one_of(
    st.tuples(st.just("alloc"), st.sampled_from(MACS), st.sampled_from(HOSTS)),
    st.tuples(st.just("dealloc"), st.sampled_from(MACS), st.just("")),
    st.tuples(st.just("move"), st.sampled_from(MACS), st.sampled_from(HOSTS)),
    st.tuples(
        st.just("report"),
        st.frozensets(st.sampled_from(MACS)).map(lambda s: ",".join(sorted(s))),
        st.sampled_from(HOSTS),
    ),
    st.tuples(st.just("start"), st.just(""), st.sampled_from(HOSTS)),
)


def _fold(ops: list[tuple[str, str, str]]) -> Log:
    log = Log()
    log.add(created(1))
    where: dict[str, tuple[str, str]] = {}  # mac -> (address, host)
    for i, (kind, arg, host) in enumerate(ops):
        if kind == "alloc" and arg not in where:
            address = f"10.0.1.{10 + MACS.index(arg)}"
            log.add(FixedIpAllocated("1", address, f"i{arg[-1]}", arg, host, None))
            where[arg] = (address, host)
        elif kind == "dealloc" and arg in where:
            address, h = where.pop(arg)
            log.add(FixedIpDeallocated("1", address, f"i{arg[-1]}", arg, h, True))
        elif kind == "move" and arg in where and where[arg][1] != host:
            address, h = where[arg]
            log.add(FixedIpMoved("1", address, f"i{arg[-1]}", arg, host, h))
            where[arg] = (address, host)
        elif kind in ("report", "start"):
            macs = [m for m in arg.split(",") if m]
            log.add(
                HostInstancesSeen(
                    host=host,
                    macs=macs,
                    networks=["1"],
                    reason=kind if kind == "start" else "change",
                ),
                time=100.0 * (i + 1),
            )
    return log


def _answers(log: Log) -> list[Any]:
    out: list[Any] = []
    for ip in log.state.networks["1"].fixed.values():
        if not ip.allocated or ip.host is None:
            continue
        h = log.state.sightings.get(ip.host)
        if h is None or not h.reports:
            out.append((ip.address, None))
            continue
        newest = h.reports[-1]
        hb = Heartbeat(ip.host, newest.seq, newest.time + 5_000.0, macs_digest(h.last_macs))
        for beat in (None, hb):
            a = h.absence(ip.mac, "1", ip.allocated_seq, beat)
            out.append((ip.address, None if a is None else (a.first.seq, a.last.seq, a.span)))
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=60))
def test_keeping_one_report_for_a_host_without_allocations_changes_no_absence(
    ops: list[tuple[str, str, str]],
) -> None:
    kept = _fold(ops)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HostSightings, "keep_newest", lambda self: None)
        every = _fold(ops)
    assert _answers(kept) == _answers(every)
    for host, h in kept.state.sightings.items():  # what a restarted executor adopts
        ref = every.state.sightings[host]
        assert (h.reports[-1], h.last_macs) == (ref.reports[-1], ref.last_macs)
        if host not in kept.state.host_macs:
            assert len(h.reports) == 1
    # and the snapshot of it is it
    assert state_to_wire(state_from_wire(state_to_wire(kept.state))) == state_to_wire(kept.state)
