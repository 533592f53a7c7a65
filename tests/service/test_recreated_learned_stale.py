"""Review h97: what the command service learns of a re-created network's subject
(service/recreated.py) must not outlive a conflict that proves it wrong.

The fold forgets a deleted network's subject once read past (events/prune.py); a network
created again under that id (never decided: a hand-made log) has its first append's OCC check
from the log — a direct get (``last_messages``), which a stream replica that has not stored
the log that far yet may answer (executor/view.py ``_read_indexed`` says as much of direct
gets): an older last message, or none. Kept in ``State.learned`` for good, that answer made
every attempt of every command on the network a conflict (``conflict_retries_exhausted``)
until the service restarted: the log refused the check, the lanes read on (nothing new), and
decided again on the same wrong answer. Fixed: a conflict drops what was learned, and the
next round asks the log again.

Real nats-server and command service; the stale answer is the real direct get asked as of an
earlier sequence (what a replica behind would answer), once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from netledger.events.codec import Actor, Envelope, encode
from netledger.events.ids import network_subject
from netledger.journal.stream import Connection
from netledger.service import recreated as recreated_module
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_review72_recreated import created


@pytest.mark.parametrize("host", [None, "h1"], ids=["alone", "with-placement"])
async def test_a_stale_answer_of_the_log_is_asked_again_after_a_conflict(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch, host: str | None
) -> None:
    c = Client(conn)
    (net,) = await c.create_networks(label="a", cidr="10.60.0.0/24", mode="flat", bridge="br60")
    nid = str(net["id"])
    subject = network_subject(nid)
    await c.allocate_fixed_ip("i1", network_id=nid, host="h1")
    await c.deallocate_fixed_ip("i1", network_id=nid)
    await c.request("network.delete", {"network_id": nid})
    await service.follower.catch_up()
    assert subject not in service.state.subject_seq  # read past: forgotten
    # the same id created again by hand
    env = Envelope(
        created(nid, "10.61.0", "br61"), "again", "again", time.time(), Actor(role="system")
    )
    await conn.js.publish(env.event.subject(), encode(env), stream=conn.stream)
    await service.follower.catch_up()
    again = service.state.recreated[nid]

    real = recreated_module.last_messages
    asked: list[int] = []

    async def behind(conn: Connection, subjects: list[str], up_to_seq: int) -> Any:
        # The first answer comes from a replica that has stored the log only up to before
        # the older network's allocation: it knows no message on the subject.
        asked.append(up_to_seq)
        if len(asked) == 1:
            return await real(conn, subjects, 1)
        return await real(conn, subjects, up_to_seq)

    monkeypatch.setattr(recreated_module, "last_messages", behind)
    got = await c.allocate_fixed_ip("i2", network_id=nid, host=host)
    assert got["address"].startswith("10.61.0.")
    assert len(asked) == 2 and asked[0] == again  # asked again after the conflict
    await service.follower.catch_up()
    assert service.state.seq_of(subject) > again
    assert set(service.state.networks[nid].fixed) == {got["address"]}
