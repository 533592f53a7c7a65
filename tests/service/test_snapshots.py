"""Snapshots on a real nats-server: written in the background, loaded at start, never trusted.

* a service writes a snapshot while it serves; a new service starts from it, reads only the
  tail, and holds exactly the fold of the whole log (and answers retries as before);
* a corrupt, truncated, foreign-version or missing snapshot is skipped with a warning and the
  log is folded from the start instead — never fatal;
* an upload cut short (the service killed mid-write) leaves nothing a reader would use;
* ``netledger verify --snapshots`` checks each stored snapshot against the fold of the log.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest
from nats.js.api import ObjectMeta

from netledger.common.natsserver import EmbeddedNats
from netledger.events.snapshot import dumps, encode_body, state_to_wire
from netledger.events.state import FOLD_VERSION
from netledger.journal.snapshot_store import BUCKET, SnapshotStore, write_forked
from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.replay.verify_snapshot import fold_to as fold_from_log
from netledger.service.client import Client
from netledger.service.service import CommandService
from netledger.service.snapshotter import SnapshotPolicy
from tests.fault_helpers import NETLEDGER

FAST = SnapshotPolicy(every_events=5, min_interval=0.0, check_interval=0.05)


async def _fill(client: Client, n: int, start: int = 0) -> list[str]:
    out = []
    for i in range(start, start + n):
        r = await client.request(
            "fixed_ip.allocate",
            {"instance": f"i-{i}", "project": "p1", "host": "h1"},
            command_id=f"alloc-{i}",
        )
        out.append(r["address"])
    return out


async def _network(client: Client) -> None:
    await client.request(
        "network.create",
        {"label": "n", "cidr": "10.20.0.0/16", "num_networks": 2, "network_size": 256,
         "mode": "vxlan", "vni_start": 500},
    )  # fmt: skip


async def _wait_written(svc: CommandService, at_least: int = 1) -> None:
    assert svc.snapshotter is not None
    for _ in range(400):
        if svc.snapshotter.stats.written >= at_least:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"no snapshot written: {svc.snapshotter.stats}")


async def test_a_service_starts_from_its_snapshot_and_reads_only_the_tail(
    conn: Connection,
) -> None:
    svc = CommandService(conn, snapshots=FAST)
    await svc.start()
    client = Client(conn)
    try:
        await _network(client)
        first = await _fill(client, 30)
        await _wait_written(svc)
        # No snapshot after this one: FAST writes one every 5 events, and one written once the
        # whole tail was folded left no tail to read (CI, once: the newest at seq 41 = end).
        assert svc.snapshotter is not None
        await svc.snapshotter.close()
        await _fill(client, 7, start=30)  # the tail after the snapshot
        end = await svc.follower.catch_up()  # answers come from the acks: the reader may lag
    finally:
        await svc.close()
    stored = await SnapshotStore(conn).snapshots()
    assert stored and stored[0].seq < end

    again = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await again.start()
    try:
        assert again.snapshotter is not None
        assert again.snapshotter.stats.loaded_seq == stored[0].seq
        assert again.follower.applied_seq == end
        whole = await fold_from_log(conn, end)
        assert state_to_wire(again.state) == state_to_wire(whole)
        # A retry of a command from before the snapshot gets its first answer (from the
        # commands the snapshot remembers), not a new decision.
        assert "alloc-3" in again.seen
        r = await Client(conn).request(
            "fixed_ip.allocate",
            {"instance": "i-3", "project": "p1", "host": "h1"},
            command_id="alloc-3",
        )
        assert r["address"] == first[3]
        nxt = await _fill(Client(conn), 1, start=100)
        assert nxt[0] not in first
    finally:
        await again.close()


async def _put_raw(conn: Connection, name: str, body: bytes, headers: dict[str, list[str]]) -> None:
    store = SnapshotStore(conn)
    obs = await store._store(create=True)
    await obs.put(name, io.BytesIO(body), meta=ObjectMeta(name=name, headers=headers))


@pytest.mark.parametrize(
    "damage",
    [
        "corrupt",
        "truncated",
        "foreign_fold",
        "other_stream",
        "missing",
        "no_anchor",
        "wrong_anchor",
    ],
)
async def test_an_unusable_snapshot_falls_back_to_the_log_with_a_warning(
    conn: Connection, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await svc.start()
    try:
        await _network(Client(conn))
        await _fill(Client(conn), 5)
        seq = await svc.follower.catch_up()  # answers come from the acks: the reader may lag
        info = await conn.js.stream_info(conn.stream)
        created = info.created.isoformat()
        body = dumps(svc.state, svc.seen, seq=seq, stream=conn.stream, created=created)
    finally:
        await svc.close()
    from netledger.events.snapshot import digest

    sha = digest(body)
    anchor = await SnapshotStore(conn).anchor(seq)
    headers = {"Netledger-Seq": [str(seq)], "Netledger-Sha256": [sha], "Netledger-Anchor": [anchor]}
    if damage == "corrupt":
        body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
    elif damage == "truncated":
        body = body[: len(body) // 2]
    elif damage == "foreign_fold":
        headers["Netledger-Fold-Version"] = [str(FOLD_VERSION + 1)]
    elif damage == "other_stream":
        body = dumps(svc.state, svc.seen, seq=seq, stream=conn.stream, created="1999-01-01")
        headers["Netledger-Sha256"] = [digest(body)]
    elif damage == "no_anchor":  # written by a netledger before anchors
        del headers["Netledger-Anchor"]
    elif damage == "wrong_anchor":  # the log's message at seq is not the one it was taken after
        headers["Netledger-Anchor"] = [await SnapshotStore(conn).anchor(seq - 1)]
    await _put_raw(conn, f"service-{seq:012d}", body, headers)
    if damage == "missing":  # listed, but its chunks are gone (purged behind our back)
        info = await (await SnapshotStore(conn)._store(create=False)).get_info(
            f"service-{seq:012d}"
        )
        await conn.js.purge_stream(f"OBJ_{BUCKET}", subject=f"$O.{BUCKET}.C.{info.nuid}")

    caplog.set_level(logging.WARNING, logger="netledger.snapshot")
    again = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await again.start()
    try:
        assert again.snapshotter is not None
        assert again.snapshotter.stats.loaded_seq is None
        assert again.snapshotter.stats.skipped, "the bad snapshot is reported"
        assert "not used" in caplog.text
        if damage == "no_anchor":
            assert "no anchor recorded" in caplog.text
        if damage == "wrong_anchor":
            assert "is not the one it was taken after" in caplog.text
        if damage == "missing":  # said at once, not after the read's time limit
            assert "chunk(s) are gone" in caplog.text
        assert again.follower.applied_seq == seq
        assert state_to_wire(again.state) == state_to_wire(await fold_from_log(conn, seq))
    finally:
        await again.close()


async def test_an_upload_cut_short_is_never_used(conn: Connection) -> None:
    """What a service killed mid-upload leaves: chunks without the object's meta message."""
    svc = CommandService(conn, snapshots=FAST)
    await svc.start()
    try:
        await _network(Client(conn))
        await _fill(Client(conn), 10)
        await _wait_written(svc)
        good = (await SnapshotStore(conn).snapshots())[0]
        await _fill(Client(conn), 3, start=10)
        end = await svc.follower.catch_up()  # answers come from the acks: the reader may lag
    finally:
        await svc.close()
    # Half an upload of a newer snapshot: chunks on a fresh nuid, no meta.
    await conn.js.publish(f"$O.{BUCKET}.C.HALFWRITTENNUID", b"\x00" * 1000)
    stored = await SnapshotStore(conn).snapshots()
    assert stored[0].seq == good.seq
    again = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await again.start()
    try:
        assert again.snapshotter is not None
        assert again.snapshotter.stats.loaded_seq == good.seq
        assert state_to_wire(again.state) == state_to_wire(await fold_from_log(conn, end))
    finally:
        await again.close()


