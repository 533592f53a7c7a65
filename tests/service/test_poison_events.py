"""A message on the stream the fold cannot take is recorded and skipped — never fatal, not at
the next start either, and it blocks no later command (a real nats-server).

Found Dec 5: garbage on a network's subject left that network's allocations refused for good
(``ConflictRetriesExhausted``: the fold did not count the message, the log's OCC check did);
a ``NetworkCreated`` whose ``cidr`` was ``True`` or ``"abc"``, or whose gateway lay outside
it, stopped the service's follower, and every later start folded the log into the same
exception.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from netledger.journal.stream import Connection
from netledger.replay.verify_snapshot import fold_to
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.poison import stored_network_created


async def _publish(conn: Connection, subject: str, data: bytes) -> int:
    ack = await conn.js.publish(subject, data, stream=conn.stream)
    return int(ack.seq)


async def _restarted(conn: Connection) -> CommandService:
    """A replica started afresh: it folds the whole log, the poison included."""
    svc = CommandService(conn, reap_interval=None)
    await svc.start()
    return svc


async def test_garbage_on_a_networks_subject_blocks_none_of_its_allocations(
    conn: Connection, service: CommandService
) -> None:
    client = Client(conn)
    net = (
        await client.create_networks(label="n", cidr="10.5.0.0/24", num_networks=1, mode="vxlan")
    )[0]
    await client.allocate_fixed_ip("vm-1", network_id=net["id"])
    seq = await _publish(conn, f"netledger.evt.network.{net['id']}", b"\xc1 not msgpack")
    await service.follower.wait_for(seq)
    assert [(r.seq, r.reason) for r in service.rejected] == [(seq, "not msgpack: FormatError")]
    after = await client.allocate_fixed_ip("vm-2", network_id=net["id"])
    assert after["address"] == "10.5.0.3"
    again = await _restarted(conn)
    try:
        assert [r.seq for r in again.rejected] == [seq]
        third = await Client(conn).allocate_fixed_ip("vm-3", network_id=net["id"])
        assert third["address"] == "10.5.0.4"
    finally:
        await again.close()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"cidr": True}, "NetworkCreated: cidr is bool, not str | None"),
        ({"vni": "7777"}, "NetworkCreated: vni is str, not int | None"),
        ({"cidr": "abc"}, "NetworkCreated cannot be folded: bad cidr 'abc'"),
        (
            {"gateway": "10.78.0.1"},
            "NetworkCreated cannot be folded: gateway 10.78.0.1 is not in 10.77.0.0/24",
        ),
    ],
)
async def test_an_event_the_fold_cannot_take_is_recorded_and_skipped(
    conn: Connection, service: CommandService, changes: dict[str, Any], reason: str
) -> None:
    client = Client(conn)
    net = (
        await client.create_networks(label="n", cidr="10.5.0.0/24", num_networks=1, mode="vxlan")
    )[0]
    seq = await _publish(conn, "netledger.evt.registry", stored_network_created(**changes))
    await service.follower.wait_for(seq)
    assert service.follower.failure is None
    assert [(r.seq, r.subject, r.reason) for r in service.rejected] == [
        (seq, "netledger.evt.registry", reason)
    ]
    assert "77" not in service.state.networks
    # Commands go on, on the poisoned subject too (the registry's OCC counts the message).
    await client.allocate_fixed_ip("vm-1", network_id=net["id"])
    more = await client.create_networks(
        label="m", cidr="10.6.0.0/24", num_networks=1, mode="vxlan", vni_start=2000
    )
    assert more[0]["cidr"] == "10.6.0.0/24"
    again = await _restarted(conn)
    try:
        assert [(r.seq, r.reason) for r in again.rejected] == [(seq, reason)]
        assert set(again.state.networks) == set(service.state.networks)
        # The fold `netledger verify` compares snapshots with skips it alike.
        folded = await fold_to(conn, again.state.last_seq)
        assert folded.subject_seq == again.state.subject_seq
        assert set(folded.networks) == set(again.state.networks)
    finally:
        await again.close()


async def test_an_own_decision_the_fold_refuses_is_logged_as_a_bug(
    conn: Connection,
    service: CommandService,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A decider's event the fold refuses (here: an address outside its network, forced) is
    an error in the log, not a silent skip; the service goes on."""
    import dataclasses

    from netledger.service import lanes

    client = Client(conn)
    net = (
        await client.create_networks(label="n", cidr="10.5.0.0/24", num_networks=1, mode="vxlan")
    )[0]
    real = lanes.decide

    def outside(state: Any, req: Any, pending: Any) -> Any:
        d = real(state, req, pending)
        return dataclasses.replace(
            d, events=[dataclasses.replace(d.events[0], address="10.99.0.9"), *d.events[1:]]
        )

    monkeypatch.setattr(lanes, "decide", outside)
    with caplog.at_level(logging.ERROR, logger="netledger.service"):
        await client.allocate_fixed_ip("vm-bug", network_id=net["id"])
    assert "of this replica's own decision refused by the fold: a bug" in caplog.text
    monkeypatch.setattr(lanes, "decide", real)
    fine = await client.allocate_fixed_ip("vm-ok", network_id=net["id"])
    assert fine["network_id"] == net["id"] and service.follower.failure is None
