"""A request's reply subject is its sender's choice, and the service publishes its answer there
with its own rights (and, with `auth init`'s permissions, nats-server's allow_responses): a
client that may not write the log had it append on any event subject — another host's, the
network's — and overwrite any host's liveness keys (found by review). The service now never
answers on netledger's own subjects or the server's ($JS, $KV, ...): nothing is decided,
nothing appended."""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack

from netledger.events.codec import Actor
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.requests import answerable
from netledger.service.service import CommandService


def test_which_reply_subjects_are_answered() -> None:
    for inbox in ("_INBOX.abc.1", "_INBOX_client-p1.x.2", "myapp.replies.3", ""):
        assert answerable(inbox), inbox
    for not_one in ("netledger.evt.host.h2", "netledger.evt.network.1",
                    "$KV.NETLEDGER_LIVE.host.h2.seen", "$JS.API.STREAM.DELETE.NETLEDGER",
                    "$O.NETLEDGER_SNAPSHOTS.C.x"):  # fmt: skip
        assert not answerable(not_one), not_one


async def test_a_request_asking_for_its_answer_on_the_log_appends_nothing(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
    before = await last_seq(conn)
    got: list[bytes] = []

    async def heard(m: Any) -> None:
        got.append(m.data)

    sub = await conn.nc.subscribe("netledger.evt.host.>", cb=heard)
    request = {
        "command_id": "c-1",
        "actor": Actor(role="admin").to_wire(),
        "args": {"instance": "i1", "network_id": "1", "host": "h1"},
    }
    for target in ("netledger.evt.host.h2", "$KV.NETLEDGER_LIVE.host.h2.seen"):
        await conn.nc.publish(
            "netledger.admin.cmd.fixed_ip.allocate", msgpack.packb(request), reply=target
        )
    await conn.nc.flush()
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    assert got == [] and await last_seq(conn) == before  # not decided, not answered
    assert service.stats.commands.get("fixed_ip.allocate:reply_subject_refused") == 2
    # an ordinary request is answered as ever
    assert (await c.allocate_fixed_ip("i1", network_id="1", host="h1"))["instance"] == "i1"


async def test_a_command_id_is_its_senders_own(conn: Connection, service: CommandService) -> None:
    """A retry is answered from what its command id stored — but only to the same sender
    (role and project): a member of p2 reusing p1's command id was told p1's allocation, and
    an id taken in advance answered the rightful command with the squatter's result (found by
    review)."""
    from netledger.events.errors import CommandIdReused

    admin = Client(conn)
    [n1] = await admin.create_networks(label="a", cidr="10.41.0.0/24", mode="flat", project="p1")
    await admin.create_networks(label="b", cidr="10.42.0.0/24", mode="flat", project="p2")
    p1 = Client(conn, Actor(project="p1", role="member"))
    p2 = Client(conn, Actor(project="p2", role="member"))
    args = {"instance": "vm-1", "host": "h1"}
    mine = await p1.request("fixed_ip.allocate", {**args, "project": "p1"}, command_id="req-42")
    assert mine["network_id"] == n1["id"]
    # p1's own retry: the stored answer
    assert (
        await p1.request("fixed_ip.allocate", {**args, "project": "p1"}, command_id="req-42")
        == mine
    )
    try:
        got = await p2.request("fixed_ip.allocate", {**args, "project": "p2"}, command_id="req-42")
    except CommandIdReused as err:
        assert "another sender's" in err.message
    else:
        raise AssertionError(f"p2 was answered with p1's allocation: {got}")
