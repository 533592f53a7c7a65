"""dnsmasq starts with a minimal environment (executor/dhcpplan.py ``dnsmasq_env``): the
executor's own — its settings, credentials, whatever its unit or shell had — stays with it.

dnsmasq hands its environment to every run of its lease script; it was the executor's whole
environment. What the script needs to call back is in the script itself (the NATS URL, the
credentials, the host it speaks for) or kept: PATH, the configuration file's name. Read here
from the running dnsmasq's ``/proc/<pid>/environ``, and a lease still reaches the log through
the script.

Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service (root; every
namespace and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection

from .dhcp_helpers import DhcpLab, dhcp_lab
from .test_dhcp_lease_marks_netns import Bridge

pytestmark = pytest.mark.netns

#: set in the executor's environment: none may reach dnsmasq
PLANTED = {
    "NATS_URL": "nats://planted:secret@192.0.2.1:4222",  # (--nats given: not used)
    "NETLEDGER_COMMAND_TIMEOUT": "7",  # changed every dhcp-event's wait, by the way
    "AWS_SECRET_ACCESS_KEY": "planted-secret",
    "NETLEDGER_PLANTED_TOKEN": "planted-token",
}


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(e.decode().split("=", 1) for e in raw.split(b"\0") if e)


async def test_dnsmasq_runs_with_what_its_lease_script_needs_alone(
    world: DhcpLab,
    conn: Connection,
    service: Any,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = tmp_path / "netledger.toml"
    config.write_text("# the executor's configuration file: dhcp-event reads it too\n")
    for k, v in {**PLANTED, "NETLEDGER_CONFIG": str(config)}.items():
        monkeypatch.setenv(k, v)  # the executor (a child of this process) inherits them
    path = os.environ["PATH"]
    br = Bridge(world, conn, nats_url)
    await br.create(86)
    await br.boot("vm-a")  # its lease in the log: the lease script called back
    pid = world.pid("h", br.bridge)
    assert pid is not None
    env = await asyncio.to_thread(environ, pid)
    kept = {"PATH": path, "NETLEDGER_CONFIG": str(config)}
    # (the CA of a tls:// NATS server, when this machine names one)
    kept |= {k: os.environ[k] for k in ("SSL_CERT_FILE", "SSL_CERT_DIR") if os.environ.get(k)}
    assert env == kept
