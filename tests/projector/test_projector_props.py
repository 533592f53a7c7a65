"""Property tests of the pure projection.

1. Whatever a decodable event holds and whatever subject it sits on, ``project`` never raises:
   it returns changes or a rejection.
2. Driven by the real (pure) deciders, the projection agrees with the fold the command service
   decides on (``events.state.State``): same fixed IPs, floating IPs and network ownership.
3. The SQLite writer, cut into arbitrary batches, ends with exactly the rows of the in-memory
   projection.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.state import State
from netledger.events.types import EVENT_TYPES, Event
from netledger.projector.compare import dump
from netledger.projector.project import MemoryStore
from netledger.projector.store import Raw, Writer
from netledger.projector.tables import ALL_TABLES

# --- 1. never raises --------------------------------------------------------------------------

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from(["1", "2", "p1", "h1", "pub"]),
    st.sampled_from(["10.0.0.3", "10.0.0.0/24", "203.0.113.1", "::1", "x", ""]),
    st.text(max_size=5), st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
)  # fmt: skip


@st.composite
def any_event(draw: st.DrawFn) -> Event:
    cls = draw(st.sampled_from(sorted(EVENT_TYPES.values(), key=lambda c: c.TYPE)))
    values = {f.name: draw(_values) for f in dataclasses.fields(cls)}
    return cls(**values)


_subjects = st.sampled_from([
    "netledger.evt.registry", "netledger.evt.network.1", "netledger.evt.pool.pub",
    "netledger.evt.host.h1", "netledger.evt.project.p1", "netledger.evt.other",
])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(any_event(), _subjects, st.booleans()), max_size=25))
def test_project_never_raises(items: list[tuple[Event, str, bool]]) -> None:
    store = MemoryStore()
    for seq, (ev, subject, own_subject) in enumerate(items, 1):
        try:
            subject = ev.subject() if own_subject else subject
        except Exception:
            pass
        out = store.feed(seq, subject, Envelope(ev, "e", "c", float(seq)))
        assert (out.rejected is None) == (out.event is not None)


# --- 2. agrees with the deciders' fold --------------------------------------------------------

INSTANCES = [f"i{i}" for i in range(6)]
PROJECTS = ["p0", "p1", "p2"]


@st.composite
def command(draw: st.DrawFn, state: State) -> tuple[str, dict[str, Any]]:
    fixed = sorted((a, ip.mac) for n in state.networks.values() for a, ip in n.fixed.items())
    # a lease or release may name an allocation by its IPv6 address too
    fixed6 = sorted(
        (ip.address_v6, ip.mac)
        for n in state.networks.values()
        for ip in n.fixed.values()
        if ip.address_v6 is not None
    )
    floating = sorted(
        (f.address, f.project) for p in state.pools.values() for f in p.floating.values()
    )
    associated = sorted(
        (f.address, f.project)
        for p in state.pools.values() for f in p.floating.values() if f.fixed_address
    )  # fmt: skip
    kind = draw(st.sampled_from([
        "network", "alloc", "alloc", "alloc", "dealloc", "lease", "release", "net_delete",
        "net_disassociate", "net_disassociate", "pool", "fl_alloc", "fl_assoc", "fl_assoc",
        "fl_disassoc", "fl_dealloc",
    ]))  # fmt: skip
    if kind == "network":
        base = draw(st.integers(0, 3))
        net: dict[str, Any] = {
            "label": "n", "cidr": f"10.{base}.0.0/24", "network_size": 16,
            "num_networks": draw(st.integers(1, 3)),
            "mode": draw(st.sampled_from(["flat", "flat_dhcp", "vlan"])),
            "vlan_start": 100 + 10 * base,
        }  # fmt: skip
        v6 = draw(st.sampled_from([None, None, "dual", "only"]))
        if v6 is not None:
            # IPv6 (issue 14): dual-stack or IPv6-only, one /64 each out of a /62
            net["cidr_v6"] = f"2001:db8:{base}::/62"
            net["ipv6_mode"] = draw(st.sampled_from(["slaac", "dhcpv6"]))
            if v6 == "only":
                del net["cidr"], net["network_size"]
        return "network.create", net
    if kind == "alloc":
        args: dict[str, Any] = {
            "instance": draw(st.sampled_from(INSTANCES)),
            "host": draw(st.sampled_from(["c1", "c1", "c2"])),
        }
        if draw(st.booleans()):
            args["project"] = draw(st.sampled_from(PROJECTS))
        else:
            args["network_id"] = str(draw(st.integers(1, 6)))
        return "fixed_ip.allocate", args
    if kind == "dealloc":
        return "fixed_ip.deallocate", {"instance": draw(st.sampled_from(INSTANCES))}
    if kind in ("lease", "release") and fixed:
        address, mac = draw(st.sampled_from(fixed + fixed6))
        return f"fixed_ip.{kind}", {"address": address, "mac": mac}
    if kind == "net_delete":
        return "network.delete", {"network_id": str(draw(st.integers(1, 6)))}
    if kind == "net_disassociate":
        return "network.disassociate", {"network_id": str(draw(st.integers(1, 6)))}
    if kind == "pool":
        return "floating_ip.pool_create", {
            "pool": draw(st.sampled_from(["a", "b"])),
            "cidr": draw(st.sampled_from(["203.0.113.0/29", "198.51.100.0/29"])),
        }
    if kind == "fl_alloc":
        return "floating_ip.allocate", {"project": draw(st.sampled_from(PROJECTS))}
    if kind == "fl_assoc" and floating and fixed:
        address, project = draw(st.sampled_from(floating))
        return "floating_ip.associate", {
            "address": address,
            "project": project,
            "fixed_address": draw(st.sampled_from(fixed))[0],
        }
    if kind == "fl_disassoc" and associated:
        address, project = draw(st.sampled_from(associated))
        return "floating_ip.disassociate", {"address": address, "project": project}
    if kind == "fl_dealloc" and floating:
        address, project = draw(st.sampled_from(floating))
        return "floating_ip.deallocate", {"address": address, "project": project}
    return "fixed_ip.deallocate", {"instance": draw(st.sampled_from(INSTANCES))}


def _run_commands(data: st.DataObject, steps: int) -> tuple[State, list[tuple[int, str, Envelope]]]:
    state = State()
    log: list[tuple[int, str, Envelope]] = []
    for i in range(steps):
        name, args = data.draw(command(state))
        req = parse_command(
            name, {"command_id": f"c{i}", "args": args, "actor": {"role": "admin", "user": "t"}}
        )
        try:
            decision = decide(state, req)
        except NetledgerError:
            continue
        for j, ev in enumerate(decision.events):
            seq = len(log) + 1
            env = Envelope(ev, f"c{i}:{j}", f"c{i}", float(seq), Actor(role="admin", user="t"))
            state.apply(seq, ev.subject(), env)
            log.append((seq, ev.subject(), env))
    return state, log


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_projection_agrees_with_the_deciders_fold(data: st.DataObject) -> None:
    state, log = _run_commands(data, 40)
    store = MemoryStore()
    for seq, subject, env in log:
        out = store.feed(seq, subject, env)
        assert out.rejected is None, out.rejected
    fixed = {
        (n.network_id, a): (ip.instance, ip.mac, ip.host, ip.project, int(ip.allocated),
                            int(ip.leased), ip.address_v6, int(ip.leased_v6))
        for n in state.networks.values() for a, ip in n.fixed.items()
    }  # fmt: skip
    got = {
        k: (
            r["instance"], r["mac"], r["host"], r["project"], r["allocated"], r["leased"],
            r["address_v6"], r["leased_v6"],
        )
        for k, r in store.tables.get("fixed_ips", {}).items()
    }  # fmt: skip
    assert got == fixed
    # The fold keeps the live networks; the projection every network, deleted ones marked.
    nets = {
        n.network_id: (n.project, n.net.cidr, n.net.cidr_v6, n.net.gateway_v6)
        for n in state.networks.values()
    }
    got_nets = {
        k[0]: (r["project"], r["cidr"], r["cidr_v6"], r["gateway_v6"])
        for k, r in store.tables.get("networks", {}).items()
        if not r["deleted"]
    }
    assert got_nets == nets
    assert {k[0] for k, r in store.tables.get("networks", {}).items() if r["deleted"]}.isdisjoint(
        nets
    )
    floating = {
        f.address: (f.pool, f.project, f.fixed_address, f.network_id, f.instance)
        for p in state.pools.values() for f in p.floating.values()
    }  # fmt: skip
    got_fl = {
        k[0]: (r["pool"], r["project"], r["fixed_address"], r["network_id"], r["instance"])
        for k, r in store.tables.get("floating_ips", {}).items()
    }
    assert got_fl == floating
    projects = {p: n for p, n in state.project_networks.items()}
    got_projects = {
        k[0]: r["network_id"]
        for k, r in store.tables.get("projects", {}).items()
        if r["network_id"] is not None
    }
    assert got_projects == projects


# --- 3. batches do not matter ----------------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(st.integers(1, 12), min_size=1, max_size=40))
def test_sqlite_batches_equal_the_memory_projection(data: st.DataObject, cuts: list[int]) -> None:
    _, log = _run_commands(data, 30)
    store = MemoryStore()
    for seq, subject, env in log:
        store.feed(seq, subject, env, stream_time=float(seq))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.db"
        w = Writer(path)
        raws = [Raw(seq, subj, encode(env), float(seq), 0) for seq, subj, env in log]
        i = 0
        for n in cuts * (len(raws) // max(1, sum(cuts)) + 1):
            if i >= len(raws):
                break
            w.apply(raws[i : i + n])
            i += n
        w.close()
        got = dump(path)
    for name, t in ALL_TABLES.items():
        if name == "events":
            rows = store.events.values()
        elif name == "rejected_events":
            rows = store.rejected.values()
        else:
            rows = store.tables.get(name, {}).values()
        want = sorted(tuple(r[c] for c in t.columns) for r in rows)
        assert sorted(got[name]) == want, name
