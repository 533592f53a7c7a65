"""Review h120 of the snapshot child's connection (journal/forked.py ``connect_options``,
journal/snapshot_upload.py): the child uploads over a connection of its own made with every
identity the service connected with — a token in the URL, a credentials file (a user JWT and
its nkey seed, operator mode), TLS with a private CA, a per-user inbox prefix on a server that
denies the default one (ops/auth.py's per-role users) — besides the user and password of
tests/service/test_snapshot_child_upload.py. A child left without one of them would not
connect (its upload left to the service's connection: counted below) or, without the inbox
prefix, would never hear its chunks' acknowledgements (the write fails).

Which connection carried the body is told by the service connection's count of bytes
published (nats-py's ``stats["out_bytes"]``), as in test_snapshot_child_upload.py."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.journal.stream import Connection, connect, ensure_stream
from tests.executor.test_dhcp_env_tls_netns import make_pki
from tests.ops.test_auth_jwt import operator_mode as operator_mode
from tests.service.test_snapshot_child_upload import uploaded_by_the_child

TOKEN = "s3cret-token"
#: a per-user inbox: the default ``_INBOX.>`` denied, as ops/auth.py's users have it
INBOXES = (
    "authorization { users = [ {user: svc, password: pw, permissions: {"
    ' publish: {allow: [">"]}, subscribe: {allow: [">"], deny: ["_INBOX.>"]} } } ] }\n'
)


def _server(tmp_path: Path, extra: str) -> EmbeddedNats:
    server = EmbeddedNats(tmp_path / "nats", port=free_port(), extra_config=extra)
    server.start()
    return server


@pytest.fixture(params=["token", "creds", "tls", "inbox_prefix"])
async def identity(request: Any, tmp_path: Path) -> AsyncIterator[Connection]:
    """The service's connection, made with one kind of identity."""
    server: EmbeddedNats | None = None
    kind = request.param
    if kind == "token":
        server = _server(tmp_path, f'authorization {{ token: "{TOKEN}" }}\n')
        conn = await connect(server.url.replace("nats://", f"nats://{TOKEN}@"))
    elif kind == "creds":
        url, creds = request.getfixturevalue("operator_mode")
        conn = await connect(url, creds=str(creds))
    elif kind == "tls":
        ca, cert, key = make_pki(tmp_path / "pki")
        server = _server(tmp_path, f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n')
        context = ssl.create_default_context(cafile=str(ca))
        conn = await connect(f"tls://127.0.0.1:{server.port}", tls=context)
    else:
        server = _server(tmp_path, INBOXES)
        conn = await connect(server.url, user="svc", password="pw", inbox_prefix="_INBOX_svc")
    try:
        await ensure_stream(conn)
        yield conn
    finally:
        await conn.close()
        if server is not None:
            server.stop()


async def test_the_child_connects_with_each_identity_of_the_service(
    identity: Connection, tmp_path: Path
) -> None:
    await uploaded_by_the_child(identity, tmp_path)


@pytest.fixture
async def beside_a_refusing_server(
    nats_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Connection]:
    """The service's connection, given two servers: first one that refuses its identity (a
    cluster part-way through a change of credentials, say), then the one it connects to.
    nats-py's shuffle of a server list keeps the order given (pinned, so that each run
    tells the same: inherited by the forked children too)."""
    import nats.aio.client

    monkeypatch.setattr(nats.aio.client, "shuffle", lambda servers: None)
    other = _server(tmp_path / "other", "authorization { users = [ {user: x, password: y} ] }\n")
    try:
        conn = await connect([other.url, nats_url])
        try:
            assert conn.nc.connected_url is not None
            assert conn.nc.connected_url.port == int(nats_url.rsplit(":", 1)[1])
            await ensure_stream(conn)
            yield conn
        finally:
            await conn.close()
    finally:
        other.stop()


async def test_the_child_connects_where_the_service_is_connected(
    beside_a_refusing_server: Connection, tmp_path: Path
) -> None:
    """Not to the first server of the list (a refused handshake ends a connect without
    reconnects: the child left the upload to the service's connection, with a warning)."""
    await uploaded_by_the_child(beside_a_refusing_server, tmp_path)
