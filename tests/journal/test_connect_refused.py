"""A refused login: said at once with one server, not the end of the connect with several.

nats-py retried a refused password for the connect's whole bound (~5 s) and the CLI then said
"the server closed the connection". With one server the refusal is the answer, at once. With
several, another may take the credentials (a cluster part-way through a change of them) and
nats-py goes on to it (in a random order): the refusal of one must not end the connect.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.errors import Unavailable
from netledger.journal.stream import connect

AUTH = "authorization { users = [ {user: app, password: right} ] }\n"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[EmbeddedNats, EmbeddedNats]]:
    refusing = EmbeddedNats(tmp_path / "a", port=free_port(), extra_config=AUTH)
    open_ = EmbeddedNats(tmp_path / "b", port=free_port())
    refusing.start()
    try:
        open_.start()
        try:
            yield refusing, open_
        finally:
            open_.stop()
    finally:
        refusing.stop()


async def test_one_server_refusing_is_the_answer(
    servers: tuple[EmbeddedNats, EmbeddedNats],
) -> None:
    refusing, _ = servers
    with pytest.raises(Unavailable) as err:
        await connect(refusing.url, user="app", password="wrong")
    assert "the server refused the credentials" in str(err.value)
    assert "Authorization Violation" in str(err.value)
    conn = await connect(refusing.url, user="app", password="right")
    await conn.nc.close()


async def test_one_of_several_servers_refusing_does_not_end_the_connect(
    servers: tuple[EmbeddedNats, EmbeddedNats],
) -> None:
    refusing, open_ = servers
    for _ in range(6):  # nats-py tries the servers in a random order: each first, likely
        conn = await connect([refusing.url, open_.url], user="app", password="wrong")
        assert conn.nc.connected_url is not None
        assert conn.nc.connected_url.port == open_.port
        await conn.nc.close()
