"""Events an executor appends on ``netledger.evt.host.<host>``: what it did to its kernel.

These are the only events an executor may write (NATS permissions enforce it in production).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .ids import host_subject
from .types import Event, event_type


@dataclass(frozen=True)
class HostEvent(Event):
    host: str

    def subject(self) -> str:
        return host_subject(self.host)


@event_type
@dataclass(frozen=True)
class HostAnnounced(HostEvent):
    """An executor started; ``vtep_address`` is its VXLAN underlay address (or None)."""

    TYPE: ClassVar[str] = "HostAnnounced"
    vtep_address: str | None
    physical_interface: str | None
    public_interface: str | None
    network_host: bool


@event_type
@dataclass(frozen=True)
class HostLinkCreated(HostEvent):
    TYPE: ClassVar[str] = "HostLinkCreated"
    name: str
    kind: str
    network_id: str | None
    drift: bool
    detail: dict[str, Any] = field(default_factory=dict)


@event_type
@dataclass(frozen=True)
class HostLinkRemoved(HostEvent):
    TYPE: ClassVar[str] = "HostLinkRemoved"
    name: str
    kind: str
    network_id: str | None
    reason: str


@event_type
@dataclass(frozen=True)
class HostAddressAdded(HostEvent):
    TYPE: ClassVar[str] = "HostAddressAdded"
    interface: str
    address: str
    network_id: str | None
    drift: bool


@event_type
@dataclass(frozen=True)
class HostAddressRemoved(HostEvent):
    TYPE: ClassVar[str] = "HostAddressRemoved"
    interface: str
    address: str
    network_id: str | None
    reason: str


@event_type
@dataclass(frozen=True)
class HostNatApplied(HostEvent):
    """The host's nftables table was replaced atomically with these floating-IP mappings."""

    TYPE: ClassVar[str] = "HostNatApplied"
    floating: dict[str, str]
    snat_ranges: list[str]
    drift: bool


@event_type
@dataclass(frozen=True)
class HostReconciled(HostEvent):
    """A reconcile pass finished: the kernel matched the log up to ``applied_seq``."""

    TYPE: ClassVar[str] = "HostReconciled"
    applied_seq: int
    changes: int
    drift_repairs: int
    duration_ms: float
