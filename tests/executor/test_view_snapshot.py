"""An executor's view started from its snapshot plus the tail is the view that read the log.

Differential, on a real nats-server with a real command service (the random histories of
tests/executor/test_executor_share.py, plus each host's own reports on its host subject): live
views of every host (share views, one whole-log view) are snapshotted halfway; after more
history, a view restored from each snapshot and reading only the tail, a view reading the log
from sequence 1 and the live view hold the same fold of what the host needs — networks followed,
their folded state, the host and DHCP books, the desired state — while the restored one read
only the tail. Networks are joined and left during the tail.

Every unusable snapshot (missing, corrupt, truncated, older code's, another host's, another
stream's, beyond the log's end) is refused with a warning naming the reason, and the view reads
the log from the start and ends equal to a full read.
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.codec import Actor, Envelope, encode
from netledger.events.host_events import (
    HostAddressAdded,
    HostAddressRemoved,
    HostDhcpStarted,
    HostDhcpStopped,
    HostEvent,
    HostFdbAdded,
    HostLinkCreated,
    HostLinkRemoved,
    HostReconciled,
)
from netledger.executor.snapshot import ViewKind, ViewSnapshots
from netledger.executor.view import HostView
from netledger.journal.snapshot_store import SnapshotStore
from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.service.client import Client
from netledger.service.service import CommandService

from .test_executor_share import HOSTS, NETWORK_HOST, announce, desired, step


async def report(conn: Connection, rnd: random.Random, host: str, i: int) -> None:
    """What the host's executor would append after a pass: links, addresses, flood entries,
    dnsmasq, made and unmade (the record is a last-writer-wins fold)."""
    name = f"br{rnd.randrange(4)}"
    evs: list[HostEvent] = rnd.choice(
        [
            [HostLinkCreated(host, name, "bridge", None, False)],
            [HostLinkRemoved(host, name, "bridge", None, "stale")],
            [HostAddressAdded(host, name, f"10.9.{rnd.randrange(3)}.1/24", None, False)],
            [HostAddressRemoved(host, name, f"10.9.{rnd.randrange(3)}.1/24", None, "stale")],
            [HostFdbAdded(host, "vx1", f"192.0.2.{rnd.randrange(9)}", None, False)],
            [HostDhcpStarted(host, name, None, 100 + i, 2, f"d{i}", False)],
            [HostDhcpStopped(host, name, None, None, "stale")],
        ]
    )
    evs.append(HostReconciled(host, i, len(evs), 0, 1.0))
    for j, ev in enumerate(evs):
        env = Envelope(ev, f"r-{host}-{i}:{j}", f"r-{host}-{i}", time.time(), Actor(role="system"))
        await conn.js.publish(ev.subject(), encode(env), stream=conn.stream)


def fold_of(v: HostView) -> dict[str, Any]:
    """What a view holds of its host's share: comparable between views however they started
    (a network no longer needed keeps whatever was folded of it before it was dropped, which
    depends on when a view followed it: not compared; nor is whether every network is followed,
    a choice with hysteresis that depends on the way the share grew, not on what it holds)."""
    return {
        "networks": v.networks,
        "folded": {n: v.state.networks[n] for n in sorted(v.networks)},
        "subjects": {s: v.state.seq_of(s) for s in v.share.subjects(v.networks)},
        "pools": v.state.pools,
        "book": v.book,
        "dhcp": v.dhcp_book,
        "legacy": v.legacy_announcement,
        "desired": desired(v),
    }


def kind_of(host: str, share: bool = True) -> ViewKind:
    return ViewKind(host, share, host == NETWORK_HOST)


async def start_view(
    conn: Connection, host: str, snaps: ViewSnapshots | None = None, share: bool = True
) -> HostView:
    """A view started as the executor starts it (executor/daemon.py ``Executor.start``)."""
    v = HostView(conn, host, network_host=host == NETWORK_HOST, share=share)
    if snaps is not None:
        snap = await snaps.load()
        if snap is not None:
            v.restore(snap)
    await v.start()
    return v


async def snapshot(v: HostView, snaps: ViewSnapshots) -> int:
    """Write ``v``'s snapshot as the daemon does (settled, at the follower's position)."""
    await v.sync()
    assert v.settled() and v.follower is not None
    created = await snaps.created()
    await snaps.write(v.state, v.follower.position, v.follower.handled, v.snapshot_extra, created)
    return v.follower.position


async def dedicated(c: Client, label: str, vni: int) -> str:
    """A multi-host network that only the hosts holding an address in it need."""
    r = await c.request(
        "network.create",
        {"label": label, "cidr": f"10.{vni}.0.0/24", "mode": "vxlan", "num_networks": 1,
         "network_size": 256, "multi_host": True, "vni_start": 5000 + vni},
    )  # fmt: skip
    nid: str = r["networks"][0]["id"]
    return nid


VIEWS = [*((h, True) for h in HOSTS), ("h1", False)]


@pytest.mark.parametrize("seed", range(1, 5))
async def test_a_view_from_its_snapshot_and_the_tail_is_the_view_from_the_log(
    conn: Connection,
    service: CommandService,
    seed: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rnd = random.Random(seed)
    if seed % 2:
        monkeypatch.setattr("netledger.executor.share.EVERY_MIN_NETWORKS", 2)
    c = Client(conn)
    for h in HOSTS:
        await announce(conn, h, 0)
    live = {(h, s): await start_view(conn, h, share=s) for h, s in VIEWS}
    snaps = {
        (h, s): ViewSnapshots(conn, str(tmp_path / f"{h}-{s}.snapshot"), kind_of(h, s), fork=False)
        for h, s in VIEWS
    }
    state: dict[str, Any] = {"nets": [], "fixed": [], "floating": [], "pool": False}
    cut: dict[tuple[str, bool], tuple[int, set[str]]] = {}
    others: list[HostView] = []
    try:
        for i in range(1, 81):
            await step(c, conn, rnd, i, state)
            await report(conn, rnd, rnd.choice(HOSTS), i)
            if i % 4 == 0:
                for v in live.values():
                    await v.sync()
            if i == 39:
                # Certain to change during the tail (besides what the random steps do): h1
                # leaves a network, h2 joins one created after the snapshot.
                leave = await dedicated(c, "leave", 201)
                await c.allocate_fixed_ip("leaver", network_id=leave, host="h1")
            if i == 40:
                for key, v in live.items():
                    cut[key] = (await snapshot(v, snaps[key]), set(v.networks))
            if i == 41:
                await c.request("fixed_ip.deallocate", {"instance": "leaver"})
                join = await dedicated(c, "join", 202)
                await c.allocate_fixed_ip("joiner", network_id=join, host="h2")
        joined = left = 0
        for (h, s), v in live.items():
            await v.sync()
            restored = await start_view(conn, h, snaps[(h, s)], share=s)
            full = await start_view(conn, h, share=s)
            others += [restored, full]
            assert snaps[(h, s)].stats.loaded_seq == cut[(h, s)][0]
            assert fold_of(restored) == fold_of(full), f"{h} share={s}"
            assert fold_of(live[(h, s)]) == fold_of(full), f"{h} share={s} (live)"
            assert restored.follower is not None and full.follower is not None
            assert restored.follower.handled < full.follower.handled
            joined += len(restored.networks - cut[(h, s)][1])
            left += len(cut[(h, s)][1] - restored.networks)
        # The share changed during the tail: networks joined after the snapshot (read from
        # their start) and networks left.
        assert joined > 0 and left > 0
        assert leave in cut[("h1", True)][1] and leave not in live[("h1", True)].networks
        assert join not in cut[("h2", True)][1] and join in live[("h2", True)].networks
    finally:
        for v in [*live.values(), *others]:
            await v.close()


async def _history(conn: Connection, rnd: random.Random, first: int, last: int) -> None:
    c = Client(conn)
    state: dict[str, Any] = {"nets": [], "fixed": [], "floating": [], "pool": False}
    if first == 1:
        for h in HOSTS:
            await announce(conn, h, 0)
        r = await c.request(
            "network.create",
            {"label": "base", "cidr": "10.200.0.0/24", "mode": "vxlan", "num_networks": 1,
             "network_size": 256, "multi_host": True, "vni_start": 900},
        )  # fmt: skip
        await c.allocate_fixed_ip("base-1", network_id=r["networks"][0]["id"], host="h1")
    for i in range(first, last):
        await step(c, conn, rnd, i, state)
        await report(conn, rnd, "h1", i)


async def _any_anchor(store: SnapshotStore, seq: int, since: int | None = None) -> str:
    return "0" * 64


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "corrupt":
        i = len(data) - 10
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "missing":
        path.unlink()
    elif how in ("anchor", "unanchored"):  # the body's hash still holds: only the anchor differs
        head, _, body = data.partition(b"\n")
        line, _, body = body.partition(b"\n")
        sha = line.split(b" ")[0]
        line = sha + b" " + b"0" * 64 if how == "anchor" else sha
        path.write_bytes(head + b"\n" + line + b"\n" + body)


REASONS = {
    "missing": "none written yet (no file)",
    "corrupt": "content hash mismatch (corrupt or truncated)",
    "truncated": "content hash mismatch (corrupt or truncated)",
    "fold": "fold version 999, this code folds",
    "format": "format 99, this code reads",
    "view": "view format 98, this code reads",
    "host": "taken by host h2 reading its share, not by host h1 reading its share",
    "whole": "taken by host h1 reading the whole log, not by host h1 reading its share",
    "beyond": "beyond the stream's last sequence",
    "anchor": "is not the one it was taken after",
    "unanchored": "no anchor recorded (written by an older netledger)",
}


@pytest.mark.parametrize("how", sorted(REASONS))
async def test_an_unusable_snapshot_is_refused_and_the_log_read_instead(
    conn: Connection,
    service: CommandService,
    how: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rnd = random.Random(7)
    await _history(conn, rnd, 1, 25)
    path = tmp_path / "view.snapshot"
    writer_host, writer_share = {"host": ("h2", True), "whole": ("h1", False)}.get(
        how, ("h1", True)
    )
    writer = ViewSnapshots(conn, str(path), kind_of(writer_host, writer_share), fork=False)
    with monkeypatch.context() as m:
        if how == "fold":
            m.setattr("netledger.events.snapshot.FOLD_VERSION", 999)
        if how == "format":
            m.setattr("netledger.events.snapshot.SNAPSHOT_FORMAT", 99)
        if how == "view":
            m.setattr("netledger.executor.snapshot.VIEW_FORMAT", 98)
        if how == "beyond":  # no message there to anchor it to: a write would fail
            m.setattr(SnapshotStore, "anchor", _any_anchor)
        v = await start_view(conn, writer_host, share=writer_share)
        try:
            await v.sync()
            assert v.follower is not None
            seq = v.follower.position + (1000 if how == "beyond" else 0)
            await writer.write(
                v.state, seq, v.follower.handled, v.snapshot_extra, await writer.created()
            )
        finally:
            await v.close()
    _damage(path, how)
    await _history(conn, rnd, 25, 35)
    snaps = ViewSnapshots(conn, str(path), kind_of("h1"))
    caplog.set_level(logging.WARNING, "netledger.executor.snapshot")
    restored = await start_view(conn, "h1", snaps)
    full = await start_view(conn, "h1")
    try:
        assert snaps.stats.loaded_seq is None
        assert snaps.stats.refused is not None and REASONS[how] in snaps.stats.refused
        warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(
            REASONS[how] in m and "reading this host's share of the log from the start" in m
            for m in warned
        ), warned
        assert fold_of(restored) == fold_of(full)
        assert restored.follower is not None and full.follower is not None
        assert restored.follower.handled == full.follower.handled  # the whole share, again
    finally:
        await restored.close()
        await full.close()


async def test_a_snapshot_of_another_stream_is_refused(
    conn: Connection, service: CommandService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stream recreated under the same name (a new cluster, a wiped store) is another log:
    the snapshot names the stream's creation time and is refused there."""
    await _history(conn, random.Random(3), 1, 15)
    path = tmp_path / "view.snapshot"
    v = await start_view(conn, "h1")
    try:
        await snapshot(v, ViewSnapshots(conn, str(path), kind_of("h1"), fork=False))
    finally:
        await v.close()
    other = EmbeddedNats(data_dir=tmp_path / "nats2", port=free_port(), sync_interval="default")
    other.start()
    try:
        conn2 = await connect(other.url, name="test-2")
        try:
            await ensure_stream(conn2)
            svc = CommandService(conn2)
            await svc.start()
            try:
                await _history(conn2, random.Random(4), 1, 15)
                snaps = ViewSnapshots(conn2, str(path), kind_of("h1"))
                caplog.set_level(logging.WARNING, "netledger.executor.snapshot")
                restored = await start_view(conn2, "h1", snaps)
                full = await start_view(conn2, "h1")
                try:
                    assert snaps.stats.refused is not None
                    assert "taken of stream NETLEDGER created" in snaps.stats.refused
                    assert any("taken of stream" in r.getMessage() for r in caplog.records)
                    assert fold_of(restored) == fold_of(full)
                finally:
                    await restored.close()
                    await full.close()
            finally:
                await svc.close()
        finally:
            await conn2.close()
    finally:
        other.stop()


