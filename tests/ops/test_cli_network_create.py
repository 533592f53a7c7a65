"""`netledger network create` through the real CLI, a real nats-server and command service.

Issue 19: a range is split around the networks already in use (nova's example). Issue 17, point
2: without --network-size the size is the range divided by the number of networks, capped at
256 with a notice, and the JSON says what was chosen.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService


async def netledger(url: str, *argv: str) -> tuple[int, str, str]:
    """Run the real CLI in a child process (the service runs in this test's event loop)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "netledger.cli",
        "--nats",
        url,
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def create_json(url: str, *argv: str) -> tuple[list[dict[str, Any]], str]:
    status, out, err = await netledger(url, "--json", "network", "create", *argv)
    assert status == 0, (out, err)
    nets = json.loads(out)
    assert isinstance(nets, list)
    return nets, err


async def test_issue_19_example(conn: Connection, service: CommandService, nats_url: str) -> None:
    status, out, err = await netledger(
        nats_url,
        *"network create --label e --cidr 10.3.2.0/24 --num-networks 1 --network-size 256"
        " --mode vlan --vlan-start 300".split(),
    )
    assert status == 0, (out, err)
    status, out, err = await netledger(
        nats_url,
        *"network create --label c --cidr 10.3.0.0/16 --num-networks 4 --network-size 256"
        " --mode vlan --vlan-start 310".split(),
    )
    assert status == 0, (out, err)
    for cidr in ("10.3.0.0/24", "10.3.1.0/24", "10.3.3.0/24", "10.3.4.0/24"):
        assert cidr in out
    assert "10.3.2.0/24" not in out and err == ""

    status, out, err = await netledger(nats_url, "--json", "network", "list")
    assert status == 0, (out, err)
    got = [(n["label"], n["cidr"], n["vlan"], n["bridge"]) for n in json.loads(out)]
    assert got == [
        ("e", "10.3.2.0/24", 300, "br300"),
        ("c_0", "10.3.0.0/24", 310, "br310"),
        ("c_1", "10.3.1.0/24", 311, "br311"),
        ("c_2", "10.3.3.0/24", 312, "br312"),
        ("c_3", "10.3.4.0/24", 313, "br313"),
    ]


async def test_too_few_free_subnets_is_range_exhausted(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    await Client(conn).create_networks(label="e", cidr="10.3.2.0/24", vlan_start=300)
    before = await last_seq(conn)
    argv = ["network", "create", "--label", "d", "--cidr", "10.3.0.0/22", "--num-networks", "4"]
    status, out, err = await netledger(nats_url, *argv, "--vlan-start", "320")
    assert status == 1, (out, err)
    assert err.startswith("error [range_exhausted]: 10.3.0.0/22 has 3 free subnet(s)"), err
    assert "network 1 (10.3.2.0/24)" in err
    status, out, err = await netledger(nats_url, "--json", *argv, "--vlan-start", "320")
    assert status == 1, (out, err)
    body = json.loads(out)["error"]
    assert body["code"] == "range_exhausted"
    assert (body["details"]["found"], body["details"]["requested"]) == (3, 4)
    # A range inside a network in use is still refused, and nothing was appended.
    status, out, err = await netledger(
        nats_url, "network", "create", "--label", "x", "--cidr", "10.3.2.128/25"
    )
    assert status == 1 and err.startswith("error [network_overlap]: 10.3.2.128/25 lies inside")
    assert await last_seq(conn) == before


async def test_computed_network_size(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    # The reporter's command (issue 17): a /28 without --network-size is one network of 16.
    nets, err = await create_json(
        nats_url, "--label", "f", "--cidr", "10.60.0.0/28", "--mode", "flat", "--bridge", "br9"
    )
    assert [(n["cidr"], n["network_size"]) for n in nets] == [("10.60.0.0/28", 16)]
    assert err == ""

    nets, err = await create_json(
        nats_url, "--label", "q", "--cidr", "10.61.0.0/24", "--num-networks", "4"
    )
    assert [(n["cidr"], n["network_size"]) for n in nets] == [
        (f"10.61.0.{k}/26", 64) for k in (0, 64, 128, 192)
    ]
    assert [n["vlan"] for n in nets] == [100, 101, 102, 103] and err == ""

    nets, err = await create_json(
        nats_url, "--label", "b", "--cidr", "10.62.0.0/16", "--vlan-start", "200"
    )
    assert [(n["cidr"], n["network_size"]) for n in nets] == [("10.62.0.0/24", 256)]
    assert err.startswith("notice: network_size not given: 10.62.0.0/16 split in 1"), err
    assert "defaulting to 256 (/24)" in err

    # An explicit size works as before, without a notice; the table shows the networks.
    status, out, err = await netledger(
        nats_url,
        *"network create --label x --cidr 10.63.0.0/16 --network-size 1024 --vlan-start 300".split(),
    )
    assert status == 0 and err == "" and "10.63.0.0/22" in out, (out, err)
