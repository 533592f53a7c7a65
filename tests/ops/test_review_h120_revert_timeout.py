"""Review h120: ``revert`` sends its command as every other CLI command does (netledger/cli.py
``command_client``) — it keeps asking for ``--command-timeout`` while no service answers, not
the client's own 60 s whatever the option said (``revert`` made its client itself and left the
option out; the retries of a refusal for a moment, 2fa5e5a, wait for it too).

A real nats-server holding a command's events, no command service running: the error says
how long the revert asked (never timed by a clock here)."""

from __future__ import annotations

from netledger.journal.stream import Connection
from netledger.service.client import Client, new_command_id
from netledger.service.service import CommandService
from tests.service.test_revert import cli, flat


async def test_revert_asks_for_the_command_timeout_given(conn: Connection, nats_url: str) -> None:
    svc = CommandService(conn)
    await svc.start()
    try:
        c = Client(conn)
        nid = await flat(c)
        cid = new_command_id()
        await c.allocate_fixed_ip("i-1", network_id=nid, command_id=cid)
    finally:
        await svc.close()  # nothing answers the revert now
    code, out, err = await cli(nats_url, "--command-timeout", "0.5", "revert", "--command-id", cid)
    assert code == 1, (out, err)
    assert "error [unavailable]: no command service is running for revert" in err, err
    assert "asked for 0.5 s" in err, err
