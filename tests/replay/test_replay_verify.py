"""``verify``: a projection edited by hand is caught (with the row), an untouched one passes,
and a stream that went back is a log regression."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.errors import LogRegression
from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.projector.runner import project_until
from netledger.replay import checksum
from netledger.replay.verify import verify
from netledger.service.service import CommandService
from tests.replay.test_replay_helpers import build_history, cli_json


def edit(db: Path, sql: str, *args: object) -> None:
    c = sqlite3.connect(db)
    try:
        with c:
            c.execute(sql, args)
    finally:
        c.close()


async def test_verify_passes_untouched_and_catches_a_hand_edit(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    h = await build_history(conn)
    db = tmp_path / "p.db"
    # a projection a few events behind the stream: verified at its own checkpoint
    behind = h.points[-2].seq
    await project_until(conn, db, to_seq=behind)
    ok = await verify(conn, db, show_progress=False)
    assert ok["equal"] and ok["last_seq"] == behind and ok["differences"] == []
    assert ok["rejected_events"] == {"count": 0, "first": []}
    assert set(ok["tables"]) == set(checksum.TABLES)
    assert (await cli_json("--nats", nats_url, "verify", "--db", str(db)))["equal"] is True

    edit(db, "UPDATE fixed_ips SET instance = 'i-evil' WHERE address = ?", h.y)
    bad = await verify(conn, db, show_progress=False)
    assert not bad["equal"]
    assert [t for t, v in bad["tables"].items() if not v["equal"]] == ["fixed_ips"]
    (d,) = bad["differences"]
    assert d["table"] == "fixed_ips" and d["columns"] == ["instance"]
    assert d["key"] == {"network_id": h.network_id, "address": h.y}
    assert (d["projection"]["instance"], d["rebuilt"]["instance"]) == ("i-evil", "i-9")
    r = await cli_json("--nats", nats_url, "verify", "--db", str(db), code=1)
    assert r["error"]["code"] == "projection_mismatch" and r["equal"] is False

    # a deleted row and an added one are differences too (rows missing on either side)
    edit(db, "UPDATE fixed_ips SET instance = 'i-9' WHERE address = ?", h.y)
    assert (await verify(conn, db, show_progress=False))["equal"]
    edit(db, "DELETE FROM events WHERE seq = 3")
    edit(db, "INSERT INTO floating_pools (pool, cidr) VALUES ('ghost', '198.51.100.0/24')")
    bad = await verify(conn, db, show_progress=False)
    kinds = {
        (x["table"], x["projection"] is None, x["rebuilt"] is None) for x in bad["differences"]
    }
    assert kinds == {("events", True, False), ("floating_pools", False, True)}


async def test_verify_reports_rejected_events(conn: Connection, tmp_path: Path) -> None:
    for i in range(7):
        await conn.js.publish("netledger.evt.registry", b"not msgpack %d" % i, stream=conn.stream)
    db = tmp_path / "p.db"
    await project_until(conn, db)
    r = await verify(conn, db, show_progress=False)
    assert r["equal"]
    assert r["rejected_events"]["count"] == 7
    assert [x["seq"] for x in r["rejected_events"]["first"]] == [1, 2, 3, 4, 5]
    assert "not msgpack" in r["rejected_events"]["first"][0]["reason"]


async def test_verify_reports_a_log_regression(tmp_path: Path) -> None:
    """The projection has seen seq 5; the stream (restored from an older copy) ends at 3."""
    db = tmp_path / "p.db"
    for n, name in ((5, "a"), (3, "b")):
        server = EmbeddedNats(tmp_path / name, port=free_port(), sync_interval="default")
        server.start()
        try:
            c = await connect(server.url, name="t")
            await ensure_stream(c)
            for i in range(n):
                await c.js.publish("netledger.evt.registry", b"x%d" % i, stream=c.stream)
            if name == "a":
                await project_until(c, db)
            else:
                # same stream name, older content: pretend it is the same instance
                info = await c.js.stream_info(c.stream)
                created = info.created.isoformat() if info.created else ""
                edit(db, "UPDATE projection_state SET stream_created = ?", created)
                with pytest.raises(LogRegression) as e:
                    await verify(c, db, show_progress=False)
                assert e.value.details["stream_last_seq"] == 3
                assert e.value.details["last_seq"] == 5
            await c.close()
        finally:
            server.stop()
