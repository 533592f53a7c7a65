"""``export`` -> ``import`` into a fresh server -> ``replay``: a checksum-identical projection;
re-running the import appends nothing; a different stream is refused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.journal.stream import MSG_ID, Connection, connect, ensure_stream, last_seq
from netledger.replay.archive import export, import_file
from netledger.replay.checksum import file_checksums
from netledger.replay.cli import _print_verify
from netledger.replay.errors import BadExport, StreamNotEmpty
from netledger.replay.reader import read_range
from netledger.replay.rebuild import rebuild
from netledger.replay.verify import verify
from netledger.service.service import CommandService
from tests.replay.test_replay_helpers import build_history, cli_json, invoke


@pytest.fixture
async def other(tmp_path: Path) -> AsyncIterator[Connection]:
    """A second, fresh nats-server (the migration target), stream created."""
    server = EmbeddedNats(tmp_path / "other", port=free_port(), sync_interval="default")
    server.start()
    try:
        c = await connect(server.url, name="other")
        await ensure_stream(c)
        yield c
        await c.close()
    finally:
        server.stop()


async def stored(conn: Connection) -> list[tuple[int, str, bytes, str | None]]:
    return [(m.seq, m.subject, m.data, m.headers.get(MSG_ID)) async for m in read_range(conn)]


def write(path: Path, text: str) -> None:
    path.write_text(text)


async def test_export_import_replay_is_identical(
    conn: Connection, service: CommandService, other: Connection, tmp_path: Path
) -> None:
    await build_history(conn)
    await conn.js.publish("netledger.evt.registry", b"\xc1 garbage", stream=conn.stream)
    buf = io.StringIO()
    summary = await export(conn, buf, show_progress=False)
    end = await last_seq(conn)
    assert summary == {"messages": end, "first_seq": 1, "last_seq": end, "undecodable": 1}
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [x["seq"] for x in lines] == list(range(1, end + 1))
    first = lines[0]
    assert first["event"]["type"] == "NetworkCreated" and first["headers"][MSG_ID]
    assert first["time"].endswith("Z") and first["event"]["actor"]["role"] == "admin"
    assert lines[-1]["error"].startswith("not msgpack")
    assert base64.b64decode(lines[-1]["payload"]) == b"\xc1 garbage"
    path = tmp_path / "log.jsonl"
    write(path, buf.getvalue())

    r = await import_file(other, path, show_progress=False)
    assert (r["appended"], r["already_present"], r["stream_last_seq"]) == (end, 0, end)
    assert await stored(other) == await stored(conn)  # same order, bytes and message ids

    # replayed on both sides: identical projections (the store times differ: portable)
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    await rebuild(conn, a, show_progress=False)
    await rebuild(other, b, show_progress=False)
    assert file_checksums(a, portable=True) == file_checksums(b, portable=True)
    assert file_checksums(a)["events"] != file_checksums(b)["events"]  # stream_time differs
    # verify of the original's projection against the copy says why it differs (h136)
    v = await verify(other, a, show_progress=False)
    assert not v["equal"] and v["stream_created"] != v["log_stream_created"]
    assert (await verify(other, a, portable=True, show_progress=False))["equal"]
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        _print_verify(v)
    assert "--portable compares without them" in text.getvalue(), text.getvalue()
    assert (await verify(conn, a, show_progress=False))["log_stream_created"] == v["stream_created"]

    # again: nothing appended twice
    r = await import_file(other, path, show_progress=False)
    assert (r["appended"], r["already_present"], r["stream_last_seq"]) == (0, end, end)
    assert await last_seq(other) == end


async def test_import_completes_a_prefix_and_refuses_another_stream(
    conn: Connection, service: CommandService, other: Connection, tmp_path: Path
) -> None:
    await build_history(conn)
    buf = io.StringIO()
    await export(conn, buf, show_progress=False)
    lines = buf.getvalue().splitlines(keepends=True)
    half = tmp_path / "half.jsonl"
    write(half, "".join(lines[:5]))
    full = tmp_path / "full.jsonl"
    write(full, "".join(lines))
    assert (await import_file(other, half, show_progress=False))["appended"] == 5
    r = await import_file(other, full, show_progress=False)  # an interrupted import, resumed
    assert (r["appended"], r["already_present"]) == (len(lines) - 5, 5)
    assert await stored(other) == await stored(conn)

    # a stream holding something else is refused, and left as it was
    wrong = tmp_path / "wrong.jsonl"
    line = json.loads(lines[0])
    line["payload"] = base64.b64encode(b"other bytes").decode()
    write(wrong, json.dumps(line) + "\n")
    with pytest.raises(StreamNotEmpty):
        await import_file(other, wrong, show_progress=False)
    assert await last_seq(other) == len(lines)


async def test_bad_export_files(other: Connection, tmp_path: Path) -> None:
    cases: dict[str, str] = {
        "notjson": "{nope\n",
        "order": '{"seq": 2, "subject": "netledger.evt.registry", "payload": ""}\n'
        '{"seq": 1, "subject": "netledger.evt.registry", "payload": ""}\n',
        "nopayload": '{"seq": 1, "subject": "netledger.evt.registry"}\n',
    }
    for name, text in cases.items():
        p = tmp_path / f"{name}.jsonl"
        write(p, text)
        with pytest.raises(BadExport):
            await import_file(other, p, show_progress=False)
    assert await last_seq(other) == 0


async def test_cli_export_import(
    conn: Connection, service: CommandService, nats_url: str, other: Connection, tmp_path: Path
) -> None:
    await build_history(conn)
    out = tmp_path / "part.jsonl"
    r: Any = await cli_json(
        "--nats", nats_url, "export", "--from-seq", "2", "--to-seq", "4", "--out", str(out)
    )
    assert (r["messages"], r["first_seq"], r["last_seq"]) == (3, 2, 4)
    other_url = other.nc.connected_url
    assert other_url is not None
    url = f"nats://{other_url.hostname}:{other_url.port}"
    r = await cli_json("--nats", url, "import", str(out))
    assert (r["appended"], r["stream_last_seq"]) == (3, 3)
    # a part of the log is stored from 1 on, and the result says so
    assert (r["renumbered"], r["first_seq_in_file"]) == (True, 2)
    r = await cli_json("--nats", url, "import", str(out))
    assert r["appended"] == 0


async def test_a_partial_export_is_said_to_be_renumbered_and_a_gap_refused(
    conn: Connection, service: CommandService, nats_url: str, other: Connection, tmp_path: Path
) -> None:
    """Line i is stored as seq i: an export made with --from-seq N lands N-1 lower, which the
    import now says (it did so silently); a file with a gap is refused before anything is
    appended (the messages after it would shift). Found by review."""
    await build_history(conn)
    part = tmp_path / "part.jsonl"
    await cli_json("--nats", nats_url, "export", "--from-seq", "3", "--out", str(part))
    other_url = other.nc.connected_url
    assert other_url is not None
    url = f"nats://{other_url.hostname}:{other_url.port}"
    r = await asyncio.to_thread(invoke, "--nats", url, "import", str(part))
    assert r.exit_code == 0, r.output
    assert "starts at seq 3" in r.stderr and "each 2 lower" in r.stderr
    whole = tmp_path / "whole.jsonl"
    await cli_json("--nats", nats_url, "export", "--out", str(whole))
    lines = whole.read_text().splitlines()
    gap = tmp_path / "gap.jsonl"
    gap.write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    before = await last_seq(other)
    bad = await cli_json("--nats", url, "import", str(gap), code=1)
    assert bad["error"]["code"] == "bad_export" and "has a gap" in bad["error"]["message"]
    assert await last_seq(other) == before
