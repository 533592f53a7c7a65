"""Review h113: two reverts decided at the same moment must not both compensate one command.

Whether a command was reverted already is seen by the client (``netledger revert`` reads the
markers on ``netledger.evt.revert``); the service's fold keeps no record of which sequences a
marker undid. A revert that read the log before another revert's marker landed, and was sent
after it, compensated the command a second time wherever the state allowed it: the address
the first revert gave back and a later deallocation freed again was allocated to the instance
once more — that later change undone.

The race is made deterministic, not hoped for: the held revert's client (the real client)
waits, after ``revert`` read the log and before it sends the command, until the other revert
and a later change are appended. Real nats-server, real command service."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from netledger.events.codec import Actor
from netledger.events.errors import NetledgerError
from netledger.events.revert import RevertConflict  # noqa: F401  (registers the command)
from netledger.journal.stream import Connection, last_seq
from netledger.revert_cli import AlreadyReverted, revert
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_revert import flat


class HeldClient(Client):
    """The real client, whose first ``revert`` request waits until :attr:`go` is set: the
    revert has read the log (what it undoes, the markers) and is not yet decided."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.reached = asyncio.Event()
        self.go = asyncio.Event()
        #: the revert requests sent, in order (their arguments)
        sent: list[dict[str, Any]] = []
        self.sent = sent

    async def request(
        self,
        name: str,
        args: dict[str, Any],
        *,
        command_id: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        if name == "revert":
            if not self.go.is_set():
                self.reached.set()
                await self.go.wait()
            self.sent.append(dict(args))
        return await super().request(name, args, command_id=command_id, actor=actor)


async def held(conn: Connection, **kwargs: Any) -> tuple[HeldClient, asyncio.Task[Any]]:
    """A revert started and held between its read of the log and its request."""
    h = HeldClient(conn)
    task = asyncio.create_task(revert(conn, h, **kwargs))
    reached = asyncio.create_task(h.reached.wait())
    await asyncio.wait({task, reached}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        reached.cancel()
        task.result()  # (raises what the read raised)
        raise AssertionError("the revert was never sent")
    return h, task


async def deallocated(c: Client, nid: str) -> tuple[dict[str, Any], int, str]:
    """i-1 allocated then deallocated by command X: (the allocation, the last sequence before
    X, X)."""
    a = await c.allocate_fixed_ip("i-1", network_id=nid, host="h1")
    n = await last_seq(c.conn)
    x = new_command_id()
    await c.request("fixed_ip.deallocate", {"instance": "i-1", "network_id": nid}, command_id=x)
    return a, n, x


async def test_a_command_revert_held_past_a_range_revert_of_it_is_refused(
    conn: Connection, service: CommandService
) -> None:
    """``revert --command-id X`` read the log; a ``--to-seq`` range revert covering X landed,
    then a later change (i-1 deallocated again). Sent now, the revert of X is told X was
    reverted by the range, and appends nothing: i-1 stays deallocated. Before: it allocated
    the address to i-1 again — X compensated twice, the later deallocation undone."""
    c = Client(conn)
    nid = await flat(c)
    a, n, x = await deallocated(c, nid)
    h, task = await held(conn, command_id=x)
    ranged = await revert(conn, c, to_seq=n)
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-1"
    await c.deallocate_fixed_ip("i-1", nid)  # a later change
    before = await last_seq(conn)

    h.go.set()
    with pytest.raises(AlreadyReverted) as info:
        await task
    assert info.value.details["command_id"] == ranged["revert_command_id"]
    assert await last_seq(conn) == before  # nothing appended
    assert a["address"] not in service.state.networks[nid].fixed
    assert "i-1" not in service.state.instance_ips


async def test_a_range_revert_held_past_a_command_revert_in_it_is_refused(
    conn: Connection, service: CommandService
) -> None:
    """The other way round: the range revert read the log, ``revert --command-id X`` landed,
    then the later change. The range, sent now, is told that X's events it holds were
    reverted already, and appends nothing."""
    c = Client(conn)
    nid = await flat(c)
    a, n, x = await deallocated(c, nid)
    h, task = await held(conn, to_seq=n)
    mine = await revert(conn, c, command_id=x)
    await c.deallocate_fixed_ip("i-1", nid)
    before = await last_seq(conn)

    h.go.set()
    with pytest.raises(AlreadyReverted) as info:
        await task
    assert info.value.details["command_id"] == mine["revert_command_id"]
    assert await last_seq(conn) == before
    assert a["address"] not in service.state.networks[nid].fixed


async def test_two_overlapping_range_reverts_compensate_once(
    conn: Connection, service: CommandService
) -> None:
    """Two range reverts holding X under different ids (one within the network's scope, one
    not) read at the same moment: the second, sent after the first and a later change, is
    refused ``already_reverted``."""
    c = Client(conn)
    nid = await flat(c)
    a, n, _ = await deallocated(c, nid)
    h, task = await held(conn, to_seq=n, scope=f"network:{nid}")
    first = await revert(conn, c, to_seq=n)
    await c.deallocate_fixed_ip("i-1", nid)
    before = await last_seq(conn)

    h.go.set()
    with pytest.raises(AlreadyReverted) as info:
        await task
    assert info.value.details["command_id"] == first["revert_command_id"]
    assert await last_seq(conn) == before
    assert a["address"] not in service.state.networks[nid].fixed


async def test_a_revert_held_past_an_unrelated_revert_is_sent_again_and_applied(
    conn: Connection, service: CommandService
) -> None:
    """A revert that landed meanwhile but undid none of X's events only made the held
    revert's read of the markers stale: the client reads the markers since, finds none of X,
    and sends the revert again — X is reverted once."""
    c = Client(conn)
    nid = await flat(c)
    a, _, x = await deallocated(c, nid)
    w = new_command_id()
    other = await c.allocate_fixed_ip("i-2", network_id=nid, host="h1", command_id=w)
    h, task = await held(conn, command_id=x)
    await revert(conn, c, command_id=w)
    assert other["address"] not in service.state.networks[nid].fixed

    h.go.set()
    got = await task
    assert got["appended"] and got["revert_command_id"] == f"revert-{x}"
    assert [e["type"] for e in got["events"]] == ["FixedIpAllocated", "ChangeReverted"]
    assert len(h.sent) == 2  # refused once as stale, sent again after reading the markers
    assert service.state.networks[nid].fixed[a["address"]].instance == "i-1"


async def test_two_reverts_of_one_command_under_its_id_compensate_once(
    conn: Connection, service: CommandService
) -> None:
    """Two operators' ``revert --command-id X`` at the same moment go under one id,
    ``revert-X``: the second is answered as a retry of the first (the service's idempotency
    by command id), appending nothing, even after a later change."""
    c = Client(conn)
    nid = await flat(c)
    a, _, x = await deallocated(c, nid)
    h, task = await held(conn, command_id=x)
    first = await revert(conn, c, command_id=x)
    await c.deallocate_fixed_ip("i-1", nid)
    before = await last_seq(conn)

    h.go.set()
    got = await task
    assert got["revert_command_id"] == first["revert_command_id"] == f"revert-{x}"
    assert await last_seq(conn) == before
    assert a["address"] not in service.state.networks[nid].fixed


class OutrunClient(Client):
    """The real client, which has another revert (of each of ``others`` in turn) land right
    before each of its own revert requests: the read of the markers always one behind."""

    def __init__(self, conn: Connection, others: list[str]) -> None:
        super().__init__(conn)
        self.others = others
        self.sent = 0

    async def request(
        self,
        name: str,
        args: dict[str, Any],
        *,
        command_id: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        if name == "revert":
            if self.others:
                await revert(self.conn, Client(self.conn), command_id=self.others.pop(0))
            self.sent += 1
        return await super().request(name, args, command_id=command_id, actor=actor)


async def test_a_revert_outrun_by_a_revert_at_every_send_is_told_revert_raced(
    conn: Connection, service: CommandService
) -> None:
    """The markers are read again and the revert sent again a bounded number of times
    (RACED_RETRIES); outrun every time, it is told ``revert_raced`` (run it again), having
    appended nothing."""
    from netledger.revert_cli import RACED_RETRIES

    c = Client(conn)
    nid = await flat(c)
    a, _, x = await deallocated(c, nid)
    others = []
    for i in range(RACED_RETRIES + 1):
        others.append(new_command_id())
        await c.allocate_fixed_ip(f"o-{i}", network_id=nid, host="h1", command_id=others[-1])
    outrun = OutrunClient(conn, list(others))

    with pytest.raises(NetledgerError) as info:
        await revert(conn, outrun, command_id=x)
    assert info.value.code == "revert_raced"
    assert outrun.sent == RACED_RETRIES + 1 and not outrun.others
    assert f"revert-{x}" not in service.seen  # nothing of the revert of X appended
    assert a["address"] not in service.state.networks[nid].fixed
    assert all(f"revert-{o}" in service.seen for o in others)


async def test_a_marker_landed_between_a_decision_and_its_append_is_caught_by_the_log(
    conn: Connection, service: CommandService, nats_url: str
) -> None:
    """The other half of the guarantee: the revert of X is decided on a replica's state before
    the range's marker exists (its ``markers_upto`` check passes) and held there, before its
    append, while another replica appends the range revert and a later change. Its atomic
    batch is refused by the log's OCC check, it is decided again on a state holding the
    marker — ``revert_raced`` — and the client tells ``already_reverted``: nothing appended."""
    from netledger.events.revert import REVERT_SUBJECT
    from netledger.journal.stream import connect

    c = Client(conn)
    nid = await flat(c)
    a, n, x = await deallocated(c, nid)
    real = service.appender.append
    reached, go = asyncio.Event(), asyncio.Event()

    async def held_append(messages: Any, expected: dict[str, int], **kw: Any) -> int:
        if REVERT_SUBJECT in expected and not go.is_set():
            reached.set()
            await go.wait()
        return await real(messages, expected, **kw)

    service.appender.append = held_append  # type: ignore[method-assign]
    task = asyncio.create_task(revert(conn, c, command_id=x))
    await reached.wait()  # decided by the first replica, not appended
    await service._unsubscribe()  # the next requests go to the second replica
    other_conn = await connect(nats_url, name="replica-2")
    other = CommandService(other_conn)
    await other.start()
    try:
        ranged = await revert(conn, c, to_seq=n)
        await c.deallocate_fixed_ip("i-1", nid)  # a later change
        before = await last_seq(conn)
        conflicts = service.stats.conflicts

        go.set()
        with pytest.raises(AlreadyReverted) as info:
            await task
        assert info.value.details["command_id"] == ranged["revert_command_id"]
        assert service.stats.conflicts > conflicts  # refused by the log, decided again
        assert await last_seq(conn) == before
        await other.follower.catch_up()
        assert a["address"] not in other.state.networks[nid].fixed
    finally:
        await other.close()
        await other_conn.close()
