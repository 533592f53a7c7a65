"""The envelope every event travels in, its msgpack codec, and upcasting of old versions.

An envelope is a msgpack map::

    {"type": "FixedIpAllocated", "version": 1, "id": "<command id>:0",
     "command_id": "<command id>", "time": 1764262800.123,
     "actor": {"project": "p1", "role": "member", "user": "alice"}, "data": {...}}

Readers decode with :func:`decode`, which upcasts ``data`` from the stored version to the
current one through the chain registered in ``UPCASTERS`` (``(type, v) -> fn`` turning v into
v+1). A message that cannot be decoded raises :class:`DecodeError`; readers record it and go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from . import host_events as _host_events  # noqa: F401  (registers the host event types)
from . import revert_events as _revert_events  # noqa: F401  (registers the revert events)
from .errors import DecodeError
from .field_types import CHECKS, check_of, field_error
from .types import EVENT_TYPES, Event

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

#: (event type, stored version) -> function turning that version's data into the next one.
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


@upcaster("FixedIpAllocated", 0)
def _fixed_ip_allocated_v0(data: dict[str, Any]) -> dict[str, Any]:
    """Version 0 (pre-release) had no ``project`` and called the host ``host_name``."""
    out = dict(data)
    out["host"] = out.pop("host_name", out.get("host"))
    out.setdefault("project", None)
    return out


@dataclass(frozen=True)
class Actor:
    project: str | None = None
    role: str = "member"
    user: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"project": self.project, "role": self.role, "user": self.user}

    @classmethod
    def from_wire(cls, value: Any) -> Actor:
        if not isinstance(value, dict):
            return cls()
        return cls(
            project=value.get("project"),
            role=str(value.get("role") or "member"),
            user=value.get("user"),
        )


SYSTEM = Actor(project=None, role="system", user="netledger")


@dataclass(frozen=True)
class Envelope:
    event: Event
    event_id: str
    command_id: str
    time: float
    actor: Actor = field(default_factory=Actor)

    @property
    def type(self) -> str:
        return self.event.TYPE


def encode(env: Envelope) -> bytes:
    ev = env.event
    packed: bytes = msgpack.packb(
        {
            "type": ev.TYPE,
            "version": ev.VERSION,
            "id": env.event_id,
            "command_id": env.command_id,
            "time": env.time,
            "actor": env.actor.to_wire(),
            "data": ev.to_data(),
        },
        use_bin_type=True,
    )
    return packed


def upcast(type_name: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
    cls = EVENT_TYPES[type_name]
    while version < cls.VERSION:
        fn = UPCASTERS.get((type_name, version))
        if fn is None:
            raise DecodeError(f"{type_name} v{version} has no upcaster to v{version + 1}")
        data = fn(data)
        version += 1
    return data


def decode(raw: bytes) -> Envelope:
    """Decode one stored message, upcasting old versions; raise DecodeError on anything bad."""
    try:
        obj = _unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:
        raise DecodeError(f"not msgpack: {exc.__class__.__name__}") from None
    if type(obj) is dict:
        # The usual case, inline (every reader decodes every message): a current-version event
        # of a plain type with exactly its fields, in order. Anything else: the checks below.
        type_name = obj.get("type")
        cls = EVENT_TYPES.get(type_name) if type(type_name) is str else None
        data = obj.get("data")
        if cls is not None and type(data) is dict and obj.get("version") == cls.VERSION:
            try:
                names = _FIELDS[cls]
            except KeyError:
                names = _FIELDS[cls] = _plain_fields(cls)
            if names is not None and tuple(data) == names and type(obj.get("version")) is int:
                bad = (CHECKS.get(cls) or check_of(cls))(data)
                if bad is not None:
                    raise DecodeError(f"{type_name}: {bad}")
                event = _new(cls)
                _set(event, "__dict__", data)
                t = obj.get("time")
                env = _new(Envelope)
                _set(
                    env,
                    "__dict__",
                    {"event": event, "event_id": str(obj.get("id") or ""),
                     "command_id": str(obj.get("command_id") or ""),
                     "time": float(t) if isinstance(t, _NUMBER) else 0.0,
                     "actor": _actor(obj.get("actor"))},
                )  # fmt: skip
                return env
    return _decode_map(obj)


def _decode_map(obj: Any) -> Envelope:
    """The checks of :func:`decode` on the unpacked message, one by one."""
    if not isinstance(obj, dict):
        raise DecodeError("envelope is not a map")
    type_name = obj.get("type")
    version = obj.get("version")
    data = obj.get("data")
    cls = EVENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None or not isinstance(type_name, str):
        raise DecodeError(f"unknown event type {type_name!r}")
    if type(version) is not int or version < 0:
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise DecodeError(f"{type_name}: bad version {version!r}")
    if version > cls.VERSION:
        raise DecodeError(f"{type_name} v{version} is newer than this reader (v{cls.VERSION})")
    if not isinstance(data, dict):
        raise DecodeError(f"{type_name}: data is not a map")
    try:
        if version < cls.VERSION:
            data = upcast(type_name, version, data)
        event = _build(cls, data)
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{type_name} v{version}: {exc}") from None
    bad = field_error(event)
    if bad is not None:
        # Worded as decode's inline path words it for a current version (the same message
        # refused the same way, whichever path read it); an upcast one names its version.
        where = type_name if version == cls.VERSION else f"{type_name} v{version}"
        raise DecodeError(f"{where}: {bad}")
    t = obj.get("time")
    return _envelope(
        event,
        str(obj.get("id") or ""),
        str(obj.get("command_id") or ""),
        float(t) if isinstance(t, _NUMBER) else 0.0,
        _actor(obj.get("actor")),
    )


# --- the hot path of decode ---------------------------------------------------------------------
# Readers decode every message of the log (projector catch-up, the service's fold), so building
# the three frozen dataclasses is kept cheap: instances get their ``__dict__`` in one step
# instead of one ``object.__setattr__`` per field. The result is the same object ``__init__``
# would build (same fields, same order); classes that customise construction take the slow path.

_unpackb = msgpack.unpackb
_NUMBER = (int, float)
_new = object.__new__
_set = object.__setattr__


def _plain_fields(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass that ``__init__`` merely stores, or None if it does more
    (its own ``from_data``, ``__post_init__``, non-init fields, slots)."""
    if cls.from_data.__func__ is not Event.from_data.__func__:  # type: ignore[attr-defined]
        return None
    if hasattr(cls, "__post_init__") or not hasattr(cls, "__dict__") or "__slots__" in vars(cls):
        return None
    fs = dataclasses.fields(cls)
    if any(not f.init for f in fs):
        return None
    return tuple(f.name for f in fs)


