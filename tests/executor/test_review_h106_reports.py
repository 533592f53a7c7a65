"""Review h106: a sighting report the log did not store is never taken for stored.

The executor appends what the log refused before (``_unsent``) ahead of its next append, in
atomic batches when they are more than ``FEW``. JetStream refuses such a batch *whole* when one
of its message ids was stored before (err 10201, :class:`DuplicateBatch`: an earlier attempt
landed though its answer was lost) — nothing of it is stored now, the sighting report riding
at its end included. ``Reports._append`` took every ``MaybeApplied`` for "stored already" and
returned the stream's last sequence: the reporter then held a set the log never got as
reported (its next report no start, its change relative to a set nobody holds), and a MAC seen
only then looked absent across that moment (docs/reclaim.md: a sighting restarts the clock).
"""

from __future__ import annotations

from pathlib import Path

from netledger.events.codec import decode
from netledger.events.host_events import HostInstancesSeen, HostLinkCreated
from netledger.journal.append import build_messages
from netledger.journal.stream import Connection, last_seq
from netledger.replay.reader import read_range
from tests.executor.test_reports import _executor


async def test_a_sighting_in_a_batch_refused_as_a_duplicate_is_not_taken_for_stored(
    conn: Connection, tmp_path: Path
) -> None:
    ex = _executor(conn, tmp_path)
    ex.read_back_own = False  # (no follower here)
    links = ex._envelopes(
        [
            HostLinkCreated(host="rp", name=f"br{i}", kind="bridge", network_id="1", drift=False)
            for i in range(8)
        ]
    )
    # The first of them landed though the executor was told the log did not answer (outcome
    # unknown): all eight are kept, to go first with the next append.
    await ex._appender.append(build_messages(links[:1]), {})
    ex._unsent = list(links)
    before = await last_seq(conn)
    seen = HostInstancesSeen(host="rp", macs=["02:00:00:00:00:01"], networks=["1"],
                             reason="start", leases=0)  # fmt: skip
    try:
        seq = await ex._publish([seen])
    except Exception:
        seq = None  # not stored, and said so: the reporter observes again, as a start
    stored = [m async for m in read_range(conn, before + 1, await last_seq(conn))]
    reports = [
        m.seq  # type: ignore[attr-defined]
        for m in stored
        if isinstance(decode(m.data).event, HostInstancesSeen)  # type: ignore[attr-defined]
    ]
    if seq is not None:  # taken for stored: then it is, at that sequence
        assert reports == [seq], f"the report was answered seq {seq}; the log holds {reports}"
        # and what was kept went before it, each once (the first was stored already)
        names = [decode(m.data).event.name for m in stored[:-1]]  # type: ignore[attr-defined]
        assert names == [f"br{i}" for i in range(1, 8)]
    await ex.close()
