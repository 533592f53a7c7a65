"""Unit and property tests of the pure deciders, folded into a State by hand (no NATS).

A ``Ledger`` plays the part of the log: it decides a request, wraps the events in envelopes and
folds them into the state with increasing stream sequences, exactly as the command service's
follower would. Every refusal is checked to raise its own error class and to leave the state
untouched (a decider that raises has nothing to append).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import netaddr
import pytest
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
from netledger.events.codec import Actor, Envelope
from netledger.events.commands import NetworkCreate, Request, parse_command
from netledger.events.decide import Decision, Pending, decide
from netledger.events.state import NetworkState, OffsetPool, State
from netledger.events.types import (
    Event,
    FixedIpAllocated,
    FixedIpDeallocated,
    FixedIpLeased,
    FixedIpReleased,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
    NetworkAssociated,
    NetworkCreated,
    NetworkDeleted,
    NetworkDisassociated,
)

ADMIN = Actor(role="admin", user="ops")


def member(project: str) -> Actor:
    return Actor(project=project, role="member", user=f"user-{project}")


def fingerprint(state: State) -> Any:
    """Everything a decider could conceivably change, as plain values."""
    nets = {
        nid: (
            n.project,
            n.deleted,
            n.seq,
            sorted((a, vars(ip).copy().items().__repr__()) for a, ip in n.fixed.items()),
            sorted(n.by_instance.items()),
            sorted(n.macs.items()),
            (n.pool.next_unused, list(n.pool.freed), n.pool.used),
        )
        for nid, n in state.networks.items()
    }
    pools = {
        name: (
            p.seq,
            sorted(repr(vars(f)) for f in p.floating.values()),
            (p.pool.next_unused, list(p.pool.freed), p.pool.used),
        )
        for name, p in state.pools.items()
    }
    return (
        nets,
        pools,
        sorted(state.project_networks.items()),
        sorted((k, sorted(v)) for k, v in state.instance_ips.items()),
        sorted(state.subject_seq.items()),
        state.last_seq,
        state.next_network_number,
    )


class Ledger:
    """A State plus a stand-in for the log: decide, then fold with increasing seqs."""

    def __init__(self) -> None:
        self.state = State()
        self.seq = 0
        self.log: list[Event] = []
        self._ids = itertools.count(1)

    def request(self, name: str, actor: Actor = ADMIN, **args: Any) -> Request:
        payload = {
            "command_id": f"cmd-{next(self._ids)}",
            "actor": actor.to_wire(),
            "args": {k: v for k, v in args.items() if v is not None},
        }
        return parse_command(name, payload)

    def fold(self, req: Request, events: list[Event]) -> None:
        for i, ev in enumerate(events):
            self.seq += 1
            env = Envelope(ev, f"{req.command_id}:{i}", req.command_id, 1.0, req.actor)
            assert self.state.apply(self.seq, ev.subject(), env)
            self.log.append(ev)

    def run(self, name: str, actor: Actor = ADMIN, **args: Any) -> Decision:
        req = self.request(name, actor, **args)
        d = decide(self.state, req)
        self.fold(req, d.events)
        return d

    def refuse(
        self, error: type[E.NetledgerError], name: str, actor: Actor = ADMIN, **args: Any
    ) -> E.NetledgerError:
        """``name`` must raise exactly ``error`` and leave the state as it was."""
        before = fingerprint(self.state)
        req = self.request(name, actor, **args)
        with pytest.raises(E.NetledgerError) as info:
            decide(self.state, req)
        assert type(info.value) is error, f"{info.value!r} is not {error.__name__}"
        assert info.value.code == error.code
        assert fingerprint(self.state) == before
        return info.value

    # conveniences ----------------------------------------------------------------------

    def networks(self, **args: Any) -> list[dict[str, Any]]:
        args.setdefault("label", "net")
        return list(self.run("network.create", **args).result["networks"])

    def allocate(self, instance: str, actor: Actor = ADMIN, **args: Any) -> dict[str, Any]:
        return self.run("fixed_ip.allocate", actor, instance=instance, **args).result

    def deallocate(self, instance: str, actor: Actor = ADMIN, **args: Any) -> Decision:
        return self.run("fixed_ip.deallocate", actor, instance=instance, **args)


def reserved_of(net: dict[str, Any]) -> set[str]:
    """What must never be handed out, computed from nova's rules (not from State)."""
    block = netaddr.IPNetwork(net["cidr"])
    out = {str(block.network), str(block.broadcast), net["gateway"]}
    if net["mode"] == "vlan":
        out.add(str(block[2]))
    start = netaddr.IPAddress(net["dhcp_start"])
    out |= {str(ip) for ip in block if ip < start}
    return out


def network_dict_of(n: NetworkState) -> dict[str, Any]:
    return {
        "cidr": n.net.cidr,
        "gateway": n.net.gateway,
        "mode": n.net.mode,
        "dhcp_start": n.net.dhcp_start,
    }


def usable_of(net: dict[str, Any]) -> list[str]:
    block = netaddr.IPNetwork(net["cidr"])
    reserved = reserved_of(net)
    return [str(ip) for ip in block if str(ip) not in reserved]


# --- network create ------------------------------------------------------------------------


