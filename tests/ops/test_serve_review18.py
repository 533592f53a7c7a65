"""Review hrev18: two ``netledger serve`` on one data folder.

Found by review: nothing kept a second ``serve --data D`` (another ``--port``) from running its
own nats-server on D's JetStream store while the first one ran on it. Both servers took writes
into the same stream files: each acknowledged an allocation of the same address to another
instance, the first serve's projector died (``UNIQUE constraint failed: events.seq``), and after
a restart the log held only one server's messages — acknowledged allocations gone. (On the same
``--port`` the second nats-server also opened the store, restoring its streams, before it failed
to listen.) Real ``serve`` processes and nats-servers.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from netledger.common.natsserver import free_port

from .test_serve import NETLEDGER, _alive, _children


def _serve(data: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [NETLEDGER, "serve", "--data", str(data), "--port", str(port), "--no-projector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _stop(p: subprocess.Popen[str]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def test_a_second_serve_on_the_same_data_folder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = _serve(data, free_port())
    second: subprocess.Popen[str] | None = None
    try:
        assert "ready" in (first.stdout.readline() if first.stdout else "")
        conf = (data / "nats-server.conf").read_text()
        second = _serve(data, free_port())
        # Refused: it exits without a ready line (before the fix it printed one and ran on).
        line = second.stdout.readline() if second.stdout else ""
        assert "netledger ready" not in line, "a second serve ran on the same store"
        assert second.wait(60) == 1
        err = second.stderr.read() if second.stderr else ""
        assert "error [data_dir_in_use]" in err, err
        assert str(data) in err and "Traceback" not in err
        # The first one's server and files are untouched.
        assert first.poll() is None
        assert (data / "nats-server.conf").read_text() == conf
    finally:
        if second is not None:
            _stop(second)
        _stop(first)


def test_the_same_port_and_folder_is_refused_before_its_store_is_opened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    first = _serve(data, port)
    try:
        assert "ready" in (first.stdout.readline() if first.stdout else "")
        before = (data / "nats-server.log").read_text(errors="replace")
        p = subprocess.run(
            [NETLEDGER, "serve", "--data", str(data), "--port", str(port), "--no-projector"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 1
        assert "error [data_dir_in_use]" in p.stderr, p.stderr
        # No second nats-server started on the store (it would have restored its streams).
        after = (data / "nats-server.log").read_text(errors="replace")
        assert after[len(before) :].count("Starting restore for stream") == 0
        assert first.poll() is None
    finally:
        _stop(first)


def test_a_serve_killed_with_sigkill_leaves_no_stale_lock(tmp_path: Path) -> None:
    """The folder is free again once the killed serve's nats-server is gone: the next serve
    starts (without waiting for anyone to remove anything)."""
    data = tmp_path / "data"
    first = _serve(data, free_port())
    try:
        assert "ready" in (first.stdout.readline() if first.stdout else "")
        kids = _children(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        _stop(first)
    again = _serve(data, free_port())
    try:
        assert "ready" in (again.stdout.readline() if again.stdout else ""), (
            again.stderr.read() if again.stderr else ""
        )
        assert not any(_alive(k) for k in kids)
    finally:
        _stop(again)
