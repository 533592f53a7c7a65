"""journal/by_time.py ``find_msg_id``: a message found by its id among those stored from a
moment on, on the subjects asked for, reading no more than its bound. Real nats-server."""

from __future__ import annotations

import time

from netledger.journal.by_time import PAGE, Found, find_msg_id
from netledger.journal.stream import MSG_ID, Connection, last_seq

POOL = "netledger.evt.pool.pub"
NET = "netledger.evt.network.n1"


async def _store(conn: Connection, subject: str, msg_id: str) -> int:
    ack = await conn.js.publish(subject, b"x", headers={MSG_ID: msg_id})
    return int(ack.seq)


async def _find(conn: Connection, msg_id: str, since: float, limit: int = 50) -> Found:
    return await find_msg_id(
        conn,
        msg_id,
        subjects="netledger.evt.pool.*",
        since=since,
        until=time.time() + 60,
        limit=limit,
        timeout=5.0,
    )


async def test_found_among_the_subjects_asked_for_only(conn: Connection) -> None:
    since = time.time() - 1
    for i in range(5):
        await _store(conn, NET, f"net{i}:0")
        await _store(conn, POOL, f"pool{i}:0")
    target = await _store(conn, POOL, "cmd:0")
    found = await _find(conn, "cmd:0", since)
    assert found.seq == target
    assert found.scanned == 6  # the five pool messages before it, and it: no network's


async def test_a_chain_links_id_is_found(conn: Connection) -> None:
    since = time.time() - 1
    target = await _store(conn, POOL, "cmd:0~0a1b2c3d")
    assert (await _find(conn, "cmd:0", since)).seq == target


async def test_not_found_reads_at_most_its_bound(conn: Connection) -> None:
    since = time.time() - 1
    for i in range(PAGE + 20):
        await _store(conn, POOL, f"pool{i}:0")
    target = await _store(conn, POOL, "cmd:0")
    bounded = await _find(conn, "cmd:0", since, limit=PAGE + 5)
    assert bounded.seq is None and bounded.scanned == PAGE + 5
    whole = await _find(conn, "cmd:0", since, limit=PAGE * 2)
    assert whole.seq == target and whole.scanned == PAGE + 21  # (two pages)


async def test_past_until_or_the_logs_end_it_stops(conn: Connection) -> None:
    since = time.time() - 1
    await _store(conn, POOL, "pool0:0")
    assert await last_seq(conn) == 1
    found = await find_msg_id(
        conn, "cmd:0", subjects=POOL, since=since, until=since, limit=50, timeout=5.0
    )
    assert (found.seq, found.scanned) == (None, 1)  # (stored after ``until``: read, then stop)
    empty = await _find(conn, "cmd:0", time.time() + 3600)  # nothing stored since
    assert (empty.seq, empty.scanned) == (None, 0)


async def test_one_with_the_id_it_does_not_accept_is_read_past(conn: Connection) -> None:
    """A client's id reused for another command: that command's message is not the one asked."""
    since = time.time() - 1
    await conn.js.publish(POOL, b"other", headers={MSG_ID: "cmd:0"})
    target = await conn.js.publish(POOL, b"wanted", headers={MSG_ID: "cmd:0~0a1b2c3d"})
    found = await find_msg_id(
        conn,
        "cmd:0",
        subjects="netledger.evt.pool.*",
        since=since,
        until=time.time() + 60,
        limit=50,
        timeout=5.0,
        accept=lambda data: data == b"wanted",
    )
    assert (found.seq, found.scanned) == (target.seq, 2)
