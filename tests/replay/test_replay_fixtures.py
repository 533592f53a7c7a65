"""A years-old stream still replays end to end: the frozen payloads of earlier code
(tests/fixtures/events, see its README) put onto a real stream, byte for byte, then
``replay`` into a projection that ``show`` reads."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from netledger.journal.stream import Connection
from netledger.replay.audit import from_index
from netledger.replay.rebuild import rebuild
from netledger.replay.verify import verify
from tests.replay.test_replay_helpers import state_of

FIXTURES = Path(__file__).parent.parent / "fixtures" / "events"


def fixture_lines() -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(FIXTURES.glob("*.jsonl")):
        with path.open() as f:
            lines.extend(json.loads(x) for x in f if x.strip())
    return sorted(lines, key=lambda x: x["seq"])


async def replay_fixtures(conn: Connection, db: Path) -> dict[str, Any]:
    lines = fixture_lines()
    assert [x["seq"] for x in lines] == list(range(1, len(lines) + 1))
    assert ("FixedIpAllocated", 0) in {(x["type"], x["version"]) for x in lines}
    for x in lines:
        ack = await conn.js.publish(
            x["subject"], base64.b64decode(x["payload"]), stream=conn.stream
        )
        assert ack.seq == x["seq"]
    r = await rebuild(conn, db, show_progress=False)
    assert r["last_seq"] == len(lines)
    v = await verify(conn, db, show_progress=False)
    assert v["equal"]
    return v


async def test_old_payloads_replay_into_a_projection(conn: Connection, tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    v = await replay_fixtures(conn, db)
    # every payload of every version decoded (v0 upcast, defaults for later fields), the
    # legacy-subject NetworkAssociated included (see the next test)
    assert v["rejected_events"] == {"count": 0, "first": []}

    fixed, floating = state_of(db)
    # the state test_codec.py recorded for the same payloads folded into State
    assert {a: v[0] for a, v in fixed.items()} == {
        "10.9.0.3": "i-old-1",
        "10.9.0.6": "i-new-1",
        "10.9.1.2": "i-flat",
    }
    assert fixed["10.9.0.3"][1:] == (1, 1)
    assert floating == {"203.0.113.1": ("10.9.0.3", "i-old-1")}
    # v0 (host_name, no project) upcast: the host is known, and the audit reads it
    (alloc,) = [e for e in from_index(db, "address", "10.9.0.3") if e["type"] == "FixedIpAllocated"]
    assert alloc["host"] == "compute1" and json.loads(alloc["data"])["host"] == "compute1"


async def test_legacy_subject_event_is_applied(conn: Connection, tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    v = await replay_fixtures(conn, db)
    assert v["rejected_events"] == {"count": 0, "first": []}
    # the legacy-subject NetworkAssociated (seq 3) made p1 network 1's project
    nets = {e["seq"]: e for e in from_index(db, "network", "1")}
    assert nets[3]["type"] == "NetworkAssociated" and nets[3]["project"] == "p1"
