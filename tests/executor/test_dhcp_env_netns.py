"""dnsmasq starts with a minimal, constant environment (executor/dhcpplan.py ``dnsmasq_env``:
a fixed PATH): the executor's own — its settings, credentials, whatever its unit or shell had,
its PATH and NETLEDGER_CONFIG too — stays with it.

dnsmasq hands its environment to every run of its lease script; it was the executor's whole
environment. What the script needs to call back is in the script itself (the configuration
file, the NATS URL, the credentials, the host it speaks for, the CA of a ``tls://`` server, its
PATH). Read here from the running dnsmasq's ``/proc/<pid>/environ``, and a lease still reaches
the log through the script.

Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service (root; every
namespace and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.executor.dhcpplan import SYSTEM_PATH
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
    ca = tmp_path / "ca.pem"  # (the NATS server here is nats://: dhcp-event never opens it)
    planted = {
        **PLANTED,
        "NETLEDGER_CONFIG": str(config),
        "SSL_CERT_FILE": str(ca),
        # the executor's own PATH, not the usual one (a directory that is not there first)
        "PATH": f"{tmp_path / 'no-such-bin'}:{os.environ['PATH']}",
    }
    for k, v in planted.items():
        monkeypatch.setenv(k, v)  # the executor (a child of this process) inherits them
    br = Bridge(world, conn, nats_url)
    await br.create(86)
    await br.boot("vm-a")  # its lease in the log: the lease script called back
    pid = world.pid("h", br.bridge)
    assert pid is not None
    assert await asyncio.to_thread(environ, pid) == {"PATH": SYSTEM_PATH}
    # what dhcp-event needs of it is in the script instead
    script = await asyncio.to_thread(Path(world.dhcp_dir("h"), "dhcp-script").read_text)
    assert f"SSL_CERT_FILE={shlex.quote(str(ca))}; export SSL_CERT_FILE" in script
    assert f"PATH={shlex.quote(SYSTEM_PATH)}; export PATH" in script
    assert f"--config {shlex.quote(str(config))} " in script
    for k, v in PLANTED.items():  # the executor's alone
        assert k not in script and f"={v}" not in script
