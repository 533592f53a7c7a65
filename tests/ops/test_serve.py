"""``netledger serve`` on the embedded default: ready line, commands, clean stop, no orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netledger.common.natsserver import free_port
from netledger.journal.stream import Connection

NETLEDGER = str(Path(sys.executable).parent / "netledger")


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _serve(tmp: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [NETLEDGER, "serve", "--data", str(tmp / "data"), "--port", str(port), "--no-projector"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NETLEDGER, "--nats", f"nats://127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_embedded_roundtrip_and_clean_stop(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    p = _serve(tmp_path, port)
    try:
        line = p.stdout.readline() if p.stdout else ""
        assert line.strip() == f"netledger ready: nats://127.0.0.1:{port}"
        kids = _children(p.pid)
        assert kids, "serve should run a nats-server child"
        r = _cli(
            port,
            "--json",
            "network",
            "create",
            "--label",
            "a",
            "--cidr",
            "10.9.0.0/24",
            "--mode",
            "flat",
        )
        assert r.returncode == 0, r.stderr
        r = _cli(port, "--json", "fixed-ip", "allocate", "--instance", "i-1", "--network", "1")
        assert r.returncode == 0 and '"address": "10.9.0.2"' in r.stdout
        p.send_signal(sig)
        assert p.wait(20) == 0
        time.sleep(0.2)
        assert not any(_alive(k) for k in kids), "nats-server left running"
        err = p.stderr.read() if p.stderr else ""
        assert "nats-server" in err and "v2." in err  # which binary and version it runs
        assert err.rstrip().endswith("netledger: stopped"), err  # said once all has stopped
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_serve_sigkill_leaves_no_orphan(tmp_path: Path) -> None:
    port = free_port()
    p = _serve(tmp_path, port)
    try:
        assert "ready" in (p.stdout.readline() if p.stdout else "")
        kids = _children(p.pid)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(k) for k in kids):
            time.sleep(0.05)
        assert not any(_alive(k) for k in kids)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_data_survives_restart(tmp_path: Path) -> None:
    port = free_port()
    p = _serve(tmp_path, port)
    try:
        assert "ready" in (p.stdout.readline() if p.stdout else "")
        assert (
            _cli(
                port, "network", "create", "--label", "a", "--cidr", "10.9.0.0/24", "--mode", "flat"
            ).returncode
            == 0
        )
        assert (
            _cli(port, "fixed-ip", "allocate", "--instance", "i-1", "--network", "1").returncode
            == 0
        )
    finally:
        p.terminate()
        p.wait(20)
    p = _serve(tmp_path, port)
    try:
        assert "ready" in (p.stdout.readline() if p.stdout else "")
        r = _cli(port, "--json", "fixed-ip", "allocate", "--instance", "i-2", "--network", "1")
        assert '"address": "10.9.0.3"' in r.stdout, r
    finally:
        p.terminate()
        p.wait(20)


def test_cli_against_a_server_without_the_log_is_a_clear_error(
    nats_url: str, tmp_path: Path
) -> None:
    """A server that holds no netledger stream (nothing created it, or another server or
    account): every reader says so with a stable code, not nats-py's traceback."""
    port = int(nats_url.rsplit(":", 1)[1])
    for args in (
        ("projector", "run", "--once", "--db", str(tmp_path / "p.db")),
        ("export",),
        ("audit", "address", "10.0.0.1", "--from-log"),
        ("status",),
    ):
        r = _cli(port, *args)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.startswith("error [log_not_found]: the NATS server at"), (args, r.stderr)
        assert "netledger serve" in r.stderr and "Traceback" not in r.stderr
    r = _cli(port, "--json", "export")
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"]["code"] == "log_not_found"


def test_cli_without_server_is_a_clear_error(tmp_path: Path) -> None:
    r = _cli(free_port(), "network", "list")
    assert r.returncode == 1
    assert "error [unavailable]" in r.stderr
    # the cause, not nats-py's bare timeout after its retries
    assert "connection refused" in r.stderr and "TimeoutError" not in r.stderr, r.stderr


