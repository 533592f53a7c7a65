"""The log's record of a host's NAT tables and forwarding is checked against the kernel on a
full pass (``record_fixes``), as links, addresses and flood entries were: a crash between
``nft -f`` (or the sysctl) and its report left the kernel right and the record stale, and the
restarted executor, finding nothing to apply, never said it — ``show hosts`` and audit kept the
old mapping for good (found by review)."""

from __future__ import annotations

from netledger.events.codec import Actor, Envelope
from netledger.events.host_events import HostForwardingSet, HostNatApplied, HostNatRemoved
from netledger.executor.diff import diff
from netledger.executor.host_report import applied_events, record_fixes
from netledger.executor.hosts import HostBook
from netledger.executor.model import HostActual, HostDesired, NatTable

EXECUTOR = Actor(project=None, role="system", user="executor:h1")


def _book(*events: object) -> HostBook:
    book = HostBook("h1")
    for i, ev in enumerate(events):
        book.apply(Envelope(event=ev, event_id=f"x:{i}", command_id="x", time=0.0, actor=EXECUTOR))  # type: ignore[arg-type]
    return book


OLD = HostNatApplied(host="h1", floating={"198.51.100.7": "10.0.0.5"},
                     snat_ranges=["10.0.0.0/24"], drift=False, snat_to=None)  # fmt: skip
MOVED = NatTable(floating=(("198.51.100.7", "10.0.0.9"),), fixed_ranges=("10.0.0.0/24",),
                 masquerade_interface="pub0")  # fmt: skip


def _first_pass(book: HostBook, desired: HostDesired, actual: HostActual) -> list[object]:
    assert diff(desired, actual).ops == ()  # the kernel is already as desired: nothing to do
    events = applied_events("h1", book, None, [])
    return [*events, *record_fixes("h1", book, desired, events, actual)]


def test_a_nat_table_changed_before_a_crash_is_recorded_after_it() -> None:
    desired = HostDesired(nat=MOVED)
    [fix] = _first_pass(_book(OLD), desired, HostActual(nat=MOVED, nat_intact=True))
    assert isinstance(fix, HostNatApplied)
    # the fixed ranges are the registry's (no --fixed-range): said, not listed
    assert (fix.floating, fix.snat_ranges, fix.snat_to, fix.fixed_space) == (
        {"198.51.100.7": "10.0.0.9"}, [], None, True)  # fmt: skip
    # with --fixed-range, the configured ranges are listed
    events = applied_events("h1", _book(OLD), None, [], follows=False)
    [listed] = record_fixes(
        "h1", _book(OLD), desired, events, HostActual(nat=MOVED, nat_intact=True), follows=False
    )
    assert isinstance(listed, HostNatApplied)
    assert (listed.snat_ranges, listed.fixed_space) == (["10.0.0.0/24"], False)


def test_a_nat_table_deleted_before_a_crash_is_recorded_gone() -> None:
    [fix] = _first_pass(_book(OLD), HostDesired(), HostActual(nat=None, nat_intact=True))
    assert isinstance(fix, HostNatRemoved) and fix.reason == "found-gone"


def test_forwarding_set_before_a_crash_is_recorded() -> None:
    desired = HostDesired(forwarding=True)
    [fix] = _first_pass(_book(), desired, HostActual(forwarding=True))
    assert isinstance(fix, HostForwardingSet) and fix.enabled and fix.version == 4


def test_a_record_that_matches_the_kernel_adds_nothing() -> None:
    same = HostNatApplied(host="h1", floating={"198.51.100.7": "10.0.0.9"},
                          snat_ranges=["10.0.0.0/24"], drift=False, snat_to=None)  # fmt: skip
    fwd = HostForwardingSet(host="h1", enabled=True, drift=False)
    desired = HostDesired(nat=MOVED, forwarding=True)
    actual = HostActual(nat=MOVED, nat_intact=True, forwarding=True)
    assert _first_pass(_book(same, fwd), desired, actual) == []
    # forwarding the host has for its own reasons is not netledger's to record
    assert _first_pass(_book(), HostDesired(), HostActual(forwarding=True)) == []
