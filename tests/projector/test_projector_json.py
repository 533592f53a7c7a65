"""The ``events.data`` / ``detail`` JSON: orjson where it writes what the stdlib encoder writes.

``to_json`` takes orjson's output only for values it can prove the two write alike; these
tests compare it with the stdlib encoder the projection always used, over random values
(every kind msgpack can decode to, floats of every magnitude, any text) and the edges.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.projector.project_tx import to_json

_STDLIB = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.floats(min_value=-1e17, max_value=1e17)
    | st.floats(min_value=-1e-3, max_value=1e-3)
    | st.text()
    | st.text(alphabet=st.characters(max_codepoint=0x7F))
    | st.binary(max_size=8)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        | st.dictionaries(st.integers(0, 3), inner, max_size=2)
    ),
    max_leaves=12,
)


def _same(value: Any) -> None:
    try:
        want = _STDLIB.encode(value)
    except (TypeError, ValueError):  # the stdlib refuses it: so must to_json (as before)
        try:
            to_json(value)
        except (TypeError, ValueError):
            return
        raise AssertionError(f"to_json accepted {value!r}") from None
    assert to_json(value) == want


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _values, max_size=8))
def test_maps_encode_as_the_stdlib_does(value: dict[str, Any]) -> None:
    _same(value)


@settings(max_examples=200, deadline=None)
@given(st.lists(_values, max_size=6))
def test_lists_encode_as_the_stdlib_does(value: list[Any]) -> None:
    _same(value)


def test_edges() -> None:
    for f in (1e16, 9999999999999998.0, 1e-4, 9.999999999999999e-05, 1e-05, 5e-324, -0.0, 0.0,
              1.7976931348623157e308, math.inf, -math.inf, math.nan, 0.1, 65.93, 1e15):  # fmt: skip
        _same({"f": f})
    for i in (2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1):
        _same({"i": i})
    for ch in map(chr, [*range(0x80), 0x80, 0xE9, 0x2028, 0xFFFF, 0x1F600]):
        _same({"s": f"a{ch}b", ch: 1})
    _same({"b": b"\x00\xff"})
    _same({"nested": {"z": [1, {"y": None, "x": [True, 1.5]}], "a": {}}, "list": []})
    _same({1: "int key"})
    deep: Any = 1
    for _ in range(300):  # deeper than orjson nests: the stdlib writes it
        deep = [deep]
    _same({"deep": deep})
