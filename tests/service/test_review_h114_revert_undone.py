"""Review h114: ``revert --command-id X`` after a range revert that undid X was itself undone by
a later range revert (whose range held the first one's compensations): X's changes are live
again, and ``revert-X`` was never used, yet the look for range markers (db2c586) told
``already_reverted`` by the first range — X could not be reverted by its id. Against a real
nats-server and the real command service."""

from __future__ import annotations

import pytest

from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import AlreadyReverted, revert
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_revert import flat


async def test_a_command_whose_range_revert_was_undone_since_is_reverted(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c)
    n0 = await last_seq(conn)
    x = new_command_id()
    a = (await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id=x))["address"]
    n1 = await last_seq(conn)
    await revert(conn, c, to_seq=n0)  # frees a
    assert a not in service.state.networks[nid].fixed
    await revert(conn, c, to_seq=n1)  # undoes that revert: a is i-1's again
    assert service.state.networks[nid].fixed[a].instance == "i-1"

    got = await revert(conn, c, command_id=x)
    assert got["revert_command_id"] == f"revert-{x}"
    assert a not in service.state.networks[nid].fixed


async def test_a_command_reverted_undone_and_reverted_again_is_already_reverted(
    conn: Connection, service: CommandService
) -> None:
    """Three ranges: X undone, redone, undone again (the third undoes the second) — X is
    reverted, by the first, which stands again; a revert of X would undo a later change."""
    c = Client(conn)
    nid = await flat(c)
    n0 = await last_seq(conn)
    x = new_command_id()
    a = (await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id=x))["address"]
    n1 = await last_seq(conn)
    first = await revert(conn, c, to_seq=n0)
    n2 = await last_seq(conn)
    await revert(conn, c, to_seq=n1)
    await revert(conn, c, to_seq=n2)  # undoes the second: the first stands again
    assert a not in service.state.networks[nid].fixed
    b = (await c.allocate_fixed_ip("i-2", network_id=nid, host="h1"))["address"]
    assert b == a  # the lowest free address: X's
    before = await last_seq(conn)

    with pytest.raises(AlreadyReverted) as info:
        await revert(conn, c, command_id=x)
    assert info.value.details["command_id"] == first["revert_command_id"]
    assert await last_seq(conn) == before
    assert service.state.networks[nid].fixed[a].instance == "i-2"


async def test_a_revert_held_while_the_range_that_undid_xs_revert_is_undone_is_refused(
    conn: Connection, service: CommandService
) -> None:
    """X (a deallocation) reverted by range 1, range 1 undone by range 2: the revert of X read
    the markers then (range 1 no longer standing) and is held. Range 3 undoes range 2 — range 1
    stands again, X undone — and i-1 is deallocated again (a later change). Sent now, the
    revert of X is refused ``revert_raced``; reading only the markers since, none of which
    undid an event of X, it was sent again: the address allocated to i-1 once more, X
    compensated twice, the later deallocation undone. Told already_reverted, appending
    nothing."""
    from tests.service.test_review_h113_revert_race import deallocated, held

    c = Client(conn)
    nid = await flat(c)
    a, n0, x = await deallocated(c, nid)
    n1 = await last_seq(conn)
    first = await revert(conn, c, to_seq=n0)  # X undone: a is i-1's again
    n2 = await last_seq(conn)
    await revert(conn, c, to_seq=n1)  # range 1 undone: a free
    assert a["address"] not in service.state.networks[nid].fixed
    h, task = await held(conn, command_id=x)
    await revert(conn, c, to_seq=n2)  # range 2 undone: range 1 stands, a is i-1's
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-1"
    await c.deallocate_fixed_ip("i-1", nid)  # a later change
    before = await last_seq(conn)

    h.go.set()
    with pytest.raises(AlreadyReverted) as info:
        await task
    assert info.value.details["command_id"] == first["revert_command_id"]
    assert await last_seq(conn) == before
    assert a["address"] not in service.state.networks[nid].fixed
