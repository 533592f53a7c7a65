"""The client finds the projection of a `netledger serve --data DIR` on the same machine (issue 17,
point 3): serve leaves a pointer file while it runs; without --db / NETLEDGER_DB / NETLEDGER_DATA,
`show`, `audit`, `projector status`, `verify` and `status` read that projection; when none is
found the error (projection_not_found) names where it looked and how to point at one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from netledger.common.natsserver import free_port
from netledger.ops import locate
from netledger.projector.errors import ProjectionNotFound

NETLEDGER = str(Path(sys.executable).parent / "netledger")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A user of their own: a home, a runtime folder, no NETLEDGER_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NETLEDGER_", "NATS_URL"))}
    env |= {
        "HOME": str(tmp_path / "home"),
        "XDG_RUNTIME_DIR": str(tmp_path / "run"),
        "NETLEDGER_CONFIG": "",
        "PYTHONUNBUFFERED": "1",
    }
    (tmp_path / "home").mkdir()
    (tmp_path / "run").mkdir(mode=0o700)
    for k in [k for k in os.environ if k.startswith(("NETLEDGER_", "NATS_URL"))]:
        monkeypatch.delenv(k)
    for k in ("HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(k, env[k])
    return env


# --- resolution, unit by unit ------------------------------------------------------------------


def _pointer(pid: int, data: Path, url: str, started: str | None = None) -> Path:
    folder = locate.pointer_dir()
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"serve-{pid}.json"
    p.write_text(
        json.dumps(
            {
                "pid": pid,
                "started": started if started is not None else locate._start_time(pid),
                "data_dir": str(data),
                "db": str(data / "projection.db"),
                "nats_url": url,
            }
        )
    )
    return p


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_resolution_order(
    home: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = Path(home["HOME"]) / ".local/share/netledger/projection.db"
    assert locate.pointer_dir() == tmp_path / "run" / "netledger"
    with pytest.raises(ProjectionNotFound) as exc:
        locate.projection_db()
    assert str(locate.pointer_dir()) in exc.value.message and str(default) in exc.value.message
    assert "--db" in exc.value.message and "NETLEDGER_DATA" in exc.value.message
    # the default data folder's projection, once it exists
    default.parent.mkdir(parents=True)
    default.write_bytes(b"")
    assert locate.projection_db() == default
    # a running serve (this process stands in for it) wins over the default folder
    a = tmp_path / "a"
    pa = _pointer(os.getpid(), a, "nats://127.0.0.1:4333")
    assert locate.projection_db() == a / "projection.db"
    assert locate.projection_db("nats://localhost:4333") == a / "projection.db"
    # another URL named: not this serve's log, so not its projection
    assert locate.projection_db("nats://127.0.0.1:4444") == default
    # a pointer of a dead process, or of a reused pid (another start time), is ignored
    _pointer(_dead_pid(), tmp_path / "dead", "nats://127.0.0.1:4555")
    assert locate.projection_db("nats://127.0.0.1:4555") == default
    _pointer(os.getppid(), tmp_path / "reused", "nats://127.0.0.1:4666", started="1")
    assert locate.projection_db() == a / "projection.db"
    # NETLEDGER_DATA names the folder outright
    monkeypatch.setenv("NETLEDGER_DATA", str(tmp_path / "explicit"))
    assert locate.projection_db() == tmp_path / "explicit" / "projection.db"
    pa.unlink()


def test_two_serves_need_a_choice(home: dict[str, str], tmp_path: Path) -> None:
    other = subprocess.Popen(["sleep", "60"])
    try:
        _pointer(os.getpid(), tmp_path / "a", "nats://127.0.0.1:4333")
        _pointer(other.pid, tmp_path / "b", "nats://127.0.0.1:4334")
        with pytest.raises(locate.ProjectionAmbiguous) as exc:
            locate.projection_db()
        assert exc.value.code == "projection_ambiguous" and "--nats" in exc.value.message
        assert locate.projection_db("nats://127.0.0.1:4334") == tmp_path / "b" / "projection.db"
        assert locate.status_dbs("nats://127.0.0.1:4333") == [tmp_path / "a" / "projection.db"]
    finally:
        other.kill()
        other.wait()


def test_a_new_pointer_prunes_dead_ones(home: dict[str, str], tmp_path: Path) -> None:
    dead = _pointer(_dead_pid(), tmp_path / "dead", "nats://127.0.0.1:4555")
    mine = locate.write_pointer(tmp_path / "d", tmp_path / "d" / "projection.db", "nats://x:1")
    assert mine is not None and mine.exists() and not dead.exists()
    assert [s.pid for s in locate.running()] == [os.getpid()]
    locate.remove_pointer(mine)
    assert locate.running() == []


# --- a real serve, the client in other processes -----------------------------------------------


def _cli(
    env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NETLEDGER, *args], capture_output=True, text=True, env=env, timeout=60, cwd=cwd
    )


def _json(env: dict[str, str], *args: str) -> Any:
    r = _cli(env, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def _caught_up(env: dict[str, str], url: str) -> None:
    """Wait until the projection has what the stream has (the projector runs on its own)."""
    end = _json(env, "--nats", url, "status", "--json")["stream"]["last_seq"]
    deadline = time.monotonic() + 60
    while _json(env, "projector", "status", "--json")["last_seq"] < end:
        assert time.monotonic() < deadline, "the projector did not catch up"
        time.sleep(0.05)


def test_show_and_audit_find_the_projection_of_serve_data(
    home: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    data = tmp_path / "elsewhere" / "netledger-data"
    work = tmp_path / "work"
    work.mkdir()
    data.parent.mkdir()
    serve = subprocess.Popen(
        [NETLEDGER, "serve", "--data", "netledger-data", "--port", str(port)],
        cwd=data.parent,  # a relative --data, as in the quick start
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=home,
    )
    try:
        assert serve.stdout is not None
        assert serve.stdout.readline().strip() == f"netledger ready: {url}"
        pointers = list((tmp_path / "run" / "netledger").glob("serve-*.json"))
        assert [json.loads(p.read_text())["db"] for p in pointers] == [str(data / "projection.db")]
        for args in (
            ("network", "create", "--label", "a", "--cidr", "10.9.0.0/24", "--mode", "flat"),
            ("fixed-ip", "allocate", "--instance", "i-1", "--network", "1"),
        ):
            assert _cli(home, "--nats", url, *args).returncode == 0
        _caught_up(home, url)
        # no --db, no NETLEDGER_DATA, another working folder: found through the pointer
        ips = _json(home, "show", "fixed-ips", "--json")
        assert [(r["address"], r["instance"]) for r in ips] == [("10.9.0.2", "i-1")]
        text = _cli({**home, "COLUMNS": "200"}, "show", "networks", cwd=work)
        assert text.returncode == 0 and "10.9.0.0/24" in text.stdout
        history = _json(home, "audit", "address", "10.9.0.2", "--json")
        assert [h["type"] for h in history] == ["FixedIpAllocated"]
        assert _json(home, "projector", "status", "--json")["last_seq"] >= 2
        # status checks the projection of the serve on its NATS URL without being told
        st = _json(home, "--nats", url, "status", "--json")
        assert [p["db"] for p in st["projectors"]] == [str(data / "projection.db")]
        assert _json(home, "--nats", url, "verify", "--json")["equal"] is True
        # an explicit --db still wins
        r = _cli(home, "show", "networks", "--db", str(tmp_path / "none.db"), "--json")
        assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "projection_not_found"
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    # stopped: the pointer is gone, and the error says where it looked and what to do
    assert list((tmp_path / "run" / "netledger").glob("serve-*.json")) == []
    r = _cli(home, "show", "networks", "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "projection_not_found"
    assert err["details"]["looked_at"] == [
        str(tmp_path / "run" / "netledger"),
        str(tmp_path / "home" / ".local/share/netledger/projection.db"),
    ]
    r = _cli(home, "audit", "address", "10.9.0.2")
    assert r.returncode == 1 and r.stderr.startswith("error [projection_not_found]: ")
    assert "--db FILE" in r.stderr and "NETLEDGER_DATA=DIR" in r.stderr
    # pointed at explicitly, the stopped serve's projection is still readable
    env = {**home, "NETLEDGER_DATA": str(data)}
    assert [r["address"] for r in _json(env, "show", "fixed-ips", "--json")] == ["10.9.0.2"]


def test_a_killed_serve_leaves_a_pointer_that_is_ignored(
    home: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    serve = subprocess.Popen(
        [NETLEDGER, "serve", "--data", str(tmp_path / "d"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=home,
    )
    try:
        assert serve.stdout is not None and "ready" in serve.stdout.readline()
        serve.send_signal(signal.SIGKILL)
        serve.wait(10)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
    assert len(list((tmp_path / "run" / "netledger").glob("serve-*.json"))) == 1
    r = _cli(home, "show", "networks", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "projection_not_found"