def test_vlan_split_follows_nova() -> None:
    led = Ledger()
    nets = led.networks(
        cidr="10.0.0.0/16",
        num_networks=3,
        network_size=256,
        vlan_start=100,
        vpn_start=1000,
        label="priv",
    )
    assert [n["id"] for n in nets] == ["1", "2", "3"]
    for i, n in enumerate(nets):
        assert n["label"] == f"priv_{i}"
        assert n["cidr"] == f"10.0.{i}.0/24"
        assert n["netmask"] == "255.255.255.0"
        assert n["gateway"] == f"10.0.{i}.1"
        assert n["broadcast"] == f"10.0.{i}.255"
        assert n["vpn_private_address"] == f"10.0.{i}.2"
        assert n["dhcp_start"] == f"10.0.{i}.3"
        assert n["vlan"] == 100 + i
        assert n["vpn_public_port"] == 1000 + i
        assert n["bridge"] == f"br{100 + i}"
        assert n["mode"] == "vlan"
        assert n["vni"] is None
        assert n["project"] is None
    assert all(isinstance(e, NetworkCreated) for e in led.log)
    assert len(led.state.networks) == 3


def test_network_i_is_at_offset_i_times_size() -> None:
    led = Ledger()
    nets = led.networks(cidr="10.20.0.0/22", num_networks=4, network_size=64, mode="flat_dhcp")
    assert [n["cidr"] for n in nets] == [
        "10.20.0.0/26",
        "10.20.0.64/26",
        "10.20.0.128/26",
        "10.20.0.192/26",
    ]
    assert [n["gateway"] for n in nets] == ["10.20.0.1", "10.20.0.65", "10.20.0.129", "10.20.0.193"]
    assert [n["broadcast"] for n in nets] == [
        "10.20.0.63",
        "10.20.0.127",
        "10.20.0.191",
        "10.20.0.255",
    ]
    assert {n["netmask"] for n in nets} == {"255.255.255.192"}


@pytest.mark.parametrize("mode", ["flat", "flat_dhcp"])
def test_flat_networks_share_br100_and_start_dhcp_at_2(mode: str) -> None:
    led = Ledger()
    a = led.networks(cidr="10.1.0.0/24", mode=mode)[0]
    b = led.networks(cidr="10.2.0.0/24", mode=mode)[0]
    for n in (a, b):
        assert n["bridge"] == "br100"
        assert n["dhcp_start"] == n["cidr"].replace(".0/24", ".2")
        assert n["vlan"] is None and n["vpn_private_address"] is None
        assert n["vpn_public_port"] is None


def test_vxlan_networks_get_vnis_and_brvx_bridges() -> None:
    led = Ledger()
    nets = led.networks(cidr="10.3.0.0/23", mode="vxlan", num_networks=2, vni_start=5000)
    assert [(n["vni"], n["bridge"], n["vlan"]) for n in nets] == [
        (5000, "brvx5000", None),
        (5001, "brvx5001", None),
    ]
    assert [n["dhcp_start"] for n in nets] == ["10.3.0.2", "10.3.1.2"]


def test_bridge_prefix_with_several_vlan_networks() -> None:
    led = Ledger()
    nets = led.networks(cidr="10.4.0.0/23", num_networks=2, vlan_start=300, bridge="vbr")
    assert [n["bridge"] for n in nets] == ["vbr300", "vbr301"]


def test_network_ids_keep_growing_across_creates() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24")
    second = led.networks(cidr="10.0.1.0/24", vlan_start=200)
    assert second[0]["id"] == "2"


@pytest.mark.parametrize("cidr", ["10.0.0.128/25", "10.0.0.0/24", "10.0.0.4/30"])
def test_range_inside_or_equal_to_a_network_is_refused(cidr: str) -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24")
    err = led.refuse(
        E.NetworkOverlap,
        "network.create",
        label="x",
        cidr=cidr,
        network_size=4,
        vlan_start=500,
        mode="flat",
        bridge="br9",
    )
    assert err.details["network_id"] == "1"


def test_a_range_around_a_network_is_split_around_it() -> None:
    """nova's rule (issue 19): the blocks overlapping 10.0.0.0/24 are skipped, not refused."""
    led = Ledger()
    led.networks(cidr="10.0.0.0/24")
    nets = led.networks(
        cidr="10.0.0.0/16", network_size=4, num_networks=2, mode="flat", bridge="br9"
    )
    assert [n["cidr"] for n in nets] == ["10.0.1.0/30", "10.0.1.4/30"]


def test_a_split_skips_a_network_in_its_middle() -> None:
    led = Ledger()
    led.networks(cidr="10.0.3.0/24", vlan_start=900)
    # Blocks 0..2 are free, block 3 is 10.0.3.0/24 in use: the fourth network is 10.0.4.0/24.
    nets = led.networks(cidr="10.0.0.0/16", num_networks=4)
    assert [n["cidr"] for n in nets] == [f"10.0.{i}.0/24" for i in (0, 1, 2, 4)]
    assert [n["vlan"] for n in nets] == [100, 101, 102, 103]


def test_adjacent_network_is_fine() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24")
    led.networks(cidr="10.0.1.0/24", vlan_start=101)


def test_network_inside_a_floating_pool_is_refused() -> None:
    led = Ledger()
    led.run("floating_ip.pool_create", pool="public", cidr="203.0.113.0/24")
    err = led.refuse(
        E.NetworkOverlap, "network.create", label="x", cidr="203.0.113.0/25", network_size=128
    )
    assert err.details["pool"] == "public"
    # Around the pool, its blocks are skipped like a network's.
    nets = led.networks(cidr="203.0.112.0/23", num_networks=2, network_size=128)
    assert [n["cidr"] for n in nets] == ["203.0.112.0/25", "203.0.112.128/25"]
    led.refuse(
        E.RangeExhausted,
        "network.create",
        label="x",
        cidr="203.0.112.0/23",
        network_size=128,
        vlan_start=700,
    )


