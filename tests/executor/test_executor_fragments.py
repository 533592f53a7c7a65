"""Desired state one network at a time (executor/fragments.py) equals the whole-host build.

Differential, pure: random histories from the real deciders (every mode, shared flat bridges,
floating IPs, network hosts, several hosts with announcements), and for every host the
assembled fragments equal what ``build`` computed before fragments existed (kept as
tests/desired_oracle.py); and recomputing only the fragments of the networks an event touched
equals recomputing them all.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.host_events import HostAnnounced
from netledger.events.placement import companions
from netledger.events.state import State
from netledger.events.types import NetworkEvent
from netledger.executor.desired import HostConfig, build
from netledger.executor.fragments import Fragment, assemble, fragments
from netledger.executor.hosts import HostBook
from netledger.executor.incremental import Fragments
from netledger.executor.model import AddrSpec, LinkSpec
from netledger.executor.view import HostView
from tests import desired_oracle

HOSTS = ["h1", "h2", "h3"]
INSTANCES = [f"i{i}" for i in range(8)]


@st.composite
def command(draw: st.DrawFn, state: State) -> tuple[str, dict[str, Any]]:
    fixed = sorted(a for n in state.networks.values() for a in n.fixed)
    floating = sorted(f.address for p in state.pools.values() for f in p.floating.values())
    kind = draw(st.sampled_from(
        ["net", "alloc", "alloc", "alloc", "dealloc", "pool", "fl_alloc", "fl_assoc",
         "fl_disassoc", "lease", "delete"]
    ))  # fmt: skip
    if kind == "net":
        mode = draw(st.sampled_from(["flat", "flat_dhcp", "vlan", "vxlan"]))
        base = draw(st.integers(0, 9))
        args: dict[str, Any] = {
            "label": "n", "cidr": f"10.{base}.0.0/24", "network_size": 64,
            "num_networks": draw(st.integers(1, 2)), "mode": mode,
            "multi_host": draw(st.booleans()),
        }  # fmt: skip
        if mode == "vxlan":
            args["vni_start"] = 100 + 10 * base
        if mode == "vlan":
            args["vlan_start"] = 100 + 10 * base
        if mode in ("flat", "flat_dhcp"):
            args["bridge"] = draw(st.sampled_from(["brf1", "brf2"]))  # flat networks share
            args["bridge_interface"] = draw(st.sampled_from([None, "eth1", "eth2"]))
        if draw(st.booleans()):
            args["network_host"] = draw(st.sampled_from(HOSTS))
        return "network.create", args
    if kind == "alloc" and state.networks:
        return "fixed_ip.allocate", {
            "instance": draw(st.sampled_from(INSTANCES)),
            "network_id": draw(st.sampled_from(sorted(state.networks))),
            "host": draw(st.sampled_from(HOSTS)),
        }
    if kind == "pool":
        return "floating_ip.pool_create", {
            "pool": "pub", "cidr": "198.51.100.0/28",
            "public_interface": draw(st.sampled_from([None, "pub1"])),
        }  # fmt: skip
    if kind == "fl_alloc":
        return "floating_ip.allocate", {"project": "p1"}
    if kind == "fl_assoc" and floating and fixed:
        return "floating_ip.associate", {
            "address": draw(st.sampled_from(floating)), "project": "p1",
            "fixed_address": draw(st.sampled_from(fixed)),
        }  # fmt: skip
    if kind == "fl_disassoc" and floating:
        return "floating_ip.disassociate", {
            "address": draw(st.sampled_from(floating)),
            "project": "p1",
        }
    if kind == "lease" and fixed:
        a = draw(st.sampled_from(fixed))
        n = next(n for n in state.networks.values() if a in n.fixed)
        return "fixed_ip.lease", {"address": a, "mac": n.fixed[a].mac}
    if kind == "delete" and state.networks:
        return "network.delete", {"network_id": draw(st.sampled_from(sorted(state.networks)))}
    return "fixed_ip.deallocate", {"instance": draw(st.sampled_from(INSTANCES))}


def decide_random(data: st.DataObject, state: State, i: int) -> list[Any] | None:
    """The events (with their companions) of a random command the deciders accept, or None."""
    name, args = data.draw(command(state))
    req = parse_command(
        name, {"command_id": f"c{i}", "args": args, "actor": {"role": "admin", "user": "t"}}
    )
    try:
        d = decide(state, req)
    except NetledgerError:
        return None
    return [*d.events, *companions(state, d.events, set())]


def config(host: str) -> HostConfig:
    return HostConfig(
        host=host,
        physical_interface="eth1",
        public_interface="pub0",
        network_host=host == "h3",
        vtep_address=f"192.0.2.{HOSTS.index(host) + 1}",
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fragments_assemble_to_the_whole_host_build(data: st.DataObject) -> None:
    state = State()
    books = {h: HostBook(h) for h in HOSTS}
    seq = 0
    log: list[Any] = []  # what the oracle reads besides the fold

    def fold(ev: Any, cid: str) -> set[str]:
        nonlocal seq
        seq += 1
        env = Envelope(ev, f"{cid}:{seq}", cid, float(seq), Actor(role="admin"))
        state.apply(seq, ev.subject(), env)
        log.append(ev)
        for b in books.values():
            b.apply(env)
        return {ev.network_id} if isinstance(ev, NetworkEvent) else set()

    for h in HOSTS:
        fold(HostAnnounced(h, config(h).vtep_address, "eth1", "pub0", h == "h3"), "ann")
    kept = {h: fragments(state, books[h], config(h)) for h in HOSTS}
    for i in range(40):
        decided = decide_random(data, state, i)
        if decided is None:
            continue
        touched: set[str] = set()
        registry = False
        for ev in decided:
            touched |= fold(ev, f"c{i}")
            registry |= ev.subject().endswith(".registry")
        for h in HOSTS:
            cfg = config(h)
            assert build(state, books[h], cfg) == desired_oracle.build(state, books[h], cfg, log)
            # Recomputing only what the decision touched gives what recomputing all gives.
            if registry:
                kept[h] = fragments(state, books[h], cfg)  # a new network or pool: all
            else:
                fresh = fragments(state, books[h], cfg, only=touched)
                for nid in touched:
                    kept[h].pop(nid, None)
                kept[h].update(fresh)
            assert assemble(kept[h], state, cfg) == build(state, books[h], cfg)


def _fragment(n: int, served: bool, v4: bool, v6: bool) -> Fragment:
    gw = AddrSpec(f"br{n}", f"10.{n}.0.1/24") if v4 else None
    gw6 = (AddrSpec(f"br{n}", f"fd00:{n}::1/64"),) if v6 else ()
    return Fragment(f"n{n}", LinkSpec(f"br{n}", "bridge", None), served=served, gateway=gw,
                    gateway6=gw6)  # fmt: skip


updates_st = st.dictionaries(
    st.integers(0, 7).map(str),
    st.none() | st.tuples(st.booleans(), st.booleans(), st.booleans()),
    max_size=4,
)


@given(st.lists(updates_st, max_size=12))
def test_fragments_count_what_serves_as_a_full_scan_would(steps: list[Any]) -> None:
    """The counts an incremental pass reads ``ip_forward`` from (executor/incremental.py
    :class:`Fragments`) equal a scan of every fragment, before and after each update."""
    frags = Fragments({})
    for step in steps:
        updates = {f"n{k}": None if v is None else _fragment(int(k), *v) for k, v in step.items()}
        expect = dict(frags.frags)
        for k, new in updates.items():
            expect.pop(k, None)
            if new is not None:
                expect[k] = new
        scan = (any(f.served4 for f in expect.values()), any(f.served6 for f in expect.values()))
        assert frags.served_after(updates) == scan
        frags.update(updates)
        assert frags.frags == expect
        assert (frags.served4 > 0, frags.served6 > 0) == scan
        again = Fragments(dict(expect))
        assert (again.served4, again.served6) == (frags.served4, frags.served6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_share_kept_up_to_date_equals_the_share_recomputed(data: st.DataObject) -> None:
    """The executor's view recomputes which networks its host serves only for the networks an
    event touched (executor/view.py ``_needed``): over random histories from the real deciders,
    that equals recomputing it from every network (``Share.networks_needed``)."""
    state = State()
    views = {h: HostView(None, h) for h in HOSTS}  # type: ignore[arg-type]  # folds only
    seq = 0
    for i in range(40):
        for ev in decide_random(data, state, i) or ():
            seq += 1
            env = Envelope(ev, f"c{i}:{seq}", f"c{i}", float(seq), Actor(role="admin"))
            state.apply(seq, ev.subject(), env)
            for v in views.values():
                v._on_message(seq, ev.subject(), env, None, None)  # type: ignore[arg-type]
        for v in views.values():
            if data.draw(st.booleans()):  # the share is updated after some bursts only
                assert v._needed() == v.share.networks_needed(v.state, v._joining)


def test_a_vlan_network_with_no_interface_to_carry_it_is_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Neither the network's bridge_interface nor --physical-interface: the bridge alone is
    built (its instances reach no other host) — said once per network (review h130: nothing
    said so). With the interface: the VLAN link, and nothing said."""
    from netledger.executor import fragments as module

    state = State()
    seq = 0
    for cid, name, args in [
        ("c1", "network.create", {"label": "v", "cidr": "10.77.0.0/24", "mode": "vlan",
                                  "vlan_start": 177}),
        ("c2", "fixed_ip.allocate", {"instance": "i1", "network_id": "1", "host": "h3"}),
    ]:  # fmt: skip
        req = parse_command(
            name, {"command_id": cid, "args": args, "actor": {"role": "admin", "user": "t"}}
        )
        d = decide(state, req)
        for ev in [*d.events, *companions(state, d.events, set())]:
            seq += 1
            env = Envelope(ev, f"e{seq}", cid, float(seq), Actor(role="admin"))
            state.apply(seq, ev.subject(), env)
    [nid] = state.networks
    bare = HostConfig(host="h3", physical_interface=None, network_host=True)
    module._WARNED_VLAN.discard(nid)
    caplog.set_level(logging.WARNING, "netledger.executor")
    for _ in range(2):
        frag = fragments(state, HostBook("h3"), bare)[nid]
        assert frag.segment is None and frag.bridge.name == state.networks[nid].net.bridge
    said = [r.getMessage() for r in caplog.records if "no interface carries it" in r.getMessage()]
    assert said == [
        f"network {nid} is VLAN 177 but no interface carries it (no --physical-interface, no"
        f" bridge interface of its own): only its bridge {frag.bridge.name} is built, and its"
        " instances reach no other host"
    ]
    caplog.clear()
    frag = fragments(state, HostBook("h3"), config("h3"))[nid]
    assert frag.segment is not None and frag.segment.kind == "vlan"
    assert not [r for r in caplog.records if "no interface carries it" in r.getMessage()]
