"""Helpers shared by the projector's tests against a real stream
(``tests/projector/test_projector_stream_*.py``, ``test_projector_bulk.py``): ``rows`` runs a
query on a projection file, ``publish_event`` appends one event straight to the stream (a system
actor's envelope, not through the command service) and returns its sequence.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.journal.stream import Connection


def rows(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return [tuple(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


async def publish_event(conn: Connection, ev: Any, n: int = 0) -> int:
    env = Envelope(ev, f"direct-{ev.TYPE}-{n}:0", f"direct-{ev.TYPE}-{n}", 1.0 * n, SYSTEM)
    ack = await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)
    return int(ack.seq)
