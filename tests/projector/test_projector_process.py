"""``serve``'s projector as a process of its own (projector/child.py): its reading of the log no
longer shares the command service's event loop — commands waited seconds behind a catch-up
(bench/RESULTS.md). The child follows the log, says when the projection is open, fails with
its own error, and stops serve when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from netledger.common.natsserver import free_port
from netledger.events.errors import NetledgerError
from netledger.journal.stream import Connection
from netledger.projector.child import ProjectorProcess
from tests.projector.stream_helpers import publish_event
from tests.projector.test_projector_unit import alloc, net

NETLEDGER = str(Path(sys.executable).parent / "netledger")


def _last_seq(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            row = c.execute("SELECT last_seq FROM projection_state").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0]) if row else 0


async def _until_projected(db: Path, seq: int) -> None:
    for _ in range(300):
        if _last_seq(db) >= seq:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"projected to {_last_seq(db)}, not {seq}")


async def test_the_child_follows_the_log_in_its_own_process(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    await publish_event(conn, net("1"))
    child = ProjectorProcess(nats_url, db, linger=0.0)
    await child.start()  # the projection is open
    try:
        assert child.proc is not None and child.proc.pid != os.getpid()
        for i in range(2, 5):
            await publish_event(conn, alloc(f"10.0.0.{i}", f"i{i}"), i)
        await _until_projected(db, 4)
    finally:
        await child.close()
    assert child.proc.returncode == 0  # a clean stop


async def test_a_child_that_cannot_open_the_projection_says_why(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "p.db"
    db.write_text("not a database")
    child = ProjectorProcess(nats_url, db)
    with pytest.raises(NetledgerError) as err:
        await child.start()
    assert err.value.code.startswith("projection") or err.value.code.startswith("projector")
    assert str(db) in err.value.message


async def test_a_child_killed_is_its_supervisors_failure(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    child = ProjectorProcess(nats_url, tmp_path / "p.db")
    await child.start()
    try:
        assert child.proc is not None
        child.proc.send_signal(signal.SIGKILL)
        failure = await asyncio.wait_for(child.wait_failed(), 30)
    finally:
        await child.close()
    assert failure.code == "projector_error" and "signal 9" in failure.message


def test_serve_stops_when_its_projector_process_dies(tmp_path: Path) -> None:
    port = free_port()
    p = subprocess.Popen(
        [NETLEDGER, "serve", "--data", str(tmp_path / "data"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert p.stdout is not None and "ready" in p.stdout.readline()
        out = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(p.pid)], capture_output=True, text=True
        ).stdout.splitlines()
        [projector] = [int(line.split()[0]) for line in out if "projector" in line]
        os.kill(projector, signal.SIGKILL)
        assert p.wait(timeout=60) == 1
        assert p.stderr is not None and "projector" in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


async def test_the_childs_metrics_are_on_their_own_port(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    """serve's --metrics-port is the service's process; the projector's metrics come from its
    child, on ``serve --projector-metrics-port``."""
    import urllib.request

    db = tmp_path / "p.db"
    await publish_event(conn, net("1"))
    port = free_port()
    child = ProjectorProcess(nats_url, db, linger=0.0, metrics_port=port)
    await child.start()
    try:
        await _until_projected(db, 1)
        url = f"http://127.0.0.1:{port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
    finally:
        await child.close()
    assert b"netledger_projector_events_total" in body


def test_the_child_reads_its_settings_from_the_clis_own_environment_variables() -> None:
    """serve hands the child its NATS settings through the environment, under the names the
    CLI's options read (written in projector/child.py, which may not import the CLI): a name
    changed on one side only would start a child without credentials."""
    from netledger.cli import cli
    from netledger.projector import child

    envvar = {p.name: p.envvar for p in cli.params}
    assert child._ENV == {k: envvar[k] for k in ("creds", "user", "password")}
    assert child._ENV_INBOX == envvar["inbox_prefix"]
    env = child.ProjectorProcess("nats://127.0.0.1:1", Path("p.db")).env()
    assert env[str(envvar["nats_url"])] == "nats://127.0.0.1:1"
