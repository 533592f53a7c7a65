"""Crashes with real processes: nothing acknowledged is lost, nothing is applied twice."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from netledger.common.natsserver import EmbeddedNats, free_port
from netledger.events.commands import COMMANDS
from netledger.journal.stream import connect, ensure_stream, last_seq
from netledger.projector.compare import checksum
from netledger.projector.runner import project_until
from netledger.service.client import Client
from tests.fault_helpers import (
    NETLEDGER,
    AllocationRun,
    BackgroundService,
    ServiceProc,
    allocate_all,
    audit,
    report,
)


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
    """Two replicas and a projector; a replica and the projector are SIGKILLed and restarted at
    random moments of a long run: no duplicate, and the projection ends checksum-identical to a
    clean rebuild."""
    server = EmbeddedNats(tmp_path / "nats", free_port(), sync_interval="default")
    server.start()
    replicas = [ServiceProc(server.url, tmp_path / f"svc{i}.log") for i in range(2)]
    rng = random.Random(8)
    kills = 0
    projector_kills = 0
    db = tmp_path / "live.db"
    projector: subprocess.Popen[bytes] | None = None

    def start_projector() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [NETLEDGER, "--nats", server.url, "projector", "run", "--db", str(db)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    try:
        conn = await connect(server.url, name="setup")
        await ensure_stream(conn)
        await conn.close()
        for r in replicas:
            r.start()
        await asyncio.gather(*(r.wait_ready() for r in replicas))
        projector = start_projector()
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

        async def projector_chaos() -> None:
            nonlocal projector, projector_kills
            while not done.is_set():
                await asyncio.sleep(rng.uniform(0.1, 0.7))
                assert projector is not None
                projector.send_signal(signal.SIGKILL)
                projector.wait()
                projector_kills += 1
                projector = start_projector()

        async def work() -> None:
            try:
                await allocate_all(server.url, 16, instances, run)
            finally:
                done.set()

        await asyncio.gather(work(), chaos(), projector_chaos())
        result = await audit(server.url, run)
        # The projector, killed many times, catches up and equals a clean rebuild.
        assert projector is not None
        projector.terminate()
        projector.wait(20)
        once = subprocess.run(
            [NETLEDGER, "--nats", server.url, "projector", "run", "--db", str(db), "--once"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert once.returncode == 0, once.stderr
        conn = await connect(server.url, name="rebuild")
        try:
            await project_until(conn, tmp_path / "clean.db")
        finally:
            await conn.close()
        assert checksum(db) == checksum(tmp_path / "clean.db")
        report(
            "replica-chaos",
            f"kills={kills} projector_kills={projector_kills} {result.line()} retries={run.retries}",
        )
        assert projector_kills >= 2
        assert kills >= 2
        assert result.acked == len(instances)
        assert result.lost == 0 and result.mismatched == 0
        assert result.duplicated_instances == 0 and result.duplicated_addresses == 0
    finally:
        if projector is not None and projector.poll() is None:
            projector.kill()
            projector.wait()
        for r in replicas:
            r.stop()
        server.stop()


# --- fuzzing the command subjects and the stream -------------------------------------------

COMMAND_NAMES = sorted(COMMANDS)
FIELD_NAMES = sorted({f.name for cls in COMMANDS.values() for f in fields(cls)})
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
wrong_types = st.fixed_dictionaries(
    {},
    optional={
        "command_id": values,
        "actor": values | st.fixed_dictionaries({}, optional={"role": values, "project": values}),
        "args": values | st.dictionaries(st.sampled_from(FIELD_NAMES), values, max_size=6),
    },
)
payloads = (
    st.binary(max_size=200)
    | values.map(lambda v: msgpack.packb(v, use_bin_type=True))
    | wrong_types.map(lambda v: msgpack.packb(v, use_bin_type=True))
)


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundService]:
    bg = BackgroundService(tmp_path_factory.mktemp("fuzz"))
    bg.start()
    try:
        yield bg
    finally:
        bg.stop()


# Subject tokens: printable ASCII without whitespace or wildcards (anything else is not a
# subject a client library can send).
SUBJECT_TEXT = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="*>"),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(COMMAND_NAMES) | SUBJECT_TEXT, raw=payloads)
def test_fuzzed_commands_append_nothing(
    fuzz_target: BackgroundService, name: str, raw: bytes
) -> None:
    subject = f"netledger.cmd.{name}"
    assume(".." not in subject and not subject.endswith("."))
    before = fuzz_target.call(fuzz_target.last_seq())
    reply = fuzz_target.call(fuzz_target.request(subject, raw))
    if name not in COMMANDS:
        # No replica serves an unknown subject differently: it is refused like any other.
        assert reply["ok"] is False
    if not reply["ok"]:
        assert isinstance(reply["error"]["code"], str)
        assert fuzz_target.call(fuzz_target.last_seq()) == before


def test_service_answers_after_fuzzing(fuzz_target: BackgroundService) -> None:
    reply = fuzz_target.call(
        fuzz_target.request(
            "netledger.admin.cmd.fixed_ip.allocate",
            msgpack.packb(
                {
                    "command_id": "after-fuzz",
                    "actor": {"role": "admin"},
                    "args": {"instance": "i-after", "network_id": fuzz_target.network_id},
                }
            ),
        )
    )
    assert reply["ok"], reply
    assert fuzz_target.service is not None and fuzz_target.service.follower.failure is None


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=st.binary(max_size=300) | values.map(lambda v: msgpack.packb(v, use_bin_type=True)))
def test_garbage_on_the_stream_is_rejected_not_fatal(
    fuzz_target: BackgroundService, raw: bytes
) -> None:
    svc = fuzz_target.service
    assert svc is not None
    n = len(svc.rejected)
    seq = fuzz_target.call(fuzz_target.publish_raw("netledger.evt.network.x", raw))
    fuzz_target.call(svc.follower.wait_for(seq))
    assert len(svc.rejected) == n + 1
    assert svc.rejected[-1].seq == seq and svc.rejected[-1].subject == "netledger.evt.network.x"
    test_service_answers_after_fuzzing(fuzz_target)
