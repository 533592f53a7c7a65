"""Review hrev9: an nft rule or chain of ours edited in place is not seen as drift.

executor/nft.py reads the table back and calls it intact when the chains, sets, maps and the
rules' *comments* are ours, in order (its docstring: "a table whose rules are not exactly ours
(by comment and shape) is reported as not intact and gets replaced"). The rules' expressions
and the chains' policies are not compared: a ``fixed-to-fixed`` rule whose verdict was changed
to ``drop`` (keeping its comment), or a NAT chain whose policy was set to ``drop``, reads as
our table, unchanged, so neither the periodic sweep nor any pass ever rewrites it — while
traffic between the fixed ranges (or every new connection) is dropped.

Fixed: the read-back compares each rule's statements (executor/nft.py ``_shape``) and each
chain's type, hook and policy. Real ``nft`` in a namespace of the test's own (root; deleted at
the end); and the masquerade and IPv6 tables as written read intact.
"""

from __future__ import annotations

import re

import pytest

from netledger.executor import nft
from netledger.executor.model import NatTable
from tests.executor.test_executor_lab import Lab, ns_exec
from tests.executor.test_executor_lab import world as world

pytestmark = pytest.mark.netns

TABLE = NatTable(
    floating=(("198.51.100.5", "10.0.0.5"),),
    fixed_ranges=("10.0.0.0/24",),
    snat_to="192.0.2.1",
)


def _handle(ns: str, comment: str) -> str:
    out = ns_exec(ns, "nft", "-a", "list", "table", "ip", "netledger").stdout
    m = re.search(rf'comment "{comment}" # handle (\d+)', out)
    assert m is not None, out
    return m.group(1)


def test_the_table_as_written_reads_intact(world: Lab) -> None:
    ns = world.ns("nft0")
    nft.apply(ns, nft.render(TABLE))
    assert nft.read(ns) == (TABLE, True)


def test_a_rule_edited_in_place_is_not_intact(world: Lab) -> None:
    ns = world.ns("nft1")
    nft.apply(ns, nft.render(TABLE))
    h = _handle(ns, "fixed-to-fixed")
    ns_exec(ns, "nft", "replace", "rule", "ip", "netledger", "postrouting", "handle", h,
            "ip", "saddr", "@fixed", "ip", "daddr", "@fixed", "drop",
            "comment", '"fixed-to-fixed"')  # fmt: skip
    assert "drop" in ns_exec(ns, "nft", "list", "chain", "ip", "netledger", "postrouting").stdout
    table, intact = nft.read(ns)
    # What the diff compares (executor/diff.py): equal and intact -> no SetNat, ever.
    assert not (table == TABLE and intact), "a rule of ours now drops, and reads as ours"


def test_a_chain_policy_changed_is_not_intact(world: Lab) -> None:
    ns = world.ns("nft2")
    nft.apply(ns, nft.render(TABLE))
    ns_exec(ns, "nft", "chain", "ip", "netledger", "prerouting", "{ policy drop; }")
    assert "policy drop" in ns_exec(ns, "nft", "list", "table", "ip", "netledger").stdout
    table, intact = nft.read(ns)
    assert not (table == TABLE and intact), "our prerouting chain now drops, and reads as ours"


def test_the_masquerade_and_ipv6_tables_as_written_read_intact(world: Lab) -> None:
    ns = world.ns("nft3")
    masq = NatTable(
        floating=(), fixed_ranges=("10.0.0.0/24",), masquerade_interface="eth0",
        routed_v6=(("br1", "2001:db8:1::/64"),),
    )  # fmt: skip
    nft.apply(ns, nft.render(masq))
    assert nft.read(ns) == (masq, True)


def test_the_ipv6_rule_edited_in_place_is_not_intact(world: Lab) -> None:
    ns = world.ns("nft4")
    t = NatTable(floating=(), fixed_ranges=(), routed_v6=(("br1", "2001:db8:1::/64"),))
    nft.apply(ns, nft.render(t))
    out = ns_exec(ns, "nft", "-a", "list", "table", "ip6", "netledger").stdout
    m = re.search(r'comment "v6-spoof" # handle (\d+)', out)
    assert m is not None, out
    ns_exec(ns, "nft", "replace", "rule", "ip6", "netledger", "forward", "handle", m.group(1),
            "iifname", "@bridges", "iifname", ".", "ip6", "saddr", "!=", "@routed", "accept",
            "comment", '"v6-spoof"')  # fmt: skip
    table, intact = nft.read(ns)
    assert not (table == t and intact), "the IPv6 anti-spoofing rule now accepts, and reads as ours"


def test_a_blocked_bridge_reads_back_as_written(world: Lab) -> None:
    """A bridge without a /64 on a host that routes IPv6 (``blocked_v6``, review hrev17) is in
    the filter's ``bridges`` set: read back as blocked, the table intact."""
    ns = world.ns("nft5")
    t = NatTable(
        fixed_ranges=("10.0.0.0/24",), snat_to="192.0.2.1",
        routed_v6=(("br1", "2001:db8:1::/64"),), blocked_v6=("br0", "br2"),
    )  # fmt: skip
    nft.apply(ns, nft.render(t))
    assert nft.read(ns) == (t, True)
    # the same table without the blocked bridges is another table: a pass writes it again
    assert nft.read(ns)[0] != NatTable(
        fixed_ranges=t.fixed_ranges, snat_to=t.snat_to, routed_v6=t.routed_v6
    )
