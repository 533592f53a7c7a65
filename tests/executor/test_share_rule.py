"""The pure rules of a host's share (executor/share.py): when to follow every network, and how
long to wait between two resubscriptions. Property tests."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from netledger.executor import share
from netledger.executor.share import follow_every, resubscribe_pause

live_st = st.integers(min_value=0, max_value=20_000)


@given(live=live_st, needed=st.integers(min_value=0, max_value=20_000), now=st.booleans())
def test_more_networks_never_turn_every_network_off(live: int, needed: int, now: bool) -> None:
    if follow_every(needed, live, now):
        assert follow_every(needed + 1, live, now)
        assert follow_every(needed, live, True)  # once on, the same point keeps it on


@given(live=live_st, a=st.integers(0, 20_000), b=st.integers(0, 20_000))
def test_switching_on_then_off_needs_a_real_drop(live: int, a: int, b: int) -> None:
    """Hysteresis: on at ``a`` networks, off again at ``b`` means ``b`` is well below ``a`` —
    by an eighth of the live networks, or to below half the minimum."""
    if follow_every(a, live, False) and not follow_every(b, live, True):
        gap = (share.EVERY_FROM - share.EVERY_UNTIL) * live
        assert a - b >= gap or b < share.EVERY_MIN_NETWORKS // 2


@given(live=live_st, needed=st.integers(0, 20_000), now=st.booleans())
def test_what_a_host_reads_stays_near_its_networks(live: int, needed: int, now: bool) -> None:
    """Following every network reads at most 1 / EVERY_UNTIL times its networks' events (at a
    network's average); one subject each is chosen for any host below the minimum and for a
    host newly below half of the live networks."""
    needed = min(needed, live)
    if follow_every(needed, live, now):
        assert live <= needed / share.EVERY_UNTIL
        assert needed >= share.EVERY_MIN_NETWORKS // 2
    if needed < share.EVERY_MIN_NETWORKS // 2:
        assert not follow_every(needed, live, now)
    if needed < share.EVERY_FROM * live:
        assert not follow_every(needed, live, False)


def test_a_host_of_200_of_5000_networks_reads_its_own() -> None:
    assert not follow_every(200, 5000, False)
    assert not follow_every(200, 5000, True)
    assert follow_every(2500, 5000, False)
    assert follow_every(2000, 5000, True) and not follow_every(2000, 5000, False)
    assert not follow_every(60, 60, False)  # a few networks: their filters cost nothing


@given(cost=st.floats(0, 10), since=st.floats(0, 100))
def test_resubscriptions_are_spaced_by_their_cost(cost: float, since: float) -> None:
    pause = resubscribe_pause(cost, since)
    assert 0 <= pause <= share.RESUBSCRIBE_MAX_PAUSE
    assert pause <= share.RESUBSCRIBE_SPACING * cost
    if since >= share.RESUBSCRIBE_SPACING * cost:
        assert pause == 0
    elif pause < share.RESUBSCRIBE_MAX_PAUSE:  # the upkeep: at most 1 / (1 + spacing) of the time
        assert since + pause >= share.RESUBSCRIBE_SPACING * cost - 1e-9
