"""A retry decided again (its command no longer among the ``seen`` ones the service keeps)
appends its events with the same message ids as the first time; inside the stream's duplicate
window the server stores nothing and acknowledges the *first* message (``duplicate``). The
answer must be what was stored, not the new decision, which never reached the log."""

from __future__ import annotations

import pytest

from netledger.events.codec import Envelope
from netledger.events.types import FloatingIpAllocated
from netledger.journal.stream import Connection, last_seq
from netledger.service import service as service_module
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_service import read_all


async def test_a_retry_acked_as_duplicate_gets_the_stored_answer(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The service keeps the first answers of its latest 20,000 commands: a retry from further
    # back comes within the 2-minute duplicate window at ~170 commands/s. One here.
    monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    c = Client(conn)
    await c.request("floating_ip.pool_create", {"pool": "pub", "cidr": "198.51.100.0/28"})
    first = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-1")
    await c.request("floating_ip.allocate", {"project": "p2"}, command_id="fa-2")
    assert "fa-1" not in service.seen
    top = await last_seq(conn)

    again = await c.request("floating_ip.allocate", {"project": "p1"}, command_id="fa-1")

    assert await last_seq(conn) == top, "the retry stored something"
    stored = {
        env.event.address: env.command_id
        for _, _, env in await read_all(conn)
        if isinstance(env, Envelope) and isinstance(env.event, FloatingIpAllocated)
    }
    assert stored[first["address"]] == "fa-1"
    assert again == first, f"answered {again['address']}, which the log does not hold"
