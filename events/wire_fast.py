"""``decode`` for readers of the whole log: the same envelopes, decoded in less time.

:func:`decode_fast` gives exactly what :func:`~.codec.decode` gives, for every input. The
usual message — a current-version event of a plain type, its data exactly its fields in order,
every value a scalar or a flat list or map of scalars — is decoded by msgspec's typed msgpack
decoder straight into the envelope's parts (about half the time of ``msgpack.unpackb`` and
no intermediate map). That decoder refuses whatever it cannot prove equal to what msgpack
gives (another type, a bool where an int is due, binary, an extension, a nested map, a map
key that is not a str, an unknown envelope field); then, and for every other case (older
versions, unknown types, fields out of order, malformed messages), :func:`~.codec.decode`
runs as before, with the same result or the same :class:`~.errors.DecodeError`.
"""

from __future__ import annotations

from typing import Union

import msgspec

from .codec import Envelope, _actor, _plain_fields, decode
from .field_types import check_of
from .types import EVENT_TYPES

_Scalar = Union[str, int, float, bool, None]  # noqa: UP007 (msgspec reads the annotation)


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """An envelope whose every value msgpack and msgspec decode alike."""

    type: str
    version: int
    id: str
    command_id: str
    time: float
    actor: dict[str, Union[str, None]]  # noqa: UP007
    data: dict[str, Union[_Scalar, list[_Scalar], dict[str, _Scalar]]]  # noqa: UP007


_decode_wire = msgspec.msgpack.Decoder(_Wire).decode
_Invalid = msgspec.DecodeError
_new = object.__new__
_set = object.__setattr__
#: event class -> its field names when decode's fast path applies to it (else None)
_FIELDS: dict[type, tuple[str, ...] | None] = {}


def decode_fast(raw: bytes) -> Envelope:
    """:func:`~.codec.decode` (same result, same errors), faster for the usual message."""
    try:
        w = _decode_wire(raw)
    except _Invalid:
        return decode(raw)
    cls = EVENT_TYPES.get(w.type)
    if cls is None or w.version != cls.VERSION:
        return decode(raw)
    data = w.data
    try:
        names = _FIELDS[cls]
    except KeyError:
        names = _FIELDS[cls] = _plain_fields(cls)
    if names is None or tuple(data) != names or check_of(cls)(data) is not None:
        return decode(raw)  # (a field of the wrong type: decode says which)
    event = _new(cls)
    _set(event, "__dict__", data)
    env = _new(Envelope)
    _set(
        env,
        "__dict__",
        {"event": event, "event_id": w.id, "command_id": w.command_id, "time": w.time,
         "actor": _actor(w.actor)},
    )  # fmt: skip
    return env
