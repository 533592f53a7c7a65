"""Review hrev15: the times the audit tools print, given back to them, name the moment of the
event they were printed for. audit prints each event's ``time`` and ``stream_time`` cut to the
millisecond (times.iso), while ``--until`` / ``replay --at`` compare with the exact stored
values: an event stored at 10:00:00.074801 is printed as 10:00:00.074Z, and ``--at`` / ``--until``
10:00:00.074Z then leaves that very event out. Fixed: an upper bound covers the unit it is
written to (replay/times.py ``moment_end``). Real nats-server, real SQLite."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.replay.test_replay_helpers import cli_json


async def _history(conn: Connection) -> None:
    c = Client(conn)
    for i in range(3):
        await c.request(
            "network.create",
            {"label": f"n{i}", "cidr": f"10.{50 + i}.0.0/24", "mode": "flat_dhcp",
             "network_host": "h1", "bridge": f"br{i}"},
        )  # fmt: skip
        await c.request(
            "fixed_ip.allocate",
            {"instance": "i-1", "network_id": str(i + 1), "host": "h1", "project": "p1"},
        )


def _sub_ms(t: float) -> bool:
    """Whether ``t`` (epoch seconds) is not a whole millisecond (what a printed time loses)."""
    return abs(t * 1000 - math.floor(t * 1000 + 1e-6)) > 1e-3


def _exact(db: Path, column: str) -> dict[int, float]:
    with sqlite3.connect(db) as c:
        return dict(c.execute(f"SELECT seq, {column} FROM events"))


async def test_audit_until_the_printed_time_of_an_event_includes_it(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    await _history(conn)
    db = tmp_path / "p.db"
    await project_until(conn, db)
    exact = _exact(db, "time")
    rows = await cli_json("audit", "instance", "i-1", "--db", str(db))
    cut = [r for r in rows if _sub_ms(exact[r["seq"]])]
    assert cut, "every event's time a whole millisecond (1 in 10^9)"
    for r in cut:
        upto = await cli_json("audit", "instance", "i-1", "--db", str(db), "--until", r["time"])
        assert r["seq"] in [x["seq"] for x in upto], (r["time"], exact[r["seq"]])


async def test_replay_at_the_printed_stream_time_of_an_event_includes_it(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    await _history(conn)
    db = tmp_path / "p.db"
    await project_until(conn, db)
    exact = _exact(db, "stream_time")
    rows = await cli_json("audit", "instance", "i-1", "--db", str(db))
    cut = [r for r in rows if _sub_ms(exact[r["seq"]])]
    assert cut, "every event's store time a whole millisecond (1 in 10^9)"
    r = cut[0]
    out = tmp_path / "then.db"
    got = await cli_json("--nats", nats_url, "replay", "--db", str(out), "--at", r["stream_time"])
    assert got["last_seq"] >= r["seq"], (r["stream_time"], exact[r["seq"]], got)


def test_an_upper_bound_covers_the_unit_it_is_written_to() -> None:
    from netledger.replay.times import moment_end, parse_moment

    def end(text: str) -> str:
        return moment_end(text, parse_moment(text)).isoformat()

    assert end("2026-05-01T10:00:00.074Z") == "2026-05-01T10:00:00.074999+00:00"
    assert end("2026-05-01T10:00:00Z") == "2026-05-01T10:00:00.999999+00:00"
    assert end("2026-05-01T10:00+02:00") == "2026-05-01T10:00:59.999999+02:00"
    assert end("2026-05-01T10:00:00.074801-03:00") == "2026-05-01T10:00:00.074801-03:00"
