"""A command that fails with an error netledger did not foresee is answered "internal error"
— and counted and timed as such: it was neither, so `netledger_commands_total` and
`netledger_command_seconds` missed the very failures worth alerting on (found by review)."""

from __future__ import annotations

from typing import Any

import pytest

from netledger.events.errors import NetledgerError
from netledger.journal.stream import Connection
from netledger.service import requests
from netledger.service.client import Client
from netledger.service.service import CommandService


async def test_an_internal_error_is_counted_and_timed(
    conn: Connection, service: CommandService, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = requests.decide

    def broken(state: Any, req: Any) -> Any:
        if req.command.READ_ONLY:
            raise RuntimeError("a bug")
        return real(state, req)

    monkeypatch.setattr(requests, "decide", broken)
    c = Client(conn)
    with pytest.raises(NetledgerError) as err:
        await c.request("network.list", {})
    assert err.value.code == "internal_error" and "a bug" in str(err.value)
    assert service.stats.commands.get("network.list:internal_error") == 1
    assert service.stats.seconds["network.list"].count == 1
