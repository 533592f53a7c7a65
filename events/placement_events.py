"""What the service records so that each executor can read only its share of the log.

``NetworkHostJoined``: a host got its first instance in a network.

An executor reads only its share of the log (executor/share.py): the networks it has instances
in or serves. Which networks those are is written in the network's own subject (the
allocations), which the executor does not read until it knows — so the command service also
records the moment a host *joins* a network, on the host's placement subject
``netledger.evt.placement.<host>``, with the allocation that made it join (right before it, or in
the same atomic batch: events/placement.py). The executor follows its placement subject and
starts reading the network from there.

``FloatingIpMapped`` / ``FloatingIpUnmapped``: a floating IP now points at (no longer points at)
a fixed address of the network — written on the *network's* subject in the same atomic batch as
``FloatingIpAssociated`` / ``FloatingIpDisassociated`` on the pool's. The host that NATs a
network's floating IPs reads that network, not every pool's history; and the network's OCC
check on the batch means an association can never land on an address deallocated meanwhile.

``LegacyAnnouncementIndexed``: where a host's announcement from before
``netledger.evt.announce.<host>`` sits (its host subject, which the other executors do not read),
written by the service on ``netledger.evt.legacy-announcements`` (events/placement.py
``legacy_indexes``). Only a pointer: the service may not announce for a host.

``NetworkRetired``: a network was deleted — written by the service on the *registry* in the same
atomic batch as the ``NetworkDeleted`` on the network's own subject (after it). Every executor
reads the registry (so every ``NetworkCreated``), but a network's subject only while it needs the
network — most networks never, one its host left before the deletion no more: such an executor
never read the ``NetworkDeleted`` and kept the network (in memory, in its view snapshots, in the
count of live networks ``follow_every`` weighs) for good. The retirement tells it
(executor/view.py, ``State.retire``).

Kept apart from :mod:`netledger.events.placement` (the rules deciding when to write them) because
every reader must decode them (codec registration), like the other event modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .ids import LEGACY_ANNOUNCEMENTS, REGISTRY_SUBJECT, placement_subject
from .types import Event, NetworkEvent, event_type


@event_type
@dataclass(frozen=True)
class NetworkHostJoined(Event):
    """``host`` holds an allocated address of ``network_id`` again (none before this batch);
    ``reason``: ``allocated`` (by the allocation in the same batch), ``allocating`` (by the
    allocation stored right after it — none, if that one was refused: service/prelink.py) or
    ``backfill`` (written for a stream from before placements were recorded)."""

    TYPE: ClassVar[str] = "NetworkHostJoined"
    network_id: str
    host: str
    reason: str = "allocated"

    def subject(self) -> str:
        return placement_subject(self.host)


@event_type
@dataclass(frozen=True)
class FloatingIpMapped(NetworkEvent):
    """Floating IP ``floating`` (of ``pool``) NATs to ``fixed`` in this network."""

    TYPE: ClassVar[str] = "FloatingIpMapped"
    floating: str
    fixed: str
    pool: str
    reason: str = "associated"


@event_type
@dataclass(frozen=True)
class FloatingIpUnmapped(NetworkEvent):
    """Floating IP ``floating`` no longer NATs to ``fixed`` in this network."""

    TYPE: ClassVar[str] = "FloatingIpUnmapped"
    floating: str
    fixed: str
    pool: str


@event_type
@dataclass(frozen=True)
class LegacyAnnouncementIndexed(Event):
    """``host``'s latest announcement is the stream's message ``seq``, on the host's own subject
    (where executors announced before ``netledger.evt.announce.<host>`` existed). An executor
    reading its share fetches that message and believes it only if it is ``host``'s
    ``HostAnnounced`` on ``host``'s subject, which only that host's executor may write: the
    service, which may not write announcements (docs/security.md), can point, not announce."""

    TYPE: ClassVar[str] = "LegacyAnnouncementIndexed"
    host: str
    seq: int

    def subject(self) -> str:
        return LEGACY_ANNOUNCEMENTS


@event_type
@dataclass(frozen=True)
class NetworkRetired(Event):
    """Network ``network_id`` is deleted: its ``NetworkDeleted`` is on the network's subject,
    before this one in the same atomic batch. Only a pointer for the readers of a share, which
    may no longer read that subject (events/state.py ``State.retire``): the fold of the whole
    log has folded the deletion by the time it reads this, and takes it as a no-op."""

    TYPE: ClassVar[str] = "NetworkRetired"
    network_id: str

    def subject(self) -> str:
        return REGISTRY_SUBJECT