def test_duplicate_vlan_is_refused_even_in_the_middle_of_a_split() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", vlan_start=100)
    led.refuse(E.DuplicateVlan, "network.create", label="x", cidr="10.1.0.0/24", vlan_start=100)
    err = led.refuse(
        E.DuplicateVlan,
        "network.create",
        label="x",
        cidr="10.1.0.0/16",
        vlan_start=98,
        num_networks=4,
    )
    assert err.details["vlan"] == 100


def test_duplicate_vni_is_refused() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", mode="vxlan", vni_start=7000)
    led.refuse(
        E.DuplicateVni,
        "network.create",
        label="x",
        cidr="10.1.0.0/23",
        mode="vxlan",
        vni_start=6999,
        num_networks=2,
    )


def test_duplicate_bridge_is_refused() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", vlan_start=100)  # br100
    led.refuse(E.DuplicateBridge, "network.create", label="x", cidr="10.1.0.0/24", mode="flat")
    led.refuse(
        E.DuplicateBridge,
        "network.create",
        label="x",
        cidr="10.1.0.0/24",
        vlan_start=200,
        bridge="br100",
    )
    led.refuse(
        E.DuplicateBridge,
        "network.create",
        label="x",
        cidr="10.1.0.0/24",
        mode="vxlan",
        bridge="br100",
    )


def test_deleted_network_frees_its_vlan_cidr_and_bridge() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", vlan_start=100)
    led.run("network.delete", network_id="1")
    again = led.networks(cidr="10.0.0.0/24", vlan_start=100)
    assert again[0]["id"] == "2" and again[0]["bridge"] == "br100"


@pytest.mark.parametrize(("vlan_start", "num"), [(0, 1), (4095, 1), (4094, 2), (-5, 1), (4000, 96)])
def test_vlan_outside_1_to_4094_is_refused(vlan_start: int, num: int) -> None:
    Ledger().refuse(
        E.VlanOutOfRange,
        "network.create",
        label="x",
        cidr="10.0.0.0/8",
        vlan_start=vlan_start,
        num_networks=num,
    )


@pytest.mark.parametrize(("vlan_start", "num"), [(1, 1), (4094, 1), (4000, 95)])
def test_vlan_edges_are_accepted(vlan_start: int, num: int) -> None:
    nets = Ledger().networks(
        cidr="10.0.0.0/8", vlan_start=vlan_start, num_networks=num, network_size=16
    )
    assert nets[-1]["vlan"] == vlan_start + num - 1 <= 4094


def test_vni_out_of_range_is_refused() -> None:
    Ledger().refuse(
        E.VniOutOfRange, "network.create", label="x", cidr="10.0.0.0/24", mode="vxlan", vni_start=0
    )
    Ledger().refuse(
        E.VniOutOfRange,
        "network.create",
        label="x",
        cidr="10.0.0.0/23",
        mode="vxlan",
        vni_start=(1 << 24) - 1,
        num_networks=2,
    )


@pytest.mark.parametrize(
    ("args"),
    [
        {"cidr": "10.0.0.0/24", "num_networks": 2, "network_size": 256},
        {"cidr": "10.0.0.0/25", "network_size": 256},
        {"cidr": "10.0.0.0/24", "num_networks": 3, "network_size": 128},
        {"cidr": "10.0.0.0/29", "num_networks": 3},  # computed: 8 // 3 = 2 < 4
        {"cidr": "10.0.0.0/30", "mode": "vlan"},  # computed 4: gateway, VPN, broadcast leave 0
        {"cidr": "10.0.0.0/24", "network_size": 4},  # vlan: gateway, VPN and broadcast leave 0
    ],
)
def test_range_too_small_is_refused(args: dict[str, Any]) -> None:
    Ledger().refuse(E.RangeTooSmall, "network.create", label="x", **args)


def test_smallest_networks_leave_one_usable_address() -> None:
    led = Ledger()
    flat = led.networks(cidr="10.0.0.0/30", mode="flat", network_size=4)[0]
    vlan = led.networks(cidr="10.0.1.0/29", network_size=8, vlan_start=5)[0]
    assert usable_of(flat) == ["10.0.0.2"]
    assert usable_of(vlan) == ["10.0.1.3", "10.0.1.4", "10.0.1.5", "10.0.1.6"]
    assert led.allocate("a", network_id=flat["id"])["address"] == "10.0.0.2"
    led.refuse(E.AddressExhausted, "fixed_ip.allocate", instance="b", network_id=flat["id"])


def test_project_given_with_several_networks_is_refused() -> None:
    Ledger().refuse(
        E.InvalidField,
        "network.create",
        label="x",
        cidr="10.0.0.0/23",
        num_networks=2,
        project="p1",
    )


def test_explicit_nil_arguments_mean_not_given() -> None:
    """Regression: an explicit nil network_size crashed parsing (AssertionError, reported as
    internal_error) and a nil vlan_start / vni_start became 0 instead of the default."""
    nil = dict.fromkeys(
        [
            "network_size",
            "num_networks",
            "vlan_start",
            "vni_start",
            "vpn_start",
            "multi_host",
            "mtu",
        ]
    )
    req = parse_command("network.create", {"args": {"label": "x", "cidr": "10.0.0.0/24", **nil}})
    cmd = req.command
    assert isinstance(cmd, NetworkCreate)
    assert (
        cmd.network_size,
        cmd.num_networks,
        cmd.vlan_start,
        cmd.vni_start,
        cmd.vpn_start,
        cmd.multi_host,
        cmd.mtu,
    ) == (None, 1, 100, 1000, 1000, False, None)
    # Not given: the decider computes it (nova's rule) and says so.
    d = decide(State(), dataclasses.replace(req, actor=ADMIN))
    assert (d.result["network_size"], d.result["network_size_computed"]) == (256, True)


