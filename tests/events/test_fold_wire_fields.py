"""``State.fold_wire`` folds a message as ``State.fold_message`` folds its decoded envelope.

The start's catch-up folds what :func:`~netledger.events.wire_fast.wire_of` read, and gives the
handlers of :data:`~netledger.events.state._READ_FIELDS` the message's struct of fields instead
of the event: the same values under the same names, and nothing else (no method, no property).
Fed the same stored messages — decided events and junk of the right types from every event
type, on their subjects or others, sometimes cut (the strategies of
tests/events/test_fold_projector_agree.py) — both folds must answer alike for every message and
end in the same state.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netledger.events.codec import Actor, Envelope, decode, encode
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import DecodeError, NetledgerError
from netledger.events.ids import REGISTRY_SUBJECT, host_subject, network_subject, project_subject
from netledger.events.snapshot import state_to_wire
from netledger.events.state import _HANDLERS, _READ_FIELDS, State, _plan
from netledger.events.types import NetworkAssociated, NetworkCreated
from netledger.events.wire_fast import _FOLD_WIRES, wire_of
from tests.events.test_fold_projector_agree import _subject_of, junk
from tests.projector.test_projector_props import command


def _by_wire(state: State, seq: int, subject: str, stored: bytes) -> str | None:
    """The catch-up's fold of one new message (service/service.py ``_fold_raw``)."""
    w = wire_of(stored)
    if w is None:
        try:
            return state.fold_message(seq, subject, decode(stored))
        except DecodeError as exc:
            return state.fold_message(seq, subject, None, exc.message)
    return state.fold_wire(seq, subject, w)


def _by_envelope(state: State, seq: int, subject: str, stored: bytes) -> str | None:
    try:
        env = decode(stored)
    except DecodeError as exc:
        return state.fold_message(seq, subject, None, exc.message)
    return state.fold_message(seq, subject, env)


def draw_messages(
    data: st.DataObject, slow: State, actor: Actor
) -> Iterator[tuple[str, bytes, Any]]:
    """A random stream, one message at a time: (subject, stored bytes, event) of the events
    random commands decide on ``slow`` — which the caller folds each message into before
    asking for the next — and junk of any type on any subject; one in 20 messages cut short."""
    for i in range(data.draw(st.integers(1, 40), label="steps")):
        if data.draw(st.integers(0, 9)) < 6:
            name, args = data.draw(command(slow))
            req = parse_command(
                name, {"command_id": f"c{i}", "args": args, "actor": actor.to_wire()}
            )
            try:
                events: list[tuple[str | None, Any]] = [
                    (None, ev) for ev in decide(slow, req).events
                ]
            except NetledgerError:
                continue
            except Exception:  # a decider on junk both folds took (see the projector test)
                continue
        else:
            events = [data.draw(junk(slow))]
        for j, (subject, ev) in enumerate(events):
            stored = encode(Envelope(ev, f"c{i}:{j}", f"c{i}", float(i), actor))
            if data.draw(st.integers(0, 19)) == 0:
                stored = stored[: data.draw(st.integers(0, len(stored) - 1))]
            yield subject or _subject_of(ev), stored, ev


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fold_wire_folds_as_the_envelope_does(data: st.DataObject) -> None:
    fast, slow = State(), State()
    actor = Actor(role="admin", user="t")
    for seq, (on, stored, ev) in enumerate(draw_messages(data, slow, actor), 1):
        assert _by_wire(fast, seq, on, stored) == _by_envelope(slow, seq, on, stored), ev
    assert state_to_wire(fast) == state_to_wire(slow)
    assert fast == slow
    assert fast.host_macs == slow.host_macs


def test_the_struct_of_fields_holds_the_fields_only() -> None:
    """What a listed handler is given answers for the event's fields and nothing else: a
    handler that came to call a method or read a property would fail there (and the fold
    would refuse the message), not read something else."""
    wire_of(b"\x87")  # (builds the decoder)
    wires = typing.get_args(_FOLD_WIRES.decode.__self__.type)
    listed = [w for w in wires if _HANDLERS.get(w.EVENT) in _READ_FIELDS]
    assert len(listed) >= 12, listed  # (some listed types decode no struct: see _wire_struct)
    for wire in listed:
        data_type = typing.get_type_hints(wire)["data"]
        assert data_type.__struct_fields__ == tuple(
            f.name for f in dataclasses.fields(wire.EVENT)
        ), wire
        assert not hasattr(data_type, "subject") and not hasattr(data_type, "TYPE"), wire


def test_an_event_accepted_on_two_subjects_is_checked_on_both_without_the_event() -> None:
    """A NetworkAssociated belongs on its project's subject, or on its network's (early
    streams): fold_wire checks both from the message's fields, as ``accepts_subject`` does,
    and refuses it anywhere else alike."""
    _, prefix, _, also, _ = _plan(NetworkAssociated)
    assert prefix == "netledger.evt.project."  # (not asked: checked from its fields)
    assert also is not None and also[0] == "netledger.evt.network."
    created = NetworkCreated(
        network_id="1", label="n", cidr="10.0.0.0/28", netmask="255.255.255.240",
        gateway="10.0.0.1", broadcast="10.0.0.15", dhcp_start="10.0.0.2", mode="vlan",
        vlan=100, vni=None, bridge="br100", bridge_interface=None, dns1=None, dns2=None,
        vpn_private_address=None, vpn_public_port=None, project=None, multi_host=False,
        network_host=None, mtu=None, cidr_v6=None,
    )  # fmt: skip
    actor = Actor(role="admin", user="t")
    subjects = [
        project_subject("p1"), network_subject("1"), project_subject("p2"),
        network_subject("2"), host_subject("p1"), "netledger.evt.project.", "p1",
    ]  # fmt: skip
    for subject in subjects:
        fast, slow = State(), State()
        stored = encode(Envelope(created, "e1", "c1", 1.0, actor))
        assert _by_wire(fast, 1, REGISTRY_SUBJECT, stored) is None
        assert _by_envelope(slow, 1, REGISTRY_SUBJECT, stored) is None
        ev = NetworkAssociated(network_id="1", project="p1")
        stored = encode(Envelope(ev, "e2", "c2", 2.0, actor))
        answer = _by_wire(fast, 2, subject, stored)
        assert answer == _by_envelope(slow, 2, subject, stored)
        assert (answer is None) == ev.accepts_subject(subject), subject
        assert state_to_wire(fast) == state_to_wire(slow)
