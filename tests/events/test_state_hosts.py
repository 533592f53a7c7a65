"""What the domain fold believes of host events (events/state.py): a host speaks only for
itself — an event naming another host, written on this host's subject, is not believed."""

from __future__ import annotations

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.host_events import HostAnnounced, HostEvent, HostInstancesSeen
from netledger.events.ids import host_subject
from netledger.events.state import State


def announce(host: str, network_host: bool) -> HostAnnounced:
    return HostAnnounced(
        host=host,
        vtep_address=None,
        physical_interface="eth1",
        public_interface=None,
        network_host=network_host,
    )


def fold(events: list[tuple[str, HostEvent]]) -> State:
    st = State()
    for seq, (subject, ev) in enumerate(events, 1):
        assert st.apply(seq, subject, Envelope(ev, f"e{seq}", f"c{seq}", float(seq), SYSTEM))
    return st


def test_network_hosts_follow_the_last_announcement() -> None:
    st = fold(
        [
            (host_subject("h1"), announce("h1", True)),
            (host_subject("h2"), announce("h2", True)),
            (host_subject("h2"), announce("h2", False)),
        ]
    )
    assert st.network_hosts == {"h1"}


def test_a_host_cannot_speak_for_another() -> None:
    seen_by_h1 = HostInstancesSeen(
        host="h1", macs=["02:00:00:00:00:01"], networks=["1"], reason="start"
    )
    st = fold(
        [
            (host_subject("h1"), seen_by_h1),
            # h2's executor (which may write only its own subject) claims h1 sees nothing and
            # that h1 is a network host: neither is believed.
            (
                host_subject("h2"),
                HostInstancesSeen(host="h1", macs=[], networks=["1"], reason="change"),
            ),
            (host_subject("h2"), announce("h1", True)),
        ]
    )
    assert st.network_hosts == set()
    assert st.sightings["h1"].last_macs == {"02:00:00:00:00:01"}
