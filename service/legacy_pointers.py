"""What the service writes for the executors' shares that a log from before them lacks
(events/placement.py ``legacy_indexes``, ``legacy_retirements``).

*Announcements.* Executors from before ``netledger.evt.announce.<host>`` announced on their
host's own subject, which no other executor reads (executor/share.py): an upgraded executor
would not know such a peer's VTEP until the peer re-announces — never, for a peer that is down
or retired. The service reads the whole log, so it knows each host whose latest announcement is
there; it may not announce for a host (docs/security.md), so it appends
``LegacyAnnouncementIndexed`` (the announcement's stream sequence) on
``netledger.evt.legacy-announcements``, which every share reads. Each executor fetches the
messages pointed at and believes them only as the host's own (executor/view.py): one message
per such host, once, instead of every host's subject.

*Retirements.* A deletion is retired on the registry in its own batch since Dec 2026; an older
one (or one written by a replica not yet upgraded) is on the network's subject only, which an
executor reads only while it serves the network: one that stopped before, or started later and
read the network's creation from the registry, kept the deleted network for good (memory, view
snapshots, and a re-created id refused). The service appends its ``NetworkRetired`` on the
registry, OCC-checked there (a creation of the same id meanwhile: the fold drops the pending
retirement, which would take the new network out of the views).

Both at the service's start (before it takes commands), and from then on whenever its follower
folds such an announcement or deletion. Replicas write the same message ids
(``announce-index:<host>:<seq>``, ``network-retired:<network>:<deletion seq>``) under one OCC
check on the subject: the first stores them, the others find them folded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.ids import LEGACY_ANNOUNCEMENTS, REGISTRY_SUBJECT
from netledger.events.placement import legacy_indexes, legacy_retirements
from netledger.events.state import State
from netledger.events.types import Event
from netledger.journal.append import MaybeApplied, WrongLastSequence, build_messages

log = logging.getLogger("netledger.service")

#: Pointers per atomic batch (a cloud of thousands of hosts written before the upgrade)
CHUNK = 500
#: Conflicts (another replica indexing at the same time) before giving up until the next try
MAX_CONFLICTS = 16
#: Seconds before indexing is tried again after the log refused it
RETRY_S = 5.0
#: The command id of the announcement pointers' envelopes (no client's: never remembered)
COMMAND_ID = "announce-index"
#: The command id of the retirements' envelopes
RETIRE_COMMAND_ID = "network-retired"


class CommandService(Protocol):
    """What indexing uses of the running service (service/service.py's ``CommandService``):
    its fold, appender and follower (replaced at start: read each time). Named here, not
    imported: the service imports this module."""

    state: State
    appender: Any
    follower: Any


#: what is left to write, from the fold: (event, message id) pairs, in a deterministic order
Todo = Callable[[State], list[tuple[Event, str]]]


def _announcements(state: State) -> list[tuple[Event, str]]:
    return [(ev, f"{COMMAND_ID}:{ev.host}:{ev.seq}") for ev in legacy_indexes(state)]


def _retirements(state: State) -> list[tuple[Event, str]]:
    return [
        (ev, f"{RETIRE_COMMAND_ID}:{ev.network_id}:{seq}") for ev, seq in legacy_retirements(state)
    ]


async def _write(svc: CommandService, subject: str, todo: Todo, command_id: str, what: str) -> None:
    """Append what ``todo`` finds, :data:`CHUNK` at a time under the OCC check of ``subject``,
    and return once the follower has folded it (written here or by another replica)."""
    conflicts = 0
    while chunk := todo(svc.state)[:CHUNK]:
        now = time.time()
        envs = [Envelope(ev, mid, command_id, now, SYSTEM) for ev, mid in chunk]
        expected = {subject: svc.state.seq_of(subject)}
        try:
            seq = await svc.appender.append(build_messages(envs), expected)
        except (WrongLastSequence, MaybeApplied):
            # Another replica's (or ours, stored before: the same ids), or the subject moved
            # (a network created): read on, look again at what is left.
            conflicts += 1
            if conflicts > MAX_CONFLICTS:
                log.warning("%s not written now: %d conflicts in a row", what, conflicts)
                return
            await svc.follower.catch_up()
            continue
        log.info("wrote %d %s", len(chunk), what)
        await svc.follower.wait_for(seq)


async def index_announcements(svc: CommandService) -> None:
    """Point the executors at every announcement the fold says is on its host's subject only.
    Raises ``LogUnavailable`` when the log does not take them."""
    await _write(svc, LEGACY_ANNOUNCEMENTS, _announcements, COMMAND_ID, "announcement pointer(s)")


async def retire_deletions(svc: CommandService) -> None:
    """Retire on the registry every deletion without a retirement. Raises ``LogUnavailable``
    when the log does not take them."""
    if not svc.state.unretired:
        return
    # A deletion of today is retired in its own batch: the follower may be between the two
    # (the wake-up came from the first). Read to the log's end before deciding.
    await svc.follower.catch_up()
    await _write(svc, REGISTRY_SUBJECT, _retirements, RETIRE_COMMAND_ID, "network retirement(s)")


async def write_pointers(svc: CommandService) -> None:
    """Everything a share misses of an older log: announcement pointers, retirements."""
    await index_announcements(svc)
    await retire_deletions(svc)


def pointers_wanted(state: State) -> bool:
    """Whether the fold holds anything :func:`write_pointers` would write (empty but in an
    upgrade, or between a deletion and its retirement: one look per event)."""
    return bool(state.legacy_announced or state.unretired)


async def index_forever(svc: CommandService, wanted: asyncio.Event) -> None:
    """Write pointers whenever ``wanted`` is set (the follower folded an announcement on a host
    subject, a deletion); after a failure, again in :data:`RETRY_S` seconds."""
    while True:
        await wanted.wait()
        wanted.clear()
        try:
            await write_pointers(svc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("pointers not written now (%s): again in %.0fs", exc, RETRY_S)
            await asyncio.sleep(RETRY_S)
            wanted.set()
