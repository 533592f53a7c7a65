"""Property tests of the deciders: a stateful machine of random allocate / deallocate /
lease / release checked against a plain model of nova's rule, ``OffsetPool`` against a naive
set, and random (mostly plausible, sometimes junk) requests of every command, each of which
must give a result or a stable error code, never a crash, and keep the state's invariants.

Each request is decided and folded into a ``State`` by hand (no NATS) through the
``Ledger`` of ``tests/events/decider_helpers.py``, which plays the part of the log. Every
refusal is checked to raise its own error class and to leave the state untouched (a decider
that raises has nothing to append).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import netaddr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from netledger.events import errors as E
from netledger.events.codec import Actor
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.state import OffsetPool, State
from tests.events.decider_helpers import (
    ADMIN,
    Ledger,
    _floating_world,
    fingerprint,
    member,
    network_dict_of,
    reserved_of,
    usable_of,
)

# --- properties: random sequences of allocate/deallocate/lease/release ---------------------


class AddressMachine(RuleBasedStateMachine):
    """Random allocate/deallocate/lease/release for random instances, checked against a model.

    The model is nova's rule written plainly: each network's usable addresses in order; an
    address is held from allocation until it is freed (at deallocation, or at the DHCP release
    of a deallocated lease). The lowest address not held is the one handed out.
    """

    INSTANCES = [f"i{k}" for k in range(14)]

    @initialize(
        mode=st.sampled_from(["flat", "flat_dhcp", "vlan", "vxlan"]), size=st.sampled_from([8, 16])
    )
    def create(self, mode: str, size: int) -> None:
        self.led = Ledger()
        self.nets = {
            n["id"]: n
            for n in self.led.networks(
                cidr="10.0.0.0/22",
                num_networks=2,
                network_size=size,
                mode=mode,
                vlan_start=10,
                vni_start=10,
            )
        }
        self.usable = {nid: usable_of(n) for nid, n in self.nets.items()}
        # model: network -> address -> [instance, mac, allocated, leased]
        self.held: dict[str, dict[str, list[Any]]] = {nid: {} for nid in self.nets}
        self.mode = mode

    def _holder(self, instance: str) -> tuple[str, str] | None:
        for nid, addrs in self.held.items():
            for a, (inst, _mac, allocated, _leased) in addrs.items():
                if inst == instance and allocated:
                    return nid, a
        return None

    @rule(instance=st.sampled_from(INSTANCES), net=st.sampled_from(["1", "2"]))
    def allocate(self, instance: str, net: str) -> None:
        held = self.held[net]
        mine = [a for a, v in held.items() if v[0] == instance and v[2]]
        free = [a for a in self.usable[net] if a not in held]
        if mine:
            d = self.led.run("fixed_ip.allocate", instance=instance, network_id=net)
            assert d.events == [] and d.result["address"] == mine[0]
            return
        if not free:
            self.led.refuse(
                E.AddressExhausted, "fixed_ip.allocate", instance=instance, network_id=net
            )
            event("allocate: exhausted")
            return
        d = self.led.run("fixed_ip.allocate", instance=instance, network_id=net)
        addr = d.result["address"]
        assert addr == free[0], "not the lowest free address"
        assert addr not in held, "duplicate address"
        assert addr not in reserved_of(self.nets[net]), "reserved address handed out"
        held[addr] = [instance, d.result["mac"], True, False]

    @rule(
        instances=st.lists(st.sampled_from(INSTANCES), min_size=2, max_size=8),
        net=st.sampled_from(["1", "2"]),
    )
    def allocate_many(self, instances: list[str], net: str) -> None:
        for instance in instances:
            self.allocate(instance, net)

    @rule(instance=st.sampled_from(INSTANCES), data=st.data())
    def allocate_at(self, instance: str, data: st.DataObject) -> None:
        net = data.draw(st.sampled_from(["1", "2"]))
        block = netaddr.IPNetwork(self.nets[net]["cidr"])
        addr = str(block[data.draw(st.integers(0, block.size - 1))])
        held = self.held[net]
        if any(v[0] == instance and v[2] for v in held.values()):
            return  # answered with the held address, covered by allocate
        if addr in held or addr not in self.usable[net]:
            self.led.refuse(
                E.AddressExhausted,
                "fixed_ip.allocate",
                instance=instance,
                network_id=net,
                address=addr,
            )
            return
        d = self.led.run("fixed_ip.allocate", instance=instance, network_id=net, address=addr)
        assert d.result["address"] == addr
        held[addr] = [instance, d.result["mac"], True, False]
        event("allocate_at: explicit address")

    @rule(instance=st.sampled_from(INSTANCES))
    def deallocate(self, instance: str) -> None:
        bound = [
            (nid, a)
            for nid, addrs in self.held.items()
            for a, v in addrs.items()
            if v[0] == instance and v[2]
        ]
        if not bound:
            self.led.refuse(E.InstanceNotFound, "fixed_ip.deallocate", instance=instance)
            return
        d = self.led.deallocate(instance)
        assert sorted((r["network_id"], r["address"]) for r in d.result["deallocated"]) == sorted(
            bound
        )
        for nid, a in bound:
            v = self.held[nid][a]
            if self.mode == "flat" or not v[3]:
                del self.held[nid][a]
            else:
                v[2] = False
                event("deallocate: held until release")

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data(), right_mac=st.booleans())
    def lease(
        self, data: st.DataObject, right_mac: bool, target: tuple[str, str] | None = None
    ) -> None:
        nid, addr = target or data.draw(
            st.sampled_from(sorted((n, a) for n, h in self.held.items() for a in h))
        )
        v = self.held[nid][addr]
        if not right_mac:
            self.led.refuse(E.MacMismatch, "fixed_ip.lease", address=addr, mac="02:aa:00:00:00:01")
            return
        d = self.led.run("fixed_ip.lease", address=addr, mac=v[1])
        assert bool(d.events) == (v[2] and not v[3])
        if v[2]:
            v[3] = True

    @precondition(lambda self: any(v[2] for h in self.held.values() for v in h.values()))
    @rule(data=st.data())
    def lease_then_deallocate(self, data: st.DataObject) -> None:
        """The usual life of a DHCP-served instance (a mere random walk rarely gets here)."""
        nid, addr = data.draw(
            st.sampled_from(
                sorted((n, a) for n, h in self.held.items() for a, v in h.items() if v[2])
            )
        )
        self.lease(data, right_mac=True, target=(nid, addr))
        self.deallocate(self.held[nid][addr][0])

    @precondition(lambda self: any(self.held.values()))
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        nid, addr = data.draw(
            st.sampled_from(sorted((n, a) for n, h in self.held.items() for a in h))
        )
        v = self.held[nid][addr]
        d = self.led.run("fixed_ip.release", address=addr, mac=v[1])
        if not v[2]:
            assert d.result["freed"] is True
            del self.held[nid][addr]
            event("release: freed a deallocated address")
        else:
            assert bool(d.events) == v[3]
            v[3] = False

    @rule(net=st.sampled_from(["1", "2"]))
    def release_unknown(self, net: str) -> None:
        free = [a for a in self.usable[net] if a not in self.held[net]]
        if free:
            self.led.refuse(
                E.FixedIpNotFound, "fixed_ip.release", address=free[-1], mac="02:16:3e:00:00:01"
            )

    @invariant()
    def state_matches_model(self) -> None:
        if not hasattr(self, "led"):
            return
        for nid, n in self.led.state.networks.items():
            held = self.held[nid]
            assert set(n.fixed) == set(held)
            assert n.pool.used == len(held)
            for a, (inst, mac, allocated, leased) in held.items():
                ip = n.fixed[a]
                assert (ip.instance, ip.mac, ip.allocated, ip.leased) == (
                    inst,
                    mac,
                    allocated,
                    leased,
                )
            assert not set(n.fixed) & reserved_of(self.nets[nid])
            macs = [ip.mac for ip in n.fixed.values()]
            assert len(macs) == len(set(macs))
            free = [a for a in self.usable[nid] if a not in held]
            first = next(iter(n.pool.iter_free()), None)
            assert (n.address(first) if first is not None else None) == (free[0] if free else None)
        # An instance holds at most one address per network.
        pairs = [(nid, v[0]) for nid, h in self.held.items() for v in h.values() if v[2]]
        assert len(pairs) == len(set(pairs))


AddressMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestAddressMachine = AddressMachine.TestCase


# --- OffsetPool against a naive model ------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    first=st.integers(0, 4),
    span=st.integers(0, 40),
    reserved=st.sets(st.integers(0, 50), max_size=8),
    ops=st.lists(
        st.tuples(st.sampled_from(["lowest", "take", "release"]), st.integers(0, 50)), max_size=120
    ),
)
def test_offset_pool_is_lowest_free_like_a_naive_set(
    first: int, span: int, reserved: set[int], ops: list[tuple[str, int]]
) -> None:
    last = first + span
    pool = OffsetPool(first, last, frozenset(reserved))
    allowed = {o for o in range(first, last + 1) if o not in reserved}
    used: set[int] = set()
    for op, k in ops:
        free = sorted(allowed - used)
        if op == "lowest":
            got = next(iter(pool.iter_free()), None)
            assert got == (free[0] if free else None)
            if got is not None:
                pool.take(got)
                used.add(got)
        elif op == "take":
            if pool.is_free(k):
                pool.take(k)
                used.add(k)
        elif used:
            victim = sorted(used)[k % len(used)]
            pool.release(victim)
            used.discard(victim)
        free = sorted(allowed - used)
        assert list(pool.iter_free()) == free
        assert [o for o in range(-1, 52) if pool.is_free(o)] == free
        assert pool.used == len(used)
        assert pool.capacity == len(allowed)


# --- any input: a stable error code, never a crash -----------------------------------------

GARBAGE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.sampled_from(["a.b", "*", ">", "", "x" * 65, "0.0.0.0/0", "fd00::/64", "::1"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)

JUNK = st.sampled_from([False] * 19 + [True])  # about one value in twenty is junk

PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "instance": st.sampled_from(["vm-a", "vm-b", "vm-c", "i1"]),
    "project": st.sampled_from(["pa", "pb", "pc", "pd"]),
    "network_id": st.sampled_from(["1", "2", "3", "4", "99"]),
    "host": st.sampled_from(["c1", "c2"]),
    "mac": st.sampled_from(["02:16:3e:00:00:01", "02:00:00:00:00:09", "02:00:00:00:00:0a"]),
    "address": st.sampled_from(
        [
            "10.0.0.3",
            "10.0.0.4",
            "10.0.1.3",
            "10.0.0.255",
            "203.0.113.1",
            "203.0.113.2",
            "192.0.2.1",
        ]
    ),
    "cidr": st.sampled_from(
        [
            "10.0.0.0/24",
            "10.5.0.0/24",
            "10.6.0.0/16",
            "203.0.113.0/29",
            "198.51.100.0/28",
            "10.7.0.0/30",
            "10.8.0.0/29",
        ]
    ),
    "label": st.just("x"),
    "mode": st.sampled_from(["flat", "flat_dhcp", "vlan", "vxlan"]),
    "num_networks": st.integers(1, 4),
    "network_size": st.sampled_from([4, 8, 16, 256]),
    "vlan_start": st.sampled_from([0, 1, 100, 101, 4094, 4095, 500]),
    "vni_start": st.sampled_from([0, 1, 1000, (1 << 24) - 1]),
    "vpn_start": st.sampled_from([1, 1000, 65535]),
    "bridge": st.sampled_from(["br100", "br9", "vbr"]),
    "bridge_interface": st.just("eth1"),
    "dns1": st.just("192.0.2.53"),
    "dns2": st.just("192.0.2.54"),
    "multi_host": st.booleans(),
    "network_host": st.just("n1"),
    "mtu": st.sampled_from([576, 1500, 9000]),
    "cidr_v6": st.sampled_from(["fd00::/64", "fd00:1::/64"]),
    "pool": st.sampled_from(["public", "other", "nope"]),
    "public_interface": st.just("eth0"),
}
PLAUSIBLE["fixed_address"] = PLAUSIBLE["address"]
PLAUSIBLE["now"] = st.sampled_from([0.0, 1.0, 1000.0, 2e9])
PLAUSIBLE["timeout"] = st.sampled_from([0, 600.0])


def request_strategy() -> st.SearchStrategy[tuple[str, dict[str, Any], Actor]]:
    import netledger.events.reaper  # noqa: F401  (registers fixed_ip.reap)
    from netledger.events.commands import COMMANDS

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, dict[str, Any], Actor]:
        name = draw(st.sampled_from(sorted(COMMANDS)))
        fields = dataclasses.fields(COMMANDS[name])
        required = [f.name for f in fields if f.default is dataclasses.MISSING]
        optional = sorted(f.name for f in fields if f.default is not dataclasses.MISSING)
        extra = (
            draw(st.lists(st.sampled_from(optional), unique=True, max_size=4)) if optional else []
        )
        keys = required + extra
        if name == "fixed_ip.allocate" and not {"project", "network_id"} & set(keys):
            keys.append(draw(st.sampled_from(["project", "network_id"])))
        # Mostly plausible values (to get past parsing into the deciders), now and then junk.
        args = {k: draw(GARBAGE if draw(JUNK) else PLAUSIBLE.get(k, GARBAGE)) for k in keys}
        actor = draw(st.sampled_from([ADMIN, ADMIN, member("pa"), member("pb")]))
        return name, args, actor

    return build()


def check_invariants(state: State) -> None:
    live = list(state.live_networks())
    for n in live:
        assert not set(n.fixed) & reserved_of(network_dict_of(n))
        assert all(netaddr.IPAddress(a) in n.ipnet for a in n.fixed)
        assert n.pool.used == len(n.fixed)
        macs = [ip.mac for ip in n.fixed.values()]
        assert len(macs) == len(set(macs))
    blocks = netaddr.IPSet()
    for n in live:
        assert not blocks & netaddr.IPSet([n.ipnet]), "overlapping networks"
        blocks.add(n.ipnet)
    vlans = [n.net.vlan for n in live if n.net.vlan is not None]
    assert len(vlans) == len(set(vlans)), "duplicate VLAN"
    for project, nid in state.project_networks.items():
        assert state.networks[nid].project == project
    owned: dict[str, list[str]] = {}
    for n in live:
        if n.project is not None and n.net.mode in ("vlan", "vxlan"):
            owned.setdefault(n.project, []).append(n.network_id)
            # Every instance on a project's segment belongs to that project (or to no one).
            assert {ip.project for ip in n.fixed.values()} <= {n.project, None}
    for project, nets in owned.items():
        assert len(nets) == 1, f"project {project} holds segments {nets}"
    for p in state.pools.values():
        for f in p.floating.values():
            if f.fixed_address is not None:
                assert f.network_id is not None
                fixed = state.networks[f.network_id].fixed.get(f.fixed_address)
                assert fixed is not None and fixed.allocated


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(request_strategy(), min_size=1, max_size=12))
def test_any_requests_give_a_result_or_a_stable_error(
    requests: list[tuple[str, dict[str, Any], Actor]],
) -> None:
    led, _, _ = _floating_world()
    for k, (name, args, actor) in enumerate(requests):
        payload = {"command_id": f"fuzz-{k}", "actor": actor.to_wire(), "args": args}
        before = fingerprint(led.state)
        try:
            req = parse_command(name, payload)
        except E.ValidationError as err:
            event(f"refused by parse: {err.code}")
            continue
        try:
            d = decide(led.state, req)
        except E.NetledgerError as err:
            event(f"refused by decide: {err.code}")
            assert err.code != "internal_error"
            assert fingerprint(led.state) == before
            continue
        event(f"decided {name}: {'events' if d.events else 'no events'}")
        led.fold(req, d.events)
        check_invariants(led.state)
