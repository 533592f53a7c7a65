"""The projector refuses a projection that is not the log's.

A stream it was not built from (a projection claiming more than the stream has, a stream
recreated under the same name) and a log restored from an older backup and written past it are
refused; a projection whose newest row is a rejected event still opens on its own log (how the
newest row is compared: ``projector.anchor``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats
from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.types import FixedIpAllocated
from netledger.journal.stream import Connection, connect
from netledger.projector.errors import ProjectionAhead, StreamMismatch
from netledger.projector.runner import project_until
from tests.projector.stream_helpers import publish_event, rows


async def test_refuses_a_stream_it_was_not_built_from(
    nats_server: EmbeddedNats, conn: Connection, tmp_path: Path
) -> None:
    from tests.projector.test_projector_unit import net

    await publish_event(conn, net("1"))
    await publish_event(conn, net("2", "10.0.1.0/24"))
    db = tmp_path / "p.db"
    assert await project_until(conn, db) == 2
    # the projection claims more than the stream has
    sqlite3.connect(db).execute("UPDATE projection_state SET last_seq = 50").connection.commit()
    with pytest.raises(ProjectionAhead):
        await project_until(conn, db)
    # a stream recreated under the same name
    sqlite3.connect(db).execute("UPDATE projection_state SET last_seq = 2").connection.commit()
    sqlite3.connect(db).execute(
        "UPDATE projection_state SET stream_created = '2001-01-01T00:00:00+00:00'"
    ).connection.commit()
    with pytest.raises(StreamMismatch) as exc:
        await project_until(conn, db)
    assert exc.value.code == "projection_stream_mismatch"


async def test_refuses_a_log_restored_from_an_older_backup_and_written_past_it(
    tmp_path: Path,
) -> None:
    """Same stream name, same creation time, as long as before: only the messages differ. The
    projection resuming there would keep rows of events the log no longer has."""
    import shutil

    from netledger.common.natsserver import free_port
    from netledger.journal.stream import ensure_stream
    from netledger.projector.errors import LogDiverged
    from tests.projector.test_projector_unit import net

    server = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port(), sync_interval="default")
    log_dir = server.store_dir / "jetstream" / "$G" / "streams" / "NETLEDGER"
    db = tmp_path / "p.db"
    server.start()
    try:
        conn = await connect(server.url, name="test")
        await ensure_stream(conn)
        await publish_event(conn, net("1"))
        await conn.close()
        server.stop()
        shutil.copytree(log_dir, tmp_path / "backup")  # the backup: one event
        server.start()
        conn = await connect(server.url, name="test")
        await publish_event(conn, net("2", "10.0.1.0/24"), 2)
        await publish_event(conn, net("3", "10.0.2.0/24"), 3)
        assert await project_until(conn, db) == 3
        created = (await conn.js.stream_info(conn.stream)).created
        await conn.close()

        server.stop()
        shutil.rmtree(log_dir)
        shutil.copytree(tmp_path / "backup", log_dir)
        server.start()
        conn = await connect(server.url, name="test")
        try:
            await publish_event(conn, net("4", "10.0.3.0/24"), 4)
            await publish_event(conn, net("5", "10.0.4.0/24"), 5)
            info = await conn.js.stream_info(conn.stream)
            assert info.created == created and info.state.last_seq == 3  # nothing else tells
            with pytest.raises(LogDiverged) as exc:
                await project_until(conn, db)
            assert exc.value.code == "projection_log_diverged"
            assert rows(db, "SELECT last_seq FROM projection_state") == [(3,)]  # untouched
            # a new file projects the log as it is now
            assert await project_until(conn, tmp_path / "new.db") == 3
            assert rows(tmp_path / "new.db", "SELECT network_id FROM networks ORDER BY 1") == [
                ("1",),
                ("4",),
                ("5",),
            ]
            # a projection that is the log's resumes as before (its newest row checked)
            await publish_event(conn, net("6", "10.0.5.0/24"), 6)
            assert await project_until(conn, tmp_path / "new.db") == 4
        finally:
            await conn.close()
    finally:
        server.stop()


async def test_reopens_when_its_newest_row_is_a_rejected_event(
    conn: Connection, tmp_path: Path
) -> None:
    """A decodable event the projection rejects keeps no bytes (raw is NULL), and a message that
    cannot be decoded keeps only its first MAX_RAW bytes: neither is a restored log."""
    from netledger.projector.project_tx import MAX_RAW

    orphan = FixedIpAllocated(
        network_id="1", address="10.0.0.3", instance="i", mac="m", host=None, project=None
    )
    await publish_event(conn, orphan)  # decodes, but network 1 does not exist: rejected
    db = tmp_path / "p.db"
    assert await project_until(conn, db) == 1
    assert rows(db, "SELECT seq, raw FROM rejected_events") == [(1, None)]
    assert await project_until(conn, db) == 1  # opened again on the same log

    big = b"\xc1" + b"x" * (MAX_RAW + 10)  # not msgpack, longer than what is kept of it
    await conn.js.publish("netledger.evt.network.1", big, stream=conn.stream)
    assert await project_until(conn, db) == 2
    assert rows(db, "SELECT length(raw) FROM rejected_events WHERE seq = 2") == [(MAX_RAW,)]
    assert await project_until(conn, db) == 2


def test_a_rejected_event_row_is_compared_by_type_and_stored_time() -> None:
    import datetime

    from netledger.projector.anchor import NewestRow, same

    ev = FixedIpAllocated(
        network_id="1", address="10.0.0.3", instance="i", mac="m", host=None, project=None
    )
    data = encode(Envelope(ev, "e", "c", 1.0, SYSTEM))
    subject = ev.subject()
    at = datetime.datetime(2026, 12, 5, 9, 0, 0, 123456, tzinfo=datetime.UTC)
    row = NewestRow(7, subject, None, None, None, "FixedIpAllocated", at.timestamp())
    assert same(row, subject, data, at)
    assert same(row, subject, data, at + datetime.timedelta(microseconds=1))
    assert not same(row, subject, data, at + datetime.timedelta(seconds=2))  # written since
    assert not same(row._replace(type="NetworkCreated"), subject, data, at)
    assert not same(row, "netledger.evt.network.2", data, at)
