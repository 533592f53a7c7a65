"""Unit tests of the network deciders: ``network.create`` (nova's split of a range, modes,
VLAN/VNI/bridge/VPN numbering, overlaps, duplicates, limits), the assignment of VLAN networks
to projects on first use, and ``network.delete`` / ``network.disassociate``.

Each request is decided and folded into a ``State`` by hand (no NATS) through the
``Ledger`` of ``tests/events/decider_helpers.py``, which plays the part of the log. Every
refusal is checked to raise its own error class and to leave the state untouched (a decider
that raises has nothing to append).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from netledger.events import errors as E
from netledger.events.commands import NetworkCreate, parse_command
from netledger.events.decide import decide
from netledger.events.state import State
from netledger.events.types import (
    FixedIpAllocated,
    NetworkAssociated,
    NetworkCreated,
    NetworkDeleted,
    NetworkDisassociated,
)
from tests.events.decider_helpers import (
    ADMIN,
    Ledger,
    member,
    usable_of,
)

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
    # what --vlan-start could be instead: 4 in a row free from 98 up (100 taken) is 101
    assert err.details["free_start"] == 101
    assert err.message == "VLAN 100 is used by network 1 (--vlan-start 101 is free for 4)"


def test_a_refused_vlan_start_names_a_free_one() -> None:
    """From the asked start up, stepping over used runs; else from 1; else none named."""
    from netledger.events.decide_network import _free_run

    used = {100, 101, 103, 4094}
    assert _free_run(used, 1, 100, 4094) == 102
    assert _free_run(used, 2, 100, 4094) == 104
    assert _free_run(used, 3, 4092, 4094) == 1  # no room above (4094 used): from 1
    assert _free_run(set(range(1, 4095)), 1, 100, 4094) is None
    assert _free_run(set(range(1, 4094)) - {7}, 2, 100, 4094) is None  # no two in a row


def test_duplicate_vni_is_refused() -> None:
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", mode="vxlan", vni_start=7000)
    err = led.refuse(
        E.DuplicateVni,
        "network.create",
        label="x",
        cidr="10.1.0.0/23",
        mode="vxlan",
        vni_start=6999,
        num_networks=2,
    )
    assert err.details["free_start"] == 7001


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
