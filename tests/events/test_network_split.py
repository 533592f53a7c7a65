"""Splitting a range around what is in use, and the network size when none is given (pure).

nova-network's rule (``nova/network/manager.py``: ``_validate_cidrs``/``_validate_cidr`` and
``create_networks``; its ``test_validate_cidrs_*`` tests are translated below): walk the range
in blocks of the requested size, skip every block that overlaps a network in use, take the first
``num_networks`` free ones; refuse when fewer are free, or when the range lies inside a network
in use. Without ``network_size``: the range divided by the number of networks, capped at 256.
Issues 19 and 17 (point 2).
"""

from __future__ import annotations

import itertools
from typing import Any

import netaddr
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from netledger.events import errors as E
from netledger.events.decide import decide
from netledger.events.decide_network import free_blocks, merged_intervals
from tests.events.decider_helpers import Ledger, fingerprint


def in_use(*cidrs: str) -> Ledger:
    """A ledger holding one flat network per CIDR (on bridge br1, out of the way)."""
    led = Ledger()
    for c in cidrs:
        net = netaddr.IPNetwork(c)
        led.networks(cidr=str(net.cidr), network_size=net.size, mode="flat", bridge="br1")
    return led


def cidrs_of(nets: list[dict[str, Any]]) -> list[str]:
    return [n["cidr"] for n in nets]


# --- nova's own cases ------------------------------------------------------------------------


def test_issue_19_example_split_around_a_network_in_the_middle() -> None:
    led = Ledger()
    led.networks(label="e", cidr="10.3.2.0/24", network_size=256, vlan_start=300)
    nets = led.networks(
        label="c", cidr="10.3.0.0/16", num_networks=4, network_size=256, vlan_start=310
    )
    assert cidrs_of(nets) == ["10.3.0.0/24", "10.3.1.0/24", "10.3.3.0/24", "10.3.4.0/24"]
    assert [n["vlan"] for n in nets] == [310, 311, 312, 313]
    assert [n["bridge"] for n in nets] == ["br310", "br311", "br312", "br313"]
    assert [n["label"] for n in nets] == ["c_0", "c_1", "c_2", "c_3"]
    assert [n["vpn_public_port"] for n in nets] == [1000, 1001, 1002, 1003]
    assert [n["id"] for n in nets] == ["2", "3", "4", "5"]


@pytest.mark.parametrize("used", ["192.168.2.0/24", "192.168.2.0/25", "192.168.2.128/26"])
def test_nova_split_cidr_in_use_middle_of_range(used: str) -> None:
    # nova: test_validate_cidrs_split_cidr_in_use_middle_of_range / _split_smaller_cidr_in_use
    nets = in_use(used).networks(cidr="192.168.0.0/16", num_networks=4, network_size=256)
    assert cidrs_of(nets) == [
        "192.168.0.0/24",
        "192.168.1.0/24",
        "192.168.3.0/24",
        "192.168.4.0/24",
    ]


def test_nova_split_smaller_cidr_in_use2() -> None:
    # nova's 192.168.2.9/29 (host bits set) is the block 192.168.2.8/29.
    nets = in_use("192.168.2.8/29").networks(
        cidr="192.168.2.0/24", num_networks=3, network_size=32, mode="flat", bridge="br1"
    )
    assert cidrs_of(nets) == ["192.168.2.32/27", "192.168.2.64/27", "192.168.2.96/27"]


def test_nova_split_all_in_use_names_how_many_were_found() -> None:
    led = in_use("192.168.2.8/29", "192.168.2.64/26", "192.168.2.128/26")
    err = led.refuse(
        E.RangeExhausted,
        "network.create",
        label="x",
        cidr="192.168.2.0/24",
        num_networks=3,
        network_size=64,
    )
    assert err.details == {
        "cidr": "192.168.2.0/24",
        "network_size": 64,
        "requested": 3,
        "found": 1,
    }
    assert "1 free subnet(s)" in err.message and "network 1 (192.168.2.8/29)" in err.message


def test_nova_smaller_subnet_in_use_leaves_no_block() -> None:
    led = in_use("192.168.2.0/25")
    err = led.refuse(E.RangeExhausted, "network.create", label="x", cidr="192.168.2.0/24")
    assert err.details["found"] == 0


@pytest.mark.parametrize(
    ("used", "cidr"),
    [
        ("192.168.0.0/24", "192.168.0.0/24"),  # nova: cidr already in use
        ("192.168.0.0/16", "192.168.0.0/24"),  # nova: conflicts with existing supernet
        ("192.168.0.0/16", "192.168.128.0/17"),
    ],
)
def test_nova_range_in_use_or_inside_a_network_is_refused(used: str, cidr: str) -> None:
    err = in_use(used).refuse(
        E.NetworkOverlap, "network.create", label="x", cidr=cidr, network_size=256
    )
    assert err.details["network_id"] == "1"


