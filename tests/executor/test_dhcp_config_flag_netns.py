"""An executor configured by FILE (``--config FILE``, or ``NETLEDGER_CONFIG``) gives FILE to its
lease script (executor/cli.py ``_lease_command``): ``netledger --config FILE ... dhcp-event``.

dnsmasq keeps nothing of the executor's environment (``dhcpplan.dnsmasq_env``): FILE reaches
``dhcp-event`` by this option alone, however the executor was given it. Before it, the flag was
nowhere in dnsmasq's world (``NETLEDGER_CONFIG``, then kept in dnsmasq's environment, was set
only when the file came from it): every lease report read the default locations instead, and
what only FILE said was lost. Here FILE holds the NATS URL (no ``--nats``, no ``NATS_URL``) and
``format = "json"``, which ``dhcp-event`` alone shows: its answer, in dnsmasq's log (the
script's output, ``dnsmasq-script``), is JSON only when it read FILE. The file's folder has a
quote, a space and a ``$`` in its name: the script is shell.

Real namespaces, dnsmasq, busybox udhcpc, nats-server and command service (root; every
namespace and dnsmasq is removed, ``dhcp_helpers.DhcpLab``).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.service.client import Client

from .dhcp_helpers import DEADLINE, DhcpLab, dhcp_lab, wait_for_event
from .test_executor_lab import NETLEDGER, sh

pytestmark = pytest.mark.netns


@pytest.fixture
def world() -> Iterator[DhcpLab]:
    with dhcp_lab() as the_lab:
        yield the_lab


def run_with_config(world: DhcpLab, config: Path, ns: str, by: str) -> None:
    """``executor run --once`` configured by the file alone (no --nats), named ``by`` the
    flag (else by NETLEDGER_CONFIG, set by the caller)."""
    sh(
        NETLEDGER,
        *(["--config", str(config)] if by == "flag" else []),
        "executor",
        "run",
        "--host",
        "h",
        "--netns",
        ns,
        "--network-host",
        "--dhcp",
        "--state-dir",
        world.dhcp_dir("h"),
        "--once",
    )


async def text(path: Path) -> str:
    return await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")


def script_answers(log: Path) -> list[Any]:
    """What ``dhcp-event`` printed that dnsmasq logged, parsed where it is JSON (else the
    text as it is)."""
    out: list[Any] = []
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.splitlines():
        _, sep, said = line.partition("dnsmasq-script[")
        if not sep:
            continue
        said = said.split("]: ", 1)[-1]
        try:
            out.append(json.loads(said))
        except ValueError:
            out.append(said)
    return out


@pytest.mark.parametrize("by", ["flag", "env"])
async def test_the_lease_script_reads_the_file_the_executor_read(
    by: str,
    world: DhcpLab,
    conn: Connection,
    service: Any,
    nats_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    for k in ("NATS_URL", "NETLEDGER_CONFIG", "NETLEDGER_FORMAT", "NETLEDGER_AS_JSON"):
        monkeypatch.delenv(k, raising=False)  # the file alone says them
    folder = tmp_path / "it's the $HOME conf"
    folder.mkdir()
    config = folder / "netledger.toml"
    config.write_text(f'nats = "{nats_url}"\nformat = "json"\n')
    if by == "env":
        monkeypatch.setenv("NETLEDGER_CONFIG", str(config))  # the executor inherits it
    h = world.ns("h")
    c = Client(conn)
    [net] = await c.create_networks(
        label="cf87", cidr="10.87.0.0/24", mode="flat_dhcp", bridge="brcf87", network_host="h"
    )
    ip = await c.allocate_fixed_ip("vm-a", network_id=net["id"], host="h")
    await asyncio.to_thread(run_with_config, world, config, h, by)

    script = await text(Path(world.dhcp_dir("h"), "dhcp-script"))
    assert f"--config {shlex.quote(str(config))} " in script

    ns = world.guest(h, net["bridge"], "g1", ip["mac"])
    got = await asyncio.to_thread(world.dhcp, ns)
    log = Path(world.dhcp_dir("h"), f"{net['bridge']}.log")
    assert got is not None and got["ip"] == ip["address"], await text(log)
    await wait_for_event(
        conn,
        f"netledger.evt.network.{net['id']}",
        lambda e: e.TYPE == "FixedIpLeased" and e.address == ip["address"],
    )
    # dnsmasq logs the script's output once the script has ended (after the event above)
    deadline = time.monotonic() + DEADLINE
    while not (answers := await asyncio.to_thread(script_answers, log)):
        assert time.monotonic() < deadline, await text(log)
        await asyncio.sleep(0.1)
    assert [a for a in answers if not isinstance(a, dict)] == [], answers  # text: file unread
    assert ip["address"] in {a.get("address") for a in answers}, answers
