"""Announcements on host subjects (older executors'), in the fold (events/state.py): which ones
the service still has to point at (``legacy_announced``, events/placement.py
``legacy_indexes``), and that an old one read after a newer one (a share's history is read
subject by subject) changes nothing."""

from __future__ import annotations

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.host_events import HostAnnounced
from netledger.events.ids import announce_subject, host_subject
from netledger.events.placement import legacy_indexes
from netledger.events.placement_events import LegacyAnnouncementIndexed
from netledger.events.state import State
from netledger.events.types import Event


def ann(host: str, network_host: bool = False) -> HostAnnounced:
    return HostAnnounced(host, "192.0.2.1", "eth1", None, network_host)


def fold(st: State, seq: int, subject: str, ev: Event) -> None:
    assert st.fold_message(seq, subject, Envelope(ev, f"e{seq}", f"c{seq}", 0.0, SYSTEM)) is None


def test_the_latest_announcement_on_a_host_subject_is_to_point_at_until_pointed_at() -> None:
    st = State()
    fold(st, 1, host_subject("h1"), ann("h1"))
    fold(st, 2, host_subject("h2"), ann("h2"))
    fold(st, 3, host_subject("h1"), ann("h1", True))
    assert legacy_indexes(st) == [
        LegacyAnnouncementIndexed("h1", 3),
        LegacyAnnouncementIndexed("h2", 2),
    ]
    # A pointer at an older one leaves the newest to point at.
    fold(st, 4, LegacyAnnouncementIndexed("h1", 1).subject(), LegacyAnnouncementIndexed("h1", 1))
    fold(st, 5, LegacyAnnouncementIndexed("h1", 3).subject(), LegacyAnnouncementIndexed("h1", 3))
    assert st.legacy_announced == {"h2": 2}
    # Re-announced where every executor reads: nothing to point at.
    fold(st, 6, announce_subject("h2"), ann("h2"))
    assert legacy_indexes(st) == []
    # An executor not yet upgraded announcing again: to point at again.
    fold(st, 7, host_subject("h1"), ann("h1"))
    assert st.legacy_announced == {"h1": 7}
    assert st.network_hosts == set()


def test_an_old_announcement_read_after_a_newer_one_changes_nothing() -> None:
    """A share reads the announcement subjects before its own host subject: the executor's
    announcement from before the upgrade comes after the one it made since."""
    st = State()
    fold(st, 9, announce_subject("h1"), ann("h1", network_host=False))
    fold(st, 4, host_subject("h1"), ann("h1", network_host=True))
    assert st.network_hosts == set()
    assert st.legacy_announced == {}