def test_nova_too_many_networks_for_the_range() -> None:
    Ledger().refuse(
        E.RangeTooSmall,
        "network.create",
        label="x",
        cidr="192.168.0.0/24",
        num_networks=200,
        network_size=256,
    )


def test_a_block_inside_a_larger_network_is_skipped_when_the_range_goes_on() -> None:
    # nova's later _validate_cidr raised CidrConflict here; the rule as stated skips the block.
    nets = in_use("10.0.0.0/16").networks(cidr="10.0.0.0/15", network_size=256, vlan_start=7)
    assert cidrs_of(nets) == ["10.1.0.0/24"]


def test_a_huge_network_in_use_is_jumped_over_not_walked() -> None:
    assert free_blocks(0, (1 << 32) - 1, 4, 2, [(0, (1 << 31) - 1)]) == [1 << 31, (1 << 31) + 4]
    nets = in_use("10.0.0.0/16").networks(cidr="10.0.0.0/8", network_size=4, mode="flat")
    assert cidrs_of(nets) == ["10.1.0.0/30"]


def test_merged_intervals() -> None:
    assert merged_intervals([(10, 19), (0, 3), (4, 7), (12, 30), (40, 41)]) == [
        (0, 7),
        (10, 30),
        (40, 41),
    ]
    assert merged_intervals([]) == []


# --- numbering over the networks created -----------------------------------------------------


def test_vxlan_and_bridge_prefix_are_numbered_over_the_networks_created() -> None:
    led = in_use("10.5.1.0/24")
    nets = led.networks(
        cidr="10.5.0.0/22", num_networks=3, mode="vxlan", vni_start=5000, bridge="brv"
    )
    assert cidrs_of(nets) == ["10.5.0.0/24", "10.5.2.0/24", "10.5.3.0/24"]
    assert [(n["vni"], n["bridge"]) for n in nets] == [
        (5000, "brv5000"),
        (5001, "brv5001"),
        (5002, "brv5002"),
    ]
    # (prefix "vx" made bridges vx5000..., the names of the VXLAN links themselves: refused)
    led.refuse(
        E.InvalidField, "network.create", label="y", cidr="10.6.0.0/23", num_networks=2,
        mode="vxlan", vni_start=6000, bridge="vx",
    )  # fmt: skip


def test_a_used_vlan_among_the_created_refuses_the_whole_command() -> None:
    led = Ledger()
    led.networks(cidr="10.0.2.0/24", vlan_start=102)
    # Blocks 10.0.0/1/3/4 are free; VLANs 100..103: 102 is in use.
    err = led.refuse(
        E.DuplicateVlan, "network.create", label="x", cidr="10.0.0.0/16", num_networks=4
    )
    assert err.details["vlan"] == 102


# --- the size when none is given (issue 17, point 2) -----------------------------------------


@pytest.mark.parametrize(
    ("cidr", "num", "size", "notice"),
    [
        ("10.60.0.0/28", 1, 16, False),
        ("10.60.0.0/24", 4, 64, False),
        ("10.60.0.0/24", 3, 64, False),  # 85 rounded down to a power of two
        ("10.60.0.0/24", 1, 256, False),
        ("10.60.0.0/16", 1, 256, True),  # 65536 capped at the default
        ("10.60.0.0/16", 1000, 64, False),
        ("10.60.0.0/30", 1, 4, False),
    ],
)
def test_computed_network_size(cidr: str, num: int, size: int, notice: bool) -> None:
    d = Ledger().run("network.create", label="f", cidr=cidr, num_networks=num, mode="flat")
    assert d.result["network_size"] == size and d.result["network_size_computed"] is True
    assert len(d.result["networks"]) == num
    assert {n["network_size"] for n in d.result["networks"]} == {size}
    assert {netaddr.IPNetwork(n["cidr"]).size for n in d.result["networks"]} == {size}
    if notice:
        (text,) = d.result["notices"]
        assert "defaulting to 256 (/24)" in text and cidr in text
    else:
        assert d.result["notices"] == []


def test_explicit_size_is_kept_and_said() -> None:
    d = Ledger().run(
        "network.create", label="f", cidr="10.0.0.0/16", network_size=1024, mode="flat"
    )
    assert cidrs_of(d.result["networks"]) == ["10.0.0.0/22"]
    assert (d.result["network_size"], d.result["network_size_computed"]) == (1024, False)
    assert d.result["networks"][0]["network_size"] == 1024 and d.result["notices"] == []


def test_computed_size_is_split_around_what_is_in_use_too() -> None:
    led = in_use("10.0.0.64/26")
    err = led.refuse(
        E.RangeExhausted, "network.create", label="x", cidr="10.0.0.0/24", num_networks=4
    )
    assert (err.details["network_size"], err.details["found"]) == (64, 3)


