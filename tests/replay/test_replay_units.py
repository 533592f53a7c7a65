"""Small pure parts of the replay tools: progress output, checksum ordering, export lines."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click
import pytest

from netledger.common import progress
from netledger.events.codec import SYSTEM, Envelope, encode
from netledger.events.types import FloatingPoolCreated
from netledger.projector.schema import open_db
from netledger.replay import checksum
from netledger.replay.archive import export_line, kept_headers
from netledger.replay.reader import Stored


def test_progress_is_silent_unless_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    with progress.progress_bar("quiet", 10, enabled=False) as advance:
        advance(5)
    assert capsys.readouterr().err == ""
    with progress.progress_bar("replaying", 10, enabled=True) as advance:
        advance(5)
        advance(10)
    err = capsys.readouterr().err
    assert "replaying" in err and "10/10" in err
    with progress.progress_bar("reading", 10, enabled=True) as advance:
        advance(10, description="building indexes")
    assert "building indexes" in capsys.readouterr().err


def test_checksums_ignore_highest_seq_and_portable_ignores_stream_times(tmp_path: Path) -> None:
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    for i, p in enumerate(paths):
        db = open_db(p)
        with db.conn:
            db.execute("UPDATE projection_state SET highest_seq = ?, stream = 'S'", [10 + i])
            db.execute(
                "INSERT INTO events (seq, time, stream_time, subject, type, data)"
                " VALUES (1, 1.5, ?, 'netledger.evt.registry', 'T', '{}')",
                [100.0 + i],
            )
            db.execute("UPDATE projection_state SET stream_created = ?", [f"c{i}"])
        db.conn.close()
    a, b = (checksum.file_checksums(p) for p in paths)
    assert a["projection_state"] != b["projection_state"]  # stream_created differs
    assert a["events"] != b["events"]
    assert a["fixed_ips"] == b["fixed_ips"]
    pa, pb = (checksum.file_checksums(p, portable=True) for p in paths)
    assert pa == pb and checksum.overall(pa) == checksum.overall(pb)
    with checksum.snapshot(paths[0]) as ca, checksum.snapshot(paths[1]) as cb:
        (d,) = checksum.first_differences(ca, cb, "events")
        assert d["columns"] == ["stream_time"] and d["key"] == {"seq": 1}
        assert checksum.first_differences(ca, cb, "events", portable=True) == []


def test_difference_order_matches_sqlite_order(tmp_path: Path) -> None:
    """The merge walks both sides in SQLite's key order: text keys that sort differently
    byte-wise and by Python's default would report false differences."""
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    keys = ["10.0.0.10", "10.0.0.9", "é", "Z", "a"]
    for p in paths:
        db = open_db(p)
        with db.conn:
            for k in keys:
                db.execute("INSERT INTO floating_pools (pool, cidr) VALUES (?, 'x')", [k])
        db.conn.close()
    c = sqlite3.connect(paths[1])
    with c:
        c.execute("UPDATE floating_pools SET cidr = 'y' WHERE pool = 'é'")
    c.close()
    with checksum.snapshot(paths[0]) as ca, checksum.snapshot(paths[1]) as cb:
        diffs = checksum.first_differences(ca, cb, "floating_pools")
    assert [d["key"] for d in diffs] == [{"pool": "é"}]


def test_export_line_keeps_the_bytes_and_the_id_only() -> None:
    ev = FloatingPoolCreated(pool="pub", cidr="203.0.113.0/28", public_interface=None)
    data = encode(Envelope(ev, "c1:0", "c1", 1.25, SYSTEM))
    headers = {"Nats-Msg-Id": "c1:0", "Nats-Batch-Id": "b", "Nats-Expected-Stream": "S", "X": "1"}
    line = export_line(Stored(4, ev.subject(), data, headers, 2.5))
    assert line["headers"] == {"Nats-Msg-Id": "c1:0", "X": "1"} == kept_headers(headers)
    assert line["event"]["type"] == "FloatingPoolCreated" and line["event"]["stored_version"] == 1
    assert line["event"]["actor"] == SYSTEM.to_wire() and line["time"] == "1970-01-01T00:00:02.500Z"


def test_every_replay_command_has_help() -> None:
    from click.testing import CliRunner

    from netledger.cli import cli
    from netledger.replay.cli import COMMANDS

    ctx = click.Context(cli)
    for cmd in COMMANDS:
        # the root group loads a package's commands on first use (not only once another
        # test happened to load them)
        assert cmd.help and cmd.name and cli.get_command(ctx, cmd.name) is cmd
        r = CliRunner().invoke(cli, [cmd.name or "", "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output
