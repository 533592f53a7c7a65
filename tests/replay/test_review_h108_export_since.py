"""Review h108: ``export --since`` at its edges — an empty stream, a time before the stream's
first message, the first message's own store time (given in another time zone), a start after
``--to-seq`` (an empty tail), a time after the last message. Real nats-server."""

from __future__ import annotations

import datetime
import io
import json

from netledger.journal.stream import Connection
from netledger.replay.archive import export
from netledger.replay.reader import first_seq_at
from tests.replay.test_export_since import fill, stored_at


async def exported(conn: Connection, **kw: object) -> tuple[list[int], dict[str, object]]:
    buf = io.StringIO()
    got = await export(conn, buf, show_progress=False, **kw)  # type: ignore[arg-type]
    return [json.loads(line)["seq"] for line in buf.getvalue().splitlines()], got


async def test_an_empty_stream_exports_nothing(conn: Connection) -> None:
    now = datetime.datetime.now(datetime.UTC)
    assert await first_seq_at(conn, now - datetime.timedelta(days=1)) is None
    seqs, got = await exported(conn, since=now - datetime.timedelta(days=1))
    assert seqs == [] and got["messages"] == 0 and got["first_seq"] is None


async def test_since_at_the_edges_of_the_stream(conn: Connection) -> None:
    await fill(conn, 8)
    first = await stored_at(conn, 1)
    # Before the stream's first message: all of it.
    seqs, _ = await exported(conn, since=first - datetime.timedelta(days=3650))
    assert seqs == list(range(1, 9))
    # The first message's own store time, written in another zone: it is included.
    east = first.astimezone(datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
    seqs, _ = await exported(conn, since=east)
    assert seqs == list(range(1, 9))
    # The last message's own store time: that one alone.
    seqs, _ = await exported(conn, since=await stored_at(conn, 8))
    assert seqs == [8]
    # A start after --to-seq: an empty tail, nothing (and no read past --to-seq).
    seqs, got = await exported(conn, since=await stored_at(conn, 6), to_seq=4)
    assert seqs == [] and got["first_seq"] is None
    # After the last message (its store time, truncated to the microsecond, and one more):
    # nothing.
    later = await stored_at(conn, 8) + datetime.timedelta(microseconds=1)
    assert await first_seq_at(conn, later) is None
    seqs, _ = await exported(conn, since=later)
    assert seqs == []
