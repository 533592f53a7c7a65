"""The revert marker: the event that links a revert to the change it undid.

Kept apart from :mod:`netledger.events.revert` (which imports the deciders) so that the codec
can register it without an import cycle: every reader must decode it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .ids import EVENT_PREFIX
from .types import Event, event_type

#: All revert markers live on one subject: its OCC check serialises reverts (two reverts of the
#: same change can never both be decided on a state that has neither).
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
