"""An embedded nats-server whose port another nats-server already holds: a clear error.

Before, ``EmbeddedNats.start`` took any INFO on its port for its own server being ready: with
another nats-server there, start() returned at once, the new process then died with "address
already in use", and ``netledger serve`` went on to create its stream in — and append to — the
*other* server's store (restarting the one it had started, again and again). Now each embedded
server has a unique ``server_name`` (a cluster node keeps the one it is given), start() waits
for an INFO naming it from a child that still runs, and anything else on the port ends in the
"port N is in use" error. Real nats-server processes only.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from pathlib import Path

import pytest

from netledger.common.natsserver import (
    EmbeddedNats,
    NatsServerError,
    _ephemeral_low,
    free_port,
    server_info,
)
from netledger.events.ids import STREAM
from netledger.journal.stream import connect

from .test_serve import NETLEDGER


def test_start_on_a_port_another_nats_server_holds_fails(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    second = EmbeddedNats(data_dir=tmp_path / "second", port=nats_server.port)
    try:
        with pytest.raises(NatsServerError) as info:
            second.start(timeout=20)
    finally:
        second.stop()
    first = str(info.value).splitlines()[0]
    assert f"port {nats_server.port} is in use (another nats-server or `netledger serve`?" in first
    assert not second.running
    # The server that held the port is untouched, and still the one answering there.
    assert nats_server.running
    greeting = server_info(nats_server.host, nats_server.port)
    assert greeting is not None and greeting["server_name"] == nats_server.server_name


def test_serve_on_a_port_another_nats_server_holds_leaves_its_store_alone(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """`netledger serve` exits 1 with the error, never ready, no stream created over there."""
    p = subprocess.run(
        [NETLEDGER, "serve", "--data", str(tmp_path / "data"),
         "--port", str(nats_server.port), "--no-projector"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 1, p.stdout + p.stderr
    assert "netledger ready" not in p.stdout
    assert "Traceback" not in p.stderr
    assert f"error [nats_server_error]: nats-server exited with 1: port {nats_server.port}" in (
        p.stderr
    )
    # which server it tried to run, by the name it was to answer with
    assert " as netledger-" in p.stderr

    async def streams() -> list[str]:
        conn = await connect(nats_server.url, name="test")
        try:
            return [str(s.config.name) for s in await conn.js.streams_info()]
        finally:
            await conn.close()

    assert STREAM not in asyncio.run(streams())


def test_each_embedded_server_answers_with_a_name_of_its_own(tmp_path: Path) -> None:
    """A name is made unless one is given (a cluster node's, docs/cluster.md), kept across a
    restart, and it is the one the running server greets clients with."""
    a = EmbeddedNats(data_dir=tmp_path / "a", port=0)
    b = EmbeddedNats(data_dir=tmp_path / "b", port=0)
    assert a.server_name and a.server_name.startswith("netledger-")
    assert a.server_name != b.server_name
    named = EmbeddedNats(data_dir=tmp_path, port=0, server_name="n0")
    assert named.server_name == "n0" and named.config_text().startswith("server_name: n0\n")

    server = EmbeddedNats(data_dir=tmp_path / "s", port=free_port(), sync_interval="default")
    name = server.server_name
    try:
        server.start()
        assert (server_info(server.host, server.port) or {}).get("server_name") == name
        server.restart()
        assert server.server_name == name
        assert (server_info(server.host, server.port) or {}).get("server_name") == name
    finally:
        server.stop()


def test_free_ports_come_from_below_the_ephemeral_range() -> None:
    """A port picked for a server is one no outgoing connection gets meanwhile: not from the
    range the kernel hands out for port 0 and for every client socket's local port. It is free
    when picked (bound and released), and two picks rarely meet."""
    low = _ephemeral_low()
    ports = [free_port() for _ in range(50)]
    assert all(p < low for p in ports), (low, ports)
    assert len(set(ports)) >= 45
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # still free
