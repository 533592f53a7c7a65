"""Review h120 of the client's retries (service/client.py): what a refusal says was not
applied speaks for the attempt it answered, not for the command.

The service refuses a command id it has not folded while its log refuses writes (a
``log_unavailable`` / ``log_storage_full`` with ``outcome: not_applied``; with ``retry`` while
serve restarts its nats-server, ops/storage.py), whether or not an earlier attempt of it
landed: an attempt whose answer was lost — the server restarting under it — may have been
appended before, and the fold that would answer it from the log is not caught up yet. A
client that had such an attempt and is then refused tells ``outcome: unknown`` (a retry with
the same id is safe; a new command may apply it twice). A real nats-server; the service's
answers are sent by the test.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from nats.aio.msg import Msg

from netledger.events.errors import LogUnavailable, Unavailable
from netledger.journal.stream import Connection, connect
from netledger.service.client import Client
from tests.service.test_client_retry_restarting import _refusal

SUBJECT = "netledger.admin.cmd.network.list"


async def _answering(conn: Connection, refusal: bytes, ids: list[str], unanswered: int) -> Any:
    """A service that leaves the first ``unanswered`` requests without an answer (lost), then
    refuses every one with ``refusal``."""

    async def on(msg: Msg) -> None:
        ids.append(msgpack.unpackb(msg.data)["command_id"])
        if len(ids) > unanswered:
            await conn.nc.publish(msg.reply, refusal)

    return await conn.nc.subscribe(SUBJECT, cb=on)


@pytest.mark.parametrize("retry", [False, True], ids=["refused", "refused-for-a-moment"])
async def test_a_refusal_after_an_attempt_left_unanswered_leaves_the_outcome_unknown(
    conn: Connection, retry: bool
) -> None:
    ids: list[str] = []
    refusal = _refusal(retry=True) if retry else _refusal()
    sub = await _answering(conn, refusal, ids, unanswered=1)
    try:
        with pytest.raises(LogUnavailable) as e:
            await Client(conn, timeout=0.5, deadline=2.5).request("network.list", {})
    finally:
        await sub.unsubscribe()
    assert len(ids) >= 2 and len(set(ids)) == 1  # the same command id throughout
    assert e.value.details["reason"] == "restarting nats-server"
    assert e.value.details["outcome"] == "unknown", e.value.details


async def test_a_refusal_of_every_attempt_says_not_applied(conn: Connection) -> None:
    ids: list[str] = []
    sub = await _answering(conn, _refusal(), ids, unanswered=0)
    try:
        with pytest.raises(LogUnavailable) as e:
            await Client(conn, timeout=2.0, deadline=20.0).request("network.list", {})
    finally:
        await sub.unsubscribe()
    assert len(ids) == 1
    assert e.value.details["outcome"] == "not_applied"


async def test_a_client_refused_for_a_moment_tells_a_person_watching_why_it_waits(
    conn: Connection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As while no service answers (tests/service/test_storage_client.py): after
    WAITING_HINT_S of refusals for a moment its ``on_waiting`` hears why, once, and the CLI
    prints it — a person at a terminal waited for serve's nats-server to come back in silence,
    up to the whole --command-timeout. The service here refuses until the client has said so,
    then answers."""
    from netledger import cli
    from netledger.service import client as client_mod

    monkeypatch.setattr(client_mod, "WAITING_HINT_S", 0.3)
    heard: list[tuple[str, str, Exception, float]] = []
    ok = msgpack.packb({"ok": True, "result": {"networks": []}})
    refusal = _refusal(retry=True)

    async def on(msg: Msg) -> None:
        await conn.nc.publish(msg.reply, ok if heard else refusal)

    sub = await conn.nc.subscribe(SUBJECT, cb=on)
    c = Client(conn, timeout=2.0, deadline=8.0)
    c.on_waiting = lambda *args: heard.append(args)
    try:
        assert await c.request("network.list", {}) == {"networks": []}
    finally:
        await sub.unsubscribe()
    [(name, subject, why, left)] = heard
    assert name == "network.list" and subject == SUBJECT
    assert isinstance(why, LogUnavailable) and why.details["retry"] is True and 0 < left < 8.0
    cli._tell_waiting(name, subject, why, left)
    err = capsys.readouterr().err
    assert "waiting for network.list (refused for a moment: the log's nats-server" in err, err


async def test_a_deadline_passed_while_waiting_to_ask_again_tells_the_refusal(
    conn: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause before asking again is checked against the deadline, but a loop held up
    meanwhile (here: a person's terminal, ``on_waiting``, blocking it) wakes past it: the
    client told "the command service did not answer", outcome unknown — it had answered, and
    nothing was applied. It tells that answer."""
    import time

    from netledger.service import client as client_mod

    monkeypatch.setattr(client_mod, "WAITING_HINT_S", 0.0)
    ids: list[str] = []
    sub = await _answering(conn, _refusal(retry=True), ids, unanswered=0)
    c = Client(conn, timeout=1.0, deadline=1.0)
    c.on_waiting = lambda *args: time.sleep(1.0)  # holds the loop past the deadline
    try:
        with pytest.raises(LogUnavailable) as e:
            await c.request("network.list", {})
    finally:
        await sub.unsubscribe()
    assert len(ids) == 1
    assert e.value.message.startswith("the log's nats-server is being restarted"), e.value
    assert e.value.details["outcome"] == "not_applied", e.value.details


async def test_a_command_on_a_closed_connection_is_told_unavailable(nats_url: str) -> None:
    """A connection closed under a command (nats-py's ConnectionClosedError ends the retries
    at once): told as the connection lost — it met an unbound answer instead
    (UnboundLocalError) when no attempt had been answered before."""
    closed = await connect(nats_url, name="closed")
    await closed.close()
    with pytest.raises(Unavailable) as e:
        await Client(closed, timeout=1.0, deadline=5.0).request("network.list", {})
    assert "lost the connection to NATS while sending network.list" in e.value.message
    assert e.value.details["outcome"] == "unknown"
