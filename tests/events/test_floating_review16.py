"""Review hrev16: floating-IP deciders (pure).

A member acts only on its own project's addresses (docs/domain.md "Who may do what"), and a
floating IP is associated "with a fixed IP of the same project": an address no project holds
(an admin's allocation on a flat network, by network id) is not the member's, so a member may
not point its floating IP at it — that would take the instance's inbound traffic and give its
outbound traffic the member's floating IP as source.
"""

from __future__ import annotations

from netledger.events import errors as E
from tests.events.decider_helpers import Ledger, member


def _flat_world() -> tuple[Ledger, dict[str, str]]:
    led = Ledger()
    [net] = led.networks(cidr="10.9.0.0/24", num_networks=1, mode="flat")
    led.run("floating_ip.pool_create", pool="public", cidr="203.0.113.0/29")
    # the admin's own instance, allocated by network id: no project holds it
    ops = led.allocate("vm-ops", network_id=net["id"])
    assert ops["project"] is None
    return led, ops


def test_a_member_cannot_associate_its_floating_ip_with_an_address_no_project_holds() -> None:
    led, ops = _flat_world()
    pb = member("pb")
    fip = led.run("floating_ip.allocate", pb, project="pb").result["address"]
    led.refuse(
        E.Forbidden,
        "floating_ip.associate",
        pb,
        address=fip,
        fixed_address=ops["address"],
        project="pb",
    )


def test_an_admin_still_may() -> None:
    led, ops = _flat_world()
    fip = led.run("floating_ip.allocate", project="pb").result["address"]
    d = led.run("floating_ip.associate", address=fip, fixed_address=ops["address"], project="pb")
    assert len(d.events) == 1
