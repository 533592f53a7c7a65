"""Review hrev15: ``import`` validates the whole file before appending anything (docs/audit.md
"Import": "JSON, subjects, payloads, increasing seq, so a bad line never leaves half an
import"): a line whose subject is not an event subject of the stream, or whose headers are not
text, is refused with ``bad_export`` and nothing is appended; a file that is not UTF-8 text is
``bad_export`` too, not a traceback. Real nats-server, the CLI in-process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from netledger.cli import cli
from netledger.journal.stream import Connection, last_seq

GOOD = {
    "seq": 1,
    "subject": "netledger.evt.registry",
    "payload": "AAAA",
    "headers": {"Nats-Msg-Id": "c1:0"},
}


def second(**over: Any) -> dict[str, Any]:
    return {**GOOD, "seq": 2, "headers": {"Nats-Msg-Id": "c2:0"}, **over}


async def import_json(nats_url: str, path: Path) -> tuple[int, Any]:
    def go() -> Any:
        return CliRunner().invoke(cli, ["--nats", nats_url, "--json", "import", str(path)])

    r = await asyncio.to_thread(go)
    assert isinstance(r.exception, SystemExit | None), repr(r.exception)  # no traceback
    return r.exit_code, json.loads(r.stdout) if r.stdout.strip() else None


@pytest.mark.parametrize(
    "bad",
    [
        second(subject="elsewhere.x"),  # outside the stream: no stream answers
        second(subject="netledger.evt.*"),  # a wildcard: the server would store it as a name
        second(subject="netledger.evt.>"),
        second(subject="netledger.evt..x"),  # an empty token
        second(subject="netledger.evt.a b"),
        second(subject=""),
        second(headers={"Nats-Msg-Id": 5}),  # not text
        second(headers={"X-App": {"a": 1}}),
        second(headers={"Nats-Msg-Id": "c2:0\r\nX-Injected: 1"}),  # a second header smuggled in
    ],
    ids=[
        "outside",
        "star",
        "gt",
        "empty-token",
        "space",
        "empty",
        "int-header",
        "dict-header",
        "crlf-header",
    ],
)
async def test_a_bad_line_is_refused_before_anything_is_appended(
    conn: Connection, nats_url: str, tmp_path: Path, bad: dict[str, Any]
) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps(bad) + "\n")
    code, out = await import_json(nats_url, path)
    assert code == 1 and out is not None, out
    assert out["error"]["code"] == "bad_export", out
    assert out["error"]["details"]["line"] == 2
    assert await last_seq(conn) == 0  # not half an import


async def test_a_file_that_is_not_text_is_a_bad_export(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe garbage\n")
    code, out = await import_json(nats_url, path)
    assert code == 1 and out is not None and out["error"]["code"] == "bad_export", out
    assert await last_seq(conn) == 0
