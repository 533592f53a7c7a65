"""``netledger projector status`` shows the daemon's liveness stamp (projector/liveness.py) —
``live``, ``mode``, ``stamped_at``, ``age_s``, ``period_s``, ``pid``, the fields ``netledger
status`` gives each projector — in its text and its ``--json``, beside the fields it had (none
renamed). From the file alone, no NATS. A real ``projector run`` daemon, followed then killed,
read by the real command."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from netledger.journal.stream import Connection
from netledger.ops.status import projector_status
from netledger.projector import query
from netledger.projector.liveness import DEAD_AFTER_PERIODS, FOLLOW, Stamp, write_stamp
from netledger.projector.runner import project_until
from netledger.service.service import CommandService
from tests.ops.test_projector_liveness import NETLEDGER, PERIOD, daemon, some_events, until

LIVE_KEYS = ("live", "mode", "stamped_at", "age_s", "period_s", "pid")
#: what `projector status` showed before the stamp (kept, in this order, first in the text)
OLD_KEYS = ("last_seq", "highest_seq", "lag", "events", "rejected", "schema_version", "stream")


def _text_fields(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(" ") for line in text.splitlines())}


def _json_now(db: Path) -> dict[str, Any]:
    """The command's --json, synchronously (for :func:`until`)."""
    got: dict[str, Any] = json.loads(_now(db, "--json"))
    return got


def _text_now(db: Path) -> dict[str, str]:
    return _text_fields(_now(db))


def _now(db: Path, *fmt: str) -> str:
    out = subprocess.run(
        [NETLEDGER, "projector", "status", "--db", str(db), *fmt],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


async def test_projector_status_shows_the_stamp(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    last = await some_events(conn)
    db = tmp_path / "p.db"
    proc = await daemon(nats_url, db)
    try:
        live = await until(
            "the daemon's stamp", lambda: _json_now(db), lambda st: st["live"] is True
        )
        text = await until(
            "the daemon's stamp, in the text", lambda: _text_now(db), lambda t: t["live"] == "True"
        )
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()

    assert (live["last_seq"], live["lag"], live["events"]) == (last, 0, last)
    assert set(OLD_KEYS) | {"stream_created"} | set(LIVE_KEYS) <= set(live)
    assert (live["mode"], live["period_s"], live["pid"]) == (FOLLOW, PERIOD, proc.pid)
    assert live["stamped_at"].endswith("Z") and 0 <= live["age_s"] <= DEAD_AFTER_PERIODS * PERIOD
    assert list(text)[: len(OLD_KEYS)] == list(OLD_KEYS)  # the old lines first, as they were
    assert text["last_seq"] == str(last)
    assert (text["mode"], text["period_s"], text["pid"]) == (FOLLOW, str(PERIOD), str(proc.pid))

    dead = await until(
        "the killed daemon is not live", lambda: _json_now(db), lambda st: st["live"] is False
    )
    assert (dead["lag"], dead["mode"], dead["pid"]) == (0, FOLLOW, proc.pid)
    assert dead["age_s"] > DEAD_AFTER_PERIODS * PERIOD
    assert _text_now(db)["live"] == "False"

    # a file nothing stamped: the fields are there, empty
    bare = tmp_path / "bare.db"
    await project_until(conn, bare)
    st = json.loads(await asyncio.to_thread(_now, bare, "--json"))
    assert {k: st[k] for k in LIVE_KEYS} == dict.fromkeys(LIVE_KEYS)
    assert st["last_seq"] == last
    assert _text_fields(await asyncio.to_thread(_now, bare))["live"] == "None"


async def test_the_fields_are_status_s(conn: Connection, tmp_path: Path) -> None:
    """The same fields, judged the same way, as ``netledger status`` (ops/status.py; both from
    projector/liveness.py ``liveness_fields``) — here on stamps written by hand: a daemon's
    too old, one from a wild clock (no date, no age: never a failure), a stopped one, a
    ``--once`` one."""
    db = tmp_path / "p.db"
    await project_until(conn, db)
    cases = [  # (stamp, live, a date and an age shown)
        (Stamp(FOLLOW, 1.0, 0, period_s=10.0, pid=7), False, True),
        (Stamp(FOLLOW, 1e17, 0, period_s=10.0, pid=7), False, False),
        (Stamp("stopped", 1.0, 0, period_s=10.0, pid=7), False, True),
        (Stamp("once", 1.0, 0), None, True),
    ]
    for stamp, live, dated in cases:
        write_stamp(db, stamp)
        with query.open_readonly(db, current=False) as c:
            ours = query.liveness(c)
        theirs = {k: v for k, v in projector_status(db, 0, 0).items() if k in LIVE_KEYS}
        assert list(ours) == list(LIVE_KEYS) and set(theirs) == set(LIVE_KEYS)
        assert (ours["live"], ours["mode"], ours["period_s"], ours["pid"]) == (
            live,
            stamp.mode,
            stamp.period_s,
            stamp.pid,
        ), stamp
        assert (ours["stamped_at"] is not None, ours["age_s"] is not None) == (dated, dated)
        # the age moves between the two reads: compared apart, for its presence
        assert (ours.pop("age_s") is None) == (theirs.pop("age_s") is None), stamp
        assert ours == theirs, stamp