# --- reserved addresses, lowest free, exhaustion -------------------------------------------


@pytest.mark.parametrize("mode", ["flat", "flat_dhcp", "vlan", "vxlan"])
def test_allocation_walks_the_usable_range_in_order_then_exhausts(mode: str) -> None:
    led = Ledger()
    net = led.networks(cidr="10.9.0.0/27", network_size=32, mode=mode)[0]
    got = [
        led.allocate(f"i{k}", network_id=net["id"])["address"] for k in range(len(usable_of(net)))
    ]
    assert got == usable_of(net)
    assert not set(got) & reserved_of(net)
    assert "10.9.0.31" not in got  # the broadcast nova used to hand out
    err = led.refuse(
        E.AddressExhausted, "fixed_ip.allocate", instance="one-too-many", network_id=net["id"]
    )
    assert err.details["network_id"] == net["id"]
    assert isinstance(err, E.AllocationError)


def test_lowest_free_is_reused_first() -> None:
    led = Ledger()
    net = led.networks(cidr="10.9.0.0/24", mode="flat")[0]
    for k in range(6):
        led.allocate(f"i{k}", network_id=net["id"])  # .2 .. .7
    led.deallocate("i3")  # .5
    led.deallocate("i1")  # .3
    assert led.allocate("n1", network_id=net["id"])["address"] == "10.9.0.3"
    assert led.allocate("n2", network_id=net["id"])["address"] == "10.9.0.5"
    assert led.allocate("n3", network_id=net["id"])["address"] == "10.9.0.8"


def test_same_instance_twice_returns_the_same_address_and_appends_nothing() -> None:
    led = Ledger()
    net = led.networks(cidr="10.9.0.0/24")[0]
    first = led.allocate("vm", network_id=net["id"], host="c1")
    d = led.run("fixed_ip.allocate", instance="vm", network_id=net["id"], host="c1")
    assert d.events == []
    assert d.result == first


def test_explicit_address_and_reserved_explicit_addresses() -> None:
    led = Ledger()
    net = led.networks(cidr="10.9.0.0/24")[0]
    assert led.allocate("a", network_id=net["id"], address="10.9.0.50")["address"] == "10.9.0.50"
    # The skipped addresses below it stay free, lowest first.
    assert led.allocate("b", network_id=net["id"])["address"] == "10.9.0.3"
    for bad in ("10.9.0.0", "10.9.0.1", "10.9.0.2", "10.9.0.255", "10.9.0.50"):
        led.refuse(
            E.AddressExhausted, "fixed_ip.allocate", instance="c", network_id=net["id"], address=bad
        )
    led.refuse(
        E.InvalidAddress,
        "fixed_ip.allocate",
        instance="c",
        network_id=net["id"],
        address="10.10.0.5",
    )


def test_generated_macs_are_local_unicast_and_unique() -> None:
    led = Ledger()
    net = led.networks(cidr="10.9.0.0/23", network_size=512, mode="flat")[0]
    macs = [led.allocate(f"i{k}", network_id=net["id"])["mac"] for k in range(300)]
    assert len(set(macs)) == len(macs)
    assert all(m.startswith("02:16:3e:") for m in macs)


def test_given_mac_in_use_is_refused() -> None:
    led = Ledger()
    net = led.networks(cidr="10.9.0.0/24")[0]
    led.allocate("a", network_id=net["id"], mac="02:00:00:00:00:01")
    led.refuse(
        E.MacInUse, "fixed_ip.allocate", instance="b", network_id=net["id"], mac="02:00:00:00:00:01"
    )
    # The same MAC in another network is fine (unique per network).
    other = led.networks(cidr="10.8.0.0/24", vlan_start=5)[0]
    led.allocate("b", network_id=other["id"], mac="02:00:00:00:00:01")


def test_unknown_or_deleted_network_is_refused() -> None:
    led = Ledger()
    led.refuse(E.NetworkNotFound, "fixed_ip.allocate", instance="a", network_id="42")
    net = led.networks(cidr="10.9.0.0/24")[0]
    led.run("network.delete", network_id=net["id"])
    led.refuse(E.NetworkNotFound, "fixed_ip.allocate", instance="a", network_id=net["id"])
    led.refuse(E.NetworkNotFound, "network.delete", network_id=net["id"])
    led.refuse(E.NetworkNotFound, "network.disassociate", network_id="42")
    led.refuse(E.NetworkNotFound, "network.show", network_id="42")


def test_unknown_project_without_assignable_network_is_refused() -> None:
    Ledger().refuse(E.ProjectNotFound, "fixed_ip.allocate", instance="a", project="nobody")


# --- VLAN: projects get networks on first use ----------------------------------------------


