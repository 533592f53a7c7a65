"""serve's snapshot bodies live under its data folder, and what a killed write left there is
removed at the next start (review h120: a SIGKILLed serve left its body in the system's temp
folder until a reboot)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from netledger.common.natsserver import free_port
from netledger.journal.snapshot_store import BODY_PREFIX, CHILD_TIMEOUT_S
from netledger.service.snapshotter import own_tmpdir
from tests.ops.test_serve import _cli

NETLEDGER = str(Path(sys.executable).parent / "netledger")


def _leftovers(folder: Path) -> tuple[Path, Path, Path]:
    """An abandoned body (older than any write may take), one a write may still be making,
    and a file that is not a body."""
    folder.mkdir(parents=True, exist_ok=True)
    old, young, other = folder / f"{BODY_PREFIX}old", folder / f"{BODY_PREFIX}young", folder / "x"
    for f in (old, young, other):
        f.write_bytes(b"body")
    past = time.time() - CHILD_TIMEOUT_S - 60
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    return old, young, other


def test_own_tmpdir_removes_only_abandoned_bodies(tmp_path: Path) -> None:
    old, young, other = _leftovers(tmp_path / "snapshot-tmp")
    assert own_tmpdir(tmp_path) == str(tmp_path / "snapshot-tmp")
    assert not old.exists()
    assert young.exists() and other.exists()
    assert own_tmpdir(tmp_path / "new") == str(tmp_path / "new" / "snapshot-tmp")
    assert (tmp_path / "new" / "snapshot-tmp").is_dir()


def test_own_tmpdir_that_cannot_be_made_leaves_the_system_temp_folder(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")  # a data folder serve cannot make (even as root)
    assert own_tmpdir(tmp_path / "file" / "data") is None


def test_serve_clears_a_killed_writes_body_and_writes_its_own_there(tmp_path: Path) -> None:
    data = tmp_path / "data"
    old, young, _ = _leftovers(data / "snapshot-tmp")
    port = free_port()
    p = subprocess.Popen(
        [
            *(NETLEDGER, "serve", "--data", str(data), "--port", str(port), "--no-projector"),
            *("--snapshot-every", "1", "--snapshot-min-interval", "1s"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = p.stdout.readline() if p.stdout else ""
        assert line.strip() == f"netledger ready: nats://127.0.0.1:{port}"
        assert not old.exists(), "the abandoned body is removed at start"
        assert young.exists(), "a body a write may still be making is kept"
        r = _cli(port, "network", "create", "--label", "a", "--cidr", "10.9.0.0/24")
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 60
        written = 0
        while time.monotonic() < deadline and not written:
            r = _cli(port, "--json", "status")
            assert r.returncode == 0, r.stderr
            [svc] = json.loads(r.stdout)["services"]
            written = svc["snapshots"]["written"]
            time.sleep(0.5)
        assert written >= 1, svc["snapshots"]
        assert svc["snapshots"]["last_error"] is None
        # the moment it was written, also as every other command prints times (review h130)
        at = svc["snapshots"]["last_written_at"]
        assert svc["snapshots"]["last_written_time"] == datetime.datetime.fromtimestamp(
            at, datetime.UTC
        ).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        # the write's own body was removed once stored: only what was there before is left
        assert sorted(x.name for x in (data / "snapshot-tmp").iterdir()) == [
            f"{BODY_PREFIX}young",
            "x",
        ]
    finally:
        p.terminate()
        assert p.wait(30) == 0