# --- property: against a brute-force model of the rule ---------------------------------------

SPACE = netaddr.IPNetwork("10.0.0.0/22")  # small: the blocks drawn collide often


@st.composite
def blocks(draw: st.DrawFn, lo: int, hi: int) -> str:
    prefix = draw(st.integers(lo, hi))
    size = 1 << (32 - prefix)
    k = draw(st.integers(0, SPACE.size // size - 1))
    return f"{netaddr.IPAddress(SPACE.first + k * size)}/{prefix}"


def expected_size(cidr: str, num: int, given: int | None) -> int:
    if given is not None:
        return given
    share = netaddr.IPNetwork(cidr).size // num
    size = 1
    while size * 2 <= share:
        size *= 2
    return min(size, 256) if share else 0


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, int, int | None]:
    """A range, a count and a size (None: not given), mostly small enough to fit."""
    cidr = draw(blocks(22, 28))
    prefix = int(cidr.split("/")[1])
    size = draw(st.none() | st.integers(prefix - 1, 30).map(lambda p: 1 << (32 - p)))
    fits = max(1, netaddr.IPNetwork(cidr).size // (size or 256))
    num = draw(st.integers(1, 8) | st.integers(1, min(8, fits)))
    return cidr, num, size


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    used=st.lists(blocks(23, 30), min_size=1, max_size=16),
    pool=st.none() | blocks(25, 30),
    deletes=st.sets(st.integers(1, 8), max_size=2),
    request=requests(),
    mode=st.sampled_from(["flat", "vlan", "vxlan"]),
)
def test_split_matches_the_rule(
    used: list[str],
    pool: str | None,
    deletes: set[int],
    request: tuple[str, int, int | None],
    mode: str,
) -> None:
    cidr, num, size = request
    led = Ledger()
    if pool is not None:
        led.run("floating_ip.pool_create", pool="public", cidr=pool)
    for c in used:
        try:  # overlapping ones are refused: what is left is the set in use
            led.networks(cidr=c, network_size=netaddr.IPNetwork(c).size, mode="flat", bridge="b1")
        except E.NetledgerError:
            pass
    for nid in deletes:
        if nid in range(1, led.state.next_network_number):
            led.run("network.delete", network_id=str(nid))
    taken = [n.ipnet for n in led.state.live_networks()]
    taken += [p.ipnet for p in led.state.pools.values()]
    rng = netaddr.IPNetwork(cidr)
    s = expected_size(cidr, num, size)
    free = (
        [
            b
            for b in rng.subnet(32 - (s.bit_length() - 1))
            if not any(t.first <= b.last and b.first <= t.last for t in taken)
        ]
        if 4 <= s <= rng.size
        else []
    )
    first = list(itertools.islice(rng.subnet(32 - (s.bit_length() - 1)), num)) if free else []

    args = {"label": "x", "cidr": cidr, "num_networks": num, "mode": mode, "network_size": size}
    req = led.request("network.create", vlan_start=100, vni_start=100, **args)
    before = fingerprint(led.state)
    try:
        d = decide(led.state, req)
    except E.NetledgerError as err:
        event(f"refused: {err.code}")
        assert fingerprint(led.state) == before  # nothing decided, nothing appended
        if s < (8 if mode == "vlan" else 4) or s * num > rng.size:
            assert isinstance(err, E.RangeTooSmall), err
        elif any(t.first <= rng.first and rng.last <= t.last for t in taken):
            assert isinstance(err, E.NetworkOverlap), err
        else:
            assert isinstance(err, E.RangeExhausted), err
            assert err.details["found"] == len(free) < num
        return
    event(f"created {num}" + (", around blocks in use" if free[:num] != first else ""))
    nets = d.result["networks"]
    got = [netaddr.IPNetwork(n["cidr"]) for n in nets]
    assert len(got) == num
    for b in got:
        assert b.size == s and b.first % s == 0  # of the size, aligned
        assert rng.first <= b.first and b.last <= rng.last  # inside the range
        assert not any(t.first <= b.last and b.first <= t.last for t in taken)
    assert all(a.last < b.first for a, b in itertools.pairwise(got))  # ascending, apart
    assert got == free[:num]  # and exactly the first free blocks
    assert d.result["network_size"] == s
    assert d.result["network_size_computed"] is (size is None)
    if mode == "vlan":
        assert [n["vlan"] for n in nets] == list(range(100, 100 + num))
    if mode == "vxlan":
        assert [n["vni"] for n in nets] == list(range(100, 100 + num))
    led.fold(req, d.events)
    blocks_now = netaddr.IPSet()
    for n in led.state.live_networks():
        assert not blocks_now & netaddr.IPSet([n.ipnet])
        blocks_now.add(n.ipnet)
