"""``export --since TIME``: the messages stored from TIME on, the start looked up by time
(issue 13: an export of the last day costs the last day, not the log's age). Real nats-server;
the read is shown by what the export wrote, not by a clock."""

from __future__ import annotations

import datetime
import io
import json
from pathlib import Path

from netledger.journal.stream import Connection, last_seq
from netledger.replay.archive import export
from tests.service.test_revert import cli


async def fill(conn: Connection, n: int) -> None:
    for i in range(n):
        await conn.js.publish("netledger.evt.registry", f"not an event {i}".encode())


async def stored_at(conn: Connection, seq: int) -> datetime.datetime:
    msg = await conn.js.get_msg(conn.stream, seq)
    assert msg.time is not None
    return msg.time.replace(tzinfo=msg.time.tzinfo or datetime.UTC)


async def test_since_starts_at_the_first_message_stored_then(conn: Connection) -> None:
    await fill(conn, 40)
    since = await stored_at(conn, 31)
    buf = io.StringIO()
    got = await export(conn, buf, since=since, show_progress=False)
    seqs = [json.loads(line)["seq"] for line in buf.getvalue().splitlines()]
    assert seqs == list(range(31, 41))
    assert got["messages"] == 10 and got["first_seq"] == 31
    # With --from-seq: the later of the two starts it.
    buf = io.StringIO()
    got = await export(conn, buf, from_seq=35, since=since, show_progress=False)
    assert (got["first_seq"], got["messages"]) == (35, 6)
    buf = io.StringIO()
    got = await export(conn, buf, from_seq=5, to_seq=33, since=since, show_progress=False)
    assert (got["first_seq"], got["last_seq"]) == (31, 33)
    # After everything stored: nothing.
    later = since + datetime.timedelta(days=1)
    got = await export(conn, io.StringIO(), since=later, show_progress=False)
    assert got["messages"] == 0 and got["first_seq"] is None


async def test_the_cli(conn: Connection, nats_url: str, tmp_path: Path) -> None:
    await fill(conn, 12)
    since = (await stored_at(conn, 9)).isoformat()
    out = tmp_path / "x.jsonl"
    rc, text, err = await cli(nats_url, "export", "--since", since, "--out", str(out), "--json")
    assert rc == 0, err
    assert json.loads(text)["first_seq"] == 9
    assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == [9, 10, 11, 12]
    assert await last_seq(conn) == 12
    rc, _, err = await cli(nats_url, "export", "--since", "2026-05-01T10:00:00")
    assert rc == 1 and "error [naive_time]" in err
