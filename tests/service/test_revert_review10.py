"""Review hrev10: revert against a real nats-server and the real command service."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netledger.events.errors import NetledgerError
from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import revert
from netledger.service.client import Client
from netledger.service.service import CommandService


async def gather(calls: list[Any], chunk: int = 50) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(calls), chunk):
        out += await asyncio.gather(*calls[i : i + chunk])
    return out


async def test_a_revert_whose_placements_overflow_one_batch_is_refused_as_too_large(
    conn: Connection, service: CommandService
) -> None:
    """500 floating associations: 500 compensations + the marker fit one atomic batch (the
    decider's check), but each disassociation brings its FloatingIpUnmapped (placement.py):
    1001 messages. The service must refuse it with ``revert_too_large`` (a stable code the CLI
    does not retry), not spin its lane 64 times and answer ``conflict_retries_exhausted``
    ("too many concurrent changes; try again": retrying never helps)."""
    c = Client(conn)
    nets = await c.create_networks(label="f", cidr="10.7.0.0/24", num_networks=1, mode="flat")
    a = await c.allocate_fixed_ip("i-1", network_id=str(nets[0]["id"]), project="p1")
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.18.0.0/23"})
    n = 500
    floats = await gather(
        [
            c.request("floating_ip.allocate", {"project": "p1"}, command_id=f"fa-{i}")
            for i in range(n)
        ]
    )
    start = await last_seq(conn)
    await gather(
        [
            c.request(
                "floating_ip.associate",
                {"address": f["address"], "fixed_address": a["address"], "project": "p1"},
            )
            for f in floats
        ]
    )
    before = await last_seq(conn)
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, to_seq=start, scope="pool:pub")
    assert info.value.code == "revert_too_large", (info.value.code, info.value.message)
    assert await last_seq(conn) == before
