"""``netledger revert --command-id ID`` with neither ``--db`` nor ``--since`` uses the projection
``show`` and ``audit`` read on this machine — when it is one of this stream — instead of reading
the whole log (issue 13: the read follows the command, not the log's age).

Real nats-server, command service, projector file and CLI process; the read is measured by the
messages the revert reports it read."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import sys
from pathlib import Path

from netledger.journal.stream import Connection, last_seq
from netledger.projector.runner import project_until
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.replay.test_revert_since import busy_log


async def cli(url: str, data: Path, *argv: str) -> tuple[int, str, str]:
    """``netledger revert ...`` with ``NETLEDGER_DATA`` naming where the projection is found."""
    exe = Path(sys.executable).with_name("netledger")
    env = {**os.environ, "NETLEDGER_DATA": str(data)}
    env.pop("NETLEDGER_DB", None)
    p = await asyncio.create_subprocess_exec(
        str(exe),
        "--nats",
        url,
        "--role",
        "admin",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await p.communicate()
    return p.returncode or 0, out.decode(), err.decode()


async def test_the_projection_here_finds_the_command(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    await busy_log(Client(conn))
    here = tmp_path / "data"
    here.mkdir()
    await project_until(conn, here / "projection.db")
    end = await last_seq(conn)

    argv = ("revert", "--command-id", "target", "--dry-run", "--json")
    rc, out, err = await cli(nats_url, here, *argv)
    assert rc == 0, err
    got = json.loads(out)
    assert [e["type"] for e in got["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    assert f"through the projection {here / 'projection.db'}" in err
    # The command's two messages, fetched by sequence; the projection is not behind.
    assert got["log_messages_read"] == 2

    # A projection of another stream (another cloud's, in the default folder) is not used:
    # its sequences would name other messages. The whole log is read, and the notice says why.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(here / "projection.db", other / "projection.db")
    with sqlite3.connect(other / "projection.db") as c:
        c.execute("UPDATE projection_state SET stream_created = '2000-01-01T00:00:00+00:00'")
    rc, out, err = await cli(nats_url, other, *argv)
    assert rc == 0, err
    assert json.loads(out)["log_messages_read"] == end
    assert f"read the whole log ({end} messages)" in err
    assert f"not using {other}" in err and "its sequences name other messages" in err

    # No projection at all: the whole log, as before.
    rc, out, err = await cli(nats_url, tmp_path / "none", *argv)
    assert rc == 0, err
    assert json.loads(out)["log_messages_read"] == end
    assert "not using" not in err
