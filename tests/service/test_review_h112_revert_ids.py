"""Review h112: a client's own command id in the namespace revert uses (``revert-<id>``).

A client chooses its command ids. Its allocation sent as ``revert-X`` (X a real command's id)
was stored under the very id ``revert --command-id X`` sends its revert with: the service took
that revert for a retry of the allocation and answered it with the allocation (nothing
reverted, exit status 0) — X could never be reverted. The service refuses such an id
(``reserved_command_id``), and a revert's id must be its own (``revert-<id>``,
``revert-seq-N-M[-kind-id]``): the markers' namespace is the revert's alone. Against a real
nats-server and the real command service."""

from __future__ import annotations

import json

import pytest

from netledger.events.errors import NetledgerError
from netledger.events.revert import pack_events
from netledger.journal.stream import Connection, last_seq
from netledger.replay.revert_reads import events_of_command
from netledger.revert_cli import revert
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_revert import cli, flat


async def test_a_clients_command_id_in_the_revert_namespace_is_refused(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c)
    a = await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id="real-1")
    before = await last_seq(conn)
    for cid in ("revert-real-1", "revert-seq-1-9", "revert-seq-1-9-network-1", "revert-x"):
        with pytest.raises(NetledgerError) as info:
            await c.allocate_fixed_ip("i-2", network_id=nid, host="h1", command_id=cid)
        assert info.value.code == "reserved_command_id", cid
        assert info.value.details["command_id"] == cid
    assert await last_seq(conn) == before  # nothing appended
    assert "i-2" not in service.state.instance_ips

    # The real command stays revertable: its revert is a revert, not the answer of another
    # command stored under its id.
    r = await revert(conn, c, command_id="real-1")
    assert r["revert_command_id"] == "revert-real-1"
    assert [e["type"] for e in r["events"]] == ["FixedIpDeallocated", "ChangeReverted"]
    assert a["address"] not in service.state.networks[nid].fixed


async def test_a_revert_goes_only_under_its_own_id(
    conn: Connection, service: CommandService
) -> None:
    """A revert sent under another id (a made-up ``revert-<other>`` would mark another command
    reverted; any other id would let a retry of it be applied twice) is refused alike."""
    c = Client(conn)
    nid = await flat(c)
    await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id="real-1")
    await c.allocate_fixed_ip("i-2", network_id=nid, host="h1", command_id="real-2")
    events, _ = await events_of_command(conn, "real-1")
    args = {"reverted_command_id": "real-1", "events": pack_events(events)}
    before = await last_seq(conn)
    for name in ("revert", "revert.plan"):
        for cid in ("revert-real-2", "some-id", "revert-seq-0-3"):
            with pytest.raises(NetledgerError) as info:
                await c.request(name, args, command_id=cid)
            assert info.value.code == "reserved_command_id", (name, cid)
            assert info.value.details["expected"] == "revert-real-1"
    assert await last_seq(conn) == before
    r = await c.request("revert", args, command_id="revert-real-1")
    assert r["revert_command_id"] == "revert-real-1"


async def test_the_cli_says_so_with_exit_status_1(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    c = Client(conn)
    nid = await flat(c)
    before = await last_seq(conn)
    argv = (
        "fixed-ip",
        "allocate",
        "--instance",
        "i-9",
        "--network",
        nid,
        "--command-id",
        "revert-abc",
    )
    rc, out, err = await cli(nats_url, "--json", *argv)
    assert rc == 1, (out, err)
    assert json.loads(out)["error"]["code"] == "reserved_command_id"
    rc, out, err = await cli(nats_url, *argv)
    assert rc == 1 and "reserved_command_id" in err and "revert-" in err
    assert await last_seq(conn) == before


async def test_a_log_holding_a_clients_command_under_revert_x_does_not_answer_xs_revert(
    conn: Connection, service: CommandService
) -> None:
    """A log written before such ids were refused may hold a client's allocation stored as
    ``revert-real-1``. The revert of real-1 goes under that id: the service answered it as a
    retry of the allocation (its address, nothing reverted). It is refused instead, naming
    what holds the id and the way left (a ``--to-seq`` revert within a scope), appending
    nothing."""
    from netledger.events.codec import Actor, Envelope, encode
    from netledger.events.ids import network_subject
    from netledger.events.types import FixedIpAllocated

    c = Client(conn)
    nid = await flat(c)
    a = await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id="real-1")
    # What an older service stored for a client's allocation sent as revert-real-1.
    old = FixedIpAllocated(
        network_id=nid,
        address="10.7.0.200",
        instance="i-old",
        mac="02:16:3e:00:00:c8",
        host="h1",
        project=None,
    )
    ack = await conn.js.publish(
        network_subject(nid),
        encode(Envelope(old, "revert-real-1:0", "revert-real-1", 1.0, Actor(role="admin"))),
    )
    await service.follower.wait_for(ack.seq)
    assert "revert-real-1" in service.seen
    before = await last_seq(conn)
    with pytest.raises(NetledgerError) as info:
        await revert(conn, c, command_id="real-1")
    assert info.value.code == "command_id_reused"
    assert "--to-seq" in info.value.message
    assert await last_seq(conn) == before
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-1"
