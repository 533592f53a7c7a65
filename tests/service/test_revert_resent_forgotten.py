"""A revert re-sent under its id (its first answer lost) to a replica that no longer remembers
it — past the service's remembered commands (``SEEN_COMMANDS``: 20,000; one here) — is decided
again and refused ``revert_raced``: its own marker landed after its read of the markers. The
client reads the markers since and finds that one: the revert landed, and it says so with the
answer the log holds (it said "already reverted by command revert-<id>" and exited 1: found
by review). Real nats-server, real command service."""

from __future__ import annotations

import pytest

import netledger.service.service as service_module
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import revert
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_revert import flat
from tests.service.test_review_h114_revert_resent import LostAnswerClient, two_allocations

#: What the service answers a revert (events/revert.py ``decide_revert``)
ANSWER = (
    "revert_command_id",
    "reverted_command_id",
    "after_seq",
    "upto_seq",
    "scope",
    "reverted_seqs",
    "skipped_seqs",
    "events",
    "appended",
)


async def test_a_resent_revert_the_service_forgot_is_told_as_landed(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    nid, x, y, a = await two_allocations(Client(conn))
    lost = LostAnswerClient(conn, y)

    got = await revert(conn, lost, command_id=x)

    [first] = lost.answers  # (the resend was refused revert_raced: the replica forgot it)
    assert f"revert-{x}" not in service.seen
    assert {k: got[k] for k in ANSWER} == {k: first[k] for k in ANSWER}
    assert got["revert_command_id"] == f"revert-{x}" and got["appended"] is True
    assert await last_seq(conn) == lost.before_resend  # the resend appended nothing
    assert a not in service.state.networks[nid].fixed
    assert "i-2" not in service.state.instance_ips


async def test_a_resent_range_revert_the_service_forgot_is_told_as_landed(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a range (``--to-seq`` within ``--scope``): its marker, under
    ``revert-seq-N-M-network-<id>``, is among those after its read."""
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    c = Client(conn)
    nid = await flat(c)
    [other] = await c.create_networks(label="o", cidr="10.8.0.0/24", mode="flat", bridge="br8")
    start = await last_seq(conn)
    a = (await c.allocate_fixed_ip("i-1", network_id=nid, host="h1"))["address"]
    y = new_command_id()
    await c.allocate_fixed_ip("i-2", network_id=other["id"], host="h1", command_id=y)
    lost = LostAnswerClient(conn, y)

    got = await revert(conn, lost, to_seq=start, scope=f"network:{nid}")

    [first] = lost.answers
    assert {k: got[k] for k in ANSWER} == {k: first[k] for k in ANSWER}
    assert got["revert_command_id"].startswith(f"revert-seq-{start}-")
    assert await last_seq(conn) == lost.before_resend
    assert a not in service.state.networks[nid].fixed
    assert "i-1" not in service.state.instance_ips and "i-2" not in service.state.instance_ips
