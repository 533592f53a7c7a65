"""Pure tests of ``markers_upto`` (review h113): a revert whose client read the markers only up to
a sequence is refused ``revert_raced`` by a decider whose state holds a marker after it; a
request without it (an older client) is decided as before."""

from __future__ import annotations

from typing import Any

import pytest

from netledger.events.codec import Actor
from netledger.events.commands import Request, parse_command
from netledger.events.decide import decide
from netledger.events.errors import NetledgerError
from netledger.events.revert import REVERT_SUBJECT, ChangeReverted, pack_events
from tests.events.test_revert_compensate import History

ADMIN = Actor(role="admin")


def history() -> History:
    """A network, an allocation (c2), and a revert of another command: its marker."""
    h = History()
    h.run(
        "network.create",
        {"label": "f", "cidr": "10.7.0.0/24", "num_networks": 1, "mode": "flat"},
    )
    h.run("fixed_ip.allocate", {"instance": "i-1", "network_id": "1", "host": "h1"})
    h.fold(ChangeReverted("other", None, None, None, [1], [], 0), "revert-other")
    return h


def request(h: History, **extra: Any) -> Request:
    events = [s for s in h.stored if s.command_id == "c2"]
    args = {"reverted_command_id": "c2", "events": pack_events(events), **extra}
    payload = {"command_id": "revert-c2", "actor": ADMIN.to_wire(), "args": args}
    return parse_command("revert", payload)


def test_a_marker_after_the_clients_read_refuses_the_revert() -> None:
    h = history()
    marker = h.state.seq_of(REVERT_SUBJECT)
    with pytest.raises(NetledgerError) as info:
        decide(h.state, request(h, markers_upto=marker - 1))
    assert info.value.code == "revert_raced"
    assert info.value.details == {"markers_upto": marker - 1, "marker_seq": marker}


@pytest.mark.parametrize("upto", ["marker", "later", None])
def test_a_read_that_saw_every_marker_or_none_given_is_decided(upto: str | None) -> None:
    """Up to the last marker or later (the log's end as the client read it), or not given
    (an older client: not checked, as before)."""
    h = history()
    extra = {} if upto is None else {"markers_upto": h.state.seq_of(REVERT_SUBJECT)}
    if upto == "later":
        extra["markers_upto"] += 10
    d = decide(h.state, request(h, **extra))
    assert [e.TYPE for e in d.events] == ["FixedIpDeallocated", "ChangeReverted"]


@pytest.mark.parametrize("bad", [-1, True, "7", 1.5])
def test_markers_upto_must_be_a_sequence(bad: Any) -> None:
    with pytest.raises(NetledgerError) as info:
        request(history(), markers_upto=bad)
    assert info.value.code == "invalid_field"