def test_an_unreachable_default_url_names_the_serve_running_here() -> None:
    """README's serve takes --port; a later command without --nats went to 4222 and said only
    "connection refused" (review h130). The serve's pointer names where it listens."""
    from netledger.common.output import Output
    from netledger.common.settings import Settings, serve_hint
    from netledger.events.codec import Actor
    from netledger.events.errors import NetworkNotFound, Unavailable
    from netledger.journal.stream import _connect_failure

    refused = Unavailable(
        _connect_failure("nats://127.0.0.1:4222", ConnectionRefusedError(111, "refused"), [], 5)
    )

    def settings(nats: str | None, serves: list[str]) -> Settings:
        return Settings(nats, Output(), None, None, None, Actor(), local_serves=lambda: serves)

    hinted = serve_hint(refused, settings(None, ["nats://127.0.0.1:46497"]))
    assert isinstance(hinted, Unavailable) and hinted.code == "unavailable"
    assert hinted.message.startswith(refused.message + ". A ")  # two sentences
    assert hinted.message.endswith(
        " A `netledger serve` on this machine listens on nats://127.0.0.1:46497:"
        " give --nats nats://127.0.0.1:46497 or set NATS_URL."
    )
    two = serve_hint(refused, settings(None, ["nats://127.0.0.1:1", "nats://127.0.0.1:2"]))
    assert two.message.endswith(
        " 2 `netledger serve`s on this machine listen on nats://127.0.0.1:1, nats://127.0.0.1:2:"
        " give --nats with one of them or set NATS_URL."
    ), two.message
    # an explicit --nats / NATS_URL was meant; a serve on the default URL is not elsewhere;
    # no serve here; another error
    assert serve_hint(refused, settings("nats://127.0.0.1:4222", ["nats://x:1"])) is refused
    assert serve_hint(refused, settings(None, ["nats://127.0.0.1:4222"])) is refused
    assert serve_hint(refused, settings(None, [])) is refused
    other = NetworkNotFound("network 9 does not exist", network_id="9")
    assert serve_hint(other, settings(None, ["nats://127.0.0.1:46497"])) is other


def test_commands_without_a_url_go_to_the_serve_running_here(tmp_path: Path) -> None:
    """``serve --port N`` (4222 taken) and the commands after it with no ``--nats``: they go
    to that serve, found by its pointer file as ``show`` finds its projection (review h130:
    they went to 4222 — nothing there, or worse another server). ``config show`` names it."""
    port = free_port()
    p = _serve(tmp_path, port)
    env = {k: v for k, v in os.environ.items() if k not in ("NATS_URL", "NETLEDGER_CONFIG")}
    env["HOME"] = str(tmp_path / "home")  # (no configuration file of the machine's)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [NETLEDGER, *args], capture_output=True, text=True, timeout=60, env=env
        )

    try:
        line = p.stdout.readline() if p.stdout else ""
        assert line.strip() == f"netledger ready: nats://127.0.0.1:{port}"
        r = cli(
            "--json", "network", "create", "--label", "a", "--cidr", "10.9.0.0/24", "--mode", "flat"
        )
        assert r.returncode == 0, r.stderr
        r = cli("--json", "fixed-ip", "allocate", "--instance", "i-1", "--network", "1")
        assert r.returncode == 0 and json.loads(r.stdout)["address"] == "10.9.0.2", r
        r = cli("--json", "config", "show")
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["settings"]["nats_url"] == {
            "value": f"nats://127.0.0.1:{port}",
            "source": "the netledger serve running here",
        }
        # A URL given wins over the serve found.
        r = cli("--nats", f"nats://127.0.0.1:{free_port()}", "network", "list")
        assert r.returncode == 1 and "error [unavailable]" in r.stderr, r
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(20) == 0
    # Gone, its pointer with it: the default again.
    r = cli("--json", "config", "show")
    assert json.loads(r.stdout)["settings"]["nats_url"] == {
        "value": "nats://127.0.0.1:4222",
        "source": "default",
    }


def test_a_connection_reset_while_connecting_points_at_credentials() -> None:
    """A server refusing credentials may reset the connection before its -ERR is read."""
    from netledger.journal.stream import _connect_failure

    reset = ConnectionResetError(104, "Connection reset by peer")
    msg = _connect_failure("nats://127.0.0.1:4222", reset, [], 5.0)
    assert msg.startswith("cannot connect to NATS at nats://127.0.0.1:4222:")
    assert "are credentials (--creds, --user/--password) needed, or wrong?" in msg


