"""The count of entries each dnsmasq re-read at SIGHUPs (executor/dhcpreloads.py), pure: a
reload past the cap is a replacement, a stopped or restarted dnsmasq counts afresh, and the
book holds one item per reloaded bridge whatever the churn. The real dnsmasq:
test_soak_h138_dnsmasq_reloads_netns.py."""

from __future__ import annotations

from netledger.executor.dhcpreloads import REREAD_CAP, SIGHUP_COST, Rereads


def test_reloads_count_until_the_cap_then_a_replacement_is_asked() -> None:
    r = Rereads(cap=250)
    assert [r.reload("br1", 7, 100) for _ in range(3)] == [True, True, False]
    assert r.count("br1") == 2 * (100 + SIGHUP_COST)  # the refused one was not counted
    r.stopped("br1")  # replaced: stopped, then started as another pid
    assert r.reload("br1", 8, 100) and r.count("br1") == 100 + SIGHUP_COST


def test_a_sighup_counts_besides_its_entries() -> None:
    # a bridge of one instance: replaced after cap / (1 + SIGHUP_COST) reloads, not cap
    r = Rereads(cap=300)
    assert sum(1 for _ in iter(lambda: r.reload("br1", 7, 1), False)) == 300 // (1 + SIGHUP_COST)


def test_another_pid_counts_afresh() -> None:
    r = Rereads(cap=250)
    assert r.reload("br1", 7, 200)
    assert r.reload("br1", 9, 200)  # dnsmasq died and was started again meanwhile
    assert r.count("br1") == 200 + SIGHUP_COST


def test_a_first_reload_is_never_refused() -> None:
    # more entries than the cap: replacing would cost as much as the SIGHUP, and gain nothing
    r = Rereads(cap=10)
    assert r.reload("big", 1, 50)
    assert not r.reload("big", 1, 50)


def test_bridges_are_counted_apart_and_forgotten_when_stopped() -> None:
    r = Rereads()
    for i in range(500):  # networks created, reloaded, deleted: their dnsmasq stopped
        assert r.reload(f"br{i}", 1000 + i, 3)
        r.stopped(f"br{i}")
    assert len(r) == 0
    assert r.reload("a", 1, REREAD_CAP) and r.reload("b", 2, REREAD_CAP)
    assert len(r) == 2
