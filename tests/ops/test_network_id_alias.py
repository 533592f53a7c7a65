"""A network's id is both `id` and `network_id` in every CLI answer that lists networks: the
command service's (`network create|list|show`) said `id`, the projection's (`show networks`)
`network_id`. Neither is renamed (a contract); each gained the other. Real nats-server,
command service and projection."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from netledger.cli import cli
from netledger.journal.stream import Connection
from netledger.projector.runner import project_until
from netledger.service.service import CommandService


def _json(*args: str) -> Any:
    r = CliRunner().invoke(cli, ["--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


async def test_every_network_answer_names_the_id_both_ways(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    nats = ("--nats", nats_url)
    created = await asyncio.to_thread(
        _json, *nats, "network", "create", "--label", "a", "--cidr", "10.60.0.0/23",
        "--num-networks", "2", "--network-size", "256", "--mode", "flat",
    )  # fmt: skip
    listed = await asyncio.to_thread(_json, *nats, "network", "list")
    shown = await asyncio.to_thread(_json, *nats, "network", "show", created[1]["id"])
    db = tmp_path / "p.db"
    await project_until(conn, db)
    projected = await asyncio.to_thread(_json, "show", "networks", "--db", str(db))

    for nets in (created, listed, [shown], projected):
        assert nets and all(n["id"] == n["network_id"] for n in nets), nets
    assert [n["id"] for n in listed] == [n["id"] for n in created] == ["1", "2"]
    assert [n["network_id"] for n in projected] == ["1", "2"]
    # The fields each had before stay (the service's and the projection's own ones).
    assert {"id", "label", "cidr", "in_use", "capacity"} <= set(listed[0])
    assert {"network_id", "label", "cidr", "in_use", "created_seq"} <= set(projected[0])
    # The tables keep their one column (no second id column).
    r = await asyncio.to_thread(CliRunner().invoke, cli, ["show", "networks", "--db", str(db)])
    assert r.exit_code == 0, r.output
    header = next(line for line in r.stdout.splitlines() if "network_id" in line)
    assert " id " not in header, r.stdout
