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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from . import host_events as _host_events  # noqa: F401  (registers the host event types)
from . import revert_events as _revert_events  # noqa: F401  (registers ChangeReverted)
from .errors import DecodeError
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
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:
        raise DecodeError(f"not msgpack: {exc.__class__.__name__}") from None
    if not isinstance(obj, dict):
        raise DecodeError("envelope is not a map")
    type_name = obj.get("type")
    version = obj.get("version")
    data = obj.get("data")
    if not isinstance(type_name, str) or type_name not in EVENT_TYPES:
        raise DecodeError(f"unknown event type {type_name!r}")
    cls = EVENT_TYPES[type_name]
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise DecodeError(f"{type_name}: bad version {version!r}")
    if version > cls.VERSION:
        raise DecodeError(f"{type_name} v{version} is newer than this reader (v{cls.VERSION})")
    if not isinstance(data, dict):
        raise DecodeError(f"{type_name}: data is not a map")
    try:
        event = cls.from_data(upcast(type_name, version, data))
    except DecodeError:
        raise
    except Exception as exc:
        raise DecodeError(f"{type_name} v{version}: {exc}") from None
    t = obj.get("time")
    return Envelope(
        event=event,
        event_id=str(obj.get("id") or ""),
        command_id=str(obj.get("command_id") or ""),
        time=float(t) if isinstance(t, int | float) else 0.0,
        actor=Actor.from_wire(obj.get("actor")),
    )
