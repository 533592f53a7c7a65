"""A decision with placements, appended without an atomic batch: the placements first, then the
decision's event, stored only right after them. Pure (the lane appends: service/lane_append.py
``_append_prelinked``, journal/append.py ``Appender.append_prelinked``).

**Why.** A host's first address in a network is two events on two subjects: the allocation on
the network's (OCC-checked) and the host's ``NetworkHostJoined`` on its placement subject, which
its executor follows to start reading the network (events/placement.py). As one atomic batch
they cost a single nats-server ~4-5 ms of staging on its file store whatever their size
(bench/README.md §1) against ~0.5-0.9 ms for a publish-ack with fsync: the batch was most of
the time from such a command to the kernel (the bench's every measured command is one).

**What it keeps.** The join is published first (unchecked, as in the batch); the allocation
right after it, in the same write, with its subject's OCC check *and*
``Nats-Expected-Last-Msg-Id`` = the join's message id: the server stores the allocation only
if the stream's last message is that join. So an allocation never lands without its join,
right before it — what the batch promised, the other way round:

* the executor folds the join, follows the network from where its fold left it, and reads the
  allocation next (nothing can come between them): as with the join after the allocation;
* the allocation refused (a conflict, another writer between the two): the join stays alone, an
  *orphan*. Harmless: its host reads the network, holds nothing there, and stops (the share
  follows the fold, executor/share.py); the service's fold only notes the pair; ``seen``
  keeps no placements (service.py ``_fold``), so a retry is never answered from a join. The
  decision is made again — as an atomic batch, so a round leaves one orphan at most. An
  executor keeps a joined network followed until it has read the message after the join, even
  one it followed already (executor/view.py ``_read_joins``);
* a join's message id is its command's and its content's (``<command id>:<i>:<digest of host
  and network>``), the same at every attempt of the same decision: a retry of a command that
  already landed (the client's, reaching a replica that has not read it yet) appends nothing —
  its join is the duplicate of the stored one, its allocation refused by the subject's check —
  as the atomic batch appended nothing (found by review). A retry after an orphan: when the
  orphan is still the stream's last message, the allocation lands right after it; else the
  link is broken (the duplicate is not the last message) and the decision goes as a batch. A
  join of another host or network never shares an id, so never links an allocation;
* no answer for the allocation within the append budget: the log's trouble, as any append
  without an answer (the health told; a retry with the same command id is answered from the
  log if it landed).

Only on a single server (``Appender.can_chain``: a clustered stream checks the last message id
only when each replica applies it, where a mismatch stops the stream), and never for two
checked subjects (a floating association and its mapping: the batch keeps both checks).
"""

from __future__ import annotations

import dataclasses
import hashlib

from netledger.events.codec import Envelope
from netledger.events.placement import unchecked
from netledger.events.placement_events import NetworkHostJoined
from netledger.events.types import Event

#: ``NetworkHostJoined.reason`` of a join published before its allocation.
REASON = "allocating"


def prelinkable(events: list[Event]) -> bool:
    """A decision of one event on a checked subject followed only by joins."""
    return (
        len(events) > 1
        and not unchecked(events[0].subject())
        and all(isinstance(e, NetworkHostJoined) for e in events[1:])
    )


def prelinked_envelopes(envs: list[Envelope]) -> tuple[Envelope, list[Envelope]]:
    """``(the decision's event, its placements)`` as published: the placements with the reason
    that says their allocation comes after them, and message ids of their content."""
    placements = []
    for e in envs[1:]:
        assert isinstance(e.event, NetworkHostJoined)
        join = NetworkHostJoined(network_id=e.event.network_id, host=e.event.host, reason=REASON)
        placements.append(dataclasses.replace(e, event=join, event_id=join_id(e.event_id, join)))
    return envs[0], placements


def join_id(event_id: str, join: NetworkHostJoined) -> str:
    """The message id of a pre-linked join: its place in its command (``event_id``: the batch's
    id of the same event, which it must not share) and what it joins. Deterministic, so that a
    retry's join is the server's duplicate of the same join, never of another one."""
    what = hashlib.blake2b(f"{join.host}\0{join.network_id}".encode(), digest_size=6).hexdigest()
    return f"{event_id}:{what}"
