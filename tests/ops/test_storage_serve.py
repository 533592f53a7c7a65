"""``serve`` with its store on a real small filesystem (issue 16): the disk fills during
concurrent allocations; every command is answered within seconds with the storage code (never
the client's 60 s deadline); nothing acknowledged is lost or changed; once space is freed serve
heals the latched stream by restarting its nats-server, and allocation goes on without a
duplicate address."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.errors import LogUnavailable, NetledgerError
from netledger.events.types import FixedIpAllocated
from netledger.journal.stream import Connection, connect
from netledger.ops.status import discover, projector_status
from netledger.ops.storage import parse_reserve
from netledger.serve import serve_forever
from netledger.service.client import Client
from netledger.service.snapshotter import SnapshotPolicy
from tests.fault_helpers import read_all
from tests.ops.test_storage_fs import fill, free_bytes, tmpfs

#: the issue's bound on an answer when the log's storage is in trouble
ANSWER_BOUND_S = 5.0
STORAGE_CODES = {"log_storage_full", "log_unavailable"}


class Serve:
    """``serve_forever`` in this process, on ``data``."""

    def __init__(
        self,
        data: Path,
        reserve: str,
        projector: bool = False,
        nats_url: str | None = None,
        interval: float = 0.25,
    ) -> None:
        self.port = free_port()
        self.url = nats_url or f"nats://127.0.0.1:{self.port}"
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            serve_forever(
                nats_url=nats_url,
                data_dir=data,
                port=self.port,
                nats_binary=None,
                sync_interval="always",
                replicas=1,
                run_projector=projector,
                ready=self.ready,
                stop=self.stop,
                snapshots=SnapshotPolicy(every_events=0),
                storage_reserve=parse_reserve(reserve),
                storage_interval=interval,
            )
        )

    async def __aenter__(self) -> Serve:
        done, _ = await asyncio.wait(
            [self.task, asyncio.ensure_future(self.ready.wait())],
            timeout=30,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self.task in done:
            self.task.result()
        assert self.ready.is_set()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def log_state(conn: Connection) -> dict[str, Any]:
    [answer] = await discover(conn, wait=0.3)
    return dict(answer["endpoints"][0]["data"]["log"])


class Allocators:
    """Concurrent allocation clients; each keeps an instance whose allocation failed and tries
    it again later with the same command id (what a careful caller does)."""

    def __init__(self, conn: Connection, network_id: str, workers: int = 6) -> None:
        self.conn, self.network_id, self.n = conn, network_id, workers
        self.acked: dict[str, dict[str, Any]] = {}
        self.answers: list[tuple[float, float, str]] = []  # (sent at, seconds, "ok" or code)
        self.running = True
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._worker(w)) for w in range(self.n)]

    async def _worker(self, w: int) -> None:
        c = Client(self.conn)
        k = 0
        while self.running:
            inst = f"i-{w}-{k}"
            t0 = time.monotonic()
            try:
                r = await c.allocate_fixed_ip(
                    inst, network_id=self.network_id, host="h1", command_id=f"c-{inst}"
                )
            except NetledgerError as err:
                self.answers.append((t0, time.monotonic() - t0, err.code))
                await asyncio.sleep(0.05)
                continue  # the same instance and command id next time
            self.answers.append((t0, time.monotonic() - t0, "ok"))
            self.acked[inst] = r
            k += 1

    async def stop(self) -> None:
        self.running = False
        await asyncio.gather(*self.tasks)

    def first_ok_after(self, t: float) -> float | None:
        oks = [t0 + dt for t0, dt, code in self.answers if code == "ok" and t0 >= t]
        return min(oks) if oks else None


async def wait_until(pred: Any, timeout: float, step: float = 0.1) -> None:
    end = time.monotonic() + timeout
    while not await pred():
        assert time.monotonic() < end, "condition not reached in time"
        await asyncio.sleep(step)


def check_log(events: list[tuple[int, str, Any]], acked: dict[str, dict[str, Any]]) -> None:
    """Every acknowledged allocation is in the log as answered; no instance or address twice."""
    allocs = [
        e.event for _, _, e in events if e is not None and isinstance(e.event, FixedIpAllocated)
    ]
    per_instance = Counter(a.instance for a in allocs)
    assert max(per_instance.values()) == 1, "an instance got two allocation events"
    addresses = [a.address for a in allocs]
    assert len(addresses) == len(set(addresses)), "an address was handed out twice"
    logged = {a.instance: a.address for a in allocs}
    for inst, r in acked.items():
        assert logged.get(inst) == r["address"], f"acknowledged {inst} lost or changed"


async def test_disk_filled_during_allocations_answers_fast_and_heals(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", 32) as mnt:
        # With its projector on the same disk: it stops at its last commit, serve goes on.
        # The watcher looks every 2 s (and at once when an append fails): the ballast fills the
        # disk within milliseconds, so appends meet ENOSPC before the reserve can refuse them.
        async with Serve(mnt / "data", reserve="2MiB", projector=True, interval=2.0) as srv:
            conn = await connect(srv.url)
            try:
                [net] = await Client(conn).create_networks(
                    label="big", cidr="10.40.0.0/16", mode="flat", network_size=65536
                )
                allocs = Allocators(conn, net["id"])
                allocs.start()
                await wait_until(lambda: _count(allocs, "ok", 200), 20)

                # Another process fills the disk to the last page: the cliff, not the reserve.
                t_full = time.monotonic()
                ballast = await asyncio.to_thread(fill, mnt)
                await wait_until(lambda: _count(allocs, "log_storage_full", 20, after=t_full), 20)
                state = await log_state(conn)
                assert state["writable"] is False and state["code"] == "log_storage_full"
                assert state["store"]["free_bytes"] < state["store"]["reserve_bytes"]
                await asyncio.sleep(1.0)

                # Space comes back: serve restarts its nats-server, checks the stream, resumes.
                ballast.unlink()
                t_free = time.monotonic()
                await wait_until(lambda: _ok_after(allocs, t_free), 40)
                recovered_s = (allocs.first_ok_after(t_free) or 0) - t_free
                await wait_until(lambda: _count(allocs, "ok", 50, after=t_free), 20)
                await allocs.stop()

                during = [a for a in allocs.answers if a[0] >= t_full]
                codes = Counter(code for _, _, code in during)
                slowest = max(dt for _, dt, _ in allocs.answers)
                print(
                    f"\nanswers after the disk filled: {dict(codes)}; slowest answer"
                    f" {slowest:.2f}s; first allocation {recovered_s:.2f}s after space was freed"
                )
                assert set(codes) <= STORAGE_CODES | {"ok"}, codes
                assert codes["log_storage_full"] > 0
                # The requirement: within a few seconds, never the client's deadline.
                assert slowest < ANSWER_BOUND_S, slowest

                state = await log_state(conn)
                assert state["state"] == "ok" and state["writable"] is True
                assert state["restarts"] >= 1, state["recent"]
                steps = " | ".join(s["message"] for s in state["recent"])
                assert "restarting nats-server" in steps and "verified" in steps, steps

                events = await read_all(conn)
                check_log(events, allocs.acked)

                # The projector on the same disk stopped at a commit and caught up by itself.
                last = events[-1][0]

                async def projected() -> bool:
                    st = projector_status(mnt / "data" / "projection.db", last, 0)
                    return st.get("last_seq") == last

                await wait_until(projected, 30)
            finally:
                await conn.close()


async def test_reserve_refuses_before_the_cliff_and_accepts_again(tmp_path: Path) -> None:
    """Below the reserve, writes are refused at once — the store never hits ENOSPC, so no
    restart is needed — while reads keep working; freeing space lets writes in again."""
    with tmpfs(tmp_path / "mnt", 32) as mnt:
        async with Serve(mnt / "data", reserve="8MiB") as srv:
            conn = await connect(srv.url)
            try:
                c = Client(conn)
                [net] = await c.create_networks(label="n", cidr="10.41.0.0/24", mode="flat")
                first = await c.allocate_fixed_ip("i-1", network_id=net["id"], command_id="c-1")
                ballast = await asyncio.to_thread(fill, mnt, 4 << 20)
                assert free_bytes(mnt) > 3 << 20

                async def refusing() -> bool:
                    return (await log_state(conn))["state"] == "storage_low"

                await wait_until(refusing, 10)
                t0 = time.monotonic()
                try:
                    await c.allocate_fixed_ip("i-2", network_id=net["id"], command_id="c-2")
                    raise AssertionError("an allocation was accepted below the reserve")
                except LogUnavailable as err:
                    assert err.code == "log_storage_full"
                    assert err.details["reserve_bytes"] == 8 << 20
                    assert "free" in err.message
                refused_in = time.monotonic() - t0
                # Reads, and a retry of a command already applied, still answer.
                assert await c.request("network.show", {"network_id": net["id"]})
                again = await c.allocate_fixed_ip("i-1", network_id=net["id"], command_id="c-1")
                assert again["address"] == first["address"]

                ballast.unlink()
                await wait_until(lambda: _state_is(conn, "ok"), 10)
                r = await c.allocate_fixed_ip("i-2", network_id=net["id"], command_id="c-2")
                assert r["address"] != first["address"]
                state = await log_state(conn)
                assert state["restarts"] == 0 and state["refused"] >= 1
                print(f"\nrefused below the reserve in {refused_in * 1000:.0f} ms")
            finally:
                await conn.close()


async def _state_is(conn: Connection, state: str) -> bool:
    return (await log_state(conn))["state"] == state


async def _count(allocs: Allocators, code: str, n: int, after: float = 0.0) -> bool:
    return sum(1 for t0, _, c in allocs.answers if c == code and t0 >= after) >= n


async def _ok_after(allocs: Allocators, t: float) -> bool:
    return allocs.first_ok_after(t) is not None


async def test_external_server_is_reported_never_restarted(tmp_path: Path) -> None:
    """``--nats``: a server serve does not own. Its store fills and latches: every command is
    still answered within seconds with the log's code, serve never restarts that server, and
    once its operator restarts it allocation goes on — serve itself untouched."""
    with tmpfs(tmp_path / "mnt", 32) as mnt:
        server = EmbeddedNats(mnt / "nats", port=free_port())
        await asyncio.to_thread(server.start)
        try:
            async with Serve(tmp_path / "serve", reserve="2MiB", nats_url=server.url) as srv:
                conn = await connect(srv.url)
                try:
                    [net] = await Client(conn).create_networks(
                        label="big", cidr="10.42.0.0/16", mode="flat", network_size=65536
                    )
                    # 8 clients: the 8 failed answers waited for below come in one round of
                    # ~3 s each (4 clients took two rounds, 9-12 s for the test)
                    allocs = Allocators(conn, net["id"], workers=8)
                    allocs.start()
                    await wait_until(lambda: _count(allocs, "ok", 100), 20)
                    pid = server.proc.pid if server.proc else None
                    t_full = time.monotonic()
                    ballast = await asyncio.to_thread(fill, mnt)
                    await wait_until(lambda: _count(allocs, "log_unavailable", 8, t_full), 30)
                    ballast.unlink()
                    await asyncio.sleep(1.5)
                    state = await log_state(conn)
                    # reported, still tried (writable), never restarted by serve
                    assert state["state"] == "failing" and state["writable"] is True, state
                    assert state["restarts"] == 0
                    assert server.proc is not None and server.proc.pid == pid
                    assert "acknowledgement" in (state["reason"] or ""), state

                    t_restart = time.monotonic()
                    await asyncio.to_thread(server.restart)  # what its operator does
                    await wait_until(lambda: _ok_after(allocs, t_restart), 30)
                    await wait_until(lambda: _count(allocs, "ok", 30, after=t_restart), 20)
                    await allocs.stop()
                    codes = Counter(c for t0, _, c in allocs.answers if t0 >= t_full)
                    slowest = max(dt for _, dt, _ in allocs.answers)
                    print(f"\nexternal server: {dict(codes)}; slowest answer {slowest:.2f}s")
                    assert set(codes) <= STORAGE_CODES | {"ok"}, codes
                    assert slowest < ANSWER_BOUND_S, slowest
                    assert (await log_state(conn))["state"] == "ok"
                    check_log(await read_all(conn), allocs.acked)
                finally:
                    await conn.close()
        finally:
            await asyncio.to_thread(server.stop)
