"""A link removed takes its addresses and flood entries with it — and the record says so.

The diff deletes a stale bridge or VXLAN link, not the addresses and flood entries on it (the
kernel removes them with the link). The executor's report said only ``HostLinkRemoved``, so its
record (the fold of its own events) kept them: the end of a whole pass found them missing and
logged them ``found-gone`` (the log called a network leaving the host damage from outside), an
incremental pass left them to the next sweep, and an address re-added on a re-created link was
reported as a drift repair. Now they are said removed with the link (reason ``with-link``).
"""

from __future__ import annotations

from netledger.events.codec import Actor, Envelope
from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostEvent,
    HostFdbAdded,
    HostFdbRemoved,
    HostLinkCreated,
    HostLinkRemoved,
)
from netledger.executor.host_report import applied_events, record_fixes
from netledger.executor.hosts import HostBook
from netledger.executor.kernel import OpResult
from netledger.executor.model import (
    AddAddress,
    AddrSpec,
    AddrState,
    CreateLink,
    DeleteLink,
    HostActual,
    HostDesired,
    LinkSpec,
    LinkState,
    alias_for,
)

EXECUTOR = Actor(project=None, role="system", user="executor:h1")


def _fold(book: HostBook, *events: HostEvent) -> HostBook:
    for i, ev in enumerate(events):
        book.apply(Envelope(event=ev, event_id=f"x:{i}", command_id="x", time=0.0, actor=EXECUTOR))
    return book


def _book() -> HostBook:
    def link(name: str, kind: str, net: str) -> HostLinkCreated:
        return HostLinkCreated(
            host="h1", name=name, kind=kind, network_id=net, drift=False, detail={}
        )

    return _fold(
        HostBook("h1"),
        link("br1", "bridge", "1"),
        HostAddressAdded(host="h1", interface="br1", address="10.0.1.1/24", network_id="1",
                         drift=False),
        HostAddressAdded(host="h1", interface="br1", address="fd00:1::1/64", network_id="1",
                         drift=False),
        link("vx1", "vxlan", "1"),
        HostFdbAdded(host="h1", interface="vx1", dst="192.0.2.2", network_id="1", drift=False),
        link("br2", "bridge", "2"),
        HostAddressAdded(host="h1", interface="br2", address="10.0.2.1/24", network_id="2",
                         drift=False),
    )  # fmt: skip


BR2 = LinkSpec(name="br2", kind="bridge", network_id="2")
KEPT = HostDesired(links=(BR2,), addresses=(AddrSpec("br2", "10.0.2.1/24", network_id="2"),))
KERNEL = HostActual(
    links=(LinkState(name="br2", index=7, kind="bridge", alias=alias_for("2"), up=True),),
    addresses=(AddrState("br2", "10.0.2.1/24"),),
)


def test_a_network_leaving_the_host_says_its_addresses_and_flood_entries_went_with_it() -> None:
    book = _book()
    gone = [
        OpResult(DeleteLink(name="br1", kind="bridge", network_id="1", reason="stale")),
        OpResult(DeleteLink(name="vx1", kind="vxlan", network_id="1", reason="stale")),
    ]
    events = applied_events("h1", book, None, gone)
    assert events == [
        HostLinkRemoved(host="h1", name="br1", kind="bridge", network_id="1", reason="stale"),
        HostAddressRemoved(host="h1", interface="br1", address="10.0.1.1/24", network_id="1",
                           reason="with-link"),
        HostAddressRemoved(host="h1", interface="br1", address="fd00:1::1/64", network_id="1",
                           reason="with-link"),
        HostLinkRemoved(host="h1", name="vx1", kind="vxlan", network_id="1", reason="stale"),
        HostFdbRemoved(host="h1", interface="vx1", dst="192.0.2.2", network_id="1",
                       reason="with-link"),
    ]  # fmt: skip
    # The end of the whole pass finds the record equal to the kernel: nothing "found gone".
    assert record_fixes("h1", book, KEPT, events, KERNEL) == []
    # The record (the fold of these events) holds what the kernel holds.
    _fold(book, *events)
    assert book.addresses == {("br2", "10.0.2.1/24")} and book.fdb == set()
    assert book.links == {"br2"}


def test_an_address_back_on_a_re_created_link_is_no_drift_repair() -> None:
    book = _book()
    spec = LinkSpec(name="br1", kind="bridge", network_id="1", mtu=9000)
    events = applied_events(
        "h1",
        book,
        None,
        [
            OpResult(DeleteLink(name="br1", kind="bridge", network_id="1", reason="replaced")),
            OpResult(CreateLink(spec)),
            OpResult(AddAddress(AddrSpec("br1", "10.0.1.1/24", network_id="1"))),
        ],
    )
    [added] = [e for e in events if isinstance(e, HostAddressAdded)]
    assert added.drift is False, "re-made because its link was replaced, not damaged"
    removed = [e for e in events if isinstance(e, HostAddressRemoved)]
    assert {e.address for e in removed} == {"10.0.1.1/24", "fd00:1::1/64"}
    _fold(book, *events)
    assert ("br1", "10.0.1.1/24") in book.addresses
    assert ("br1", "fd00:1::1/64") not in book.addresses


def test_a_link_removal_that_failed_says_nothing() -> None:
    book = _book()
    failed = OpResult(
        DeleteLink(name="br1", kind="bridge", network_id="1", reason="stale"), errno=16,
        error="busy",
    )  # fmt: skip
    assert applied_events("h1", book, None, [failed]) == []
