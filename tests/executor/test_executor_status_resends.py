"""An executor's appends of host events sent again (its own ``Appender.resends``) are in its
liveness status (``host.<host>.status``: ``append_resends``, by reason) — counted before, shown
nowhere: the executor's metrics port has no service to read them from. Met for real: a
nats-server whose JetStream holds no stream yet, so the executor's append meets no responders
and is sent again until the stream is there; the status is read back from the real bucket."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.host_events import HostLinkCreated
from netledger.executor.daemon import Executor
from netledger.executor.desired import HostConfig
from netledger.executor.options import Options, PassReport
from netledger.journal.append import RESEND_REASONS
from netledger.journal.liveness import live_bucket, read_all, status_key
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.ops.status import gather
from tests.journal.test_append_resends import until


async def _status(conn: Connection, host: str) -> dict[str, object]:
    value, _rev, _t = (await read_all(conn, f"host.{host}.status"))[status_key(host)]
    got: dict[str, object] = json.loads(value)
    return got


async def test_the_executors_resends_are_in_its_liveness_status(tmp_path: Path) -> None:
    bare = EmbeddedNats(tmp_path / "nats", port=free_port())
    await asyncio.to_thread(bare.start)
    conn = await connect(bare.url)
    cfg = HostConfig(host="rs", physical_interface="eth1", network_host=True, dhcp=False)
    ex = Executor(conn, cfg, Options())
    try:
        await live_bucket(conn, create=True)  # the command service's, where one runs
        await ex._put_status(PassReport(applied_seq=0), "start")
        first = await _status(conn, "rs")
        assert first["append_resends"] == dict.fromkeys(RESEND_REASONS, 0)
        # (its netlink sockets' counts of dumps marked interrupted: none open yet)
        assert first["dumps_interrupted"] == {"marked": 0, "taken": 0}

        # No stream yet (a server restarting without it): the append is sent again, same ids.
        link = HostLinkCreated(host="rs", name="br1", kind="bridge", network_id="1", drift=False)
        task = asyncio.create_task(ex._append(ex._envelopes([link])))
        await until("a re-send after no responders", lambda: ex._appender.resends["unavailable"])
        await ensure_stream(conn)
        assert await task == await last_seq(conn) == 1  # it landed, once
        sent_again = ex._appender.resends["unavailable"]
        assert sent_again >= 1

        await ex._put_status(PassReport(applied_seq=1), "change")
        status = await _status(conn, "rs")
        shown = await gather(conn, wait=0.1)  # what `netledger status --json` shows of it
    finally:
        await ex.close()
        await conn.close()
        await asyncio.to_thread(bare.stop)
    assert status["append_resends"] == {"no_answer": 0, "unavailable": sent_again}
    [row] = [h for h in shown["hosts"] if h["host"] == "rs"]
    assert row["append_resends"] == status["append_resends"]
    assert status["log_error"] is None  # sent again within its budget: not a refusal
