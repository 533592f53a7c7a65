"""Review hrev15: an output path that cannot be written (its folder missing, or a file where a
folder should be) is an error with a stable code and exit 1 — in JSON and in text — not a
Python traceback; nothing is left behind. Real nats-server, the CLI in-process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from netledger.cli import cli
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


async def _history(conn: Connection) -> None:
    await Client(conn).request("floating_ip.pool_create", {"pool": "pub", "cidr": "203.0.113.0/28"})


@pytest.mark.parametrize(
    ("command", "where"),
    [("export", "missing-folder"), ("export", "under-a-file"), ("replay", "under-a-file")],
)
async def test_an_unwritable_output_is_an_error_with_a_code(
    conn: Connection,
    service: CommandService,
    nats_url: str,
    tmp_path: Path,
    command: str,
    where: str,
) -> None:
    await _history(conn)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    # (replay creates the missing folders of --db: only a file in the way stops it)
    out = (tmp_path / "nowhere" if where == "missing-folder" else blocker) / "out.x"
    argv = ["export", "--out", str(out)] if command == "export" else ["replay", "--db", str(out)]
    codes = []
    for form in (["--json"], []):
        r = await asyncio.to_thread(invoke, "--nats", nats_url, *form, *argv)
        assert isinstance(r.exception, SystemExit), repr(r.exception)  # not a traceback
        assert r.exit_code == 1, r.output
        if form:
            codes.append(json.loads(r.stdout)["error"]["code"])
        else:
            assert r.stderr.startswith("error ["), r.stderr
            codes.append(r.stderr.split("]")[0].removeprefix("error ["))
    assert codes[0] == codes[1] == "output_unwritable"
    assert not out.exists() and blocker.read_text() == "x"
