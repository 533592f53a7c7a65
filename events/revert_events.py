"""The events only a revert writes: its marker, which links it to the change it undid, and the
network's side of an association it gives back.

Kept apart from :mod:`netledger.events.revert` (which imports the deciders) so that the codec
can register them without an import cycle: every reader must decode them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .ids import EVENT_PREFIX
from .types import Event, NetworkEvent, event_type

#: All revert markers live on one subject: its OCC check serialises reverts (two reverts of the
#: same change can never both be decided on a state that has neither), and a revert carries how
#: far its client read it (``markers_upto``): one whose client read the markers before another
#: revert's landed is refused ``revert_raced``, the client reads what that one undid (h113).
REVERT_SUBJECT = f"{EVENT_PREFIX}.revert"


@event_type
@dataclass(frozen=True)
class ChangeReverted(Event):
    """The compensating events appended in the same atomic batch (same command id) undo the
    stored events ``reverted_seqs``: those of command ``reverted_command_id``, or those after
    ``after_seq`` up to ``upto_seq`` within ``scope`` (``"network:7"``, ``"project:p1"``,
    ``"pool:public"``, or None for all). ``skipped_seqs`` are reported facts a revert leaves as
    they are (DHCP leases and releases, reaper frees, host events)."""

    TYPE: ClassVar[str] = "ChangeReverted"
    reverted_command_id: str | None
    after_seq: int | None
    upto_seq: int | None
    scope: str | None
    reverted_seqs: list[int] = field(default_factory=list)
    skipped_seqs: list[int] = field(default_factory=list)
    compensations: int = 0

    def subject(self) -> str:
        return REVERT_SUBJECT


@event_type
@dataclass(frozen=True)
class NetworkReassociated(NetworkEvent):
    """A revert gave the network back to ``project`` (the compensation of a
    ``NetworkDisassociated``), on the *network's* subject, appended in one atomic batch with the
    ``NetworkAssociated`` on the project's: the allocator's association is that event plus the
    first allocation on the network's subject, and the two OCC checks keep a project from two
    networks and a network from two projects. A revert that allocates nothing on the network has
    no such allocation; this is the network's record of the same fact, so a project's first
    allocation decided on the state before it cannot take the network too. Folded and projected
    as the association it goes with (the same values: the pair sets them once).

    Written only where no other compensation of the same revert is on the network's subject
    (a re-allocation there carries the check, as in the allocator's batch)."""

    TYPE: ClassVar[str] = "NetworkReassociated"
    project: str
