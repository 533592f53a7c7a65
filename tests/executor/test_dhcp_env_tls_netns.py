"""A lease reaches a ``tls://`` NATS server through the lease script, the CA it is trusted by
named in the script (executor/cli.py ``_lease_command``: ``SSL_CERT_FILE`` exported), not in
dnsmasq's environment, which holds a fixed PATH alone (executor/dhcpplan.py ``dnsmasq_env``).

``dhcp-event`` has no option for the CA: OpenSSL reads ``SSL_CERT_FILE`` from the environment.
It was kept in dnsmasq's (from the executor's); now that dnsmasq's is the same for every
executor of the host, the script exports the executor's own.

Real namespaces, dnsmasq, busybox udhcpc, a nats-server speaking TLS only (a CA and a server
certificate for 127.0.0.1 made by ``openssl``) and command service (root; every namespace and
dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats, NatsServerError, free_port
from netledger.executor.dhcpplan import SYSTEM_PATH
from netledger.journal.stream import connect, ensure_stream
from netledger.service.client import Client
from netledger.service.service import CommandService

from .dhcp_helpers import DhcpLab, dhcp_lab, wait_for_event
from .test_dhcp_env_netns import environ
from .test_executor_lab import sh

pytestmark = pytest.mark.netns

#: the server certificate's extensions (strict verifiers want the key identifiers too)
SERVER_EXT = """subjectAltName = IP:127.0.0.1
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def make_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed: (ca, cert, key)."""
    if shutil.which("openssl") is None:
        raise AssertionError("openssl is missing: apt-get install -y openssl")
    folder.mkdir()
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "server.ext"
    ext.write_text(SERVER_EXT)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    sh("openssl", "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
       "-subj", "/CN=netledger test CA")  # fmt: skip
    sh("openssl", "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    sh("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
       "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    return ca, cert, key


@pytest.fixture
def tls_nats(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A nats-server with JetStream that speaks TLS only: its URL and the CA's file."""
    ca, cert, key = make_pki(tmp_path / "pki")
    tls = f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n'
    for attempt in range(3):
        server = EmbeddedNats(
            data_dir=tmp_path / "nats", port=free_port(), sync_interval="default", extra_config=tls
        )
        try:
            server.start()
            break
        except NatsServerError as exc:  # (the port taken meanwhile: conftest.nats_server)
            if "is in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield f"tls://127.0.0.1:{server.port}", ca
    finally:
        server.stop()


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


async def test_a_lease_reaches_a_tls_server_with_the_ca_the_script_names(
    world: DhcpLab, tls_nats: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_nats
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # the executor (a child) trusts the server
    conn = await connect(url, name="test", tls=ssl.create_default_context(cafile=str(ca)))
    service = CommandService(conn)
    try:
        await ensure_stream(conn)
        await service.start()
        h = world.ns("h")
        c = Client(conn)
        [net] = await c.create_networks(
            label="tl87", cidr="10.188.0.0/24", mode="flat_dhcp", bridge="brtl87", network_host="h"
        )
        ip = await c.allocate_fixed_ip("vm-a", network_id=net["id"], host="h")
        await asyncio.to_thread(world.run, url, "h", h)
        pid = world.pid("h", net["bridge"])
        assert pid is not None
        assert await asyncio.to_thread(environ, pid) == {"PATH": SYSTEM_PATH}  # no CA there

        guest = world.guest(h, net["bridge"], "g1", ip["mac"])
        got = await asyncio.to_thread(world.dhcp, guest)
        assert got is not None and got["ip"] == ip["address"]
        # reported by dhcp-event over TLS: it trusted the server by the script's SSL_CERT_FILE
        await wait_for_event(
            conn,
            f"netledger.evt.network.{net['id']}",
            lambda e: e.TYPE == "FixedIpLeased" and e.address == ip["address"],
        )
    finally:
        await service.close()
        await conn.close()
