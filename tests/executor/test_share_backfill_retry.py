"""A share view whose resubscription fails part-way retries without applying anything twice
or missing anything (issue 13).

``Follower.set_subjects`` drops the old subscription, reads the networks added (one one-off
consumer per subject), hands their messages to the view, then makes the share's consumer. The
fault here is real: the server refuses new consumers (the stream's ``max_consumers`` lowered,
as an operator's limit or a full account would: JetStream error 10026, not transient, so the
call fails at once instead of after ``retrying``'s 30 s). It is set from the view connection's
``subscribe`` (the injection point of tests/executor/test_share_restart_resubscribe.py), at one
of two points:

* ``mid``: once the first network's backfill consumer exists — the second network's is
  refused, half-way through the backfill;
* ``after``: once the last backfill consumer exists — the share's own consumer is refused,
  after the backfill's messages were handed to the view.

The limit is lifted once the refusal is seen; the view's background task tries again. Then the
share view must agree with a view of the whole log, and no message may have been handed twice.
Why it holds: ``read_subjects`` collects the whole backfill before any of it is handed (a read
that fails hands nothing), and the view's retry reads each network from where its fold left it
(``read_from``: after what the failed attempt handed) — the fold skips a message at or before
its subject's last one anyway (``State.fold_message``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from nats.js.errors import APIError

from netledger.common.natsserver import EmbeddedNats
from netledger.events.ids import network_subject
from netledger.executor.desired import build
from netledger.executor.view import HostView
from netledger.journal.stream import Connection, connect
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.executor.test_executor_share import config


async def _until(cond: Callable[[], bool], what: str, tries: int = 300) -> None:
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.05)
    assert cond(), what


async def _max_consumers(conn: Connection, n: int) -> None:
    info = await conn.js.stream_info(conn.stream)
    info.config.max_consumers = n
    await conn.js.update_stream(info.config)


@pytest.mark.parametrize("where", ["mid", "after"])
async def test_a_resubscription_refused_part_way_is_retried_without_double_or_missed_messages(
    nats_server: EmbeddedNats, conn: Connection, service: CommandService, where: str
) -> None:
    c = Client(conn)
    nets = [
        str(n["id"])
        for label, cidr in [("a", "10.1.0.0/24"), ("x", "10.2.0.0/24"), ("y", "10.3.0.0/24")]
        for n in await c.create_networks(label=label, cidr=cidr, mode="flat", bridge=f"br{label}")
    ]
    a, x, y = nets
    await c.allocate_fixed_ip("i1", network_id=a, host="h1")
    # Histories to backfill: h2's instances in x and y, one of them gone again.
    for k in range(3):
        await c.allocate_fixed_ip(f"x{k}", network_id=x, host="h2")
        await c.allocate_fixed_ip(f"y{k}", network_id=y, host="h2")
    await c.request("fixed_ip.deallocate", {"instance": "x1"})
    limit = (await conn.js.stream_info(conn.stream)).config.max_consumers

    vconn = await connect(nats_server.url, name="view")
    real = vconn.js.subscribe
    backfills = sorted([network_subject(x), network_subject(y)])
    trigger = backfills[0] if where == "mid" else backfills[-1]
    handed: list[tuple[int, str]] = []
    armed = asyncio.Event()
    refused = asyncio.Event()
    handed_at_refusal: list[int] = []

    async def subscribe(subject: str, *args: Any, **kw: Any) -> Any:
        try:
            sub = await real(subject, *args, **kw)
        except APIError:
            if armed.is_set() and not refused.is_set():
                handed_at_refusal.append(len(handed))
                refused.set()
            raise
        if subject == trigger and armed.is_set() and not refused.is_set():
            await _max_consumers(conn, 1)  # the service's and this read's exist: no more
        return sub

    vconn.js.subscribe = subscribe  # type: ignore[method-assign]
    view = HostView(vconn, "h1", share=True)
    whole = HostView(conn, "h1", share=False)
    fold = view._on_message

    def on_message(seq: int, subject: str, *rest: Any) -> None:
        handed.append((seq, subject))
        fold(seq, subject, *rest)

    view._on_message = on_message  # type: ignore[method-assign]
    await view.start()
    await whole.start()
    try:
        assert view.networks == {a}
        # Both joins are folded before the view's task looks (it waits for the lock): one
        # resubscription backfills both networks.
        async with view._lock:
            await c.allocate_fixed_ip("i2", network_id=x, host="h1")
            await c.allocate_fixed_ip("i3", network_id=y, host="h1")
            await _until(lambda: view._joining >= {x, y}, "both joins folded")
            before = len(handed)
            armed.set()
        await asyncio.wait_for(refused.wait(), 30)
        await _max_consumers(conn, limit)
        # The retry reads on: the share grows, and what comes next in x and y is folded.
        await _until(lambda: view.networks == {a, x, y} and view.settled(), "share retried")
        assert view.follower is not None and view.follower._sub is not None
        await c.allocate_fixed_ip("x9", network_id=x, host="h2")
        await c.request("fixed_ip.deallocate", {"instance": "y0"})
        await view.sync()
        await whole.sync()

        assert build(view.state, view.book, config("h1")) == build(
            whole.state, whole.book, config("h1")
        )
        for n in (a, x, y):
            assert view.state.networks[n].fixed == whole.state.networks[n].fixed, n
        twice = [m for m, k in Counter(handed).items() if k > 1]
        assert not twice, f"handed twice: {twice}"
        for subject in {subj for _, subj in handed}:  # (a backfill goes back in the log)
            seqs = [s for s, subj in handed if subj == subject]
            assert seqs == sorted(seqs), f"{subject} out of order"
        if where == "mid":
            # The backfill read failed before any of it was handed: nothing to hand twice.
            assert handed_at_refusal == [before]
        else:
            # The failed attempt handed x's and y's history: the retry did not hand it again.
            failed_attempt = {subj for _, subj in handed[before : handed_at_refusal[0]]}
            assert failed_attempt == set(backfills)
    finally:
        await view.close()
        await whole.close()
        await vconn.close()
