"""``verify``: is a projection exactly what its log says?

The projection's checkpoint is read in a snapshot; a fresh projection of the same stream is
built up to that same sequence in a temporary file (with the projector's own code); the two are
compared table by table (:mod:`.checksum`). A stream that now ends *before* the projection's
checkpoint is a log regression (the store lost data or was restored from an older copy): no
rebuild can be compared, and that is the finding.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from netledger.common.progress import progress_bar
from netledger.events.errors import LogRegression
from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import bar_hooks, project_until

from .checksum import TABLES, checksums, first_differences, overall, snapshot

REJECTED_SHOWN = 5


async def verify(
    conn: Connection,
    db: str | Path,
    *,
    limit: int = 5,
    portable: bool = False,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Compare the projection at ``db`` with a fresh rebuild at its checkpoint; return a report
    whose ``equal`` says whether they match. Raises :class:`LogRegression` when the stream
    ends before the checkpoint."""
    db = Path(db)
    with snapshot(db) as live:
        seq, stream, created = live.execute(
            "SELECT last_seq, stream, stream_created FROM projection_state WHERE id = 1"
        ).fetchone()
        seq = int(seq)
        end = await last_seq(conn)
        if end < seq:
            raise LogRegression(
                f"{db} has applied up to seq {seq} but stream {conn.stream} now ends at {end}:"
                " the store lost data or was restored from an older copy",
                db=str(db),
                last_seq=seq,
                stream_last_seq=end,
            )
        rejected = _rejected(live)
        with tempfile.TemporaryDirectory(prefix="netledger-verify-", dir=db.parent) as d:
            fresh = Path(d) / "rebuilt.db"
            with progress_bar("verify: rebuilding", seq, show_progress) as advance:
                if seq > 0:
                    await project_until(
                        conn, fresh, to_seq=seq, **bar_hooks(advance, "verify: rebuilding")
                    )
                else:  # nothing applied yet: compare with an empty projection of this stream
                    await project_until(conn, fresh, to_seq=0)
            with snapshot(fresh) as rebuilt:
                (now_created,) = rebuilt.execute(
                    "SELECT stream_created FROM projection_state WHERE id = 1"
                ).fetchone()
                mine, theirs = checksums(live, portable), checksums(rebuilt, portable)
                tables: dict[str, Any] = {}
                differences: list[dict[str, Any]] = []
                for name in TABLES:
                    a, b = mine[name], theirs[name]
                    tables[name] = {
                        "rows": a.rows,
                        "rebuilt_rows": b.rows,
                        "sha256": a.sha256,
                        "rebuilt_sha256": b.sha256,
                        "equal": a.sha256 == b.sha256,
                    }
                    if a.sha256 != b.sha256 and len(differences) < limit:
                        differences += first_differences(
                            live, rebuilt, name, limit - len(differences), portable
                        )
    return {
        "db": str(db),
        "last_seq": seq,
        "stream": stream,
        "stream_created": created,
        # the stream's own creation time: another than the projection's is another instance of
        # the stream (a copy: export/import), whose store times differ in every row (h136: it
        # was told only as differing rows; --portable compares without them)
        "log_stream_created": now_created,
        "stream_last_seq": end,
        "equal": all(t["equal"] for t in tables.values()),
        "checksum": overall(mine),
        "rebuilt_checksum": overall(theirs),
        "tables": tables,
        "differences": differences,
        "rejected_events": rejected,
        "portable": portable,
    }


def _rejected(conn: Any) -> dict[str, Any]:
    count = conn.execute("SELECT count(*) FROM rejected_events").fetchone()[0]
    first = [
        {"seq": s, "subject": subj, "type": t, "reason": r}
        for s, subj, t, r in conn.execute(
            "SELECT seq, subject, type, reason FROM rejected_events ORDER BY seq LIMIT ?",
            [REJECTED_SHOWN],
        )
    ]
    return {"count": count, "first": first}
