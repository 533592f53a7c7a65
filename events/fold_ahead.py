"""Events folded ahead of the log's order: what they change across subjects waits for the log.

The command service folds its own appends from their publish acks, before its reader reads them
back (service/service.py ``_fold_appended``): an answer never waits for the read-back, and the
next decision on the subject sees it. Each is appended with the subject's OCC check, so no other
writer's event sits before it *on its subject*: that subject's part of the fold is the log's.
But an earlier message of another writer on another subject — a host's report on
``netledger.evt.host.<h>``, another replica's decision on another network — may still be on
its way to the reader, and is folded after it. Nearly all of the fold does not mind the order
across subjects (each subject's own part; sets and sorted tuples keyed per subject); two parts
do:

* the MACs allocated on each host (``State.host_macs``) and, through them, the host's
  sightings: a report keeps what it saw against the MACs allocated on its host then
  (``HostSightings.keep_only``), and the end of a MAC's last allocation on the host forgets its
  sighting (``HostSightings.forget``). A report folded after the deallocation it came before
  kept a sighting the log's fold forgot;
* ``event_time``, the time of the last event folded.

So :func:`fold_ahead` folds the event's own subject now and *holds* its MAC counts and its time;
:func:`reach` applies them when the reader reaches the event's sequence — in the log's order,
after every earlier message of every writer. Once the reader has reached the fold's last
sequence nothing is held and the fold is exactly the log's: what a snapshot may hold
(service/snapshotter.py), what ``verify --snapshots`` folds again.

What is held costs a small tuple per event not yet read back, and folding ahead ~1.4 µs more
an event than folding at once (measured on an allocation and its deallocation: ~5 -> ~6.5 µs);
an append whose earlier messages the reader has all folded is folded at once. No decision reads
what waits: reclaims read the sightings, and one the log is about to forget is of an address
no longer allocated.
"""

from __future__ import annotations

import heapq

from .codec import Envelope
from .state import MacCount, State


def fold_ahead(state: State, seq: int, subject: str, env: Envelope) -> str | None:
    """:meth:`State.fold_message` of ``env``, stored at ``seq`` on its (OCC-checked) subject,
    before the messages of other subjects before it are folded: its MAC counts and its time
    are held until :func:`reach` gets to ``seq``."""
    if seq <= state.subject_seq.get(subject, 0):
        return None  # the reader was first
    counts: list[MacCount] = []
    state.holding = counts
    try:
        refused = state.fold_message(seq, subject, env)
    finally:
        state.holding = None
    # The log's fold takes an event's time where it folds it (or refuses what it cannot fold);
    # one on a subject it does not belong on is skipped, time and all (State.fold_message).
    time = env.time if refused is None or env.event.accepts_subject(subject) else None
    heapq.heappush(state.held, (seq, time, counts))
    return refused


def reach(state: State, seq: int) -> None:
    """The fold holds every message up to ``seq``: what events folded ahead up to there held
    back is applied now, in their order."""
    held = state.held
    while held and held[0][0] <= seq:
        _, time, counts = heapq.heappop(held)
        if counts:
            state.count_macs(counts)
        if time is not None:
            state.event_time = time
