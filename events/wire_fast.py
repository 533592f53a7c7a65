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

from collections.abc import Callable
from typing import Any, Union

import msgspec

from .codec import _MAX_ACTORS, Actor, Envelope, _actor, _plain_fields, decode
from .field_types import check_of
from .types import EVENT_TYPES, Event

_Scalar = Union[str, int, float, bool, None]  # noqa: UP007 (msgspec reads the annotation)


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """An envelope whose every value msgpack and msgspec decode alike (the actor is kept as
    its bytes: :func:`_actor_of` checks it once per distinct actor)."""

    type: str
    version: int
    id: str
    command_id: str
    time: float
    actor: msgspec.Raw
    data: dict[str, Union[_Scalar, list[_Scalar], dict[str, _Scalar]]]  # noqa: UP007


_decode_wire = msgspec.msgpack.Decoder(_Wire).decode
_decode_actor = msgspec.msgpack.Decoder(dict[str, Union[str, None]]).decode  # noqa: UP007
_Invalid = msgspec.DecodeError
#: msgpack's one-byte header of a map of 7 entries (the envelope's fields)
_SEVEN = b"\x87"
_new = object.__new__
_set = object.__setattr__
_Spec = tuple[type[Event], int, tuple[str, ...], Callable[[dict[str, Any]], str | None]]
#: event type name -> (class, version, field names, field check) when decode's fast path
#: applies to it, else None; only the names of known types are ever keys
_SPECS: dict[str, _Spec | None] = {}
#: an actor's bytes as stored -> its Actor (a log has few distinct actors; bounded as codec's)
_ACTORS: dict[bytes, Actor] = {}


def _spec(type_name: str) -> _Spec | None:
    cls = EVENT_TYPES[type_name]
    names = _plain_fields(cls)
    spec = None if names is None else (cls, cls.VERSION, names, check_of(cls))
    _SPECS[type_name] = spec
    return spec


def _actor_of(raw: msgspec.Raw) -> Actor | None:
    """The Actor of an actor's stored bytes, as :func:`~.codec.decode` builds it; None when
    they are not a map of str to str or None (then ``decode`` says what it makes of them)."""
    key = bytes(raw)
    actor = _ACTORS.get(key)
    if actor is None:
        try:
            value = _decode_actor(key)
        except _Invalid:
            return None
        actor = _actor(value)
        if len(_ACTORS) >= _MAX_ACTORS:
            _ACTORS.clear()
        _ACTORS[key] = actor
    return actor


def decode_fast(raw: bytes) -> Envelope:
    """:func:`~.codec.decode` (same result, same errors), faster for the usual message."""
    if raw[:1] != _SEVEN:
        # Not a map of exactly its seven fields (as encode writes it): a key given twice would
        # leave an earlier actor unread here (kept raw), where decode reads and checks it.
        return decode(raw)
    try:
        w = _decode_wire(raw)
    except _Invalid:
        return decode(raw)
    type_name = w.type
    try:
        spec = _SPECS[type_name]
    except KeyError:
        if type_name not in EVENT_TYPES:
            return decode(raw)
        spec = _spec(type_name)
    if spec is None:
        return decode(raw)
    cls, version, names, check = spec
    data = w.data
    if w.version != version or tuple(data) != names or check(data) is not None:
        return decode(raw)  # (a field of the wrong type: decode says which)
    actor = _actor_of(w.actor)
    if actor is None:
        return decode(raw)
    event = _new(cls)
    _set(event, "__dict__", data)
    env = _new(Envelope)
    _set(
        env,
        "__dict__",
        {"event": event, "event_id": w.id, "command_id": w.command_id, "time": w.time,
         "actor": actor},
    )  # fmt: skip
    return env
