"""Review h112: a round of a lane mixing a refusal with an append the log refuses.

A refusal (not found, a conflict with the state) is put off to the next attempt of its round,
to be decided again once the replica caught up with the log (98a85aa). An append of the same
round failing ``LogUnavailable`` left the round at once, and every job still waiting — the
put-off refusal too — was told ``log_unavailable`` ("try again"): a client whose allocation
names a MAC already in use heard the log was away, not that its MAC is taken. Real nats-server
(its stream limited to what it holds, discarding new messages: "maximum bytes exceeded"), real
command service."""

from __future__ import annotations

import asyncio
import dataclasses

import msgpack

from netledger.events.commands import Actor, parse_command
from netledger.events.errors import LogStorageFull, LogUnavailable, MacInUse
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_revert import flat


def allocate(instance: str, network_id: str, mac: str | None = None) -> object:
    payload = {
        "command_id": f"h112-{instance}",
        "actor": Actor(role="admin").to_wire(),
        "args": {"instance": instance, "network_id": network_id, "host": "h1", "mac": mac},
    }
    return parse_command("fixed_ip.allocate", msgpack.unpackb(msgpack.packb(payload)))


async def full_log(conn: Connection) -> None:
    """The stream takes no more bytes than it holds, refusing new messages (a store full)."""
    info = await conn.js.stream_info(conn.stream)
    config = dataclasses.replace(
        info.config, max_bytes=int(info.state.bytes), discard=type(info.config.discard)("new")
    )
    await conn.js.update_stream(config)


async def test_a_refusal_in_a_round_whose_append_fails_is_answered_as_the_refusal(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c)
    taken = await c.allocate_fixed_ip("i-0", network_id=nid, host="h1")
    await service.follower.wait_for(await last_seq(conn))
    await full_log(conn)
    before = await last_seq(conn)

    # Both queued before their lane runs: one round (allocations are batched).
    refused = service._submit_nowait(allocate("i-1", nid, mac=taken["mac"]))  # type: ignore[arg-type]
    failing = service._submit_nowait(allocate("i-2", nid))  # type: ignore[arg-type]
    got = await asyncio.gather(refused, failing, return_exceptions=True)

    assert isinstance(got[1], LogStorageFull), got[1]  # the log's trouble, for the append
    assert isinstance(got[0], MacInUse), got[0]  # its own refusal, not the log's trouble
    assert not isinstance(got[0], LogUnavailable)
    assert await last_seq(conn) == before
    assert service.stats.retries["refusal"] == 1  # checked against the log's end, once

    # The log still full, the same command sent again is told its refusal (as it was before
    # the fix: alone in its round, nothing is appended). A client that retried on
    # "log_unavailable" learnt it one round trip late; one that did not never did.
    again = service._submit_nowait(allocate("i-1", nid, mac=taken["mac"]))  # type: ignore[arg-type]
    try:
        await again
        raise AssertionError("the retry was not refused")
    except MacInUse:
        pass
    assert await last_seq(conn) == before


async def test_a_refusal_waiting_out_a_failing_append_is_answered_as_the_refusal(
    conn: Connection,
) -> None:
    """The append of the same round fails only at the end of its budget (the store refuses
    with a 503 that may be a leader election: retried while the budget lasts). Its put-off
    refusal has then waited more than half a budget, and a job that waited so long while the
    log fails is answered with the log's trouble without being decided (a command answers
    within about 1.5 budgets): it was told ``log_unavailable``. A put-off refusal is decided
    all the same — a refusal appends nothing, so it costs no budget — and told its refusal."""
    svc = CommandService(conn, append_budget=0.6)
    await svc.start()
    try:
        c = Client(conn)
        nid = await flat(c)
        taken = await c.allocate_fixed_ip("i-0", network_id=nid, host="h1")
        await svc.follower.wait_for(await last_seq(conn))
        info = await conn.js.stream_info(conn.stream)
        discard_new = type(info.config.discard)("new")
        await conn.js.update_stream(
            dataclasses.replace(info.config, max_msgs=int(info.state.messages), discard=discard_new)
        )
        before = await last_seq(conn)
        refused = svc._submit_nowait(allocate("i-1", nid, mac=taken["mac"]))  # type: ignore[arg-type]
        failing = svc._submit_nowait(allocate("i-2", nid))  # type: ignore[arg-type]
        got = await asyncio.gather(refused, failing, return_exceptions=True)
        assert isinstance(got[1], LogUnavailable), got[1]
        assert isinstance(got[0], MacInUse), got[0]
        assert await last_seq(conn) == before
    finally:
        await svc.close()
