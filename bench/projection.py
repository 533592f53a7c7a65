"""Projection catch-up of 100,000 events vs the raw read and raw SQLite insert rates.

The stream: 4 networks (created through the command service) and 100,000 FixedIpAllocated
events appended in atomic batches. Then, in the same run:

* raw read: an ordered push consumer counting messages (no decoding) — the read floor;
* raw SQLite: the same 100,000 events decoded (msgpack, untimed) and inserted with one
  ``executemany`` in one transaction (WAL, synchronous=NORMAL) — the write floor;
* ``netledger projector run --db X --once`` as a child process from an empty database (wall
  time, including the process start, which is reported on its own row);
* the command service starting on the same stream (it folds all of it before it is ready).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import msgpack
from benchlib import NETLEDGER, Row, Rss, netledger_has, run_measured_async, scaled, stack
from scale import fill_network

from netledger.events.client import Client
from netledger.events.stream import Connection, last_seq

NAME = "projection"
TITLE = "Projection catch-up (SQLite) vs raw read and raw insert"
NETWORKS = 4


async def raw_read(conn: Connection, total: int) -> tuple[float, list[bytes]]:
    """Ordered push consumer from seq 1, no decoding: (messages/s, the payloads)."""
    got: list[bytes] = []
    done = asyncio.get_running_loop().create_future()

    async def cb(msg: Any) -> None:
        got.append(msg.data)
        if len(got) >= total and not done.done():
            done.set_result(None)

    t = time.perf_counter()
    sub = await conn.js.subscribe(
        "netledger.evt.>",
        cb=cb,
        ordered_consumer=True,
        stream=conn.stream,
        pending_msgs_limit=-1,
        pending_bytes_limit=256 * 1024 * 1024,
    )
    await asyncio.wait_for(done, 600)
    dt = time.perf_counter() - t
    await sub.unsubscribe()
    return total / dt, got


def raw_sqlite(path: Path, payloads: list[bytes]) -> float:
    """Insert the same events as rows (decoded beforehand): the SQLite floor, rows/s."""
    rows = []
    for seq, data in enumerate(payloads, 1):
        env = msgpack.unpackb(data, raw=False)
        d = env.get("data") or env.get("d") or {}
        rows.append(
            (
                seq,
                env.get("type") or env.get("t"),
                d.get("network_id"),
                d.get("address"),
                d.get("instance"),
                d.get("mac"),
                d.get("host"),
                d.get("project"),
            )
        )
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(
        "CREATE TABLE ev (seq INTEGER PRIMARY KEY, type TEXT, network_id TEXT, address TEXT,"
        " instance TEXT, mac TEXT, host TEXT, project TEXT)"
    )
    t = time.perf_counter()
    with db:
        db.executemany("INSERT OR REPLACE INTO ev VALUES (?,?,?,?,?,?,?,?)", rows)
    dt = time.perf_counter() - t
    db.close()
    return len(rows) / dt


async def run(size: float, rss: Rss) -> list[Row]:
    total = scaled(100_000, size, 1000)
    per = total // NETWORKS
    async with stack(NAME) as st:
        assert st.conn is not None
        admin = Client(st.conn)
        nets = await admin.create_networks(
            label="p", cidr="10.32.0.0/14", num_networks=NETWORKS, network_size=65536, mode="vxlan"
        )
        await st.stop_service()
        for k, n in enumerate(nets):
            await fill_network(st.conn, n["id"], f"10.{32 + k}", per, 0)
        events = await last_seq(st.conn)
        read_rate, payloads = await raw_read(st.conn, events)
        sql_rate = await asyncio.to_thread(raw_sqlite, st.tmp / "raw.db", payloads)
        del payloads
        rows = [
            Row(
                NAME,
                "raw ordered-consumer read (no decode)",
                read_rate,
                "events/s",
                baseline="raw limit",
                note=f"{events:,} events",
            ),
            Row(
                NAME,
                "raw SQLite executemany, 1 transaction",
                sql_rate,
                "rows/s",
                baseline="raw limit",
            ),
        ]
        t = time.perf_counter()
        await st.start_service()
        hydrate = time.perf_counter() - t
        rss.note("command service", st.service_rss(), f"{NAME} ({events:,} events folded)")
        rows.append(
            Row(
                NAME,
                f"command service start (folds {events:,} events)",
                events / hydrate,
                "events/s",
                events / hydrate / read_rate,
                "raw read",
                f"{hydrate:.1f} s",
            )
        )
        await st.stop_service()
        if not netledger_has("projector"):
            rows.append(
                Row(
                    NAME,
                    "projector catch-up",
                    0,
                    "events/s",
                    note="NOT RUN: no `netledger projector` command yet",
                )
            )
            return rows
        start = await run_measured_async([NETLEDGER, "projector", "--help"])
        db = st.tmp / "projection.db"
        fin = await run_measured_async(
            [NETLEDGER, "--nats", st.url, "projector", "run", "--db", str(db), "--once"]
        )
        if fin.returncode != 0:
            raise RuntimeError(
                f"projector run --once failed ({fin.returncode}): {fin.stderr[-2000:]}"
            )
        rss.note("projector", fin.maxrss_mb, f"{NAME} ({events:,} events)")
        rate = events / fin.seconds
        rows += [
            Row(
                NAME,
                "projector: CLI process start (--help)",
                start.seconds,
                "s",
                note="included below",
            ),
            Row(
                NAME,
                f"projector run --once, {events:,} events",
                rate,
                "events/s",
                rate / read_rate,
                "raw read",
                f"{fin.seconds:.1f} s wall",
            ),
            Row(
                NAME,
                "projector vs raw SQLite insert",
                rate,
                "events/s",
                rate / sql_rate,
                "raw SQLite insert",
            ),
        ]
    return rows


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
