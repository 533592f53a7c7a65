"""``OffsetPool`` (events/state_offsets.py) against a plain model, and an explicit address far
beyond the high-water mark costing one entry, not the gap.

The model is the set of free offsets itself: ``[first, last]`` minus the reserved and the taken
ones. Whatever sequence of takes and releases, the pool hands out the same free offsets in the
same (increasing) order, says the same of each offset, and counts the same in use.
"""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.snapshot import _pool_from, _pool_to
from netledger.events.state_offsets import NO_OFFSETS, OffsetPool

from .decider_helpers import Ledger


@st.composite
def pools_and_ops(draw: st.DrawFn) -> tuple[OffsetPool, set[int], list[tuple[str, int]]]:
    first = draw(st.integers(0, 3))
    last = draw(st.integers(first, first + 200))
    reserved = draw(st.frozensets(st.integers(0, last + 2), max_size=6))
    ops = draw(
        st.lists(
            st.tuples(st.sampled_from(["take", "take_lowest", "release"]), st.integers(0, 202)),
            max_size=60,
        )
    )
    return OffsetPool(first, last, reserved), set(reserved), ops


@settings(max_examples=400, deadline=None)
@given(pools_and_ops())
def test_the_pool_agrees_with_the_set_of_free_offsets(
    case: tuple[OffsetPool, set[int], list[tuple[str, int]]],
) -> None:
    pool, reserved, ops = case
    free = {o for o in range(pool.first, pool.last + 1) if o not in reserved}
    taken: set[int] = set()
    for op, offset in ops:
        if op == "take_lowest":
            lowest = next(iter(pool.iter_free()), None)
            assert lowest == (min(free) if free else None)
            offset = lowest if lowest is not None else -1
        if op.startswith("take") and offset in free:  # the fold takes free offsets only
            pool.take(offset)
            free.discard(offset)
            taken.add(offset)
        elif op == "release" and offset in taken:
            pool.release(offset)
            taken.discard(offset)
            free.add(offset)
        assert list(pool.iter_free()) == sorted(free)
        assert all(pool.is_free(o) == (o in free) for o in range(-1, pool.last + 3))
        assert pool.used == len(taken)
        again = _pool_from(_pool_to(pool))  # the snapshot's form
        assert again == pool and list(again.iter_free()) == sorted(free)


def test_an_explicit_address_far_in_a_dhcpv6_network_is_one_entry() -> None:
    """fd00::1:0:0 is 2**32 offsets beyond the mark: the fold used to add each one skipped
    over to the free list (hours and all the memory, at every start of every reader)."""
    led = Ledger()
    led.networks(cidr_v6="fd00::/64", ipv6_mode="dhcpv6", num_networks=1)
    far = led.allocate("far", network_id="1", address="fd00::1:0:0")
    assert far["address"] == "fd00::1:0:0"
    pool6 = led.state.networks["1"].pool6
    assert pool6 is not None
    assert list(pool6.freed) == [] and list(pool6.ahead) == [1 << 32]
    # The next allocations still go lowest first, and the far one is not handed out again.
    nxt = [led.allocate(f"i{i}", network_id="1")["address"] for i in range(3)]
    assert nxt == ["fd00::2", "fd00::3", "fd00::4"]
    assert not pool6.is_free(1 << 32)
    # Released, it is free again, and the snapshot's form keeps it all.
    led.deallocate("far", network_id="1")
    assert pool6 == _pool_from(_pool_to(pool6))


def test_a_pool_of_a_snapshot_from_before_reads_as_it_was() -> None:
    """A snapshot written before ``ahead`` existed has six parts per pool: read the same."""
    pool = OffsetPool(1, 20, frozenset({1, 5}))
    for o in itertools.islice(pool.iter_free(), 6):
        pool.take(o)
    pool.release(3)
    old_form = [1, 20, [1, 5], pool.next_unused, list(pool.freed), pool.used]
    assert _pool_to(pool) == old_form
    assert _pool_from(old_form) == pool


def test_a_pool_that_never_freed_holds_no_sorted_list() -> None:
    """A host's view holds every network of the cloud and allocates in ~10: the pools of the
    rest keep the shared empty ``NO_OFFSETS`` and one frozenset of reserved offsets for all
    of a size (bench/RESULTS.md "fleet": 8 of a network's 13 objects, half its fold's CPU in
    the collector). The first offset freed or taken ahead gives the pool its own list."""
    led = Ledger()
    led.networks(cidr="10.0.0.0/24", mode="flat", network_size=64, num_networks=4)
    pools = [led.state.networks[n].pool for n in ("1", "2", "3", "4")]
    assert all(p.freed is NO_OFFSETS and p.ahead is NO_OFFSETS for p in pools)
    assert all(p.reserved is pools[0].reserved for p in pools)
    restored = _pool_from(_pool_to(pools[0]))  # a snapshot's pool alike
    assert restored == pools[0] and restored.freed is NO_OFFSETS and restored.ahead is NO_OFFSETS
    assert restored.reserved is pools[0].reserved
    a = led.allocate("a", network_id="1")
    b = led.allocate("b", network_id="2", address="10.0.0.100")  # beyond the mark
    led.deallocate("a", network_id="1")  # flat: freed at once
    n1, n2 = led.state.networks["1"], led.state.networks["2"]
    assert list(pools[0].freed) == [n1.offset(a["address"])] and list(pools[0].ahead) == []
    assert list(pools[1].ahead) == [n2.offset(b["address"])] and list(pools[1].freed) == []
    assert pools[2].freed is NO_OFFSETS and pools[2].ahead is NO_OFFSETS  # untouched
    # What they hand out next is what a pool with lists of its own would.
    assert led.allocate("c", network_id="1")["address"] == a["address"]
    assert pools[0].freed == [] and _pool_from(_pool_to(pools[0])) == pools[0]
