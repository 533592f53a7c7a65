"""A refusal of these credentials is said once: by the command's error, not also by a warning
from the connection's error callback above it (two messages for one failure on a user's
stderr). A refusal nobody is waiting on (a plain publish) still warns: nothing else says it."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from typing import Any

import pytest

from netledger.journal.stream import connect
from tests.ops.test_auth import NETLEDGER, Secured, _env_from
from tests.ops.test_auth import secured as secured  # the fixtures: real nats-server, auth on
from tests.ops.test_auth import svc as svc


def _as(secured: Secured, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**_env_from(secured.files[user]), "NATS_URL": secured.url}
    return subprocess.run([NETLEDGER, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize(
    "args",
    [
        ("status",),  # a JetStream API request refused (a reader)
        ("--as-project", "p2", "network", "list"),  # a command subject refused (a client)
    ],
)
async def test_a_refused_cli_command_says_only_its_error(
    secured: Secured, svc: Any, args: tuple[str, ...]
) -> None:
    p = await asyncio.to_thread(_as, secured, "client-p1", *args)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.startswith("error [forbidden]: "), p.stderr
    assert p.stderr.count("\n") == 1, p.stderr  # the error's line and nothing else
    assert "WARNING" not in p.stderr, p.stderr

    p = await asyncio.to_thread(_as, secured, "client-p1", "--json", *args)
    assert json.loads(p.stdout)["error"]["code"] == "forbidden", p.stdout
    assert p.stderr == "", p.stderr


async def test_a_refusal_nobody_waits_on_still_warns(
    secured: Secured, svc: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="netledger.stream")
    conn = await connect(secured.url, name="client", **secured.creds["client-p1"])
    try:
        await conn.nc.publish("netledger.evt.registry", b"forged")
        for _ in range(50):  # (the refusal arrives asynchronously)
            if conn.refused:
                break
            await asyncio.sleep(0.1)
        assert conn.refused == {"netledger.evt.registry"}
    finally:
        await conn.close()
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert ["netledger.evt.registry" in r.getMessage() for r in warned] == [True], caplog.text
