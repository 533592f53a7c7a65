"""``decode_fast`` (the projector's decoder) gives exactly what ``decode`` gives, or its error.

Its msgspec path must take only messages it decodes as msgpack does; everything else must
reach ``decode`` untouched. Random envelopes of every type, the same mangled (values of the
wrong msgpack type, binary, extensions, nested maps with keys that are not str, fields added,
dropped, repeated or reordered), cut short or random bytes, must all decode equal (value and
type of every field, field order) or fail with the same message both ways.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import decode, encode
from netledger.events.errors import DecodeError
from netledger.events.types import EVENT_TYPES
from netledger.events.wire_fast import decode_fast
from tests.events.test_codec import JSONISH, SHORT_TEXT, envelope_strategy

TYPES = sorted(EVENT_TYPES)


def _answer(fn: Any, raw: bytes) -> Any:
    try:
        env = fn(raw)
    except DecodeError as exc:
        return ("error", str(exc))
    ev = env.event
    # repr tells 1 from 1.0 from True; the field order is the event's __dict__ order.
    return (repr(env), type(ev), list(vars(ev)), type(env.time), env.actor)


def _same(raw: bytes) -> Any:
    fast = _answer(decode_fast, raw)
    assert fast == _answer(decode, raw)
    return fast


ODD = (
    JSONISH
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.binary(max_size=4)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4))
    | st.dictionaries(st.integers(-2, 2), st.integers(-9, 9), min_size=1, max_size=2)
    | st.lists(st.dictionaries(SHORT_TEXT, st.integers(-9, 9), max_size=2), max_size=2)
    | st.dictionaries(SHORT_TEXT, st.lists(st.integers(-9, 9), max_size=2), min_size=1, max_size=2)
)

MANGLE = st.sampled_from(
    ["none", "version", "drop_field", "extra_field", "set_field", "reverse", "time", "actor",
     "actor_field", "id", "command_id", "type", "data", "drop_top", "extra_top"]
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(data=st.data(), type_name=st.sampled_from(TYPES))
def test_well_formed_events_decode_alike(data: st.DataObject, type_name: str) -> None:
    env = data.draw(envelope_strategy(EVENT_TYPES[type_name]))
    got = _same(encode(env))
    assert got[0] == repr(env)


@settings(max_examples=500, deadline=None)
@given(data=st.data(), type_name=st.sampled_from(TYPES), how=MANGLE, value=ODD)
def test_mangled_envelopes_decode_or_fail_alike(
    data: st.DataObject, type_name: str, how: str, value: Any
) -> None:
    env = data.draw(envelope_strategy(EVENT_TYPES[type_name]))
    obj = msgpack.unpackb(encode(env), raw=False)
    fields = sorted(obj["data"])
    if how == "version":
        obj["version"] = value
    elif how == "drop_field" and fields:
        del obj["data"][data.draw(st.sampled_from(fields))]
    elif how == "extra_field":
        obj["data"][data.draw(SHORT_TEXT)] = value
    elif how == "set_field" and fields:
        obj["data"][data.draw(st.sampled_from(fields))] = value
    elif how == "reverse":
        obj["data"] = dict(reversed(list(obj["data"].items())))
    elif how == "actor_field":
        obj["actor"][data.draw(st.sampled_from(["project", "role", "user", "x"]))] = value
    elif how == "drop_top":
        del obj[data.draw(st.sampled_from(sorted(obj)))]
    elif how == "extra_top":
        obj[data.draw(SHORT_TEXT)] = value
    elif how in ("time", "actor", "id", "command_id", "type", "data"):
        obj[how] = value
    _same(msgpack.packb(obj, use_bin_type=True))


def _map(items: list[tuple[Any, Any]]) -> bytes:
    """A msgpack map with these items as they are (repeated keys too)."""
    assert len(items) < 16
    out = bytes([0x80 | len(items)])
    for k, v in items:
        out += msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), type_name=st.sampled_from(TYPES), value=ODD)
def test_repeated_keys_decode_alike(data: st.DataObject, type_name: str, value: Any) -> None:
    env = data.draw(envelope_strategy(EVENT_TYPES[type_name]))
    items = list(msgpack.unpackb(encode(env), raw=False).items())
    i = data.draw(st.integers(0, len(items) - 1))
    items.insert(data.draw(st.integers(0, len(items))), (items[i][0], value))
    _same(_map(items))


#: actor values as raw msgpack, some that no Python value packs to: text that is not UTF-8, a
#: reserved byte, extensions, binary, maps with keys that are not str, nested containers
RAW_ACTOR_PARTS = st.sampled_from(
    [b"\xa2\xed\xa0", b"\xa1\xff", b"\xc1", b"\xd4\x01\x00", b"\xc4\x01a", b"\xc0", b"\xc3",
     b"\x01", b"\x90", b"\x80", b"\xcb\x00\x00\x00\x00\x00\x00\x00\x00", b"\xd9\x04user"]
) | st.text(max_size=5).map(msgpack.packb) | st.binary(max_size=4).map(msgpack.packb)  # fmt: skip
RAW_ACTORS = RAW_ACTOR_PARTS | st.lists(
    st.tuples(
        st.sampled_from(["project", "role", "user", "x"]).map(msgpack.packb) | RAW_ACTOR_PARTS,
        st.sampled_from(["p1", "admin", "", None]).map(msgpack.packb) | RAW_ACTOR_PARTS,
    ),
    max_size=4,
).map(lambda kv: bytes([0x80 | len(kv)]) + b"".join(k + v for k, v in kv))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), actor=RAW_ACTORS, again=RAW_ACTORS | st.none())
def test_odd_and_repeated_actors_decode_alike(
    data: st.DataObject, actor: bytes, again: bytes | None
) -> None:
    """decode_fast keeps the actor as its bytes (cached by them): an actor of any bytes, given
    once or twice (an earlier one that does not decode must fail the message, as in decode),
    decodes or fails alike, the cache cold or warm."""
    from netledger.events import wire_fast

    env = data.draw(envelope_strategy(EVENT_TYPES["FixedIpAllocated"]))
    items = [
        msgpack.packb(k) + msgpack.packb(v, use_bin_type=True)
        for k, v in msgpack.unpackb(encode(env), raw=False).items()
        if k != "actor"
    ]
    items.insert(data.draw(st.integers(0, len(items))), msgpack.packb("actor") + actor)
    if again is not None:
        items.insert(data.draw(st.integers(0, len(items))), msgpack.packb("actor") + again)
    raw = bytes([0x80 | len(items)]) + b"".join(items)
    if data.draw(st.booleans()):
        wire_fast._ACTORS.clear()
    first = _same(raw)
    assert _same(raw) == first  # and again, from the cache


@settings(max_examples=150, deadline=None)
@given(data=st.data(), type_name=st.sampled_from(TYPES), junk=st.binary(max_size=64))
def test_cut_short_or_junk_fails_alike(data: st.DataObject, type_name: str, junk: bytes) -> None:
    raw = encode(data.draw(envelope_strategy(EVENT_TYPES[type_name])))
    cut = data.draw(st.integers(0, len(raw)))
    _same(raw[:cut])
    _same(raw + junk[:1])
    _same(junk)


def test_edges_decode_alike() -> None:
    """The values msgspec and msgpack could tell apart, one by one on a usual envelope."""
    obj = msgpack.unpackb(encode(_allocation()), raw=False)
    assert _same(msgpack.packb(obj))[0] == repr(_allocation())
    edges: list[tuple[str, Any]] = [
        ("time", 5), ("time", True), ("time", 2**64 - 1), ("time", -(2**63)), ("time", None),
        ("version", True), ("version", 1.0), ("version", 0), ("version", 2**64 - 1),
        ("id", 7), ("id", b"x"), ("id", None), ("command_id", ""), ("type", b"FixedIpAllocated"),
        ("actor", None), ("actor", {"project": 1}), ("actor", {"role": ""}), ("actor", {b"x": 1}),
        ("data", {}), ("data", []),
    ]  # fmt: skip
    for key, value in edges:
        _same(msgpack.packb({**obj, key: value}, use_bin_type=True))
    for field, value in [
        ("project", b"p"), ("project", msgpack.ExtType(1, b"")), ("project", {1: 2}),
        ("project", [{"a": 1}]), ("project", {"a": [1]}), ("project", 1.5), ("project", 2**64 - 1),
        ("project", msgpack.Timestamp(1, 0)), ("project", {"a": {}}), ("project", [[]]),
    ]:  # fmt: skip
        data = {**obj["data"], field: value}
        _same(msgpack.packb({**obj, "data": data}, use_bin_type=True, datetime=False))
    # float32 times and values, bin keys
    raw = msgpack.packb({**obj, "data": {**obj["data"], "project": 0.1}}, use_single_float=True)
    _same(raw)
    _same(_map([(b"type", "FixedIpAllocated"), *list(obj.items())[1:]]))


def _allocation() -> Any:
    from netledger.events.codec import Actor, Envelope
    from netledger.events.types import FixedIpAllocated

    ev = FixedIpAllocated(
        network_id="n1", address="10.0.0.2", instance="i-1", mac="02:16:3e:00:00:01",
        host="h1", project="p1",
    )  # fmt: skip
    return Envelope(ev, "c:0", "c", 1764262800.123, Actor(project="p1", user="u"))


def _big_map(items: list[tuple[Any, Any]]) -> bytes:
    """:func:`_map` of any number of items (a map16 header from 16 on)."""
    n = len(items)
    out = bytes([0x80 | n]) if n < 16 else b"\xde" + n.to_bytes(2, "big")
    for k, v in items:
        out += msgpack.packb(k, use_bin_type=True) + msgpack.packb(v, use_bin_type=True)
    return out


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    type_name=st.sampled_from(TYPES),
    value=ODD,
    repeat=st.sampled_from(["none", "same", "odd", "drop"]),
)
def test_repeated_and_reordered_data_fields_decode_alike(
    data: st.DataObject, type_name: str, value: Any, repeat: str
) -> None:
    """decode_fast reads the data as a struct of the type's fields (msgspec): a field given
    twice (the last one counts, as in msgpack's map), given twice with another field missing,
    or the fields and the envelope's keys in any order, decode or fail alike."""
    env = data.draw(envelope_strategy(EVENT_TYPES[type_name]))
    obj = msgpack.unpackb(encode(env), raw=False)
    fields = list(obj["data"].items())
    if fields and repeat != "none":
        k, v = data.draw(st.sampled_from(fields))
        fields.insert(data.draw(st.integers(0, len(fields))), (k, v if repeat == "same" else value))
        if repeat == "drop" and len(fields) > 2:
            fields.remove(data.draw(st.sampled_from([f for f in fields if f[0] != k])))
    fields = data.draw(st.permutations(fields))
    top = data.draw(
        st.permutations([(k, v) for k, v in obj.items() if k != "data"] + [("data", None)])
    )
    raw = bytes([0x80 | len(top)])
    for k, v in top:
        raw += msgpack.packb(k) + (
            _big_map(fields) if k == "data" else msgpack.packb(v, use_bin_type=True)
        )
    _same(raw)
