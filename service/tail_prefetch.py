"""The start's catch-up child asked for the tail while the snapshot is still being loaded.

The service forks its catch-up reader (journal/catchup.py) before it loads its snapshot. The
snapshot's sequence is known from its headers, and once its body is fetched
(journal/snapshot_store.py ``load``'s ``on_candidate``) the child is asked for the log after
it: it reads — and fills its pipe, then blocks: memory stays bounded — while this process
checks and decodes the body (~0.25 s of a 0.35 s start from the history bench's snapshot plus
a 10,000-event tail). The fold then starts on a full pipe instead of waiting for the child to
create its consumer and send its first frame, and the server has served most of the tail
before the fold begins. bench/fold_wall.py, a 10,000-event tail, two runs of 15 and 21
interleaved rounds on a shared 2-core machine: from the decode's end to ready 107.7 -> 72.7
and 103.6 -> 73.7 ms (paired by round -31 and -22 ms, lower in 15 of 15 and 19 of 21); but the
decode is 6-20 ms slower with the child and the server busy beside it, so ready moved less:
401 -> 360 and 384 -> 370 ms (medians; paired -10 and +3 ms, quartiles about +-30).

A candidate can still be refused once its body is checked (a bad hash, a truncated body, a
foreign fold version its headers did not tell), and an older one is tried next, or none: a
child asked for the tail of a snapshot not loaded reads from the wrong sequence, so it is
stopped, and a fresh one is forked and asked for the next candidate's tail;
:meth:`TailPrefetch.reader_for` hands the catch-up only a reader asked from the sequence it
starts at (or one not asked yet), and stops any other. Whatever the child does not read, the
follower does (journal/catchup.py: in order, no gap, nothing twice).
"""

from __future__ import annotations

import logging

from netledger.journal.catchup import Reader
from netledger.journal.snapshot_store import StoredSnapshot
from netledger.journal.stream import Connection

log = logging.getLogger("netledger.service")


class TailPrefetch:
    """The start's catch-up reader (None: none forked), asked as early as its stretch is known.

    ``least``: the fewest events worth reading through the child (``child_catch_up``)."""

    def __init__(self, conn: Connection, reader: Reader | None, least: int) -> None:
        self.conn = conn
        self.reader = reader
        self.least = least

    async def candidate(self, s: StoredSnapshot, last: int) -> None:
        """The body of the snapshot at ``s.seq`` is fetched and about to be checked and
        decoded: have the child read the log after it, up to ``last``. Never raises (the
        reader is a start-up aid only)."""
        try:
            await self._ask(s.seq + 1, last)
        except Exception as exc:  # the catch-up forks or reads in-process instead
            log.warning("catch-up reader not asked ahead of the snapshot (%s)", exc)

    async def _ask(self, start: int, last: int) -> None:
        if self.reader is None:
            return  # none forked: the log was short, or the fork failed
        if self.reader.asked is not None:
            if self.reader.asked[0] == start:
                return
            # Asked for the tail of a snapshot refused since: it reads from the wrong place.
            await self.drop()
        if last - start + 1 < max(self.least, 1):
            # A short tail: the follower reads it (an unasked reader stops unused). An empty
            # one is never asked for, whatever ``least``: no message would end the child's
            # read, and the fold waited QUIET_S for it (review h126).
            return
        if self.reader is None:
            self.reader = Reader.fork(self.conn)
        if self.reader is not None:
            self.reader.ask(start, last)

    async def reader_for(self, start: int) -> Reader | None:
        """The reader for a catch-up from ``start``: asked from there, or not asked yet; one
        asked from elsewhere (its snapshot refused, or none loaded after all) is stopped."""
        reader = self.reader
        if reader is not None and reader.asked is not None and reader.asked[0] != start:
            log.info(
                "catch-up reader asked from seq %d, the fold starts at %d: stopped",
                reader.asked[0],
                start,
            )
            await self.drop()
        return self.reader

    async def drop(self) -> None:
        """Stop the reader (if any) and forget it."""
        reader, self.reader = self.reader, None
        if reader is not None:
            await reader.close()
