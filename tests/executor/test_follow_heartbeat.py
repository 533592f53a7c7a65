"""``executor run --follow-heartbeat``: the consumer an executor follows the log with carries the
idle heartbeat asked for — a large cloud trades a slower recovery after a failover for less
server CPU (each idle host costs the server a heartbeat a period: bench/fleet.py).

Against a real nats-server: the consumer's own configuration, as the server holds it."""

from __future__ import annotations

import pytest

from netledger.executor.cli import executor_run
from netledger.executor.options import Options
from netledger.executor.view import HostView
from netledger.journal.stream import FOLLOW_HEARTBEAT_S, Connection


@pytest.mark.parametrize("share", [True, False])
async def test_the_followers_consumer_has_the_heartbeat_asked_for(
    conn: Connection, share: bool
) -> None:
    views = [
        HostView(conn, "h1", share=share),
        HostView(conn, "h2", share=share, heartbeat=3.0),
    ]
    try:
        for v in views:
            await v.start()
        got = []
        for v in views:
            assert v.follower is not None
            info = await v.follower._sub.consumer_info()
            got.append(info.config.idle_heartbeat)
        assert got == [FOLLOW_HEARTBEAT_S, 3.0]
    finally:
        for v in views:
            await v.close()


def test_the_option_defaults_to_the_followers_and_is_bounded() -> None:
    assert Options().follow_heartbeat == FOLLOW_HEARTBEAT_S
    opt = next(p for p in executor_run.params if p.name == "follow_heartbeat")
    assert opt.default == FOLLOW_HEARTBEAT_S
    for bad in ("0.1", "60"):
        with pytest.raises(Exception, match="not in the range"):
            opt.type.convert(bad, opt, None)
