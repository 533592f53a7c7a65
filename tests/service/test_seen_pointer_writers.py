"""The command service remembers recent commands' events (``seen``: a retry gets its first
answer), not the messages its own pointer writers append (service/legacy_pointers.py): every
retirement of an old deletion is written under the command id ``network-retired`` and every
announcement pointer under ``announce-index``, so a cloud's 5,000 old deletions were one entry
of 5,000 messages, in every snapshot (review hrev83). A real deletion's ``NetworkRetired``, under
the deletion's own command id, is still remembered: part of ``network.delete``'s answer on a
retry (tests/service/test_network_retired.py). Real nats-server, real command services, folded
in-process and through the catch-up reader, and from a snapshot an older service wrote."""

from __future__ import annotations

from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.service import service as service_module
from netledger.service.client import Client
from netledger.service.legacy_pointers import COMMAND_ID, RETIRE_COMMAND_ID
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.executor.test_legacy_announce_index import legacy, pointers
from tests.executor.test_legacy_retirement import old_delete, retirements

OLD = 3


async def _old_cloud(conn: Connection) -> list[dict[str, Any]]:
    """Networks: the first deleted by today's service ("del-real"), the rest as services
    before retirements deleted them (nothing on the registry); an announcement as executors
    before the announcement subjects wrote it."""
    async with CommandService(conn):
        c = Client(conn)
        nets = await c.create_networks(
            label="o", cidr="10.87.0.0/24", num_networks=OLD + 1, network_size=64, mode="flat"
        )
        await c.request("network.delete", {"network_id": nets[0]["id"]}, command_id="del-real")
    for n in nets[1:]:
        await old_delete(conn, str(n["id"]))
    await legacy(conn, "h1")
    return nets


async def _check(conn: Connection, svc: CommandService, real: str) -> None:
    assert len(await retirements(conn)) == OLD + 1  # the real one's and the old ones'
    assert len(await pointers(conn)) == 1
    assert RETIRE_COMMAND_ID not in svc.seen and COMMAND_ID not in svc.seen
    assert len(svc.seen["del-real"]) == 2  # NetworkDeleted, NetworkRetired
    again = await Client(conn).request(
        "network.delete", {"network_id": real}, command_id="del-real"
    )
    assert again["already_applied"] and again["events"] == ["NetworkDeleted", "NetworkRetired"]


@pytest.mark.parametrize("child", [None, 1], ids=["in-process", "catch-up-reader"])
async def test_pointer_writers_messages_are_not_remembered(
    conn: Connection, child: int | None
) -> None:
    nets = await _old_cloud(conn)
    # The first start writes the retirements and the pointer (folded as the follower reads
    # them); the second folds the whole log again (with child=1, through the catch-up
    # reader's undecoded path, _fold_raw).
    for _ in range(2):
        svc = CommandService(conn, reap_interval=None, child_catch_up=child)
        await svc.start()
        try:
            await _check(conn, svc, str(nets[0]["id"]))
        finally:
            await svc.close()


async def test_a_snapshot_that_kept_them_is_loaded_without_them(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    nets = await _old_cloud(conn)
    with monkeypatch.context() as m:
        m.setattr(service_module, "_NOT_SEEN_IDS", frozenset())  # as services before the fix
        old = CommandService(conn, reap_interval=None, snapshots=SnapshotPolicy(every_events=0))
        await old.start()
        try:
            assert len(old.seen[RETIRE_COMMAND_ID]) == OLD
            assert old.snapshotter is not None and await old.snapshotter.write() is not None
        finally:
            await old.close()
    svc = CommandService(conn, reap_interval=None, snapshots=SnapshotPolicy(every_events=0))
    await svc.start()
    try:
        assert svc.snapshotter is not None and svc.snapshotter.stats.loaded_seq is not None
        await _check(conn, svc, str(nets[0]["id"]))
    finally:
        await svc.close()
