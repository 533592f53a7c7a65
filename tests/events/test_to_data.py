"""``Event.to_data`` skips ``dataclasses.asdict``'s deep copy for plain values: it must give
exactly what asdict gives (same keys, same order, same values) for every event type."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.types import EVENT_TYPES
from tests.events.test_codec import event_strategy


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_to_data_is_asdict(type_name: str, data: st.DataObject) -> None:
    event = data.draw(event_strategy(EVENT_TYPES[type_name]))
    fast, slow = event.to_data(), dataclasses.asdict(event)
    assert fast == slow
    assert list(fast) == list(slow)


def test_to_data_copies_containers() -> None:
    """What it returns is the caller's: changing it leaves the (frozen) event as it was."""
    from netledger.events.host_events import HostLinkCreated

    ev = HostLinkCreated(
        host="h", name="br1", kind="bridge", network_id="n1", drift=False, detail={"mtu": 1500}
    )
    data = ev.to_data()
    data["detail"]["mtu"] = 9000
    assert ev.detail == {"mtu": 1500}
