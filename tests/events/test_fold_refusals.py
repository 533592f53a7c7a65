"""A stored event the fold cannot take is refused whole, never fatal (events/state.py).

Whatever a message on the stream holds, ``State.fold_message`` either folds it or says why not,
and a refused one changes nothing but its subject's sequence (the log's OCC check counts it):
no exception escapes, no half-applied event. Found Dec 5: a ``NetworkCreated`` whose ``cidr``
was ``True`` or ``"abc"`` made the service's fold raise — its follower stopped, and every start
folded the log into the same exception. Wrongly typed fields are refused when decoding
(events/field_types.py, tested here through the codec); well-typed values that make no sense
(a CIDR that does not parse, a negative VNI, an address outside its network) by the fold.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import EVENT_TYPES, SYSTEM, Envelope, decode
from netledger.events.errors import DecodeError
from netledger.events.snapshot import state_to_wire
from netledger.events.state import State
from netledger.events.types import Event
from tests.poison import stored_network_created

from .decider_helpers import Ledger

# Values a writer could have put there: the world's own ids and addresses (so that events
# reach the handlers' deeper paths), and junk of the right type.
_IDS = ["1", "2", "3", "pub", "p1", "p2", "h1", "h2", "i1", "i2", "br100"]
_ADDRS = ["10.0.0.2", "10.0.0.3", "10.0.1.7", "192.0.2.9", "10.0.0.0/24", "fd00::5", "fd00::/64"]
_MACS = ["02:16:3e:00:00:01", "fa:16:3e:00:00:02"]
_JUNK = ["", "abc", "10.0.0.300", "10.0.0.0/99", "::/129", "-1", " ", "ß", "1" * 300]
_texts = st.one_of(st.sampled_from(_IDS + _ADDRS + _MACS + _JUNK), st.text(max_size=12))
_ints = st.one_of(st.integers(-3, 5000), st.sampled_from([-(2**63), 2**63 - 1, 2**24, 4095]))
_floats = st.floats(allow_nan=True, allow_infinity=True)


def _values(hint: Any) -> st.SearchStrategy[Any]:
    if hint is str:
        return _texts
    if hint is int:
        return _ints
    if hint is bool:
        return st.booleans()
    if hint is float:
        return _floats
    if hint is Any:
        return st.one_of(_texts, _ints, st.none())
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return st.lists(_values(args[0]), max_size=4)
    if origin is dict:
        return st.dictionaries(_values(args[0]), _values(args[1]), max_size=3)
    if args and type(None) in args:  # X | None
        (inner,) = [a for a in args if a is not type(None)]
        return st.one_of(st.none(), _values(inner))
    raise AssertionError(f"no strategy for {hint!r}")


@st.composite
def any_event(draw: st.DrawFn) -> Event:
    """Any event type, every field a value of its declared type."""
    cls = draw(st.sampled_from(sorted(EVENT_TYPES.values(), key=lambda c: c.TYPE)))
    hints = typing.get_type_hints(cls)
    return cls(**{f.name: draw(_values(hints[f.name])) for f in dataclasses.fields(cls)})


def _world() -> State:
    """Networks (a project's, flat and VXLAN), a pool, allocations, a lease, a mapping."""
    led = Ledger()
    led.networks(cidr="10.0.0.0/23", num_networks=2, network_size=256)
    led.run("floating_ip.pool_create", pool="pub", cidr="192.0.2.0/28")
    a = led.allocate("i1", project="p1", host="h1")
    led.allocate("i2", project="p2", host="h2")
    f = led.run("floating_ip.allocate", pool="pub", project="p1").result
    led.run("floating_ip.associate", address=f["address"], fixed_address=a["address"], project="p1")
    return led.state


def _without_positions(w: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in w.items() if k not in ("subject_seq", "last_seq", "event_time")}


def _same(a: Any, b: Any) -> bool:
    """Equality of wire forms, a NaN equal to itself (a refused event's NaN must not count)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@settings(max_examples=600, deadline=None)
@given(st.lists(any_event(), min_size=1, max_size=6), st.data())
def test_a_refused_event_changes_nothing_but_its_subjects_sequence(
    events: list[Event], data: st.DataObject
) -> None:
    state = _world()
    seq = state.last_seq
    for ev in events:
        seq += 1
        try:
            subject = ev.subject()
        except Exception:
            subject = "netledger.evt.registry"
        subject = data.draw(st.sampled_from([subject, "netledger.evt.network.1"]))
        before = _without_positions(state_to_wire(state))
        refused = state.fold_message(seq, subject, Envelope(ev, "e", "c", 1.0, SYSTEM))
        assert state.seq_of(subject) == seq  # the log's OCC counts it, folded or not
        if refused is not None:
            assert isinstance(refused, str) and refused
            assert _same(_without_positions(state_to_wire(state)), before), refused


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("cidr", True, "cidr is bool, not str | None"),
        ("cidr", 5, "cidr is int, not str | None"),
        ("vni", "77", "vni is str, not int | None"),
        ("multi_host", 1, "multi_host is int, not bool"),
        ("label", None, "label is NoneType, not str"),
        ("bridge", ["br"], "bridge is list, not str"),
    ],
)
def test_a_field_of_the_wrong_type_does_not_decode(field: str, value: Any, says: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode(stored_network_created(**{field: value}))
    assert info.value.message == f"NetworkCreated: {says}"


def test_the_slow_path_of_decode_checks_the_same() -> None:
    """Fields in another order than the class's (or missing ones with defaults, or an older
    version) take the slow path of decode: checked the same."""
    obj = msgpack.unpackb(stored_network_created(vni="x"))
    obj["data"] = dict(reversed(obj["data"].items()))
    with pytest.raises(DecodeError, match="vni is str, not int"):
        decode(msgpack.packb(obj))
    del obj["data"]["ipv6_mode"]  # a default fills it in
    obj["data"]["vni"] = 7
    assert decode(msgpack.packb(obj)).event.vni == 7


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"cidr": "abc"}, "NetworkCreated cannot be folded"),
        ({"cidr": "10.9.0.0/99"}, "NetworkCreated cannot be folded"),
        ({"gateway": "10.78.0.1"}, "NetworkCreated cannot be folded: gateway 10.78.0.1 is not in"),
        ({"network_id": "1"}, "NetworkCreated cannot be folded: network 1 already exists"),
    ],
)
def test_values_the_fold_cannot_take_are_refused(changes: dict[str, Any], says: str) -> None:
    state = _world()
    before = _without_positions(state_to_wire(state))
    env = decode(stored_network_created(**changes))
    refused = state.fold_message(100, "netledger.evt.registry", env)
    assert refused is not None and refused.startswith(says)
    assert state.seq_of("netledger.evt.registry") == 100
    assert _same(_without_positions(state_to_wire(state)), before)


def test_every_event_type_has_a_checked_type_for_every_field() -> None:
    """A new event type (or field) with an annotation the decode check does not know fails
    here, not on the stream."""
    from netledger.events.field_types import build_check

    for cls in EVENT_TYPES.values():
        build_check(cls)


def test_unmapping_a_floating_ip_that_is_not_mapped_is_a_no_op() -> None:
    """Found by the property test above (Dec 5): an unmap naming no fixed address of a floating
    IP the network does not map matched the lookup's default, raised KeyError after the network
    was stamped — refused, yet changed."""
    from netledger.events.placement_events import FloatingIpUnmapped

    state = _world()
    before = dict(state.networks["1"].floating)
    ev = FloatingIpUnmapped(network_id="1", floating="203.0.113.9", fixed="", pool="public")
    refused = state.fold_message(
        state.last_seq + 1, ev.subject(), Envelope(ev, "e", "c", 1.0, SYSTEM)
    )
    assert refused is None  # folded (the network's sequence moves), nothing unmapped
    assert state.networks["1"].floating == before
