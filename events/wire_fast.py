"""``decode`` for readers of the whole log: the same envelopes, decoded in less time.

:func:`decode_fast` gives exactly what :func:`~.codec.decode` gives, for every input. The
usual message — a current-version event of a plain type, its data exactly its fields, every
value of its field's declared type — is decoded by msgspec's typed msgpack decoder straight into
the envelope's parts: one struct per event type (a union tagged by the envelope's ``type``),
whose fields are typed as :mod:`.field_types` checks them, so that msgspec checks them in C
(about a third of the time of ``msgpack.unpackb``, no intermediate map, no check left in
Python). That decoder refuses whatever it cannot prove equal to what msgpack and the field check
give (another type, a bool where an int is due, an int beyond 64 bits, binary, an extension, a
field missing or unknown, an unknown envelope field, an older version); then, and for every
other case (unknown types, malformed messages), :func:`~.codec.decode` runs as before, with the
same result or the same :class:`~.errors.DecodeError`.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, TypeVar, Union

import msgspec

from .codec import _MAX_ACTORS, Actor, Envelope, _actor, _plain_fields, decode
from .field_types import INT_MAX, INT_MIN, field_hints
from .types import EVENT_TYPES, Event

_Scalar = Union[str, int, float, bool, None]  # noqa: UP007 (msgspec reads the annotation)
#: an int as the field check takes it: 64 bits, signed (msgspec alone also reads unsigned ones)
_Int = Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]
#: what the check takes for ``float``: a float, or an int kept an int (msgpack keeps ``600``)
_Float = Union[_Int, float]  # noqa: UP007
#: values of a field annotated ``Any`` that msgspec and msgpack decode alike
_Anything = Union[_Scalar, list[_Scalar], dict[str, _Scalar]]  # noqa: UP007
_SCALARS: dict[Any, Any] = {str: str, bool: bool, int: _Int, float: _Float}

_Invalid = msgspec.DecodeError
#: msgpack's one-byte header of a map of 7 entries (the envelope's fields)
_SEVEN = b"\x87"
_new = object.__new__
_set = object.__setattr__
_asdict = msgspec.structs.asdict
#: an actor's bytes as stored -> its Actor (a log has few distinct actors; bounded as codec's)
_ACTORS: dict[bytes, Actor] = {}
_decode_actor = msgspec.msgpack.Decoder(dict[str, Union[str, None]]).decode  # noqa: UP007


def _wire_type(hint: Any) -> Any:
    """The msgspec type taking exactly the values :func:`~.field_types.check_of` takes for a
    field annotated ``hint`` (None: no such type; the class is left to ``decode``)."""
    if hint is Any:
        return _Anything
    if hint in _SCALARS:
        return _SCALARS[hint]
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is Union:
        parts = [a if a is type(None) else _wire_type(a) for a in args]
        return None if None in parts else Union[tuple(parts)]  # noqa: UP007
    origin = typing.get_origin(hint)
    if origin is list and len(args) == 1:
        item = _wire_type(args[0])
        return None if item is None else list[item]  # type: ignore[valid-type]
    if origin is dict and len(args) == 2:
        key, value = _wire_type(args[0]), _wire_type(args[1])
        return None if key is not str or value is None else dict[key, value]  # type: ignore[valid-type]
    return None


def _wire_struct(cls: type[Event], actor: Any = msgspec.Raw) -> type[msgspec.Struct] | None:
    """The envelope of a current-version ``cls`` as one struct: ``type`` its tag, ``data`` a
    struct of exactly the event's fields (None: ``cls`` builds itself, or a field's type has
    no exact msgspec twin); ``actor`` the type its actor is read as."""
    names = _plain_fields(cls)
    if names is None:
        return None
    hints = field_hints(cls, names)
    fields = [(n, _wire_type(hints[n])) for n in names]
    if any(t is None for _, t in fields):
        return None
    # Untracked by the cyclic GC (gc=False): a decoded message holds no cycle (msgpack has no
    # references), and no reader keeps one of these structs; tracked, each message was two
    # more objects for the collector to count and walk in a start's catch-up.
    data = msgspec.defstruct(f"{cls.TYPE}Data", fields, forbid_unknown_fields=True, gc=False)
    return msgspec.defstruct(
        f"{cls.TYPE}Wire",
        [
            ("version", Literal[cls.VERSION]),
            ("id", str),
            ("command_id", str),
            ("time", float),
            ("actor", actor),
            ("data", data),
        ],
        tag_field="type",
        tag=cls.TYPE,
        forbid_unknown_fields=True,
        namespace={"EVENT": cls},
        gc=False,
    )


class _Wires:
    """The decoder of every registered type's struct, rebuilt when a type is registered after
    it was built (a message of that type meanwhile took ``decode``: the same result)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.types = -1
        self.decode: Any = None

    def build(self) -> Any:
        self.types = len(EVENT_TYPES)
        wires = [w for c in EVENT_TYPES.values() if (w := _wire_struct(c, self.actor)) is not None]
        self.decode = msgspec.msgpack.Decoder(Union[tuple(wires)]).decode  # noqa: UP007
        return self.decode