_FIELDS: dict[type, tuple[str, ...] | None] = {}


def _build(cls: type[Event], data: dict[str, Any]) -> Event:
    """``cls.from_data(data)``, faster when every field is present (the usual case)."""
    try:
        names = _FIELDS[cls]
    except KeyError:
        names = _FIELDS[cls] = _plain_fields(cls)
    if names is None:
        return cls.from_data(data)
    event = _new(cls)
    if tuple(data) == names:
        # Exactly the fields, in their order (what ``to_data`` writes): the map msgpack just
        # built, which nothing else holds, becomes the instance's ``__dict__`` as it is.
        _set(event, "__dict__", data)
        return event
    try:
        values = [data[n] for n in names]
    except KeyError:  # defaults for fields added later, or the error naming what is missing
        return cls.from_data(data)
    _set(event, "__dict__", dict(zip(names, values, strict=True)))
    return event


#: the wire map's items -> its Actor; only maps whose values are all str or None are stored,
#: so a hit means an equal map (1 == True, but neither equals a str or None)
_ACTORS: dict[tuple[Any, ...], Actor] = {}
#: a cloud's actors are its hosts' executors and its projects' users: tens of thousands (a
#: 1,000-host history has ~20,000; a cache of 1,024 was cleared over and over, every lookup a
#: miss); at most a few MB
_MAX_ACTORS = 1 << 16
_PLAIN = frozenset({str, type(None)})


def _actor(value: Any) -> Actor:
    """``Actor.from_wire``, shared: a log has few distinct actors and an Actor is immutable."""
    if type(value) is not dict:
        return Actor.from_wire(value)
    key = tuple(value.items())
    try:
        return _ACTORS[key]
    except (KeyError, TypeError):  # new, or an unhashable value
        pass
    actor = Actor.from_wire(value)
    if not _PLAIN.issuperset(map(type, value.values())):
        return actor  # other types: not worth caching
    if len(_ACTORS) >= _MAX_ACTORS:
        _ACTORS.clear()
    _ACTORS[key] = actor
    return actor


def _envelope(event: Event, event_id: str, command_id: str, time: float, actor: Actor) -> Envelope:
    env = _new(Envelope)
    _set(
        env,
        "__dict__",
        {"event": event, "event_id": event_id, "command_id": command_id, "time": time,
         "actor": actor},
    )  # fmt: skip
    return env
