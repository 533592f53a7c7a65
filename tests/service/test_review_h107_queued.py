"""Review h107 of the service's count of waiting jobs (``Lanes._queued``, which decides a
publish at once, 9d618b5): it goes back to nothing after jobs whose callers gave up while they
waited, refusals put off for their check, requests refused before a lane, and a burst mixing
them on several lanes — a count left above nothing would stop every write at once for good.
Real nats-server, real command service."""

from __future__ import annotations

import asyncio

import msgpack

from netledger.events.commands import Actor
from netledger.events.errors import NetledgerError
from netledger.journal.stream import Connection
from netledger.service.client import Client
from netledger.service.service import CommandService


def request(cid: str, args: dict[str, object]) -> bytes:
    return msgpack.packb(
        {"command_id": cid, "actor": Actor(role="admin").to_wire(), "args": args},
        use_bin_type=True,
    )


async def test_the_count_of_waiting_jobs_returns_to_nothing(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nets = await c.create_networks(
        label="q", cidr="10.90.0.0/22", num_networks=4, network_size=256, mode="flat"
    )
    ids = [str(n["id"]) for n in nets]
    calls = []
    for i in range(64):
        if i % 4 == 3:
            args: dict[str, object] = {"instance": f"x-{i}", "network_id": "9999", "host": "h"}
        else:
            args = {"instance": f"q-{i}", "network_id": ids[i % 4], "host": "h"}
        calls.append(service.handle("fixed_ip.allocate", request(f"h107-q-{i}", args)))
    # refused before any lane: not a command at all
    calls.append(service.handle("fixed_ip.allocate", b"\x01not msgpack"))
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)  # every request queued in its lane (or refused)
    assert service._queued > 0
    for t in tasks[::5]:
        t.cancel()  # the caller gave up while its job waited
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(d, dict | NetledgerError | asyncio.CancelledError) for d in done), done
    # A lane is first in, first out: once a request on each lane used is answered, the
    # jobs queued before it (the cancelled ones too) were taken.
    for k, nid in enumerate([*ids, "9999"]):
        try:
            await c.allocate_fixed_ip(f"after-{k}", network_id=nid, host="h")
        except NetledgerError:
            pass  # the network that does not exist
    assert service._queued == 0 and service._busy_lanes == 0
    assert service._publish_now()  # the next lone write goes at once again
