"""``export --to-seq N`` with N past the log's end is refused as ``replay`` refuses it
(``seq_beyond_stream``, exit 1), and writes nothing: it exported quietly to the end, which read
as a log that holds N. Real nats-server, the CLI in-process."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netledger.cli import cli
from netledger.journal.stream import Connection, last_seq
from netledger.replay.archive import export
from netledger.replay.errors import SeqBeyondStream
from netledger.service.client import Client
from netledger.service.service import CommandService


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


async def test_export_to_a_seq_past_the_end_is_refused_as_replay_refuses_it(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    await Client(conn).request("floating_ip.pool_create", {"pool": "pub", "cidr": "203.0.113.0/28"})
    end = await last_seq(conn)
    beyond = str(end + 5)

    with pytest.raises(SeqBeyondStream):
        await export(conn, io.StringIO(), to_seq=end + 5, show_progress=False)

    out = tmp_path / "kept.jsonl"
    out.write_text("an earlier export\n")
    replayed = tmp_path / "r.db"
    for form in (["--json"], []):
        e = await asyncio.to_thread(
            invoke, "--nats", nats_url, *form, "export", "--to-seq", beyond, "--out", str(out)
        )
        r = await asyncio.to_thread(
            invoke, "--nats", nats_url, *form, "replay", "--db", str(replayed), "--to-seq", beyond
        )
        assert e.exit_code == r.exit_code == 1, e.output + r.output
        if form:
            error = json.loads(e.stdout)["error"]
            assert error["code"] == json.loads(r.stdout)["error"]["code"] == "seq_beyond_stream"
            assert error["details"] == {"to_seq": end + 5, "stream_last_seq": end}
        else:
            assert e.stderr.startswith("error [seq_beyond_stream]: "), e.stderr
        assert out.read_text() == "an earlier export\n"  # not truncated by the refusal
    e = await asyncio.to_thread(invoke, "--nats", nats_url, "export", "--to-seq", beyond)
    assert e.exit_code == 1 and e.stdout == "", e.output  # nothing on stdout either

    # Up to the end itself is still an export of the whole log.
    e = await asyncio.to_thread(
        invoke, "--nats", nats_url, "--json", "export", "--to-seq", str(end), "--out", str(out)
    )
    assert e.exit_code == 0, e.output
    assert json.loads(e.stdout)["last_seq"] == end
    assert len(out.read_text().splitlines()) == end


async def test_export_says_1_message_and_no_range_for_none(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    await Client(conn).request("floating_ip.pool_create", {"pool": "pub", "cidr": "203.0.113.0/28"})
    end = await last_seq(conn)
    out = tmp_path / "one.jsonl"
    e = await asyncio.to_thread(
        invoke, "--nats", nats_url, "export", "--to-seq", "1", "--out", str(out)
    )
    assert e.stdout == f"exported 1 message (seq 1..1, 0 undecodable) to {out}\n", e.output
    e = await asyncio.to_thread(invoke, "--nats", nats_url, "export", "--to-seq", "1")
    assert e.stderr == "exported 1 message\n", e.stderr
    # Nothing past the end to export: no "seq None..None".
    e = await asyncio.to_thread(
        invoke, "--nats", nats_url, "export", "--from-seq", str(end + 1), "--out", str(out)
    )
    assert e.stdout == f"exported 0 messages to {out}\n", e.output