async def test_the_forked_writer_encodes_the_fold_as_of_the_fork(conn: Connection) -> None:
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await svc.start()
    try:
        await _network(Client(conn))
        await _fill(Client(conn), 4)
        seq = await svc.follower.catch_up()  # answers come from the acks: the reader may lag
        expected = encode_body(dumps(svc.state, svc.seen, seq=seq, stream=conn.stream, created="c"))
        path, sha = await write_forked(
            svc.state, svc.seen, seq=seq, stream=conn.stream, created="c"
        )
        try:
            assert await asyncio.to_thread(Path(path).read_bytes) == expected
        finally:
            os.unlink(path)
        from netledger.events.snapshot import digest

        assert sha == digest(expected)
    finally:
        await svc.close()


async def test_a_service_killed_while_writing_snapshots_restarts_correctly(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """`netledger serve` as deployed, SIGKILLed again and again while it writes snapshots
    often; every restart starts from a snapshot that is valid, and ends equal to the log."""
    url = nats_server.url
    conn = await connect(url, name="test")
    await ensure_stream(conn)
    try:
        addresses: set[str] = set()
        n = 0
        for round_ in range(3):
            p = subprocess.Popen(
                [NETLEDGER, "--nats", url, "serve", "--no-projector",
                 "--snapshot-every", "20", "--snapshot-min-interval", "0.01s"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                text=True,
            )  # fmt: skip
            try:
                line = await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 60)  # type: ignore[union-attr]
                assert "ready" in line
                client = Client(conn)
                if round_ == 0:
                    await _network(client)
                got = await _fill(client, 60, start=n)
                n += 60
                assert not addresses & set(got), "an address was handed out twice"
                addresses |= set(got)
                # Killed at some moment of the snapshot writing that follows the burst.
                await asyncio.sleep(random.uniform(0.0, 0.4))
            finally:
                p.send_signal(signal.SIGKILL)
                await asyncio.to_thread(p.wait, 30)
        end = (await conn.js.stream_info(conn.stream)).state.last_seq
        svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
        await svc.start()
        try:
            assert svc.snapshotter is not None and svc.snapshotter.stats.loaded_seq
            assert svc.follower.applied_seq == end
            assert state_to_wire(svc.state) == state_to_wire(await fold_from_log(conn, end))
        finally:
            await svc.close()
        r = subprocess.run(
            [NETLEDGER, "--nats", url, "verify", "--snapshots", "--json"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        report = json.loads(r.stdout)
        assert r.returncode == 0, r.stdout + r.stderr
        assert report["equal"] and report["snapshots"]
        assert all(s["usable"] and s["equal"] for s in report["snapshots"])
    finally:
        await conn.close()


async def test_verify_snapshots_finds_a_snapshot_that_lies(conn: Connection, nats_url: str) -> None:
    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await svc.start()
    try:
        await _network(Client(conn))
        await _fill(Client(conn), 3)
        seq = await svc.follower.catch_up()  # answers come from the acks: the reader may lag
        created = (await conn.js.stream_info(conn.stream)).created.isoformat()
        # A well-formed snapshot whose content is not the log's: one address dropped.
        n = svc.state.networks["1"]
        dropped = sorted(n.fixed)[0]
        del n.fixed[dropped]
        body = dumps(svc.state, svc.seen, seq=seq, stream=conn.stream, created=created)
    finally:
        await svc.close()
    from netledger.events.snapshot import digest

    await _put_raw(
        conn,
        f"service-{seq:012d}",
        body,
        {
            "Netledger-Seq": [str(seq)],
            "Netledger-Sha256": [digest(body)],
            "Netledger-Anchor": [await SnapshotStore(conn).anchor(seq)],
        },
    )
    r = await asyncio.to_thread(
        subprocess.run,
        [NETLEDGER, "--nats", nats_url, "verify", "--snapshots", "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["error"]["code"] == "snapshot_mismatch"
    assert report["snapshots"][0]["differences"] == ["networks: 1"]


async def test_the_anchor_is_the_message_folded_at_the_snapshots_seq(conn: Connection) -> None:
    """The image is taken at the fork; the log is asked for its message N only once the child
    is done (seconds for a big fold, and retried while NATS is away). A log restored from an
    older backup and written past N meanwhile answers with its own message N: recorded beside
    the old fold, that anchor would make the stale snapshot pass on the restored log."""
    from netledger.events.snapshot import anchor_of

    svc = CommandService(conn, snapshots=SnapshotPolicy(every_events=0))
    await svc.start()
    try:
        await _network(Client(conn))
        await _fill(Client(conn), 4)
        seq = await svc.follower.catch_up()
        folded = await SnapshotStore(conn).anchor(seq)
        snapshotter = svc.snapshotter
        assert snapshotter is not None

        async def restored_log_answers(n: int) -> str:  # the log's message n is another now
            return anchor_of("netledger.evt.registry", b"written after the restore")

        snapshotter.store.anchor = restored_log_answers  # type: ignore[method-assign]
        stored = await snapshotter.write()
        assert stored is not None and stored.seq == seq
        assert stored.anchor == folded
    finally:
        await svc.close()
