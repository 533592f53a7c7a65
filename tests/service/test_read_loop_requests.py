"""Requests taken in the read loop (service._on_request, journal/natsclient.py): lane commands
answered from the lane, reads and refusals answered too, a mix of them at once all answered
right, a request without a reply subject harmless, and a failing answer not holding the others.
Through nats-py's own request (another client than ours) on a real nats-server."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import nats
import pytest

from netledger.events.codec import Actor
from netledger.journal.stream import Connection, last_seq
from netledger.service import requests as service_module
from netledger.service.client import Client
from netledger.service.service import CommandService

ADMIN = Actor(role="admin").to_wire()


async def ask(nc: Any, name: str, args: dict[str, Any], cid: str | None = None) -> Any:
    body: dict[str, Any] = {"actor": ADMIN, "args": args}
    if cid:
        body["command_id"] = cid
    msg = await nc.request(f"netledger.admin.cmd.{name}", msgpack.packb(body), timeout=10.0)
    return msgpack.unpackb(msg.data, raw=False)


async def test_a_mix_of_requests_at_once_all_answered(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    admin = Client(conn)
    nets = await admin.create_networks(label="r", cidr="10.9.0.0/22", num_networks=4)
    other = await nats.connect(nats_url)
    try:
        jobs = []
        for i in range(40):
            net = nets[i % 4]["id"]
            jobs.append(ask(other, "fixed_ip.allocate", {"instance": f"vm{i}", "network_id": net}))
            jobs.append(ask(other, "network.list", {}))
            jobs.append(ask(other, "fixed_ip.allocate", {"instance": "bad id!", "network_id": net}))
        # the same command twice at once: one answer, applied once
        jobs.append(ask(other, "fixed_ip.allocate", {"instance": "twin", "network_id": net}, "c1"))
        jobs.append(ask(other, "fixed_ip.allocate", {"instance": "twin", "network_id": net}, "c1"))
        replies = await asyncio.gather(*jobs)
    finally:
        await other.close()
    allocs, lists, bad = replies[0:120:3], replies[1:120:3], replies[2:120:3]
    assert all(r["ok"] for r in allocs)
    addresses = [r["result"]["address"] for r in allocs]
    assert len(set(addresses)) == 40
    assert all(r["ok"] and len(r["result"]["networks"]) == 4 for r in lists)
    assert all(not r["ok"] and r["error"]["code"] == "invalid_id" for r in bad)
    assert replies[-1] == replies[-2] and replies[-1]["ok"]
    assert service.stats.commands["fixed_ip.allocate:ok"] >= 42


async def test_a_request_without_reply_is_done_and_harmless(
    conn: Connection, service: CommandService
) -> None:
    admin = Client(conn)
    [net] = await admin.create_networks(label="r", cidr="10.9.0.0/24")
    body = {
        "actor": ADMIN,
        "command_id": "quiet",
        "args": {"instance": "q", "network_id": net["id"]},
    }
    await conn.nc.publish("netledger.admin.cmd.fixed_ip.allocate", msgpack.packb(body))
    before = await last_seq(conn)
    for _ in range(200):
        if await last_seq(conn) > before or service.stats.commands.get("fixed_ip.allocate:ok"):
            break
        await asyncio.sleep(0.02)
    # applied once; its retry (with a reply subject now) gets the same answer
    again = await admin.allocate_fixed_ip("q", network_id=net["id"], command_id="quiet")
    assert again["address"]
    assert service.stats.commands["fixed_ip.allocate:ok"] == 2


async def test_a_failing_answer_does_not_hold_the_others(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    admin = Client(conn, timeout=2.0, deadline=3.0)
    [net] = await admin.create_networks(label="r", cidr="10.9.0.0/24")
    real = service_module.reply_ok
    poisoned = {"first": True}

    def flaky(result: dict[str, Any]) -> bytes:
        if result.get("instance") == "poison" and poisoned.pop("first", False):
            raise RuntimeError("cannot encode")
        return real(result)

    monkeypatch.setattr(service_module, "reply_ok", flaky)
    others = [admin.allocate_fixed_ip(f"ok{i}", network_id=net["id"]) for i in range(8)]
    poison = admin.allocate_fixed_ip("poison", network_id=net["id"], command_id="poison-1")
    got = await asyncio.gather(poison, *others, return_exceptions=True)
    assert all(isinstance(g, dict) and g["address"] for g in got[1:])
    # the poisoned answer was lost, not the command: the client's retry got the first answer
    # (or, when the first attempt's answer failed, the retry's)
    assert isinstance(got[0], dict) and got[0]["instance"] == "poison"
