"""The NAT table's set of fixed ranges is every network's, not only those served here
(NOVA_NETWORK.md: "no NAT between fixed ranges"; nova's ``POSTROUTING -s fixed_range -d
fixed_range -j ACCEPT`` matched its whole ``fixed_range``): traffic to a range another host
serves was SNATed to this host's address. Pure: the desired state (executor/fragments.py) and
an incremental pass (executor/incremental.py) after a network is created elsewhere. The rule
order is tests/executor/test_nat_order.py's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgspec
import netaddr

from netledger.events.decide import Decision, decide
from netledger.events.placement import companions
from netledger.executor.desired import HostConfig, build
from netledger.executor.fragments import fixed_space, fragments
from netledger.executor.hosts import HostBook
from netledger.executor.incremental import Fragments, incremental_plan
from netledger.executor.model import NatTable
from netledger.executor.nft import render4
from tests.events.decider_helpers import ADMIN, Ledger


class PLedger(Ledger):
    """A Ledger that also folds the service's companions (FloatingIpMapped, joins)."""

    def run(self, name: str, actor: Any = ADMIN, **args: Any) -> Decision:
        req = self.request(name, actor, **args)
        d = decide(self.state, req)
        d.events = [*d.events, *companions(self.state, d.events, set())]
        self.fold(req, d.events)
        return d


def cfg(host: str) -> HostConfig:
    return HostConfig(host=host, public_interface="pub0", snat_address="192.0.2.1")


def covered(ranges: tuple[str, ...], cidr: str) -> bool:
    return netaddr.IPNetwork(cidr) in netaddr.IPSet(ranges)


def _two_hosts_world() -> tuple[PLedger, dict[str, Any], dict[str, Any]]:
    """Net 1 served by h1 (an instance with a floating IP), net 2 served by h2."""
    led = PLedger()
    (n1,) = led.networks(cidr="10.0.0.0/24", mode="flat_dhcp", network_host="h1", bridge="bra")
    (n2,) = led.networks(cidr="10.8.0.0/24", mode="vlan", network_host="h2")
    led.run("floating_ip.pool_create", pool="pub", cidr="203.0.113.0/29")
    a = led.allocate("vm-a", network_id=n1["id"], host="c1", project="p")
    led.allocate("vm-b", project="q", host="c2")
    f = led.run("floating_ip.allocate", project="p").result
    led.run("floating_ip.associate", address=f["address"], fixed_address=a["address"], project="p")
    return led, n1, n2


def test_a_range_served_by_another_host_is_not_natted() -> None:
    led, n1, n2 = _two_hosts_world()
    for host in ("h1", "h2"):
        nat = build(led.state, HostBook(host), cfg(host)).nat
        assert covered(nat.fixed_ranges, n1["cidr"]) and covered(nat.fixed_ranges, n2["cidr"])
    h1 = build(led.state, HostBook("h1"), cfg("h1")).nat
    assert h1.floating  # h1 NATs vm-a's floating IP, and fixed -> fixed goes first
    text = render4(h1)
    assert text.index('"fixed-to-fixed"') < text.index('"fip-snat"')
    # a compute host serving nothing has no table at all
    assert build(led.state, HostBook("c2"), cfg("c2")).nat == NatTable()


def test_the_set_is_merged_drops_deleted_ranges_and_never_holds_a_floating_pool() -> None:
    led = PLedger()
    nets = led.networks(cidr="10.0.0.0/22", num_networks=4, network_size=256, mode="flat_dhcp",
                        network_host="h1", bridge="bra")  # fmt: skip
    (gone,) = led.networks(cidr="10.9.0.0/24", mode="flat_dhcp", network_host="h2",
                           bridge="brb")  # fmt: skip
    led.run("network.delete", network_id=gone["id"])
    led.allocate("vm-a", network_id=nets[0]["id"], host="c1")
    # a pool over part of the deleted network's range (allowed: the network is gone)
    led.run("floating_ip.pool_create", pool="pub", cidr="10.9.0.128/25")
    nat = build(led.state, HostBook("h1"), cfg("h1")).nat
    # four adjacent /24s are one prefix; the deleted network's range goes (every host reads
    # its retirement on the registry: the set follows the live networks), and the pool's
    # addresses are never fixed addresses
    assert nat.fixed_ranges == ("10.0.0.0/22",)
    assert fixed_space(led.state) is fixed_space(led.state)  # cached until the registry changes