def test_an_embedded_server_whose_port_is_taken_says_so_first(tmp_path: Path) -> None:
    import socket

    from netledger.common.natsserver import EmbeddedNats, NatsServerError

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        server = EmbeddedNats(data_dir=tmp_path, port=port)
        with pytest.raises(NatsServerError) as info:
            server.start(timeout=20)
    first = str(info.value).splitlines()[0]
    assert f"port {port} is in use (another nats-server or `netledger serve`?" in first
    assert "--port chooses another" in first and str(tmp_path / "nats-server.log") in first


def test_serve_with_a_data_folder_it_cannot_use_is_a_clear_error(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where a folder of the folder is needed
    p = subprocess.run(
        [NETLEDGER, "serve", "--data", str(blocked / "data"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    assert f"error [nats_server_error]: cannot use {blocked / 'data'} for the embedded" in p.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "-1"], "--port"),
        (["--replicas", "0"], "--replicas"),
        (["--replicas", "9"], "--replicas"),
        (["--release-timeout", "-5"], "--release-timeout"),
        (["--sync-interval", "garbage"], "--sync-interval"),
        (["--sync-interval", "2"], "--sync-interval"),
    ],
)
def test_serve_refuses_bad_settings_before_starting_anything(
    tmp_path: Path, args: list[str], named: str
) -> None:
    """A usage error (exit 2) naming the option — not nats-server's banner as the cause, a
    traceback from the stream's creation, or a service that runs with a negative timeout."""
    from click.testing import CliRunner

    from netledger.cli import cli

    r = CliRunner().invoke(cli, ["serve", "--data", str(tmp_path / "d"), *args])
    assert r.exit_code == 2, r.output
    assert named in r.output
    assert not (tmp_path / "d").exists()


def test_sync_interval_takes_go_durations() -> None:
    from netledger.cli import _sync_interval

    for ok in ("always", "default", "2s", "500ms", "1m30s", "1.5s"):
        assert _sync_interval(None, None, ok) == ok  # type: ignore[arg-type]


async def test_a_stream_the_server_refuses_is_log_not_created(
    conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """3 replicas on a server without a cluster: the server's reason, with a stable code
    (it was a nats-py traceback); an existing stream keeps its replicas, with a warning."""
    from netledger.events.errors import LogNotCreated
    from netledger.journal.stream import ensure_stream

    await conn.js.delete_stream(conn.stream)  # the fixture made it
    with pytest.raises(LogNotCreated) as e:
        await ensure_stream(conn, replicas=3)
    assert e.value.code == "log_not_created"
    assert "non-clustered" in e.value.message and "3 replica(s)" in e.value.message
    await ensure_stream(conn)  # created with 1
    await ensure_stream(conn, replicas=3)  # exists: kept, said
    assert "has 1 replica(s), not the 3 asked for" in caplog.text
    assert (await conn.js.stream_info(conn.stream)).config.num_replicas == 1


def test_serve_restarts_a_killed_nats_server_and_says_why(tmp_path: Path) -> None:
    """The embedded nats-server killed under serve: serve notices, restarts it, checks the
    stream is what it was, and serves again — saying the server exited (not that "space is
    back", which is the disk-full story)."""
    port = free_port()
    p = _serve(tmp_path, port)
    try:
        assert "ready" in (p.stdout.readline() if p.stdout else "")
        r = _cli(port, "network", "create", "--label", "a", "--cidr", "10.9.0.0/24")
        assert r.returncode == 0, r.stderr
        r = _cli(port, "--json", "fixed-ip", "allocate", "--instance", "i-1", "--network", "1")
        assert r.returncode == 0, r.stderr
        first = json.loads(r.stdout)["address"]
        [server] = [k for k in _children(p.pid) if "nats-server" in _cmdline(k)]
        os.kill(server, signal.SIGKILL)
        r = _cli(port, "--json", "fixed-ip", "allocate", "--instance", "i-2", "--network", "1")
        assert r.returncode == 0, r.stderr  # the client waited for the restart
        second = json.loads(r.stdout)["address"]
        assert int(second.rsplit(".", 1)[1]) == int(first.rsplit(".", 1)[1]) + 1  # i-1's kept
        assert p.poll() is None
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)
    err = p.stderr.read() if p.stderr else ""
    assert "the embedded nats-server exited (killed by SIGKILL)" in err, err
    assert "restarting nats-server: it exited (attempt 1 of 5)" in err, err
    assert "space is back" not in err and "store write error" not in err, err


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""