async def test_a_reconnect_while_a_snapshot_is_written_keeps_none(
    conn: Connection, service: CommandService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection went away between the fold's image and asking the log for its anchor:
    the log it came back to may be one restored meanwhile, whose message N would vouch for a
    fold it does not hold — nothing is kept (the next snapshot is taken after it)."""
    from netledger.executor import snapshot as view_snapshot

    await _history(conn, random.Random(5), 1, 10)
    path = tmp_path / "state" / "view.snapshot"
    real = view_snapshot.write_forked

    async def reconnected_meanwhile(*args: Any, **kwargs: Any) -> tuple[str, str]:
        out = await real(*args, **kwargs)
        conn.nc.stats["reconnects"] += 1  # as nats-py counts one
        return out

    monkeypatch.setattr(view_snapshot, "write_forked", reconnected_meanwhile)
    v = await start_view(conn, "h1")
    try:
        with pytest.raises(RuntimeError, match="reconnected to NATS"):
            await snapshot(v, ViewSnapshots(conn, str(path), kind_of("h1"), fork=False))
    finally:
        await v.close()
    assert os.listdir(tmp_path / "state") == []
    monkeypatch.setattr(view_snapshot, "write_forked", real)
    again = ViewSnapshots(conn, str(path), kind_of("h1"), fork=False)
    v = await start_view(conn, "h1")
    try:
        await snapshot(v, again)
    finally:
        await v.close()
    assert again.stats.written == 1 and (await again.load()) is not None