def test_vlan_projects_get_the_lowest_free_network_once() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/16", num_networks=3)
    a1 = led.run("fixed_ip.allocate", instance="a1", project="pa")
    assert [type(e) for e in a1.events] == [NetworkAssociated, FixedIpAllocated]
    assert a1.result["network_id"] == "1" and a1.result["address"] == "10.0.0.3"
    b1 = led.allocate("b1", project="pb")
    assert b1["network_id"] == "2"
    a2 = led.run("fixed_ip.allocate", instance="a2", project="pa")
    assert [type(e) for e in a2.events] == [FixedIpAllocated]  # one network per project
    assert a2.result["network_id"] == "1" and a2.result["address"] == "10.0.0.4"
    assert led.allocate("c1", project="pc")["network_id"] == "3"
    led.refuse(E.NoFreeNetwork, "fixed_ip.allocate", instance="d1", project="pd")
    assert led.state.project_networks == {"pa": "1", "pb": "2", "pc": "3"}

    # pb leaves; its network becomes the lowest free one again.
    led.deallocate("b1")
    led.run("network.disassociate", network_id="2")
    assert led.allocate("d1", project="pd")["network_id"] == "2"


def test_lowest_free_network_is_numeric_not_lexical() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/16", num_networks=12, network_size=64)
    for p in range(1, 12):
        led.allocate(f"i{p}", project=f"p{p}")  # networks 1..11
    led.deallocate("i2")
    led.run("network.disassociate", network_id="2")
    # "10" < "2" lexically; the lowest free network is 2, then 12.
    assert led.allocate("x", project="new")["network_id"] == "2"
    assert led.allocate("y", project="newer")["network_id"] == "12"


def test_network_created_for_a_project_is_used_by_it() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", vlan_start=10)
    created = led.run(
        "network.create", label="mine", cidr="10.0.1.0/24", vlan_start=11, project="owner"
    )
    # The association also lands on the project's subject, so that its OCC check stops a
    # concurrent first-use assignment from giving the project a second network.
    assert [type(e) for e in created.events] == [NetworkCreated, NetworkAssociated]
    assert created.events[1].subject() == "netledger.evt.project.owner"
    assert created.result["networks"][0]["project"] == "owner"
    d = led.run("fixed_ip.allocate", instance="vm", project="owner")
    assert [type(e) for e in d.events] == [FixedIpAllocated]
    assert d.result["network_id"] == "2"


def test_creating_a_second_network_for_a_project_is_refused() -> None:
    """Regression: this used to give the project two segments; after disassociating one, its
    next allocation was handed yet another (the state kept one network per project)."""
    led = Ledger()
    led.networks(cidr="10.0.0.0/23", num_networks=2)
    led.allocate("vm", project="pa")
    err = led.refuse(
        E.ProjectHasNetwork,
        "network.create",
        label="x",
        cidr="10.5.0.0/24",
        vlan_start=7,
        project="pa",
    )
    assert err.details == {"project": "pa", "network_id": "1"}
    led.deallocate("vm")
    led.run("network.disassociate", network_id="1")
    assert led.networks(cidr="10.5.0.0/24", vlan_start=7, project="pa")[0]["id"] == "3"
    assert led.allocate("vm2", project="pa")["network_id"] == "3"


def test_allocating_on_another_projects_network_is_refused() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/23", num_networks=2)
    led.allocate("a", project="pa")
    led.refuse(
        E.WrongNetworkProject, "fixed_ip.allocate", instance="b", project="pb", network_id="1"
    )


def test_a_project_may_not_allocate_on_a_segment_no_project_holds() -> None:
    """Regression: this used to allocate without associating, so the next project's first
    use was handed a VLAN that already carried another project's instance."""
    led = Ledger()
    led.networks(cidr="10.0.0.0/23", num_networks=2)
    err = led.refuse(
        E.NetworkNotAssociated, "fixed_ip.allocate", instance="a", project="pa", network_id="2"
    )
    assert err.details == {"network_id": "2", "project": "pa"}
    led.refuse(
        E.NetworkNotAssociated,
        "fixed_ip.allocate",
        member("pa"),
        instance="a",
        project="pa",
        network_id="2",
    )
    # An admin may still place an instance on a given network without naming a project.
    assert led.allocate("infra", network_id="2")["project"] is None
    assert led.allocate("a", project="pa")["network_id"] == "1"
    assert led.allocate("a2", project="pa", network_id="1")["network_id"] == "1"


def test_vpn_ports_beyond_65535_are_refused() -> None:
    """Regression: vpn_start near 65535 with several networks produced ports above 65535."""
    err = Ledger().refuse(
        E.LimitExceeded,
        "network.create",
        label="x",
        cidr="10.0.0.0/23",
        num_networks=2,
        vpn_start=65535,
    )
    assert err.details["field"] == "vpn_start"
    nets = Ledger().networks(cidr="10.0.0.0/23", num_networks=2, vpn_start=65534)
    assert [n["vpn_public_port"] for n in nets] == [65534, 65535]
    flat = Ledger().networks(cidr="10.0.0.0/23", num_networks=2, vpn_start=65535, mode="flat")
    assert [n["vpn_public_port"] for n in flat] == [None, None]


def test_flat_projects_share_the_least_used_flat_network() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/23", num_networks=2, mode="flat_dhcp")
    got = [led.allocate(f"i{k}", project=f"p{k % 3}")["network_id"] for k in range(4)]
    assert got == ["1", "2", "1", "2"]
    assert led.state.project_networks == {}