def test_a_network_created_later_reaches_the_table_in_an_incremental_pass() -> None:
    led, _, _ = _two_hosts_world()
    host = cfg("h1")
    before = Fragments(fragments(led.state, HostBook("h1"), host))
    nat = build(led.state, HostBook("h1"), host).nat
    (n3,) = led.networks(cidr="172.16.0.0/24", mode="vlan", vlan_start=300, network_host="h3")
    # the view marks the new network dirty (its id): nothing of it is on h1
    plan = incremental_plan(led.state, HostBook("h1"), host, before, {n3["id"]}, nat)
    assert covered(plan.nat.fixed_ranges, n3["cidr"]) and plan.changed
    assert plan.nat == build(led.state, HostBook("h1"), host).nat
    # and with the registry unchanged, the table is the one kept (no rebuild)
    led.allocate("vm-c", network_id=n3["id"], host="c3")
    again = incremental_plan(led.state, HostBook("h1"), host, before, {n3["id"]}, plan.nat)
    assert again.nat is plan.nat


def test_a_configured_fixed_range_does_not_change_when_a_network_is_created() -> None:
    """``--fixed-range`` (nova's fixed_range): the set is the supernet given, so a network
    created in it changes no host's table — without it every NAT host rewrites its table and
    appends a report at every network creation."""
    led, _, _ = _two_hosts_world()
    host = dataclasses.replace(cfg("h1"), fixed_range=("10.0.0.0/8", "172.16.0.0/12"))
    before = Fragments(fragments(led.state, HostBook("h1"), host))
    nat = build(led.state, HostBook("h1"), host).nat
    assert nat.fixed_ranges == ("10.0.0.0/8", "172.16.0.0/12")
    (n3,) = led.networks(cidr="172.16.0.0/24", mode="vlan", vlan_start=300, network_host="h3")
    plan = incremental_plan(led.state, HostBook("h1"), host, before, {n3["id"]}, nat)
    assert plan.nat == nat and not plan.changed
    # a floating pool inside it is still cut out
    led.run("floating_ip.pool_create", pool="pub2", cidr="10.200.0.0/29")
    assert "10.200.0.0/29" not in str(build(led.state, HostBook("h1"), host).nat.fixed_ranges)


def test_a_network_created_elsewhere_leaves_a_following_record_as_it_is() -> None:
    """Every NAT host's set takes a network created anywhere; a record that says "the
    registry's ranges" (HostNatApplied.fixed_space) still holds, so the host appends nothing —
    each NAT host appended a HostNatApplied (and a HostReconciled) per network created before:
    O(hosts) events for one command on a cloud of multi-host networks."""
    from netledger.events.codec import Actor, Envelope
    from netledger.events.host_events import HostNatApplied
    from netledger.executor.host_report import applied_events, space_only
    from netledger.executor.kernel import OpResult
    from netledger.executor.model import SetNat

    led, _, _ = _two_hosts_world()
    host = cfg("h1")
    before = Fragments(fragments(led.state, HostBook("h1"), host))
    nat = build(led.state, HostBook("h1"), host).nat
    book = HostBook("h1")
    [record] = applied_events("h1", book, None, [OpResult(SetNat(table=nat))])
    assert isinstance(record, HostNatApplied)
    assert (record.fixed_space, record.snat_ranges) == (True, [])
    actor = Actor(project=None, role="system", user="executor:h1")
    book.apply(Envelope(event=record, event_id="x:0", command_id="x", time=0.0, actor=actor))

    (n3,) = led.networks(cidr="172.16.0.0/24", mode="vlan", vlan_start=300, network_host="h3")
    plan = incremental_plan(led.state, book, host, before, {n3["id"]}, nat)
    assert plan.changed and space_only(plan.prev, plan.desired)
    grown = OpResult(SetNat(table=plan.nat))
    assert applied_events("h1", book, plan.prev, [grown]) == []
    # the same table written again while the desired one did not change: drift, said so
    [repaired] = applied_events("h1", book, plan.desired, [grown])
    assert isinstance(repaired, HostNatApplied) and repaired.drift
    # a floating IP's change is the host's own: recorded
    unmapped = OpResult(SetNat(table=msgspec.structs.replace(plan.nat, floating=())))
    [own] = applied_events("h1", book, plan.prev, [unmapped])
    assert isinstance(own, HostNatApplied) and own.floating == {}
    # with --fixed-range the list is the record: a change of it is said
    [listed] = applied_events("h1", book, plan.prev, [grown], follows=False)
    assert listed.snat_ranges == list(plan.nat.fixed_ranges)  # type: ignore[attr-defined]
