"""``replay``: a projection as of a sequence or a moment, on a real nats-server and real SQLite
files, checked against the state the test knows held at each point."""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path

import pytest

from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import project_until
from netledger.replay.checksum import file_checksums
from netledger.replay.errors import BadTime, NaiveTime, OutputExists, SeqBeyondStream
from netledger.replay.rebuild import rebuild
from netledger.replay.times import iso, parse_moment
from netledger.service.service import CommandService
from tests.replay.test_replay_helpers import build_history, cli_json, invoke, state_of


async def test_replay_to_seq_and_at_each_point(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    h = await build_history(conn)
    assert len(h.points) == 7
    for i, p in enumerate(h.points):
        by_seq = tmp_path / f"seq{i}.db"
        by_time = tmp_path / f"at{i}.db"
        r = await rebuild(conn, by_seq, to_seq=p.seq, show_progress=False)
        assert r["last_seq"] == p.seq
        assert state_of(by_seq) == (p.fixed, p.floating), p.name
        r = await rebuild(conn, by_time, at=p.at, show_progress=False)
        assert r["last_seq"] == p.seq, p.name
        assert state_of(by_time) == (p.fixed, p.floating), p.name
        # the same moment in another zone is the same moment
        east = p.at.astimezone(datetime.timezone(datetime.timedelta(hours=5, minutes=30)))
        again = await rebuild(conn, by_time, at=east, force=True)
        assert again["last_seq"] == p.seq
        # said in UTC, as every time the tools print (h136: it echoed the zone given)
        assert again["at"] == r["at"] and r["at"].endswith("Z"), (again["at"], r["at"])
        assert datetime.datetime.fromisoformat(r["at"]) == p.at
    # before anything happened: an empty projection (of this stream)
    empty = tmp_path / "before.db"
    assert h.before is not None
    assert (await rebuild(conn, empty, at=h.before))["last_seq"] == 0
    assert state_of(empty) == ({}, {})
    # the last point is the whole stream: identical to the projector's own projection
    live = tmp_path / "live.db"
    await project_until(conn, live)
    assert file_checksums(tmp_path / "seq6.db") == file_checksums(live)


def leftovers(d: Path) -> list[Path]:
    return list(d.glob(".*.partial*"))


async def test_replay_refuses_an_existing_file_and_a_seq_past_the_end(
    conn: Connection, service: CommandService, tmp_path: Path
) -> None:
    await build_history(conn)
    out = tmp_path / "out.db"
    out.write_text("precious")
    with pytest.raises(OutputExists):
        await rebuild(conn, out, to_seq=1)
    assert out.read_text() == "precious"
    end = await last_seq(conn)
    with pytest.raises(SeqBeyondStream):
        await rebuild(conn, tmp_path / "x.db", to_seq=end + 1)
    assert not (tmp_path / "x.db").exists()
    r = await rebuild(conn, out, to_seq=3, force=True)
    assert r["last_seq"] == 3 and r["events"] == 3
    assert not leftovers(tmp_path)  # no temporary file left behind


def test_times_are_iso_8601_with_a_zone() -> None:
    assert parse_moment("2026-05-01T10:00:00Z") == datetime.datetime(
        2026, 5, 1, 10, tzinfo=datetime.UTC
    )
    t = parse_moment("2026-05-01T12:00:00.5+02:00")
    assert (
        t.timestamp() == datetime.datetime(2026, 5, 1, 10, 0, 0, 500000, datetime.UTC).timestamp()
    )
    with pytest.raises(NaiveTime):
        parse_moment("2026-05-01T10:00:00")
    with pytest.raises(BadTime):
        parse_moment("yesterday")
    assert iso(0.0) == "1970-01-01T00:00:00.000Z"


async def test_cli_replay_then_show(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    h = await build_history(conn)
    p = h.points[3]
    out = tmp_path / "then.db"
    r = await cli_json("--nats", nats_url, "replay", "--db", str(out), "--at", p.at.isoformat())
    assert r["last_seq"] == p.seq
    # quiet when stderr is not a terminal: the JSON result only
    rows = await cli_json("show", "fixed-ips", "--db", str(out))
    assert {x["address"]: (x["instance"], x["allocated"], x["leased"]) for x in rows} == p.fixed
    # one file, read and left as it was: no -wal / -shm beside it (review h130)
    beside = await asyncio.to_thread(lambda: [f.name for f in tmp_path.glob("then.db?*")])
    assert beside == [], beside
    # refusals, with stable codes
    again = await cli_json("--nats", nats_url, "replay", "--db", str(out), code=1)
    assert again["error"]["code"] == "output_exists"
    naive = await cli_json(
        "--nats",
        nats_url,
        "replay",
        "--db",
        str(tmp_path / "n.db"),
        "--at",
        "2026-05-01T10:00",
        code=1,
    )
    assert naive["error"]["code"] == "naive_time"
    assert not (tmp_path / "n.db").exists()
    both = await asyncio.to_thread(
        invoke, "--nats", nats_url, "replay", "--db", str(tmp_path / "b.db"), "--to-seq", "1",
        "--at", "2026-05-01T10:00Z",
    )  # fmt: skip
    assert both.exit_code == 2 and "not both" in both.output
    text = await asyncio.to_thread(
        invoke, "--nats", nats_url, "replay", "--db", str(tmp_path / "t.db"), "--to-seq", "2"
    )
    assert text.exit_code == 0 and "at seq 2" in text.output and "last event at 20" in text.output
    before = await asyncio.to_thread(
        invoke, "--nats", nats_url, "replay", "--db", str(tmp_path / "e.db"),
        "--at", "2000-01-01T00:00Z",
    )  # fmt: skip
    assert before.exit_code == 0 and "at seq 0" in before.output
    assert "nothing was stored by then" in before.output and "None" not in before.output
    assert json.loads(
        (await asyncio.to_thread(invoke, "show", "networks", "--db", str(tmp_path / "t.db"),
                                 "--json")).output
    )[0]["network_id"] == h.network_id  # fmt: skip


async def test_replay_at_says_what_it_left_out_that_was_stamped_by_then(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    """--at cuts on the store time, audit prints the events' own: a printed time given back as
    --at left its event out, silently, when the store came later (h136: the state "at" a
    mistaken command was the one before it). The result says so. A report stamped 10 s before
    it is stored makes the gap deterministic."""
    import time
    import uuid

    from netledger.events.codec import Actor, Envelope, encode
    from netledger.events.host_events import HostInstancesSeen
    from netledger.events.ids import host_subject

    before = await last_seq(conn)  # (nothing stored after the report's own time)
    own = time.time() - 10
    ev = HostInstancesSeen(host="h1", macs=[], networks=[], reason="change")
    env = Envelope(ev, uuid.uuid4().hex, uuid.uuid4().hex, own, Actor(role="system", user="t"))
    ack = await conn.js.publish(host_subject("h1"), encode(env), stream=conn.stream)
    stamped = datetime.datetime.fromtimestamp(own + 1, datetime.UTC)  # after its own time

    r = await rebuild(conn, tmp_path / "a.db", at=stamped, show_progress=False)
    assert r["last_seq"] == before
    assert (r["next_seq"], r["next_stamped_by_at"]) == (ack.seq, True)
    assert r["next_event_time"] == iso(own) and r["next_stored_at"] > r["next_event_time"]
    # a moment before the next message's own time: nothing surprising to say
    early = datetime.datetime.fromtimestamp(own - 1, datetime.UTC)
    r = await rebuild(conn, tmp_path / "b.db", at=early, show_progress=False)
    assert r["next_stamped_by_at"] is False, r
    # the CLI says it
    out = await asyncio.to_thread(
        invoke, "--nats", nats_url, "replay", "--db", str(tmp_path / "c.db"), "--at", iso(own + 1)
    )
    assert out.exit_code == 0, out.output
    assert f"#{ack.seq}, stamped {iso(own)} (as audit shows it)" in out.stdout, out.stdout
