"""A network deletion is also recorded on the registry (``NetworkRetired``, events/placement.py):
in the deletion's atomic batch, right after its ``NetworkDeleted``, under the same command id;
a retry appends nothing (the ids are the command's); and the registry's OCC check goes with it,
so a deletion decided on a registry another replica wrote meanwhile is decided again. Real
nats-server, real command services."""

from __future__ import annotations

from typing import Any

import pytest

from netledger.events.codec import Envelope
from netledger.events.commands import parse_command
from netledger.events.errors import NetworkNotFound
from netledger.events.ids import REGISTRY_SUBJECT, network_subject
from netledger.events.placement_events import NetworkRetired
from netledger.events.snapshot import state_to_wire
from netledger.events.types import NetworkCreated, NetworkDeleted
from netledger.journal.stream import Connection, last_seq
from netledger.replay.verify_snapshot import fold_to
from netledger.service import service as service_module
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_service import read_all
from tests.service.test_write_path_rare_rounds import two_replicas


def _deletions(log: list[tuple[int, str, object]]) -> list[tuple[int, str, str, object]]:
    return [
        (seq, subject, env.event_id, env.event)
        for seq, subject, env in log
        if isinstance(env, Envelope) and isinstance(env.event, NetworkDeleted | NetworkRetired)
    ]


@pytest.mark.parametrize("forgotten", [False, True], ids=["seen", "seen-forgotten"])
async def test_a_deletion_is_retired_in_its_batch_and_a_retry_appends_nothing(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch, forgotten: bool
) -> None:
    if forgotten:  # the retry is decided again: the network is gone, nothing is appended
        monkeypatch.setattr(service_module, "SEEN_COMMANDS", 1)
    c = Client(conn)
    (net,) = await c.create_networks(label="a", cidr="10.80.0.0/24", mode="flat", bridge="br80")
    nid = net["id"]
    assert await c.request("network.delete", {"network_id": nid}, command_id="del-1") == {
        "deleted": nid
    }
    if forgotten:
        await c.create_networks(label="b", cidr="10.81.0.0/24", mode="flat", bridge="br81")
        assert "del-1" not in service.seen
    end = await last_seq(conn)
    if forgotten:
        with pytest.raises(NetworkNotFound):
            await c.request("network.delete", {"network_id": nid}, command_id="del-1")
    else:
        again = await c.request("network.delete", {"network_id": nid}, command_id="del-1")
        assert again["already_applied"] and again["events"] == ["NetworkDeleted", "NetworkRetired"]
    assert await last_seq(conn) == end
    (deleted, retired) = _deletions(await read_all(conn))
    assert deleted[1:] == (network_subject(nid), "del-1:0", NetworkDeleted(nid))
    assert retired[1:] == (REGISTRY_SUBJECT, "del-1:1", NetworkRetired(nid))
    assert retired[0] == deleted[0] + 1
    await service.follower.catch_up()
    assert state_to_wire(await fold_to(conn, end)) == state_to_wire(service.state)


async def test_a_deletion_decided_on_a_registry_written_meanwhile_is_decided_again(
    conn: Connection, nats_url: str
) -> None:
    async with two_replicas(nats_url) as (a, b):
        c = Client(conn)
        (net,) = await c.create_networks(label="a", cidr="10.82.0.0/24", mode="flat", bridge="br82")
        nid = net["id"]
        top = await last_seq(conn)
        for s in (a, b):
            await s.follower.wait_for(top)
        real_append = a.appender.append
        created: list[dict[str, Any]] = []

        async def append(messages: Any, expected: Any, *args: Any, **kw: Any) -> int:
            if not created and messages[0].msg_id == "del-2:0":
                # replica b creates a network (the registry) after a decided the deletion on
                # the registry as it was, before a's batch goes: refused, decided again
                assert expected[REGISTRY_SUBJECT] == top
                created.append(
                    await b._submit(
                        parse_command(
                            "network.create",
                            {
                                "command_id": "new-1",
                                "actor": {"role": "admin"},
                                "args": {"label": "n", "cidr": "10.83.0.0/24", "mode": "flat",
                                         "bridge": "br83"},
                            },
                        )
                    )
                )  # fmt: skip
            return await real_append(messages, expected, *args, **kw)

        a.appender.append = append  # type: ignore[method-assign]
        conflicts = a.stats.conflicts
        answer = await a._submit(
            parse_command(
                "network.delete",
                {"command_id": "del-2", "actor": {"role": "admin"}, "args": {"network_id": nid}},
            )
        )
        assert answer == {"deleted": nid}
        assert created and a.stats.conflicts > conflicts
        log = await read_all(conn)
        (deleted, retired) = _deletions(log)
        assert retired[0] == deleted[0] + 1 and retired[3] == NetworkRetired(nid)
        made = [e.event for _, _, e in log if isinstance(e, Envelope) and e.command_id == "new-1"]
        assert [type(e) for e in made] == [NetworkCreated]
        end = await last_seq(conn)
        whole = state_to_wire(await fold_to(conn, end))
        for s in (a, b):
            await s.follower.wait_for(end)
            assert state_to_wire(s.state) == whole
            assert nid not in s.state.networks