def test_network_delete_and_disassociate_refusals() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24")
    led.refuse(E.NetworkNotAssociated, "network.disassociate", network_id="1")
    led.allocate("vm", project="p1")
    led.refuse(E.NetworkInUse, "network.delete", network_id="1")
    led.refuse(E.NetworkInUse, "network.disassociate", network_id="1")
    led.run("fixed_ip.lease", address="10.0.0.3", mac=led.state.networks["1"].fixed["10.0.0.3"].mac)
    dealloc = led.deallocate("vm")
    assert dealloc.result["deallocated"][0]["freed"] is False  # leased: held until released
    led.refuse(E.NetworkInUse, "network.disassociate", network_id="1")
    mac = led.state.networks["1"].fixed["10.0.0.3"].mac
    led.run("fixed_ip.release", address="10.0.0.3", mac=mac)
    led.refuse(E.NetworkInUse, "network.delete", network_id="1")  # the project still holds it
    d = led.run("network.disassociate", network_id="1")
    assert d.events == [NetworkDisassociated(network_id="1", project="p1")]
    d = led.run("network.delete", network_id="1")
    assert d.events == [NetworkDeleted(network_id="1")]
    assert not list(led.state.live_networks())


# --- lease / release / deallocate ----------------------------------------------------------


def test_lease_and_release_lifecycle_in_vlan_mode() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24")
    ip = led.allocate("vm", project="p1")
    addr, mac = ip["address"], ip["mac"]
    led.refuse(E.FixedIpNotFound, "fixed_ip.lease", address="10.0.0.99", mac=mac)
    led.refuse(E.FixedIpNotFound, "fixed_ip.lease", address="192.0.2.1", mac=mac)
    led.refuse(E.MacMismatch, "fixed_ip.lease", address=addr, mac="02:00:00:00:00:99")
    d = led.run("fixed_ip.lease", address=addr, mac=mac)
    assert [type(e) for e in d.events] == [FixedIpLeased]
    assert led.run("fixed_ip.lease", address=addr, mac=mac).events == []  # already leased
    d = led.run("fixed_ip.release", address=addr, mac=mac)
    assert d.events[0] == FixedIpReleased(
        network_id="1", address=addr, mac=mac, instance="vm", freed=False
    )
    assert led.run("fixed_ip.release", address=addr, mac=mac).events == []
    led.run("fixed_ip.lease", address=addr, mac=mac)

    d = led.deallocate("vm")
    assert [type(e) for e in d.events] == [FixedIpDeallocated]
    assert d.events[0].freed is False  # type: ignore[attr-defined]
    # Held until DHCP lets go: the next allocation must not get it.
    assert led.allocate("vm2", project="p1")["address"] != addr
    led.refuse(E.InstanceNotFound, "fixed_ip.deallocate", instance="vm")
    d = led.run("fixed_ip.release", address=addr, mac=mac)
    assert d.events[0].freed is True  # type: ignore[attr-defined]
    assert addr not in led.state.networks["1"].fixed
    assert led.allocate("vm3", project="p1")["address"] == addr


def test_flat_mode_frees_at_once_even_when_leased() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", mode="flat")
    ip = led.allocate("vm", network_id="1")
    led.run("fixed_ip.lease", address=ip["address"], mac=ip["mac"])
    d = led.deallocate("vm")
    assert d.events[0].freed is True  # type: ignore[attr-defined]
    assert led.allocate("vm2", network_id="1")["address"] == ip["address"]


def test_deallocate_unknown_instance_is_refused() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24")
    led.refuse(E.InstanceNotFound, "fixed_ip.deallocate", instance="ghost")
    led.allocate("vm", project="p1")
    led.refuse(E.InstanceNotFound, "fixed_ip.deallocate", instance="vm", network_id="7")


# --- floating IPs --------------------------------------------------------------------------


def _floating_world() -> tuple[Ledger, dict[str, Any], dict[str, Any]]:
    led = Ledger()
    led.networks(cidr="10.0.0.0/23", num_networks=2)
    led.run("floating_ip.pool_create", pool="public", cidr="203.0.113.0/29")
    a = led.allocate("vm-a", project="pa")
    b = led.allocate("vm-b", project="pb")
    return led, a, b


def test_pool_create_refusals() -> None:
    led, _, _ = _floating_world()
    led.refuse(E.PoolExists, "floating_ip.pool_create", pool="public", cidr="198.51.100.0/24")
    err = led.refuse(E.PoolOverlap, "floating_ip.pool_create", pool="other", cidr="203.0.113.0/24")
    assert err.details["pool"] == "public"
    err = led.refuse(E.PoolOverlap, "floating_ip.pool_create", pool="other", cidr="10.0.1.0/28")
    assert err.details["network_id"] == "2"


def test_floating_lifecycle() -> None:
    led, a, _ = _floating_world()
    d = led.run("floating_ip.allocate", project="pa")
    assert d.events == [FloatingIpAllocated(pool="public", address="203.0.113.1", project="pa")]
    fip = d.result["address"]
    d = led.run("floating_ip.associate", address=fip, fixed_address=a["address"], project="pa")
    assert [type(e) for e in d.events] == [FloatingIpAssociated]
    again = led.run("floating_ip.associate", address=fip, fixed_address=a["address"], project="pa")
    assert again.events == []
    other = led.allocate("vm-a2", project="pa")
    led.refuse(
        E.FloatingIpAssociated,
        "floating_ip.associate",
        address=fip,
        fixed_address=other["address"],
        project="pa",
    )
    led.refuse(E.FloatingIpAssociated, "floating_ip.deallocate", address=fip, project="pa")
    d = led.run("floating_ip.disassociate", address=fip, project="pa")
    assert [type(e) for e in d.events] == [FloatingIpDisassociated]
    assert d.events[0].reason == "requested"  # type: ignore[attr-defined]
    led.refuse(E.FloatingIpNotAssociated, "floating_ip.disassociate", address=fip, project="pa")
    d = led.run("floating_ip.deallocate", address=fip, project="pa")
    assert d.events == [FloatingIpDeallocated(pool="public", address=fip, project="pa")]
    led.refuse(E.FloatingIpNotFound, "floating_ip.deallocate", address=fip, project="pa")
    # Back in the pool: lowest first again.
    assert led.run("floating_ip.allocate", project="pb").result["address"] == fip


