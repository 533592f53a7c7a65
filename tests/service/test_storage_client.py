"""What the client says when no answer comes (issue 16): no service at all, or a service that
listens but does not answer while its log refuses writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import nats
import pytest

from netledger.events.errors import LogStorageFull, Unavailable
from netledger.journal.loghealth import STORAGE_LOW, LogHealth
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService

NETLEDGER = str(Path(sys.executable).parent / "netledger")


async def test_no_service_says_so(conn: Connection) -> None:
    c = Client(conn, timeout=0.2, deadline=0.5)
    with pytest.raises(Unavailable) as e:
        await c.request("network.list", {})
    assert "no command service is running" in e.value.message
    assert (
        "netledger.admin.cmd.network.list" in e.value.message or "network.list" in e.value.message
    )


async def test_a_client_waiting_for_a_service_says_so_once(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens: the client goes on trying until its deadline (a service restarting
    comes back), and tells its ``on_waiting`` once, after WAITING_HINT_S, why it waits; the
    CLI prints that for a person watching."""
    from netledger import cli
    from netledger.service import client as client_mod

    monkeypatch.setattr(client_mod, "WAITING_HINT_S", 0.3)
    heard: list[tuple[str, str, Exception, float]] = []
    c = Client(conn, timeout=0.2, deadline=1.2)
    c.on_waiting = lambda *args: heard.append(args)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(Unavailable):
        await c.request("network.list", {})
    assert loop.time() - t0 >= 1.2  # it kept trying after the hint
    [(name, subject, why, left)] = heard
    assert name == "network.list" and subject.endswith(".network.list")
    assert isinstance(why, nats.errors.NoRespondersError) and 0 < left < 1.0
    cli._tell_waiting(name, subject, why, left)
    err = capsys.readouterr().err
    assert "waiting for network.list (no command service listens on it yet" in err
    assert "netledger serve" in err


async def test_a_silent_service_with_a_full_log_is_named(conn: Connection) -> None:
    h = LogHealth()
    h.refuse(STORAGE_LOW, LogStorageFull("1.0 MiB free in /s, below the reserve of 2.0 MiB"))

    async def silent(msg: object) -> None:
        return None  # takes the request, never answers (a stuck replica)

    async def stats(msg: object) -> None:
        body = {"endpoints": [{"data": {"log": h.as_dict()}}]}
        await msg.respond(json.dumps(body).encode())  # type: ignore[attr-defined]

    subs = [
        await conn.nc.subscribe("netledger.admin.cmd.>", cb=silent),
        await conn.nc.subscribe("$SRV.STATS.netledger", cb=stats),
    ]
    try:
        c = Client(conn, timeout=0.2, deadline=0.5)
        with pytest.raises(LogStorageFull) as e:
            await c.request("network.list", {})
        assert "did not answer network.list" in e.value.message
        assert "below the reserve" in e.value.message
        assert e.value.code == "log_storage_full"
    finally:
        for s in subs:
            await s.unsubscribe()


async def test_a_silent_service_otherwise_is_not_blamed_on_the_log(conn: Connection) -> None:
    async def silent(msg: object) -> None:
        return None

    sub = await conn.nc.subscribe("netledger.admin.cmd.>", cb=silent)
    try:
        c = Client(conn, timeout=0.2, deadline=0.5)
        with pytest.raises(Unavailable) as e:
            await c.request("network.list", {})
        assert type(e.value) is Unavailable
        assert "did not answer network.list" in e.value.message
        assert "netledger status" in e.value.message
    finally:
        await sub.unsubscribe()


async def test_dhcp_event_on_a_full_log_fails_fast_and_says_why(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    """dnsmasq's lease script: refused at once with the storage code (dnsmasq logs the
    script's stderr and goes on with the next lease); accepted again once space is back."""
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.60.0.0/24", mode="flat")
    a = await c.allocate_fixed_ip("i-1", network_id=net["id"])
    service.health.refuse(
        STORAGE_LOW, LogStorageFull("1.0 MiB free in /s, below the reserve of 2.0 MiB")
    )

    async def script(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [NETLEDGER, "--nats", nats_url, "dhcp-event", *args]
        return await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60
        )

    r = await script("add", a["mac"], a["address"])
    assert r.returncode == 1
    assert "log_storage_full" in r.stderr and "below the reserve" in r.stderr
    service.health.accept("space back")
    assert (await script("add", a["mac"], a["address"])).returncode == 0


def test_command_timeout_bounds_the_wait_for_a_service(nats_url: str) -> None:
    """--command-timeout (or NETLEDGER_COMMAND_TIMEOUT) replaces the 60 s a command keeps
    asking while nothing answers; the error says how long it asked."""
    import os

    r = subprocess.run(
        [NETLEDGER, "--nats", nats_url, "--command-timeout", "0.5", "network", "list"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("error [unavailable]: no command service is running"), r.stderr
    assert "asked for 0.5 s" in r.stderr
    env = {**os.environ, "NETLEDGER_COMMAND_TIMEOUT": "0.7"}
    r = subprocess.run(
        [NETLEDGER, "--nats", nats_url, "--json", "network", "list"],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["code"] == "unavailable" and "asked for 0.7 s" in err["message"]
    bad = subprocess.run(
        [NETLEDGER, "--nats", nats_url, "--command-timeout", "0", "network", "list"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 2 and "--command-timeout" in bad.stderr
