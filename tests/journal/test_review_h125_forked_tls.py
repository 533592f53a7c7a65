"""Review h125 of a forked child's connection over TLS (journal/forked.py ``connect_options``):
the name a discovered server's certificate is checked against.

A cluster tells its clients its other servers by address (INFO ``connect_urls``,
``127.0.0.1:port``); nats-py checks a certificate there against the name of the server it
learnt the address from (``Srv.tls_name``), since the certificates are made for the name. The
child was given the URLs alone: once the service had failed over to a discovered server, its
child checked that server's certificate against the address, and failed. Real nats-servers
(a cluster of two speaking TLS to clients, a certificate for ``localhost`` only), a real
connection made with the options the child uses."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from netledger.journal.forked import connect_options
from netledger.journal.stream import connect
from tests.executor import test_dhcp_env_tls_netns as pki
from tests.fault_helpers import Cluster


async def until(what: str, ok: Callable[[], bool], bound: float = 60.0) -> None:
    """Wait for ``ok()`` (a bound against a hang, not a measure: a failure says what)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + bound
    while not ok():
        if loop.time() > end:
            raise AssertionError(f"{what}: not within {bound:g} s")
        await asyncio.sleep(0.05)


async def test_a_child_reaches_a_discovered_server_with_the_name_its_certificate_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A certificate for the name only: checked against 127.0.0.1, it fails.
    monkeypatch.setattr(pki, "SERVER_EXT", pki.SERVER_EXT.replace("IP:127.0.0.1", "DNS:localhost"))
    ca, cert, key = pki.make_pki(tmp_path / "pki")
    tls = f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n'
    cluster = Cluster(tmp_path, size=2, extra_config=tls)
    await asyncio.to_thread(cluster.start)
    first, second = cluster.nodes
    context = ssl.create_default_context(cafile=str(ca))
    conn = await connect(f"tls://localhost:{first.port}", tls=context)
    child: nats.NATS | None = None
    try:
        # Wait for the cluster's INFO to name the second server (by its address).
        await until(
            "the second server discovered",
            lambda: any(s.uri.port == second.port for s in conn.nc._server_pool),
        )
        [found] = [s for s in conn.nc._server_pool if s.uri.port == second.port]
        assert found.uri.hostname == "127.0.0.1" and found.tls_name == "localhost"
        # The service fails over to it (nats-py checks it against "localhost": it connects).
        await asyncio.to_thread(first.stop)
        await until(
            "failed over to the second server",
            lambda: conn.nc.is_connected and conn.nc.connected_url.port == second.port,
        )
        opts = connect_options(conn)
        child = await nats.connect(**opts)  # what the child does first
        assert child.connected_url is not None and child.connected_url.port == second.port
        # first the server the service is on; then the rest, all checked against "localhost"
        # (the first server by its name and by the address the cluster told)
        assert opts["servers"][0] == f"tls://127.0.0.1:{second.port}"
        assert set(opts["servers"][1:]) <= {
            f"tls://localhost:{first.port}",
            f"tls://127.0.0.1:{first.port}",
        }
        assert opts["tls_hostname"] == "localhost"
    finally:
        if child is not None:
            await child.close()
        await conn.close()
        await asyncio.to_thread(cluster.stop)
