"""The snapshot bucket's stream and what deleted or unfinished snapshots leave in it.

The object store bucket ``NETLEDGER_SNAPSHOTS`` is the stream ``OBJ_NETLEDGER_SNAPSHOTS``: an
object's metadata on ``$O.<bucket>.M.<name, base64>`` (:func:`meta_subject`), its chunks on
``$O.<bucket>.C.<nuid>``. Deleting an object leaves a delete marker on its metadata subject,
and an upload cut short leaves chunks no object names: the pruning
(:meth:`~netledger.journal.snapshot_store.SnapshotStore.prune`) purges both
(:meth:`SnapshotPurge.purge_marker`, :meth:`SnapshotPurge.purge_orphans`), so the stream holds
the kept snapshots, not a message per snapshot ever written. A mixin of
:class:`~netledger.journal.snapshot_store.SnapshotStore`.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

from nats.js.errors import NotFoundError

from netledger.journal.stream import Connection

log = logging.getLogger("netledger.snapshot")

BUCKET = "NETLEDGER_SNAPSHOTS"
#: Chunks no object names, whose newest is older than this (server time), are purged by the
#: pruning: an upload cut short (a service stopped or killed while it uploaded), or the loser of
#: two replicas uploading the same sequence (nats-py's ``put`` looks for an object of that name
#: before it stores its chunks, the meta written last wins) — each left a snapshot's size in
#: the bucket for good (found by review). Younger ones may be an upload under way elsewhere.
ORPHAN_GRACE_S = 900.0


def meta_subject(name: str) -> str:
    """The subject of object ``name``'s metadata in the bucket's stream: the name URL-safe
    base64 encoded, padded (as nats-py's object store and Go's ``nats.go`` write it)."""
    return f"$O.{BUCKET}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


class SnapshotPurge:
    """Purging a snapshot's delete marker and the chunks of unfinished uploads."""

    conn: Connection
    #: names of this kind the last listing found deleted (their delete marker still in the
    #: stream)
    deleted: set[str]

    async def _store(self, create: bool) -> Any:
        raise NotImplementedError  # SnapshotStore's

    async def purge_marker(self, name: str) -> bool:
        """Purge object ``name``'s metadata when its newest is a delete marker: the marker and
        what is before it, never a newer message (another replica storing that name again
        since is kept). True when purged."""
        js = self.conn.js
        stream, subject = f"OBJ_{BUCKET}", meta_subject(name)
        try:
            last = await js.get_last_msg(stream, subject)
        except NotFoundError:
            self.deleted.discard(name)
            return False
        try:
            deleted = bool(json.loads(last.data or b"{}").get("deleted"))
        except (ValueError, AttributeError):
            deleted = False
        if not deleted or last.seq is None:
            return False
        await js.purge_stream(stream, subject=subject, seq=last.seq + 1)
        self.deleted.discard(name)
        return True

    async def purge_orphans(self, obs: Any = None) -> list[str]:
        """Purge the chunks no object of the bucket names (any kind's) whose newest chunk is
        older than :data:`ORPHAN_GRACE_S` against the bucket's newest message (both server
        time); returns their subjects."""
        obs = obs or await self._store(create=False)
        if obs is None:
            return []
        js = self.conn.js
        stream = f"OBJ_{BUCKET}"
        prefix = f"$O.{BUCKET}.C."
        info = await js.stream_info(stream, subjects_filter=f"{prefix}>")
        subjects = info.state.subjects or {}
        if not subjects:
            return []
        try:
            named = {i.nuid for i in await obs.list(ignore_deletes=True) if not i.deleted}
        except NotFoundError:  # no object at all
            named = set()
        orphans = [subj for subj in subjects if subj[len(prefix) :] not in named]
        if not orphans:
            return []
        now = (await js.get_msg(stream, info.state.last_seq)).time
        purged = []
        for subj in orphans:
            last = await js.get_last_msg(stream, subj)
            if now is None or last.time is None:
                continue
            if (now - last.time).total_seconds() >= ORPHAN_GRACE_S:
                await js.purge_stream(stream, subject=subj)
                purged.append(subj)
                log.info("purged the chunks of an unfinished snapshot upload (%s)", subj)
        return purged