def test_floating_allocation_exhausts_and_unknown_pools() -> None:
    led, _, _ = _floating_world()
    got = [
        led.run("floating_ip.allocate", project="pa", pool="public").result["address"]
        for _ in range(6)
    ]
    assert got == [f"203.0.113.{k}" for k in range(1, 7)]  # not .0 or .7
    led.refuse(E.FloatingIpExhausted, "floating_ip.allocate", project="pa")
    led.refuse(E.PoolNotFound, "floating_ip.allocate", project="pa", pool="nope")
    Ledger().refuse(E.PoolNotFound, "floating_ip.allocate", project="pa")


def test_another_projects_floating_ip_is_refused() -> None:
    led, a, b = _floating_world()
    fip = led.run("floating_ip.allocate", project="pa").result["address"]
    for name in ("floating_ip.disassociate", "floating_ip.deallocate"):
        led.refuse(E.FloatingIpNotOwned, name, address=fip, project="pb")
    led.refuse(
        E.FloatingIpNotOwned,
        "floating_ip.associate",
        address=fip,
        fixed_address=b["address"],
        project="pb",
    )
    # pa's floating IP onto pb's fixed IP.
    led.refuse(
        E.Forbidden, "floating_ip.associate", address=fip, fixed_address=b["address"], project="pa"
    )
    led.refuse(
        E.FloatingIpNotFound,
        "floating_ip.associate",
        address="203.0.113.5",
        fixed_address=a["address"],
        project="pa",
    )
    led.refuse(
        E.FloatingIpNotFound,
        "floating_ip.associate",
        address="198.51.100.1",
        fixed_address=a["address"],
        project="pa",
    )
    led.refuse(
        E.FixedIpNotFound,
        "floating_ip.associate",
        address=fip,
        fixed_address="10.0.0.200",
        project="pa",
    )


def test_deallocating_a_fixed_ip_disassociates_its_floating_ips() -> None:
    led, a, _ = _floating_world()
    f1 = led.run("floating_ip.allocate", project="pa").result["address"]
    f2 = led.run("floating_ip.allocate", project="pa").result["address"]
    for f in (f1, f2):
        led.run("floating_ip.associate", address=f, fixed_address=a["address"], project="pa")
    d = led.deallocate("vm-a")
    kinds = [type(e) for e in d.events]
    assert kinds == [FloatingIpDisassociated, FloatingIpDisassociated, FixedIpDeallocated]
    assert {e.address for e in d.events[:2]} == {f1, f2}  # type: ignore[attr-defined]
    assert {e.reason for e in d.events[:2]} == {"fixed ip deallocated"}  # type: ignore[attr-defined]
    for f in (f1, f2):
        fl = led.state.pools["public"].floating[f]
        assert fl.project == "pa" and fl.fixed_address is None  # still the project's
    led.run("floating_ip.deallocate", address=f1, project="pa")


def test_associating_with_a_deallocated_fixed_ip_is_refused() -> None:
    led, a, _ = _floating_world()
    led.run("fixed_ip.lease", address=a["address"], mac=a["mac"])
    led.deallocate("vm-a")  # leased: held until release, but no longer allocated
    fip = led.run("floating_ip.allocate", project="pa").result["address"]
    led.refuse(
        E.FixedIpNotFound,
        "floating_ip.associate",
        address=fip,
        fixed_address=a["address"],
        project="pa",
    )


# --- roles ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("network.create", {"label": "x", "cidr": "10.50.0.0/24"}),
        ("network.delete", {"network_id": "1"}),
        ("network.disassociate", {"network_id": "1"}),
        ("floating_ip.pool_create", {"pool": "p", "cidr": "198.51.100.0/24"}),
    ],
)
def test_admin_only_commands_refuse_members(name: str, args: dict[str, Any]) -> None:
    led, _, _ = _floating_world()
    err = led.refuse(E.Forbidden, name, member("pa"), **args)
    assert err.details["command"] == name


def test_members_are_limited_to_their_own_project() -> None:
    led, a, b = _floating_world()
    pa = member("pa")
    got = led.allocate("vm-a3", pa, project="pa")
    assert got["network_id"] == a["network_id"]
    led.refuse(E.Forbidden, "fixed_ip.allocate", pa, instance="x", project="pb")
    led.refuse(E.Forbidden, "fixed_ip.allocate", pa, instance="x", network_id=b["network_id"])
    led.refuse(E.Forbidden, "fixed_ip.deallocate", pa, instance="vm-b")
    led.refuse(E.Forbidden, "floating_ip.allocate", pa, project="pb")
    fip_b = led.run("floating_ip.allocate", project="pb").result["address"]
    led.refuse(E.Forbidden, "floating_ip.deallocate", pa, address=fip_b, project="pb")
    led.refuse(E.Forbidden, "floating_ip.disassociate", pa, address=fip_b, project="pb")
    led.refuse(E.FloatingIpNotOwned, "floating_ip.deallocate", pa, address=fip_b, project="pa")
    # A member without a project can do nothing project-scoped.
    led.refuse(E.Forbidden, "floating_ip.allocate", Actor(role="member"), project="pa")
    # ...and its own project's work goes through.
    fip_a = led.run("floating_ip.allocate", pa, project="pa").result["address"]
    led.run("floating_ip.associate", pa, address=fip_a, fixed_address=a["address"], project="pa")
    led.deallocate("vm-a", pa)


