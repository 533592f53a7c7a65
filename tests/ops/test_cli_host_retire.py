"""`netledger host retire NAME` against a running command service: the answer (text, JSON), and
its refusals with their stable codes and exit status 1 (nothing appended)."""

from __future__ import annotations

import asyncio
import json

from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import announce
from tests.ops.test_cli_output import invoke


async def test_host_retire_from_the_command_line(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    async def call(*argv: str, code: int = 0) -> str:
        r = await asyncio.to_thread(invoke, "--nats", nats_url, *argv)
        assert r.exit_code == code, (argv, r.output)
        return r.output

    await announce(conn, "h1", 0)
    await announce(conn, "h2", 0)
    await announce(conn, "h3", 0)
    c = Client(conn)
    (net,) = await c.create_networks(label="a", cidr="10.7.0.0/24", mode="flat")
    await c.allocate_fixed_ip("i-1", network_id=net["id"], host="h2")
    before = await last_seq(conn)

    err = json.loads(await call("host", "retire", "h2", "--json", code=1))
    assert err["error"]["code"] == "host_in_use" and err["error"]["details"]["addresses"] == 1
    text = await call("host", "retire", "h9", code=1)
    assert "error [host_not_found]" in text
    assert await last_seq(conn) == before  # refusals append nothing

    assert "retired host h1" in await call("host", "retire", "h1")
    assert json.loads(await call("host", "retire", "h3", "--json")) == {"retired": "h3"}
    again = json.loads(await call("host", "retire", "h1", "--json", code=1))
    assert (
        again["error"]["code"] == "host_not_found" and "retired at seq" in again["error"]["message"]
    )
    assert "decommissioned" in await call("host", "retire", "--help")
