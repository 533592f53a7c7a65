"""Review hrev21: the client's giving up.

* Its deadline (``--command-timeout``, dhcp-event's 15 s) was overrun by up to one attempt's
  timeout (10 s): an attempt started just before the deadline waited its whole timeout, so
  `dhcp-event` could hold dnsmasq ~20 s where docs/operations.md says "it never waits more
  than 15 s", and a late answer was taken after the client should have given up.
* The error it gives up with said nothing of the command's outcome: a ``log_unavailable``
  made by the client (no answer in time, the replicas say their log refuses writes) lacked the
  ``outcome`` docs/operations.md gives that code, and ``unavailable`` could not tell "nothing
  received it" (no responders: ``not_applied``) from "a service got it and did not answer"
  (``unknown``).
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from nats.aio.msg import Msg

from netledger.events.errors import LogUnavailable, Unavailable
from netledger.journal.stream import Connection
from netledger.ops.status import StatusResponder
from netledger.service.client import Client

SUBJECT = "netledger.admin.cmd.network.list"


async def test_an_answer_after_the_deadline_is_not_waited_for(conn: Connection) -> None:
    """Attempt 1 times out at 2 s, attempt 2 starts at ~2.1 s with 0.9 s of the 3 s deadline
    left; the answer comes at 3.3 s. The client must have given up at 3 s (unavailable)."""
    loop = asyncio.get_running_loop()
    seen: list[Msg] = []
    started = loop.time()
    deadline = 3.0

    async def late(msg: Msg) -> None:
        seen.append(msg)
        if len(seen) == 2:  # the second attempt: answered only after the deadline
            await asyncio.sleep(max(0.0, started + deadline + 0.3 - loop.time()))
            reply = {"ok": True, "result": {"networks": []}}
            await conn.nc.publish(msg.reply, msgpack.packb(reply))

    async def on(msg: Msg) -> None:  # (callbacks run one at a time: answer from a task)
        _spawn(late(msg))

    sub = await conn.nc.subscribe(SUBJECT, cb=on)
    try:
        c = Client(conn, timeout=2.0, deadline=deadline)
        started = loop.time()
        with pytest.raises(Unavailable):
            await c.request("network.list", {})
    finally:
        await sub.unsubscribe()
    assert len(seen) == 2


_tasks: set[asyncio.Task[Any]] = set()


def _spawn(coro: Any) -> None:
    t = asyncio.ensure_future(coro)
    _tasks.add(t)
    t.add_done_callback(_tasks.discard)


async def test_nobody_listening_is_not_applied(conn: Connection) -> None:
    c = Client(conn, timeout=0.2, deadline=0.5)
    with pytest.raises(Unavailable) as e:
        await c.request("network.list", {})
    assert e.value.details.get("outcome") == "not_applied", e.value.details


async def test_a_service_that_does_not_answer_leaves_the_outcome_unknown(
    conn: Connection,
) -> None:
    async def silent(msg: Msg) -> None:
        return None

    sub = await conn.nc.subscribe(SUBJECT, cb=silent)
    try:
        c = Client(conn, timeout=0.2, deadline=0.5)
        with pytest.raises(Unavailable) as e:
            await c.request("network.list", {})
    finally:
        await sub.unsubscribe()
    assert type(e.value) is Unavailable
    assert e.value.details.get("outcome") == "unknown", e.value.details


async def test_log_unavailable_made_by_the_client_has_its_documented_outcome(
    conn: Connection,
) -> None:
    """docs/operations.md: log_unavailable's ``outcome`` is not_applied or unknown."""

    async def silent(msg: Msg) -> None:
        return None

    log = {"state": "failing", "writable": False, "code": "log_unavailable", "reason": "no quorum"}
    sub = await conn.nc.subscribe(SUBJECT, cb=silent)
    try:
        async with StatusResponder(conn, lambda: {"log": log}):
            c = Client(conn, timeout=0.2, deadline=0.5)
            with pytest.raises(LogUnavailable) as e:
                await c.request("network.list", {})
    finally:
        await sub.unsubscribe()
    assert e.value.details.get("outcome") == "unknown", e.value.details
