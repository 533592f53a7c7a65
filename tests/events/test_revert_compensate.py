"""Pure tests of the compensation computation (no NATS): reverting any suffix of a history
returns the state to the one before it; conflicts name the reason; the request codec."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope
from netledger.events.commands import Request, parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.revert import (
    ChangeReverted,
    RevertConflict,
    StoredEvent,
    compensate,
    in_scope,
    pack_events,
    unpack_events,
)
from netledger.events.state import State
from netledger.events.types import FixedIpAllocated, FixedIpDeallocated, NetworkCreated

ADMIN = Actor(role="admin")


class History:
    """A State folded from decisions, keeping every stored event (what the log would hold)."""

    def __init__(self) -> None:
        self.state = State()
        self.stored: list[StoredEvent] = []
        self.n = 0

    def run(self, name: str, args: dict[str, Any]) -> dict[str, Any] | None:
        self.n += 1
        cid = f"c{self.n}"
        req = parse_command(name, {"command_id": cid, "actor": ADMIN.to_wire(), "args": args})
        try:
            d = decide(self.state, Request(req.command, cid, ADMIN))
        except NetledgerError:
            return None
        for i, ev in enumerate(d.events):
            self.fold(ev, cid, f"{cid}:{i}")
        return d.result

    def fold(self, ev: Any, cid: str, eid: str = "") -> None:
        seq = len(self.stored) + 1
        self.state.apply(seq, ev.subject(), Envelope(ev, eid, cid, float(seq), ADMIN))
        self.stored.append(StoredEvent(seq, ev.subject(), ev, cid))


def snapshot(state: State) -> dict[str, Any]:
    """What a revert must restore (sequences aside)."""
    return {
        "networks": {
            nid: (
                n.project,
                {a: (ip.instance, ip.mac, ip.allocated, ip.leased) for a, ip in n.fixed.items()},
                dict(n.by_instance),
                dict(n.macs),
                sorted(n.pool.iter_free())[:64],
            )
            for nid, n in state.networks.items()
        },
        "pools": {
            p: {a: (f.project, f.fixed_address, f.instance) for a, f in ps.floating.items()}
            for p, ps in state.pools.items()
        },
        "project_networks": dict(state.project_networks),
        "instances": {i: set(v) for i, v in state.instance_ips.items()},
    }


OPS = st.lists(
    st.tuples(
        st.sampled_from(["alloc", "dealloc", "falloc", "assoc", "disassoc", "fdealloc"]),
        st.integers(0, 5),
        st.integers(0, 3),
    ),
    max_size=30,
)


def setup() -> History:
    h = History()
    h.run(
        "network.create", {"label": "f", "cidr": "10.0.0.0/28", "mode": "flat", "network_size": 16}
    )
    h.run("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/29"})
    return h


def play(h: History, ops: list[tuple[str, int, int]]) -> None:
    for op, i, j in ops:
        fixed = sorted(h.state.networks["1"].fixed)
        floating = sorted(h.state.pools["pub"].floating)
        if op == "alloc":
            h.run("fixed_ip.allocate", {"instance": f"i{i}", "network_id": "1"})
        elif op == "dealloc":
            h.run("fixed_ip.deallocate", {"instance": f"i{i}"})
        elif op == "falloc":
            h.run("floating_ip.allocate", {"project": "p1"})
        elif floating:
            f = floating[j % len(floating)]
            if op == "assoc" and fixed:
                h.run(
                    "floating_ip.associate",
                    {"address": f, "fixed_address": fixed[i % len(fixed)], "project": "p1"},
                )
            elif op == "disassoc":
                h.run("floating_ip.disassociate", {"address": f, "project": "p1"})
            elif op == "fdealloc":
                h.run("floating_ip.deallocate", {"address": f, "project": "p1"})


@settings(max_examples=150, deadline=None)
@given(before=OPS, after=OPS)
def test_reverting_a_suffix_restores_the_state_before_it(
    before: list[tuple[str, int, int]], after: list[tuple[str, int, int]]
) -> None:
    h = setup()
    play(h, before)
    cut = len(h.stored)
    expected = snapshot(h.state)
    play(h, after)
    plan = compensate(h.state, h.stored[cut:])
    assert plan.reverted == [s.seq for s in h.stored[cut:]]
    for ev in plan.events:
        h.fold(ev, "revert")
    assert snapshot(h.state) == expected
    # Reverting the revert replays the suffix's effect.
    redo = compensate(h.state, h.stored[-len(plan.events) :] if plan.events else [])
    assert len(redo.events) == len(plan.events)


def test_network_creation_with_allocations_reverts_in_reverse_order() -> None:
    h = History()
    h.run("network.create", {"label": "v", "cidr": "10.1.0.0/24", "mode": "vlan"})
    h.run("fixed_ip.allocate", {"instance": "a", "project": "p1"})
    h.run("fixed_ip.allocate", {"instance": "b", "project": "p1"})
    plan = compensate(h.state, h.stored)
    assert [e.TYPE for e in plan.events] == [
        "FixedIpDeallocated",
        "FixedIpDeallocated",
        "NetworkDisassociated",
        "NetworkDeleted",
    ]


def test_network_with_addresses_in_use_is_not_deleted() -> None:
    h = History()
    h.run("network.create", {"label": "f", "cidr": "10.1.0.0/24", "mode": "flat"})
    created = h.stored[:1]
    h.run("fixed_ip.allocate", {"instance": "a", "network_id": "1"})
    with pytest.raises(RevertConflict) as info:
        compensate(h.state, created)
    assert "1 address(es) in use" in info.value.message


def test_reallocated_address_refuses_both_directions_with_the_reason() -> None:
    h = History()
    h.run("network.create", {"label": "f", "cidr": "10.1.0.0/24", "mode": "flat"})
    h.run("fixed_ip.allocate", {"instance": "a", "network_id": "1"})
    alloc = h.stored[-1]
    h.run("fixed_ip.deallocate", {"instance": "a"})
    dealloc = h.stored[-1]
    h.run("fixed_ip.allocate", {"instance": "b", "network_id": "1"})
    for s in (alloc, dealloc):
        with pytest.raises(RevertConflict) as info:
            compensate(h.state, [s])
        assert "allocated to b" in info.value.message
        assert info.value.details["reasons"][0].startswith(f"#{s.seq} ")


def test_held_address_is_freed_then_allocated_again_with_its_lease() -> None:
    h = History()
    h.run("network.create", {"label": "d", "cidr": "10.1.0.0/24", "mode": "flat_dhcp"})
    r = h.run("fixed_ip.allocate", {"instance": "a", "network_id": "1"})
    assert r is not None
    h.run("fixed_ip.lease", {"address": r["address"], "mac": r["mac"]})
    h.run("fixed_ip.deallocate", {"instance": "a"})
    assert not h.state.networks["1"].fixed[r["address"]].allocated  # held until release
    plan = compensate(h.state, h.stored[-1:])
    assert [e.TYPE for e in plan.events] == ["FixedIpFreed", "FixedIpAllocated", "FixedIpLeased"]
    for ev in plan.events:
        h.fold(ev, "revert")
    ip = h.state.networks["1"].fixed[r["address"]]
    assert ip.allocated and ip.leased and ip.instance == "a"
    assert h.state.networks["1"].pool.used == 1


def test_reported_facts_are_skipped() -> None:
    h = History()
    h.run("network.create", {"label": "d", "cidr": "10.1.0.0/24", "mode": "flat_dhcp"})
    r = h.run("fixed_ip.allocate", {"instance": "a", "network_id": "1"})
    assert r is not None
    h.run("fixed_ip.lease", {"address": r["address"], "mac": r["mac"]})
    plan = compensate(h.state, h.stored[1:])
    assert plan.skipped == [3] and plan.reverted == [2]
    assert isinstance(plan.events[0], FixedIpDeallocated) and not plan.events[0].freed


def test_request_events_round_trip_compressed() -> None:
    h = History()
    h.run(
        "network.create",
        {"label": "f", "cidr": "10.2.0.0/22", "mode": "flat", "network_size": 1024},
    )
    for i in range(999):
        h.run("fixed_ip.allocate", {"instance": f"instance-{i}", "network_id": "1"})
    blob = pack_events(h.stored)
    assert len(blob) < 64 * 1024  # a 1000-event revert fits the service's request limit
    assert unpack_events(blob) == tuple(h.stored)


def test_scope() -> None:
    net = NetworkCreated(**{**_NET, "network_id": "7", "project": "p"})
    alloc = FixedIpAllocated("7", "10.0.0.3", "i", "02:00:00:00:00:01", None, "p")
    dealloc = FixedIpDeallocated("7", "10.0.0.3", "i", "02:00:00:00:00:01", None, True)
    assert in_scope(net, "network:7") and not in_scope(net, "network:8")
    seen: set[str] = set()
    assert in_scope(alloc, "project:p", seen) and in_scope(dealloc, "project:p", seen)
    assert not in_scope(dealloc, "project:p", set())
    assert in_scope(ChangeReverted(None, 1, 2, None), None)


_NET: dict[str, Any] = {
    "label": "x",
    "cidr": "10.0.0.0/24",
    "netmask": "255.255.255.0",
    "gateway": "10.0.0.1",
    "broadcast": "10.0.0.255",
    "dhcp_start": "10.0.0.2",
    "mode": "flat",
    "vlan": None,
    "vni": None,
    "bridge": "br100",
    "bridge_interface": None,
    "dns1": None,
    "dns2": None,
    "vpn_private_address": None,
    "vpn_public_port": None,
    "multi_host": False,
    "network_host": None,
    "mtu": None,
    "cidr_v6": None,
}


def test_stored_marker_payloads_decode_as_recorded() -> None:
    """Frozen payloads of the marker (never regenerate: deployed streams hold these)."""
    import base64
    import json
    from pathlib import Path

    from netledger.events.codec import decode

    path = Path(__file__).parent.parent / "fixtures" / "revert" / "stream-2026-revert.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    assert lines
    for line in lines:
        env = decode(base64.b64decode(line["payload"]))
        assert env.type == line["type"] == "ChangeReverted"
        assert env.event.subject() == line["subject"]
        assert env.event.to_data() == line["data"]
