"""Review h114: ``revert --command-id X`` when X's own revert (``revert-X``) was undone since by
a range revert that held its compensations. X's changes stand again, and ``revert-X`` is taken
(the service answers it from the log as a retry): the revert cannot go under X's id. It was
refused ``already_reverted`` — the operator told X is reverted while its allocation stands.
Against a real nats-server and the real command service."""

from __future__ import annotations

import pytest

from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import AlreadyReverted, RevertUndone, revert
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_revert import flat


async def test_a_command_whose_own_revert_was_undone_is_not_told_reverted(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    nid = await flat(c)
    x = new_command_id()
    a = (await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id=x))["address"]
    n1 = await last_seq(conn)
    await revert(conn, c, command_id=x)
    assert a not in service.state.networks[nid].fixed
    ranged = await revert(conn, c, to_seq=n1)  # undoes revert-X: a is i-1's again
    assert service.state.networks[nid].fixed[a].instance == "i-1"
    before = await last_seq(conn)

    with pytest.raises(RevertUndone) as info:
        await revert(conn, c, command_id=x)
    assert info.value.code == "revert_undone"
    assert info.value.details["command_id"] == f"revert-{x}"
    assert info.value.details["undone_by"] == ranged["revert_command_id"]
    assert "--to-seq" in info.value.message
    assert await last_seq(conn) == before
    assert service.state.networks[nid].fixed[a].instance == "i-1"


async def test_a_command_whose_revert_a_range_undid_with_it_is_already_reverted(
    conn: Connection, service: CommandService
) -> None:
    """The range held X as well as its revert: it undid both (X's changes gone). Told
    ``already_reverted`` by the range, not ``revert_undone``."""
    c = Client(conn)
    nid = await flat(c)
    n0 = await last_seq(conn)
    x = new_command_id()
    a = (await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id=x))["address"]
    await revert(conn, c, command_id=x)
    ranged = await revert(conn, c, to_seq=n0)  # X and its revert: a stays free
    assert a not in service.state.networks[nid].fixed
    before = await last_seq(conn)

    with pytest.raises(AlreadyReverted) as info:
        await revert(conn, c, command_id=x)
    assert info.value.details["command_id"] == ranged["revert_command_id"]
    assert await last_seq(conn) == before
