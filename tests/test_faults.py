"""Crashes with real processes: nothing acknowledged is lost, nothing is applied twice."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from netledger.events.client import Client
from netledger.events.stream import connect, ensure_stream, last_seq

from netledger.natsserver import EmbeddedNats, free_port
from tests.fault_helpers import AllocationRun, ServiceProc, allocate_all, audit, report


async def _networks(url: str, cidr: str, n: int, size: int) -> list[dict]:
    c = await Client.connect(url)
    try:
        return await c.create_networks(
            label="f", cidr=cidr, num_networks=n, network_size=size, mode="flat", bridge="br100"
        )
    finally:
        await c.close()


async def _wait_seq(url: str, target: int) -> None:
    conn = await connect(url, name="watch")
    try:
        while await last_seq(conn) < target:
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def test_nats_server_sigkill_keeps_every_ack(tmp_path: Path) -> None:
    """Embedded single node with fsync before ack, SIGKILLed while 16 clients allocate."""
    server = EmbeddedNats(tmp_path / "nats", free_port(), sync_interval="always")
    server.start()
    svc = ServiceProc(server.url, tmp_path / "service.log")
    try:
        conn = await connect(server.url, name="setup")
        await ensure_stream(conn)
        await conn.close()
        svc.start()
        await svc.wait_ready()
        nets = await _networks(server.url, "10.40.0.0/20", 2, 2048)
        instances = [(f"i-{k}", nets[k % 2]["id"]) for k in range(1200)]
        run = AllocationRun()
        killed_at: list[float] = []

        async def crash() -> None:
            await _wait_seq(server.url, 400)
            await asyncio.to_thread(server.kill)
            killed_at.append(time.monotonic())
            await asyncio.sleep(1.0)  # clients and the service see the outage
            await asyncio.to_thread(server.start)  # same store, same port

        await asyncio.gather(allocate_all(server.url, 16, instances, run), crash())
        result = await audit(server.url, run)
        report(
            "nats-sigkill",
            f"{result.line()} retries={run.retries} gap={run.longest_gap():.2f}s"
            f" errors={dict(run.errors)}",
        )
        assert killed_at, "the server was never killed"
        assert result.acked == len(instances)
        assert result.lost == 0 and result.mismatched == 0
        assert result.duplicated_instances == 0 and result.duplicated_addresses == 0
    finally:
        svc.stop()
        server.stop()


@pytest.mark.slow
async def test_service_replica_sigkilled_at_random_points(tmp_path: Path) -> None:
    """Two replicas; one is SIGKILLed and restarted at random moments of a long run."""
    server = EmbeddedNats(tmp_path / "nats", free_port(), sync_interval="default")
    server.start()
    replicas = [ServiceProc(server.url, tmp_path / f"svc{i}.log") for i in range(2)]
    rng = random.Random(8)
    kills = 0
    try:
        conn = await connect(server.url, name="setup")
        await ensure_stream(conn)
        await conn.close()
        for r in replicas:
            r.start()
        await asyncio.gather(*(r.wait_ready() for r in replicas))
        nets = await _networks(server.url, "10.48.0.0/19", 4, 2048)
        instances = [(f"i-{k}", nets[k % 4]["id"]) for k in range(3000)]
        run = AllocationRun()
        done = asyncio.Event()

        async def chaos() -> None:
            nonlocal kills
            while not done.is_set():
                await asyncio.sleep(rng.uniform(0.2, 1.0))
                victim = replicas[rng.randrange(2)]
                other = replicas[1 - replicas.index(victim)]
                if other.proc is None or other.proc.poll() is not None:
                    continue  # keep one alive: clients would only wait
                victim.kill()
                kills += 1
                victim.start()
                await victim.wait_ready()

        async def work() -> None:
            try:
                await allocate_all(server.url, 16, instances, run)
            finally:
                done.set()

        await asyncio.gather(work(), chaos())
        result = await audit(server.url, run)
        report("replica-chaos", f"kills={kills} {result.line()} retries={run.retries}")
        assert kills >= 2
        assert result.acked == len(instances)
        assert result.lost == 0 and result.mismatched == 0
        assert result.duplicated_instances == 0 and result.duplicated_addresses == 0
    finally:
        for r in replicas:
            r.stop()
        server.stop()
