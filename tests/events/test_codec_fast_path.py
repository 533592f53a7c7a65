"""decode's inline fast path gives exactly what its checked path gives (or the same error).

The fast path takes a current-version event of a plain type whose data holds exactly its fields
in order; everything else falls through to the field-by-field checks. Random envelopes, and
envelope maps with their parts mangled (versions as bools and floats, fields missing, added or
reordered, odd times and actors), must decode equal — and equally refused — both ways.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.events.codec import _decode_map, decode, encode
from netledger.events.errors import DecodeError
from netledger.events.types import EVENT_TYPES
from tests.events.test_codec import JSONISH, SHORT_TEXT, envelope_strategy

TYPES = sorted(EVENT_TYPES)


def both(raw: bytes) -> tuple[Any, Any]:
    """(decode's answer, the checked path's answer): an Envelope or the DecodeError's text."""

    def one(fn: Any, arg: Any) -> Any:
        try:
            env = fn(arg)
        except DecodeError as exc:
            return ("error", str(exc))
        return (env, vars(env.event), type(env.event))

    return one(decode, raw), one(_decode_map, msgpack.unpackb(raw, raw=False))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), type_name=st.sampled_from(TYPES))
def test_a_well_formed_event_decodes_the_same_both_ways(
    data: st.DataObject, type_name: str
) -> None:
    env = data.draw(envelope_strategy(EVENT_TYPES[type_name]))
    fast, checked = both(encode(env))
    assert fast == checked
    assert fast[0] == env


MANGLE = st.sampled_from(
    ["version", "drop_field", "extra_field", "reverse", "time", "actor", "id", "type"]
)


@settings(max_examples=500, deadline=None)
@given(
    data=st.data(),
    type_name=st.sampled_from(TYPES),
    how=MANGLE,
    value=JSONISH | st.booleans() | st.floats(allow_nan=False),
)
def test_a_mangled_envelope_decodes_or_fails_the_same_both_ways(
    data: st.DataObject, type_name: str, how: str, value: Any
) -> None:
    env = data.draw(envelope_strategy(EVENT_TYPES[type_name]))
    obj = msgpack.unpackb(encode(env), raw=False)
    if how == "version":
        obj["version"] = value
    elif how == "drop_field" and obj["data"]:
        del obj["data"][data.draw(st.sampled_from(sorted(obj["data"])))]
    elif how == "extra_field":
        obj["data"][data.draw(SHORT_TEXT)] = value
    elif how == "reverse":
        obj["data"] = dict(reversed(list(obj["data"].items())))
    elif how in ("time", "actor", "id", "type"):
        obj[how] = value
    raw = msgpack.packb(obj, use_bin_type=True)
    fast, checked = both(raw)
    assert fast == checked


def test_a_field_of_the_wrong_type_is_worded_alike_on_both_paths() -> None:
    """Found by the test above run with 10x its examples: decode's inline path said
    ``HostLinkCreated: ...``, the checked path ``HostLinkCreated v1: ...``."""
    from netledger.events.codec import Envelope
    from netledger.events.host_events import HostLinkCreated

    ev = HostLinkCreated(host="h", name="n", kind="bridge", network_id=None, drift=False)
    obj = msgpack.unpackb(encode(Envelope(ev, "e", "c", 0.0)), raw=False)
    obj["data"]["detail"] = False
    fast, checked = both(msgpack.packb(obj, use_bin_type=True))
    assert fast == checked == ("error", "HostLinkCreated: detail is bool, not dict")


def test_the_cached_hints_are_get_type_hints_for_every_event_type() -> None:
    """wire_fast evaluates each annotation text once per module (a decoder's build was ~350
    compiles and evals of ``typing.get_type_hints``): the same types, for every event type."""
    import typing

    from netledger.events.codec import _plain_fields
    from netledger.events.field_types import field_hints
    from netledger.events.types import EVENT_TYPES

    checked = 0
    for cls in EVENT_TYPES.values():
        names = _plain_fields(cls)
        if names is None:
            continue
        full = typing.get_type_hints(cls)
        assert field_hints(cls, names) == {n: full[n] for n in names}, cls
        assert field_hints(cls) == full, cls
        checked += 1
    assert checked > 30
