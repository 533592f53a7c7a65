"""What a reader forgets of deleted networks once it has read past them (issue 13).

The fold keeps, per subject, the sequence of the last message it holds there
(``State.subject_seq``): what the next append there is OCC-checked on, and how a reader skips
a message it holds already. A deleted network's subject kept its entry for good — one per
network ever deleted, in the command service, in every executor's view and in their snapshots
— though no decider appends there again (ids only grow: ``next_network_number``). The entry
is needed for a while still:

* the command service folds its own appends from their acks, ahead of its reader
  (events/fold_ahead.py), and its reader skips each when it reads it back because it is at or
  before its subject's entry: forgotten before, a ``NetworkDeleted`` would be folded twice (a
  deletion to retire again). (An ack that comes after its reader read the message folds
  nothing: the service skips what its reader has passed, service/service.py
  ``_fold_appended``, not what the entry says.);
* at a start, a share view reads the registry before the networks' subjects
  (journal/follow.py): the entry a ``NetworkRetired`` sets (``State.retire``) makes the later
  read of the network's subject skip the deleted network's messages.

Both are over once the reader has read past the entry in the log's order: nothing at or
before it is read again (the readers read on from where they are; a share reads a network it
needs later from where the fold left it, and only a live one). A skip below the deletion for
all subjects ("a deleted floor") would not do: the service may read another writer's older
message after one of its own deletions folded ahead.

So :func:`prune` forgets the entry of a network subject once the reader has read past it, when
no decider can append there again — the network id is a number below ``next_network_number``
— and the network is not live, or is live again under a re-created id and the entry is the
older network's (at or before the re-creation: ``State.recreated``). The readers call it where
they have read everything up to a sequence: the service's follower as it reads, its snapshots
(:func:`prune_all`, which ``verify --snapshots`` and the fold of the log it compares with use
alike: a function of the state and the sequence), an executor's view once its start has read
the share. A reading of a re-created id's subject begins after its creation
(:func:`read_from`), and the service asks the log for the last message there before the
re-creation (service/recreated.py): the OCC check of its first append.

Costs nothing per message the fold does not push (a deletion, a retirement, a re-creation):
an entry on a heap, popped once read past.
"""

from __future__ import annotations

import heapq

from .ids import network_subject
from .state import State

#: the subjects of networks: the prefix, then the network id
NETWORK_PREFIX = network_subject("")


def forgettable(state: State, network_id: str, seq: int) -> bool:
    """Whether the entry ``seq`` of ``network_id``'s subject is one nothing needs once read
    past: no decider can append there (an id the deciders gave out already) and it is not a
    live network's (deleted; or created again since, the entry the older network's)."""
    if not (network_id.isascii() and network_id.isdigit()):
        return False  # never given out by the deciders: kept as any other subject
    if int(network_id) >= state.next_network_number:
        return False  # the deciders may create it yet: its first append checks this entry
    if network_id not in state.networks:
        return True
    again = state.recreated.get(network_id)
    return again is not None and seq <= again


def prune(state: State, upto: int) -> int:
    """Forget what the deletions, retirements and re-creations folded at or before ``upto``
    left on their networks' subjects, where :func:`forgettable`: the caller has read every
    message of the log up to ``upto`` that it will ever read (its reading goes on after
    ``upto``). How many entries went."""
    heap = state.prunable
    entries = state.subject_seq
    gone = 0
    while heap and heap[0][0] <= upto:
        _, network_id = heapq.heappop(heap)
        subject = NETWORK_PREFIX + network_id
        seq = entries.get(subject)
        if seq is not None and seq <= upto and forgettable(state, network_id, seq):
            del entries[subject]
            gone += 1
    return gone


def prune_all(state: State, upto: int) -> int:
    """:func:`prune` of every network subject, whatever left the entry (also a message a
    writer put on a deleted network's subject): the fold at ``upto`` as a snapshot holds it,
    and as ``verify --snapshots`` folds the log to compare — a function of the state and
    ``upto`` only. A scan of the subjects: for a snapshot, not per message."""
    entries = state.subject_seq
    n = len(NETWORK_PREFIX)
    drop = [
        subject
        for subject, seq in entries.items()
        if seq <= upto
        and subject.startswith(NETWORK_PREFIX)
        and forgettable(state, subject[n:], seq)
    ]
    for subject in drop:
        del entries[subject]
    state.prunable = [x for x in state.prunable if x[0] > upto]
    heapq.heapify(state.prunable)
    return len(drop)


def read_from(state: State, network_id: str) -> int:
    """The first sequence of ``network_id``'s subject a reader that does not hold it yet reads
    (a network a share needs now): after the last message the fold holds there, and after the
    network's creation when it is a re-created id (the older network's messages are before
    it, and their entry may be forgotten)."""
    return max(state.seq_of(network_subject(network_id)), state.recreated.get(network_id, 0)) + 1


def folded(state: State, seq: int, subject: str) -> bool:
    """Whether the fold has read message ``seq`` of the log, on ``subject`` (one a client read
    from the log and names: events/revert.py): at or before the subject's entry — or on the
    subject of a network the fold forgot it for (:func:`forgettable`): a deleted network's,
    up to the fold's last message, or the older network's under a re-created id."""
    if seq <= state.seq_of(subject):
        return True
    if not subject.startswith(NETWORK_PREFIX) or seq > state.last_seq:
        return False
    network_id = subject[len(NETWORK_PREFIX) :]
    if network_id in state.networks:
        return seq <= state.recreated.get(network_id, 0)
    return forgettable(state, network_id, seq)