#: decode_fast's: the actor kept as its bytes (_actor_of checks them once per distinct actor
#: and makes its Actor)
_WIRES = _Wires(msgspec.Raw)
#: wire_of's, whose readers need no Actor: the actor read as what _actor_of takes, a map of
#: str to str or None, checked by msgspec (no bytes copied and hashed: a third of the cost)
_FOLD_WIRES = _Wires(dict[str, Union[str, None]])  # noqa: UP007


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
        w = (_WIRES.decode or _WIRES.build())(raw)
    except _Invalid:
        if _WIRES.types != len(EVENT_TYPES):
            _WIRES.build()
        return decode(raw)
    actor = _ACTORS.get(bytes(w.actor)) or _actor_of(w.actor)
    if actor is None:
        return decode(raw)
    event = _new(w.EVENT)
    # The data struct's fields are the event's, in their order: its map is the __dict__ that
    # __init__ would build (the same values: msgspec took only what msgpack gives alike).
    _set(event, "__dict__", _asdict(w.data))
    env = _new(Envelope)
    _set(
        env,
        "__dict__",
        {"event": event, "event_id": w.id, "command_id": w.command_id, "time": w.time,
         "actor": actor},
    )  # fmt: skip
    return env


def wire_of(raw: bytes) -> Any:
    """The message as :func:`decode_fast` reads it, short of the :class:`Envelope`, for a
    reader that needs none (the service's fold): a struct with the envelope's ``id``,
    ``command_id``, ``time``, ``data`` (the event's fields as attributes; :func:`event_of`
    makes the event) and ``EVENT`` (the event's class), its actor a map. None when
    :func:`decode_fast` would not take it that way: then it is :func:`~.codec.decode`'s
    result or error."""
    if raw[:1] != _SEVEN:
        return None
    try:
        return (_FOLD_WIRES.decode or _FOLD_WIRES.build())(raw)
    except _Invalid:
        if _FOLD_WIRES.types != len(EVENT_TYPES):
            _FOLD_WIRES.build()
        return None


def prepare_wire_of() -> None:
    """Build :func:`wire_of`'s decoder now rather than at its first message (a struct per
    event type: ~5-9 ms), for a reader that waits for its first messages anyway."""
    if _FOLD_WIRES.types != len(EVENT_TYPES):
        _FOLD_WIRES.build()


def event_of(w: Any) -> Event:
    """The event of a struct of :func:`wire_of`, as :func:`decode_fast` builds it."""
    event = _new(w.EVENT)
    _set(event, "__dict__", _asdict(w.data))
    return event  # type: ignore[no-any-return]


E = TypeVar("E", bound=Event)


def compact(event: E) -> E:
    """An equal ``event`` built attribute by attribute, for one the fold keeps for good: a
    network's ``NetworkCreated`` lives in its ``NetworkState`` as long as the network, and a
    host's view holds every network of the cloud. Its values then share the class's keys
    (~290 bytes for a NetworkCreated) where the map :func:`decode_fast`, :func:`event_of` and
    the codec set whole as ``__dict__`` is a dict of its own (~830 bytes: a third of a view's
    unserved network, bench/RESULTS.md "fleet"). ~2 us: once a network, not once an event."""
    kept = _new(type(event))
    for name, value in event.__dict__.items():
        _set(kept, name, value)
    return kept