def test_read_only_commands_append_nothing() -> None:
    led, _, _ = _floating_world()
    before = fingerprint(led.state)
    listed = led.run("network.list")
    assert listed.events == [] and [n["id"] for n in listed.result["networks"]] == ["1", "2"]
    only = led.run("network.list", project="pb").result["networks"]
    assert [n["id"] for n in only] == ["2"]
    shown = led.run("network.show", network_id="1", actor=member("pb"))
    assert shown.events == [] and shown.result["network"]["in_use"] == 1
    assert fingerprint(led.state) == before


# --- Pending: several allocations decided in one batch -------------------------------------


def decide_batch(led: Ledger, reqs: list[Request]) -> list[Decision]:
    """Decide like a service lane: one Pending for the batch, then fold it all at once."""
    pending = Pending()
    out = []
    for req in reqs:
        d = decide(led.state, req, pending)
        pending.note(d.events)
        out.append(d)
    for req, d in zip(reqs, out, strict=True):
        led.fold(req, d.events)
    return out


def test_a_batch_never_collides_and_stays_lowest_first() -> None:
    led = Ledger()
    net = led.networks(cidr="10.0.0.0/24", mode="flat")[0]
    led.allocate("old", network_id="1")
    reqs = [led.request("fixed_ip.allocate", instance=f"b{k}", network_id="1") for k in range(20)]
    ds = decide_batch(led, reqs)
    addrs = [d.result["address"] for d in ds]
    assert addrs == usable_of(net)[1:21]
    assert len({d.result["mac"] for d in ds}) == 20


def test_a_batch_assigns_one_network_per_project() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/16", num_networks=3)
    reqs = [
        led.request("fixed_ip.allocate", instance="a1", project="pa"),
        led.request("fixed_ip.allocate", instance="b1", project="pb"),
        led.request("fixed_ip.allocate", instance="a2", project="pa"),
        led.request("fixed_ip.allocate", instance="b2", project="pb", network_id="2"),
    ]
    ds = decide_batch(led, reqs)
    assert [d.result["network_id"] for d in ds] == ["1", "2", "1", "2"]
    assoc = [e for d in ds for e in d.events if isinstance(e, NetworkAssociated)]
    assert assoc == [NetworkAssociated("1", "pa"), NetworkAssociated("2", "pb")]
    assert [d.result["address"] for d in ds] == ["10.0.0.3", "10.0.1.3", "10.0.0.4", "10.0.1.4"]
    # pc may not take pb's network even though pb's claim is only pending.
    later = [
        led.request("fixed_ip.allocate", instance="c1", project="pc"),
        led.request("fixed_ip.allocate", instance="c2", project="pd", network_id="3"),
    ]
    pending = Pending()
    d = decide(led.state, later[0], pending)
    pending.note(d.events)
    with pytest.raises(E.WrongNetworkProject):
        decide(led.state, later[1], pending)


def test_a_batch_repeating_an_instance_answers_the_first_decision() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", mode="flat")
    r1 = led.request("fixed_ip.allocate", instance="vm", network_id="1")
    r2 = led.request("fixed_ip.allocate", instance="vm", network_id="1")
    ds = decide_batch(led, [r1, r2])
    assert ds[1].events == [] and ds[1].result == ds[0].result


def test_a_batch_respects_given_macs_and_addresses() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", mode="flat")
    pending = Pending()
    d = decide(
        led.state,
        led.request(
            "fixed_ip.allocate",
            instance="a",
            network_id="1",
            mac="02:00:00:00:00:01",
            address="10.0.0.9",
        ),
        pending,
    )
    pending.note(d.events)
    conflicts: list[tuple[dict[str, Any], type[E.NetledgerError]]] = [
        ({"mac": "02:00:00:00:00:01"}, E.MacInUse),
        ({"address": "10.0.0.9"}, E.AddressExhausted),
    ]
    for args, err in conflicts:
        with pytest.raises(err):
            decide(
                led.state,
                led.request("fixed_ip.allocate", instance="b", network_id="1", **args),
                pending,
            )


@settings(max_examples=40, deadline=None)
@given(
    size=st.sampled_from([8, 16, 32]),
    mode=st.sampled_from(["flat", "flat_dhcp", "vlan", "vxlan"]),
    before=st.integers(0, 12),
    batch=st.integers(1, 40),
    holes=st.sets(st.integers(0, 11)),
)
def test_batches_never_collide_property(
    size: int, mode: str, before: int, batch: int, holes: set[int]
) -> None:
    led = Ledger()
    net = led.networks(cidr=f"10.0.0.0/{32 - size.bit_length() + 1}", network_size=size, mode=mode)[
        0
    ]
    usable = usable_of(net)
    for k in range(min(before, len(usable))):
        led.allocate(f"old{k}", network_id="1")
    for k in sorted(holes):
        if k < min(before, len(usable)):
            led.deallocate(f"old{k}")
    pending = Pending()
    taken = set(led.state.networks["1"].fixed)
    for k in range(batch):
        req = led.request("fixed_ip.allocate", instance=f"new{k}", network_id="1")
        free = [a for a in usable if a not in taken]
        if not free:
            with pytest.raises(E.AddressExhausted):
                decide(led.state, req, pending)
            continue
        d = decide(led.state, req, pending)
        pending.note(d.events)
        assert d.result["address"] == free[0]
        taken.add(d.result["address"])
        led.fold(req, d.events)
    assert not taken & reserved_of(net)


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
        assert state.networks[nid].project == project and not state.networks[nid].deleted
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
