"""Review h140 of the lookup of forgotten retries (service/old_retry.py), under the conditions of
tests/service/test_old_retry.py (a service remembering one command, a one-second duplicate
window): a first attempt another replica stored that this one has not folded yet, a command id
reused for a command of another kind, a start from a snapshot whose oldest remembered command
was put back from the log. Real nats-server, real command service."""

from __future__ import annotations

import asyncio
import datetime
import time

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.errors import CommandIdReused
from netledger.events.types import FloatingIpAllocated
from netledger.journal.stream import MSG_ID, Connection, last_seq
from netledger.service import old_retry
from netledger.service import service as service_module
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.service.test_old_retry import WINDOW, floating, forgetful, past_window  # noqa: F401

#: how long the replica's follower is held (under the ordered consumer's two missed 1 s
#: heartbeats: tests/service/test_refusal_replicas.py)
HOLD_S = 0.8
#: the clocks' slack in the test of a start from a snapshot (seconds)
SLACK = 1.0


async def test_a_first_attempt_another_replica_stored_and_not_folded_here_is_its_answer(
    conn: Connection,
    forgetful: CommandService,  # noqa: F811
) -> None:
    """Another replica stored the first attempt a moment ago; this one's follower has not
    delivered it yet when the retry arrives. Found by the lookup, the retry is told what the
    first attempt gave — not ``command_id_reused`` for a floating IP this replica's fold still
    has free — and, folded later, the first attempt is remembered once."""
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    await c.request("floating_ip.pool_create", {"pool": "other", "cidr": "203.0.113.0/28"})
    cid = new_command_id()
    await asyncio.sleep(WINDOW * 2)  # (an id older than the duplicate window)
    consumer = forgetful.follower._sub._consumer
    until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=HOLD_S)
    await conn.nc.jsm().pause_consumer(
        conn.stream, consumer, until.isoformat().replace("+00:00", "Z")
    )
    # What the other replica's append stored (its envelope, its message id).
    event = FloatingIpAllocated(pool="pub", address="198.51.100.1", project="p1")
    env = Envelope(event, f"{cid}:0", cid, time.time(), Actor(role="admin"))
    ack = await conn.js.publish(event.subject(), encode(env), headers={MSG_ID: f"{cid}:0"})
    assert "198.51.100.1" not in floating(forgetful, "p1")  # (not folded here yet)

    again = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)

    assert again == {"address": "198.51.100.1", "pool": "pub", "project": "p1"}
    await forgetful.follower.wait_for(ack.seq)
    assert floating(forgetful, "p1") == ["198.51.100.1"]
    assert len(forgetful.seen.get(cid, ())) <= 1, "the first attempt remembered twice"


async def test_an_old_id_reused_for_an_allocation_after_a_deallocation_allocates(
    conn: Connection,
    forgetful: CommandService,  # noqa: F811
) -> None:
    """A client reusing a command id for a command of another kind: the lookup finds the
    deallocation stored under it on a pool's subject, which is no first attempt of an
    allocation — decided as new (as before the lookup), the project gets a floating IP."""
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    first = await c.request("floating_ip.allocate", {"project": "p1"})
    cid = new_command_id()
    await c.request(
        "floating_ip.deallocate", {"address": first["address"], "project": "p1"}, command_id=cid
    )
    await past_window(c, forgetful, cid)

    got = await c.request("floating_ip.allocate", {"project": "p1"}, command_id=cid)

    assert floating(forgetful, "p1") == [got["address"]]


async def test_an_old_id_reused_for_a_network_create_after_a_pool_create_creates_it(
    conn: Connection,
    forgetful: CommandService,  # noqa: F811
) -> None:
    """The registry holds pools' creations too: one under the id is no network's."""
    c = Client(conn)
    cid = new_command_id()
    await c.request(
        "floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"}, command_id=cid
    )
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    got = await c.request(
        "network.create",
        {"label": "n", "cidr": "10.9.0.0/24", "mode": "flat", "bridge": "br9"},
        command_id=cid,
    )

    assert [n["id"] for n in got["networks"]] == list(forgetful.state.networks)
    assert await last_seq(conn) > top


