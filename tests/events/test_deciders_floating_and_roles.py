"""Unit tests of the floating-IP deciders (pools, allocate, associate, disassociate,
deallocate, and a fixed IP's deallocation taking its floating IPs along), then of roles (admin-
only commands, members kept to their own project) and of the read-only commands, all in the
same small world of two project networks and a floating pool (``_floating_world``).

Each request is decided and folded into a ``State`` by hand (no NATS) through the
``Ledger`` of ``tests/events/decider_helpers.py``, which plays the part of the log. Every
refusal is checked to raise its own error class and to leave the state untouched (a decider
that raises has nothing to append).
"""

from __future__ import annotations

from typing import Any

import pytest

from netledger.events import errors as E
from netledger.events.codec import Actor
from netledger.events.types import (
    FixedIpDeallocated,
    FloatingIpAllocated,
    FloatingIpAssociated,
    FloatingIpDeallocated,
    FloatingIpDisassociated,
)
from tests.events.decider_helpers import (
    Ledger,
    _floating_world,
    fingerprint,
    member,
)

# --- floating IPs --------------------------------------------------------------------------


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
        # what a DHCP server saw: a member of another project released an address held until
        # its DHCP release, for its own next allocation (found by review)
        ("fixed_ip.lease", {"address": "10.0.0.3", "mac": "02:16:3e:00:00:01"}),
        ("fixed_ip.release", {"address": "10.0.0.3", "mac": "02:16:3e:00:00:01"}),
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
    shown = led.run("network.show", network_id="1", actor=member("pa"))
    assert shown.events == [] and shown.result["network"]["in_use"] == 1
    assert fingerprint(led.state) == before
