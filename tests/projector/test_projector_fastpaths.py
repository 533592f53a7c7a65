"""The projector's cheaper paths write exactly what the general ones did.

* ``event_data`` of an event type whose fields are all declared ``str``/``int``/``bool``/``None``
  goes straight to orjson (no look at each value's type): over random values of those types
  — any text, ints of any size — it equals the stdlib encoder the projection always used, for
  every registered type, and the types it takes that way are the ones expected. Of any other
  type only the values of its other fields (lists, maps, floats, ``Any``) are looked at: over
  random values of every declared type, of every registered type, it equals the stdlib too.
* A plan crosses to the committing process as msgpack (``plan_frame``): read back it equals the
  plan, tuples and value types kept (bool, bytes, -0.0, 64-bit ints); a value msgpack cannot
  carry exactly sends it pickled, read back alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.field_types import field_hints
from netledger.events.types import EVENT_TYPES, FixedIpAllocated, FixedIpLeased
from netledger.projector.frames import FrameReader, decode_plan_frame, plan_frame
from netledger.projector.project import _PLAIN_DATA, _plain_data, event_data
from netledger.projector.project_tx import field_names
from netledger.projector.store import Plan

_STDLIB = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)

_PLAIN = sorted((cls for cls in EVENT_TYPES.values() if _plain_data(cls)), key=lambda c: c.TYPE)


def _value_of(hint: Any) -> st.SearchStrategy[Any]:
    args = typing.get_args(hint) or (hint,)
    parts: list[st.SearchStrategy[Any]] = []
    for a in args:
        if a is str:
            parts += [st.text(), st.text(alphabet=st.characters(max_codepoint=0x7F))]
        elif a is bool:
            parts.append(st.booleans())
        elif a is int:
            parts.append(st.integers(min_value=-(2**70), max_value=2**70))
        else:
            parts.append(st.none())
    return st.one_of(parts)


@st.composite
def _plain_events(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from(_PLAIN))
    hints = typing.get_type_hints(cls)
    values = {n: draw(_value_of(hints[n])) for n in field_names(cls)}
    # As decode builds it: the instance's __dict__ is the map of its fields, in their order.
    ev = object.__new__(cls)
    object.__setattr__(ev, "__dict__", values)
    return ev


def test_the_plain_types_are_the_expected_ones() -> None:
    assert FixedIpAllocated in _PLAIN and FixedIpLeased in _PLAIN
    for cls in EVENT_TYPES.values():
        if _plain_data(cls):
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(cls):
                for a in typing.get_args(hints[f.name]) or (hints[f.name],):
                    assert a in (str, int, bool, type(None)), (cls, f.name, a)
    assert _PLAIN_DATA[FixedIpAllocated] == len(field_names(FixedIpAllocated))


@settings(max_examples=800, deadline=None)
@given(_plain_events())
def test_plain_event_data_is_the_stdlib_json(ev: Any) -> None:
    assert event_data(ev) == _STDLIB.encode(dict(ev.__dict__))


def test_plain_event_data_edges() -> None:
    base = {
        "network_id": "1", "address": "10.0.0.2", "instance": "i", "mac": "m", "host": None,
        "project": None, "address_v6": None,
    }  # fmt: skip
    for ch in map(chr, [*range(0x80), 0x80, 0xE9, 0x2028, 0xFFFF, 0x1F600]):
        ev = FixedIpAllocated(**{**base, "instance": f"a{ch}b"})
        assert event_data(ev) == _STDLIB.encode({**base, "instance": f"a{ch}b"})
    # A value against its declared type (built by hand, never decoded): still the stdlib's
    # text for anything orjson refuses (an int beyond 64 bits).
    for i in (2**63 - 1, 2**64, -(2**63) - 1):
        ev = FixedIpAllocated(**{**base, "host": i})  # type: ignore[arg-type]
        assert event_data(ev) == _STDLIB.encode({**base, "host": i})


_ANY = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


def _declared(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a field declared ``hint`` as decode gives them (a float field may hold an int:
    msgpack keeps ``600`` one), and anything at all for ``Any``."""
    if hint is Any:
        return _ANY
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return st.lists(_declared(args[0]), max_size=5)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), _declared(args[1]), max_size=4)
    if hint is float:
        return (
            st.floats(allow_nan=True, allow_infinity=True)
            | st.floats(min_value=-1e-3, max_value=1e-3)
            | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        )
    if args:
        return st.one_of([_declared(a) for a in args])
    return _value_of(hint)


_EVERY = sorted(EVENT_TYPES.values(), key=lambda c: c.TYPE)


@st.composite
def _any_events(draw: st.DrawFn) -> Any:
    cls = draw(st.sampled_from(_EVERY))
    hints = field_hints(cls)
    ev = object.__new__(cls)
    values = {n: draw(_declared(hints[n])) for n in field_names(cls)}
    object.__setattr__(ev, "__dict__", values)
    return ev


def test_every_kind_of_field_is_drawn() -> None:
    hints = {h for cls in _EVERY for h in field_hints(cls).values()}
    kinds = {typing.get_origin(h) or h for h in hints}
    assert {list, dict, float} <= kinds  # the fields _data looks at before orjson writes them


@settings(max_examples=1500, deadline=None)
@given(_any_events())
def test_event_data_of_every_type_is_the_stdlib_json(ev: Any) -> None:
    # A list, map, float or Any field's value is looked at; the plain ones are not.
    assert event_data(ev) == _STDLIB.encode(dict(ev.__dict__))


def _read(data: bytes | bytearray) -> Any:
    r, w = os.pipe()
    try:
        os.write(w, data)
        reader = FrameReader(r, decode_plan_frame)
        while True:
            ok, obj = reader.next()
            if ok:
                return obj
            reader.fill()
    finally:
        os.close(r)
        os.close(w)


_row_values = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=8)
)
_rows = st.lists(st.tuples(_row_values, _row_values, _row_values), max_size=5)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**63 - 1),
    _rows,
    st.dictionaries(
        st.tuples(st.text(max_size=5), st.text(max_size=5)),
        st.lists(st.lists(_row_values, max_size=4), max_size=3),
        max_size=3,
    ),
    _rows,
    _rows,
)
def test_a_plan_frame_reads_back_equal(
    seq: int,
    keys: list[tuple[Any, ...]],
    updates: dict[tuple[str, ...], list[list[Any]]],
    upserts: list[tuple[Any, ...]],
    events: list[tuple[Any, ...]],
) -> None:
    plan = Plan(seq, seq + 1, [("fixed_ips", keys, updates, upserts)], events, [])
    got, busy = _read(plan_frame(plan, 0.25))
    assert busy == 0.25
    assert type(got) is Plan and got == plan
    assert repr(got) == repr(plan)  # same types: bool not int, tuples, -0.0
    for row in got.events + got.steps[0][1] + got.steps[0][3]:
        assert type(row) is tuple


def test_a_plan_msgpack_cannot_carry_goes_pickled() -> None:
    for odd in (2**64, -(2**63) - 1, "lone \udc80 surrogate"):
        plan = Plan(5, 6, [("hosts", [], {}, [("h", odd)])], [(5, odd, math.pi)], [])
        frame = plan_frame(plan, 0.5)
        assert frame[4] == 0x80  # a pickle
        got, busy = _read(frame)
        assert (got, busy) == (plan, 0.5)
