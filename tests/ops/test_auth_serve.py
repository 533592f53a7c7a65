"""`netledger serve --auth-config` on the embedded default, used with per-role credentials."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from netledger.common.natsserver import free_port
from netledger.ops.auth import read_credentials

NETLEDGER = str(Path(sys.executable).parent / "netledger")


CLAIM_ADMIN = """
import asyncio, os, sys, msgpack, nats
async def main():
    nc = await nats.connect(sys.argv[1], user=os.environ["NETLEDGER_USER"],
                            password=os.environ["NETLEDGER_PASSWORD"],
                            inbox_prefix=os.environ["NETLEDGER_INBOX"])
    req = {"command_id": "c1", "actor": {"role": "admin"},
           "args": {"label": "x", "cidr": "10.8.0.0/24", "mode": "flat"}}
    r = await nc.request("netledger.cmd.network.create", msgpack.packb(req), timeout=10)
    print(msgpack.unpackb(r.data)["error"]["code"])
    await nc.close()
asyncio.run(main())
"""


def _env(creds: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETLEDGER_")}
    for line in creds.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k] = v
    return {**env, "PYTHONUNBUFFERED": "1"}


def test_serve_with_auth_config(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    r = subprocess.run(
        [NETLEDGER, "auth", "init", "--out", str(auth), "--hosts", "h1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert read_credentials(auth / "client.env")["user"] == "client"
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [
            NETLEDGER,
            "serve",
            "--data",
            str(tmp_path / "data"),
            "--port",
            str(port),
            "--auth-config",
            str(auth / "auth.conf"),
        ],
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "serve.err", "w"),
        text=True,
        env=_env(auth / "service.env"),
    )
    try:
        line = serve.stdout.readline() if serve.stdout else ""
        assert "netledger ready" in line, (tmp_path / "serve.err").read_text()

        def cli(role: str, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [NETLEDGER, "--nats", url, *args],
                capture_output=True,
                text=True,
                timeout=60,
                env=_env(auth / f"{role}.env"),
            )

        ok = cli(
            "admin",
            "--json",
            "network",
            "create",
            "--label",
            "a",
            "--cidr",
            "10.7.0.0/24",
            "--mode",
            "flat",
        )
        assert ok.returncode == 0, ok.stderr
        member = ("--role", "member", "--as-project", "p1")
        ok = cli(
            "client",
            *member,
            "--json",
            "fixed-ip",
            "allocate",
            "--instance",
            "i-1",
            "--network",
            "1",
            "--project",
            "p1",
        )
        assert ok.returncode == 0 and "10.7.0.2" in ok.stdout, ok
        # A client cannot make itself admin by claiming the role on the ordinary subject.
        claim = subprocess.run(
            [sys.executable, "-c", CLAIM_ADMIN, url],
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(auth / "client.env"),
        )
        assert claim.returncode == 0, claim.stderr
        assert claim.stdout.strip() == "forbidden"
        # Without credentials the server refuses the connection.
        anon = subprocess.run(
            [NETLEDGER, "--nats", url, "network", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("NETLEDGER_")},
        )
        assert anon.returncode == 1 and "error [unavailable]" in anon.stderr
    finally:
        serve.terminate()
        assert serve.wait(20) == 0
