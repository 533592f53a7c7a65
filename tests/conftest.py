"""Shared fixtures: a real nats-server per test (free port, temporary store)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from netledger.common.natsserver import EmbeddedNats, NatsServerError, free_port
from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.service.service import CommandService

# The deciders' Ledger asserts inside a helper module: rewrite it like a test module, so that a
# failing check there still shows its values.
pytest.register_assert_rewrite("tests.events.decider_helpers")
# So does the DHCP tests' DhcpLab (and wait_for_event), shared with the IPv6 namespace tests.
pytest.register_assert_rewrite("tests.executor.dhcp_helpers")

# No timed assertions (README: benchmarks are not tests): hypothesis's default deadline of 200 ms
# per example failed a pure header-parsing property once under CI's load (444 ms on a busy
# machine, 52 ms again). Every property test runs without it, and without the health check
# that calls data generation too slow on a loaded machine.
settings.register_profile("netledger", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("netledger")


@pytest.fixture(scope="session", autouse=True)
def _own_serve_pointers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each test process (an xdist worker) keeps the pointer files of the serves its tests
    start in a folder of its own (ops/locate.py: ``$XDG_RUNTIME_DIR/netledger``): a command
    without ``--nats`` goes to the serve running on the machine, and a test's must never find
    the other worker's, nor a developer's own serve."""
    before = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("xdg-run"))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = before


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    """A fresh nats-server with JetStream for one test (fsync per write off: tests are not
    about power loss; the durability tests start their own)."""
    for attempt in range(3):
        server = EmbeddedNats(data_dir=tmp_path / "nats", port=free_port(), sync_interval="default")
        try:
            server.start()
            break
        except NatsServerError as exc:
            # free_port() closes its socket before the server binds: another process (a
            # parallel test's server) may take the port in between. Another port, then.
            if "is in use" not in str(exc) or attempt == 2:
                raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


@pytest.fixture
async def conn(nats_url: str) -> AsyncIterator[Connection]:
    c = await connect(nats_url, name="test")
    await ensure_stream(c)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def service(conn: Connection) -> AsyncIterator[CommandService]:
    svc = CommandService(conn)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (network namespaces); CI runs as root")