async def test_after_a_start_from_a_snapshot_led_by_a_recalled_command_the_rest_is_found(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The oldest command a snapshot's ``seen`` holds was put back from the log (a retry found
    by the lookup, out of the log's order): what left ``seen`` after its first attempt is
    newer than it. Started from that snapshot, the service looks a retry of those up too —
    the horizon its oldest command *in the log's order*. (Clocks' slack one second here, so
    that a few seconds between the commands tell them apart.)"""
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 2)
    monkeypatch.setattr(old_retry, "CLOCK_SLACK_S", SLACK)
    info = await conn.js.stream_info(conn.stream)
    info.config.duplicate_window = WINDOW
    await conn.js.update_stream(info.config)
    policy = SnapshotPolicy(every_events=0, fork=False)
    c = Client(conn)
    recalled, forgotten = new_command_id(), ""
    svc = CommandService(conn, reap_interval=None, snapshots=policy)
    await svc.start()
    try:
        await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
        await c.request("floating_ip.allocate", {"project": "p1"}, command_id=recalled)
        await asyncio.sleep(SLACK * 3)
        forgotten = new_command_id()
        first = await c.request("floating_ip.allocate", {"project": "p2"}, command_id=forgotten)
        await c.request("floating_ip.pool_create", {"pool": "b", "cidr": "203.0.113.0/28"})
        assert recalled not in svc.seen
        await asyncio.sleep(WINDOW * 2)
        await c.request("floating_ip.allocate", {"project": "p1"}, command_id=recalled)
        assert recalled in svc.recalled
        for pool, cidr in (("c", "203.0.113.16/28"), ("d", "203.0.113.32/28")):
            await c.request("floating_ip.pool_create", {"pool": pool, "cidr": cidr})
        assert next(iter(svc.seen)) == recalled and forgotten not in svc.seen
        assert svc.snapshotter is not None and await svc.snapshotter.write() is not None
    finally:
        await svc.close()
    top = await last_seq(conn)

    again = CommandService(conn, reap_interval=None, snapshots=policy)
    await again.start()
    try:
        got = await c.request("floating_ip.allocate", {"project": "p2"}, command_id=forgotten)
        assert got == first
        assert await last_seq(conn) == top
        assert floating(again, "p2") == [first["address"]]
    finally:
        await again.close()


async def test_a_forgotten_retry_of_a_network_create_after_its_deletion_creates_nothing(
    conn: Connection,
    forgetful: CommandService,  # noqa: F811
) -> None:
    """The networks it made were deleted since (and the deletion forgotten too): told the
    command id holds what holds no more, the range not created again."""
    c = Client(conn)
    args = {"label": "n", "cidr": "10.9.0.0/16", "mode": "flat", "num_networks": 2}
    cid = new_command_id()
    first = await c.request("network.create", args, command_id=cid)
    assert len(first["networks"]) == 2  # (an atomic batch)
    for net in first["networks"]:
        await c.request("network.delete", {"network_id": net["id"]})
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    with pytest.raises(CommandIdReused) as err:
        await c.request("network.create", args, command_id=cid)

    assert err.value.details["network_id"] == first["networks"][0]["id"]
    assert await last_seq(conn) == top
    assert forgetful.state.networks == {}


async def test_a_forgotten_retry_of_a_two_network_create_gets_both(
    conn: Connection,
    forgetful: CommandService,  # noqa: F811
) -> None:
    """Its first attempt an atomic batch of two: both put back, both answered."""
    c = Client(conn)
    args = {"label": "n", "cidr": "10.9.0.0/16", "mode": "flat", "num_networks": 2}
    cid = new_command_id()
    first = await c.request("network.create", args, command_id=cid)
    await past_window(c, forgetful, cid)
    top = await last_seq(conn)

    assert await c.request("network.create", args, command_id=cid) == first
    assert await last_seq(conn) == top
