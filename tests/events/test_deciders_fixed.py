"""Unit tests of the fixed-IP deciders: ``fixed_ip.allocate`` (reserved addresses, lowest
free first, exhaustion, given addresses and MACs), ``fixed_ip.lease`` / ``release`` /
``deallocate``, and several allocations decided in one batch against a ``Pending``.

Each request is decided and folded into a ``State`` by hand (no NATS) through the
``Ledger`` of ``tests/events/decider_helpers.py``, which plays the part of the log. Every
refusal is checked to raise its own error class and to leave the state untouched (a decider
that raises has nothing to append).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events import errors as E
from netledger.events.commands import Request
from netledger.events.decide import Decision, Pending, decide
from netledger.events.types import (
    FixedIpDeallocated,
    FixedIpLeased,
    FixedIpReleased,
    NetworkAssociated,
)
from tests.events.decider_helpers import (
    Ledger,
    reserved_of,
    usable_of,
)

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


@settings(max_examples=60, deadline=None)
@given(
    before=st.integers(0, 10),
    plan=st.lists(st.one_of(st.none(), st.integers(0, 29)), min_size=1, max_size=40),
)
def test_a_batch_decided_on_pending_alone_skips_what_it_took(
    before: int, plan: list[int | None]
) -> None:
    """A lane's batch: every decision sees the earlier ones only through ``Pending`` (folded
    after the batch). Explicit addresses (an index into the usable range) and free picks mixed:
    no address twice, a free pick is the lowest address neither stored nor taken in the batch,
    an explicit one already taken is refused."""
    led = Ledger()
    net = led.networks(cidr="10.0.0.0/27", mode="flat")[0]
    usable = usable_of(net)
    for k in range(before):
        led.allocate(f"old{k}", network_id="1")
    taken = set(led.state.networks["1"].fixed)
    pending = Pending()
    decided: list[tuple[Request, Decision]] = []
    for k, pick in enumerate(plan):
        wanted = None if pick is None else usable[pick % len(usable)]
        req = led.request("fixed_ip.allocate", instance=f"new{k}", network_id="1", address=wanted)
        free = [a for a in usable if a not in taken]
        if wanted is not None and wanted in taken:
            with pytest.raises(E.AddressExhausted):
                decide(led.state, req, pending)
            continue
        if not free:
            with pytest.raises(E.AddressExhausted):
                decide(led.state, req, pending)
            continue
        d = decide(led.state, req, pending)
        pending.note(d.events)
        assert d.result["address"] == (wanted if wanted is not None else free[0])
        taken.add(d.result["address"])
        decided.append((req, d))
    for req, d in decided:
        led.fold(req, d.events)
    addrs = [d.result["address"] for _, d in decided]
    assert len(addrs) == len(set(addrs))
