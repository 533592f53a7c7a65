"""Review h114 of b24f1ba: a refusal put off in a round whose append fails ``LogUnavailable``,
when what refused it was a decision of that very round (the same MAC, asked twice in one
round): that decision did not land, so the refusal no longer holds — decided again, the
command is told the log's trouble like the other, not a refusal naming a MAC nobody holds.
Real nats-server (its stream full), real command service."""

from __future__ import annotations

import asyncio

from netledger.events.errors import LogUnavailable, MacInUse
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_revert import flat
from tests.service.test_review_h112_refusal_log_unavailable import allocate, full_log


async def test_a_refusal_that_hung_on_a_failed_append_is_told_the_logs_trouble(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c)
    await service.follower.wait_for(await last_seq(conn))
    await full_log(conn)
    before = await last_seq(conn)
    mac = "02:16:3e:00:11:22"

    first = service._submit_nowait(allocate("i-1", nid, mac=mac))  # type: ignore[arg-type]
    second = service._submit_nowait(allocate("i-2", nid, mac=mac))  # type: ignore[arg-type]
    got = await asyncio.gather(first, second, return_exceptions=True)

    assert isinstance(got[0], LogUnavailable), got[0]
    assert isinstance(got[1], LogUnavailable), got[1]  # not MacInUse: i-1 holds nothing
    assert not isinstance(got[1], MacInUse)
    assert await last_seq(conn) == before
    assert not any(f.mac == mac for f in service.state.networks[nid].fixed.values())


async def test_refusals_on_the_state_and_on_a_failed_decision_in_one_round(
    conn: Connection, service: CommandService
) -> None:
    """Three in one round, the log full: a new MAC (its append fails), the same MAC again
    (refused only by the first, which does not land: the log's trouble), and a MAC an
    allocation in the log holds (refused for good: told so, not the log's trouble). Passes
    before the fix as well: h1 joined already, no pre-linked join is refused, and the round's
    one check against the log's end is still unspent when its append fails (b24f1ba)."""
    c = Client(conn)
    nid = await flat(c)
    taken = await c.allocate_fixed_ip("i-0", network_id=nid, host="h1")
    await service.follower.wait_for(await last_seq(conn))
    await full_log(conn)
    before = await last_seq(conn)
    mac = "02:16:3e:00:11:33"

    jobs = [
        service._submit_nowait(allocate("i-1", nid, mac=mac)),  # type: ignore[arg-type]
        service._submit_nowait(allocate("i-2", nid, mac=mac)),  # type: ignore[arg-type]
        service._submit_nowait(allocate("i-3", nid, mac=taken["mac"])),  # type: ignore[arg-type]
    ]
    got = await asyncio.gather(*jobs, return_exceptions=True)

    assert isinstance(got[0], LogUnavailable), got[0]
    assert isinstance(got[1], LogUnavailable), got[1]
    assert isinstance(got[2], MacInUse), got[2]
    assert await last_seq(conn) == before
