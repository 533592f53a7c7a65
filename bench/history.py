"""A cloud that grows older: start-up and catch-up follow live state + tail, not age (issue 13).

One stream, one cloud (bench/history_gen.py: 1,000 hosts, 5,000 VXLAN networks of 2 hosts each,
20,000 live instances, a floating-IP pool), written straight into the stream in atomic batches:

* **young**: the networks created and the cloud filled (at least 100,000 events; the fill of
  this cloud alone is ~136,000: 10,000 host-network pairs each cost a placement, two links, a
  gateway address, an FDB entry and a dnsmasq start);
* **old**: the same cloud after churn up to 1,000,000 events — the same live state, 7x older.

Figures, each next to the raw limit of the same run (an ordered push consumer reading the same
events without decoding): the build rate; the command service started without a snapshot
(``serve --no-projector --ignore-snapshots --snapshot-every 0``: folds the whole log) on the
young and on the old history — seconds to its ``ready`` line and peak RSS; the projector's full
catch-up of the old history and its resume after 10,000 new churn events (``projector run
--once`` twice on the same database); the service started from a snapshot plus a tail of
10,000 events on both (the same cloud, 7x older: old / young must stay <= 1.2); the executor of
one host reading its share vs the events that concern it (and vs ``--whole-log``), and of a host
given instances in 200 of the 5,000 networks at the end of the log (issue 13.3); what an idle
host appends to the log per hour (a real executor, heartbeats shortened to 1 s).

The benchmark's parts live beside it: the raw limit (bench/history_raw.py), the command service
(bench/history_service.py), the projector (bench/history_projector.py) and the executors
(bench/history_executor.py); the cloud is written by bench/history_gen.py.
"""

from __future__ import annotations

import os

from benchlib import Row, Rss, scaled, stack
from history_executor import (
    executor_host,
    executor_share,
    idle_host_appends,
    serve_more_networks,
)
from history_gen import build_history
from history_projector import projector_rows
from history_raw import NAME
from history_service import service_from_snapshot, service_rows
from history_types import History
from kernel import namespace

TITLE = "A cloud growing older: service start, projector resume (history of 1,000 hosts)"
YOUNG = 100_000
OLD = 1_000_000
TAIL = 10_000
#: Events after the newest snapshot when a service restarts: half the default --snapshot-every.
SNAP_TAIL = 10_000
#: a host serving many networks (issue 13.3): this many of the cloud's 5,000
BIG_HOST = "host-3"
BIG_NETWORKS = 200


def cloud_size(size: float) -> dict[str, int]:
    """1,000 hosts and 5,000 networks at size 1.0; a cloud of 10 hosts for the smoke test."""
    hosts = max(10, round(1000 * size))
    return {"hosts": hosts, "networks": 5 * hosts}


async def run(size: float, rss: Rss) -> list[Row]:
    young_n = scaled(YOUNG, size, 1000)
    old_n = scaled(OLD, size, 10_000)
    tail_n = scaled(TAIL, size, 500)
    rounds = 3 if size >= 0.5 else 1
    snap_tail = scaled(SNAP_TAIL, size, 200)
    idle_s = 30.0 if size >= 0.5 else 3.0
    cloud = cloud_size(size)
    rows: list[Row] = []

    def progress(seq: int) -> None:
        print(f"   ... {seq:,} events written", flush=True)

    async with stack(NAME, service=False) as st:
        assert st.conn is not None
        h = await build_history(
            st.conn, young_n, hosts=cloud["hosts"], networks=cloud["networks"], progress=progress
        )
        rows.append(build_row(h, "young"))
        rows.append(share_row(h))
        got, t_young, raw_young = await service_rows(st, h, "young", rss, rounds)
        rows += got
        young = h.last_seq
        snap_rows, h, snap_young = await service_from_snapshot(
            st, h, "young", snap_tail, rounds, rss
        )
        rows += snap_rows
        h = await h.extend(st.conn, max(0, old_n - h.last_seq), progress)
        rows.append(build_row(h, "old"))
        rows.append(share_row(h))
        got, t_old, raw_old = await service_rows(st, h, "old", rss, rounds)
        rows += got
        rows.append(
            Row(
                NAME,
                "service ready, no snapshot: old / young",
                t_old / t_young,
                "x",
                (raw_old / raw_young) / (t_old / t_young),
                "raw read old / young",
                f"the log is {h.last_seq / young:.1f}x longer, the live state the same",
            )
        )
        snap_rows, h, snap_old = await service_from_snapshot(st, h, "old", snap_tail, rounds, rss)
        rows += snap_rows
        rows.append(
            Row(
                NAME,
                "service ready from snapshot + tail: old / young",
                snap_old / snap_young,
                "x",
                note=f"goal <= 1.2 (and <= 2 s): {snap_young:.2f} s young, {snap_old:.2f} s old",
            )
        )
        got_rows, h = await projector_rows(st, h, tail_n, rss, rounds)
        rows += got_rows
        # Last: a real executor appends what it changes in its kernel (the generator stops here).
        if os.geteuid() != 0:
            rows.append(Row(NAME, "executor", 0, "", note="NOT RUN: needs root (namespaces)"))
            return rows
        big = max(1, round(BIG_NETWORKS * cloud["networks"] / 5000))
        h = await serve_more_networks(st.conn, h, BIG_HOST, big)
        with namespace("hs") as ns, namespace("hw") as ns_whole, namespace("hb") as ns_big:
            rows += await executor_share(st, h, rss, ns, ns_whole)
            rows += (await executor_host(st, h, rss, BIG_HOST, ns_big))[0]
            rows += await idle_host_appends(st, h, rss, ns, idle_s)
    return rows


def build_row(h: History, label: str) -> Row:
    return Row(
        NAME,
        f"build: {label} log, {h.written:,} events in atomic batches",
        h.written / h.seconds,
        "events/s",
        note=f"now {h.last_seq:,} events, {h.host_events / h.last_seq:.0%} host events,"
        f" {len(h.instances):,} live instances, {len(h.hosts):,} hosts, {len(h.networks):,} networks",
    )


def share_row(h: History) -> Row:
    return Row(
        NAME,
        f"events concerning {h.focus_host} ({len(h.focus_networks)} networks), of {h.last_seq:,}",
        h.focus_share,
        "events",
        note=f"{h.focus_share / h.last_seq:.1%} of the log: registry, announcements, its own"
        " subjects, its networks",
    )


if __name__ == "__main__":
    import sys

    import runner

    runner.main(["--only", NAME, *sys.argv[1:]])
