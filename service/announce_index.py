"""Pointing the executors at announcements their shares miss (events/placement.py
``legacy_indexes``).

Executors from before ``netledger.evt.announce.<host>`` announced on their host's own subject,
which no other executor reads (executor/share.py): an upgraded executor would not know such a
peer's VTEP until the peer re-announces — never, for a peer that is down or retired. The
service reads the whole log, so it knows each host whose latest announcement is there; it may
not announce for a host (docs/security.md), so it appends ``LegacyAnnouncementIndexed`` (the
announcement's stream sequence) on ``netledger.evt.legacy-announcements``, which every share
reads. Each executor fetches the messages pointed at and believes them only as the host's own
(executor/view.py): one message per such host, once, instead of every host's subject.

At the service's start (before it takes commands), and from then on whenever its follower folds
such an announcement (an executor not yet upgraded restarting). Replicas write the same message
ids (``announce-index:<host>:<seq>``) under one OCC check on the index subject: the first
stores them, the others find them folded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from netledger.events.codec import SYSTEM, Envelope
from netledger.events.ids import LEGACY_ANNOUNCEMENTS
from netledger.events.placement import legacy_indexes
from netledger.events.placement_events import LegacyAnnouncementIndexed
from netledger.events.state import State
from netledger.journal.append import MaybeApplied, WrongLastSequence, build_messages

log = logging.getLogger("netledger.service")

#: Pointers per atomic batch (a cloud of thousands of hosts written before the upgrade)
CHUNK = 500
#: Conflicts (another replica indexing at the same time) before giving up until the next try
MAX_CONFLICTS = 16
#: Seconds before indexing is tried again after the log refused it
RETRY_S = 5.0
#: The command id of the pointers' envelopes (no client's: never remembered as one)
COMMAND_ID = "announce-index"


class CommandService(Protocol):
    """What indexing uses of the running service (service/service.py's ``CommandService``):
    its fold, appender and follower (replaced at start: read each time). Named here, not
    imported: the service imports this module."""

    state: State
    appender: Any
    follower: Any


def index_id(ev: LegacyAnnouncementIndexed) -> str:
    """The same id from every replica: a pointer written twice is stored once."""
    return f"{COMMAND_ID}:{ev.host}:{ev.seq}"


async def index_announcements(svc: CommandService) -> None:
    """Append a pointer to every announcement the fold says is on its host's subject only, and
    return once the follower has folded them (written here or by another replica). Raises
    ``LogUnavailable`` when the log does not take them."""
    conflicts = 0
    while todo := legacy_indexes(svc.state)[:CHUNK]:
        now = time.time()
        envs = [Envelope(ev, index_id(ev), COMMAND_ID, now, SYSTEM) for ev in todo]
        expected = {LEGACY_ANNOUNCEMENTS: svc.state.seq_of(LEGACY_ANNOUNCEMENTS)}
        try:
            seq = await svc.appender.append(build_messages(envs), expected)
        except (WrongLastSequence, MaybeApplied):
            # Another replica's pointers (or ours, stored before: the same ids): read on, look
            # again at what is left.
            conflicts += 1
            if conflicts > MAX_CONFLICTS:
                log.warning("announcements not indexed now: %d conflicts in a row", conflicts)
                return
            await svc.follower.catch_up()
            continue
        log.info("indexed %d announcement(s) stored on their host's subject", len(todo))
        await svc.follower.wait_for(seq)


async def index_forever(svc: CommandService, wanted: asyncio.Event) -> None:
    """Index whenever ``wanted`` is set (the follower folded an announcement on a host subject);
    after a failure, again in :data:`RETRY_S` seconds."""
    while True:
        await wanted.wait()
        wanted.clear()
        try:
            await index_announcements(svc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("announcements not indexed now (%s): again in %.0fs", exc, RETRY_S)
            await asyncio.sleep(RETRY_S)
            wanted.set()
