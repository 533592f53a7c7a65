"""Review hrev21: `status` and hosts' liveness.

* A host's silence was measured with the host's own clock (the ``time`` it wrote in its
  liveness entry) against the clock of the machine running `status`: a host whose clock is
  10 minutes behind, reporting every minute, was "has not reported for 600s" (exit 1 while all
  is fine); one whose clock is ahead was never found silent. The KV entry's server time says
  when it was written.
* A host silent for more than a day has no liveness entry left (the bucket's entries expire
  after LIVE_TTL_S); `status` then fell back to its last ``HostReconciled`` in the log and, in
  a quiet cloud (lag under --max-lag), called it healthy: exit 0 for a host dead for days.
"""

from __future__ import annotations

import json
import time

from netledger.events.codec import Envelope, encode
from netledger.events.host_events import HostReconciled
from netledger.journal.liveness import LIVE_TTL_S, live_bucket, status_key
from netledger.journal.stream import MSG_ID, Connection, last_seq
from netledger.ops.status import gather


def _host_problems(st: dict) -> list[str]:
    return [p for p in st["problems"] if p.startswith("host ")]


async def test_a_host_whose_clock_is_behind_is_not_called_silent(conn: Connection) -> None:
    kv = await live_bucket(conn, create=True)
    behind = time.time() - 600  # the host's clock: 10 minutes slow; it reports right now
    entry = {"time": behind, "applied_seq": await last_seq(conn), "heartbeat": 60}
    await kv.put(status_key("h1"), json.dumps(entry).encode())

    st = await gather(conn, wait=0.1)

    [h1] = st["hosts"]
    assert h1["live"] is True, h1
    assert _host_problems(st) == []


async def test_a_host_silent_for_days_is_a_problem(conn: Connection) -> None:
    # the liveness bucket exists (other hosts report there); h1's entry expired long ago
    await live_bucket(conn, create=True)
    then = time.time() - 2 * LIVE_TTL_S
    ev = HostReconciled("h1", await last_seq(conn), 0, 0, 5.0)
    env = Envelope(ev, "h1-1", "h1-cmd-1", then)
    await conn.js.publish(
        ev.subject(), encode(env), stream=conn.stream, headers={MSG_ID: env.event_id}
    )

    st = await gather(conn, wait=0.1)

    [h1] = st["hosts"]
    assert h1["age_s"] >= 2 * LIVE_TTL_S - 60 and not h1["lagging"]
    assert any("h1" in p for p in _host_problems(st)), st["problems"]


async def test_a_replica_whose_stats_fail_is_a_problem(conn: Connection) -> None:
    """A replica answers STATS with ``error`` when reading its figures raises (a broken stats
    reader must not hide it): `status` dropped the error and called it healthy (exit 0)."""
    from netledger.ops.status import StatusResponder

    def broken() -> dict:
        raise RuntimeError("stats reader broke")

    async with StatusResponder(conn, broken) as r:
        st = await gather(conn, wait=0.3)

    [svc] = st["services"]
    assert svc["id"] == r.id and "stats reader broke" in str(svc.get("error"))
    assert not st["healthy"]
    assert any(r.id in p and "stats reader broke" in p for p in st["problems"]), st["problems"]
