"""Review h114: a revert re-sent under its id (its first answer lost: the client sends the same
request again) after another revert landed is answered as its own retry — the markers' check
(``markers_upto``, 6e20204) does not refuse it ``revert_raced`` although a marker (its own, and
another's) landed after its read. Real nats-server, real command service."""

from __future__ import annotations

from typing import Any

from netledger.events.codec import Actor
from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import revert
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_revert import flat


class LostAnswerClient(Client):
    """The real client, whose revert request lands, is followed by another revert (of
    ``other``), and is then sent again as it was: the second answer is the one returned."""

    def __init__(self, conn: Connection, other: str) -> None:
        super().__init__(conn)
        self.other = other
        self.answers: list[dict[str, Any]] = []

    async def request(
        self,
        name: str,
        args: dict[str, Any],
        *,
        command_id: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        if name != "revert":
            return await super().request(name, args, command_id=command_id, actor=actor)
        self.answers.append(await super().request(name, args, command_id=command_id))
        await revert(self.conn, Client(self.conn), command_id=self.other)
        self.before_resend = await last_seq(self.conn)
        self.answers.append(await super().request(name, args, command_id=command_id))
        return self.answers[-1]


async def two_allocations(c: Client) -> tuple[str, str, str, str]:
    """Two allocations on a new flat network by command ids x and y: (the network, x, y, x's
    address)."""
    nid = await flat(c)
    x, y = new_command_id(), new_command_id()
    a = (await c.allocate_fixed_ip("i-1", network_id=nid, host="h1", command_id=x))["address"]
    await c.allocate_fixed_ip("i-2", network_id=nid, host="h1", command_id=y)
    return nid, x, y, a


async def test_a_revert_resent_after_another_revert_landed_is_answered_as_its_retry(
    conn: Connection, service: CommandService
) -> None:
    nid, x, y, a = await two_allocations(Client(conn))
    lost = LostAnswerClient(conn, y)

    got = await revert(conn, lost, command_id=x)
    first, again = lost.answers
    assert got["revert_command_id"] == first["revert_command_id"] == f"revert-{x}"
    assert again["reverted_seqs"] == first["reverted_seqs"]
    assert await last_seq(conn) == lost.before_resend  # the resend appended nothing
    assert a not in service.state.networks[nid].fixed
    assert "i-2" not in service.state.instance_ips
