"""A 3-node NATS cluster on loopback: the stream leader dies mid-allocation, nothing is lost."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import nats.errors
import nats.js.errors
import pytest

from netledger.journal.follow import Follower
from netledger.journal.stream import Connection, connect, ensure_stream, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.fault_helpers import (
    NETLEDGER,
    AllocationRun,
    Cluster,
    ServiceProc,
    allocate_all,
    audit,
    replicas_current,
    report,
    stream_leader,
)


@pytest.mark.slow
async def test_stream_leader_sigkilled_during_allocation(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    cluster.start()
    svc = ServiceProc(cluster.urls, tmp_path / "service.log")
    admin = None
    projector = None
    follower = None
    executor: subprocess.Popen[bytes] | None = None
    ns = f"nlc-{os.getpid()}"
    try:
        admin = await connect(cluster.urls, name="admin")
        await cluster.wait_formed(admin)
        await ensure_stream(admin, replicas=3)
        info = await admin.js.stream_info(admin.stream)
        assert info.config.num_replicas == 3
        svc.start()
        await svc.wait_ready()

        # Readers given the whole server list: a Follower, and the projector if present.
        seen: list[int] = []
        follower = Follower(admin, lambda seq, *_: seen.append(seq))
        await follower.start()
        try:
            from netledger.projector.runner import Projector

            projector = Projector(admin, tmp_path / "projection.db")
            await projector.start()
        except ImportError:
            projector = None

        c = await Client.connect(cluster.urls)
        try:
            nets = await c.create_networks(
                label="c", cidr="10.60.0.0/20", num_networks=2, network_size=2048, mode="flat"
            )
            [host_net] = await c.create_networks(
                label="h", cidr="10.61.0.0/24", mode="flat", bridge="brc"
            )
        finally:
            await c.close()
        # An executor given the whole server list, in a namespace of its own.
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "eth9", "type", "veth", "peer", "name", "eth9p"],
            check=True,
        )
        executor = subprocess.Popen(
            [
                NETLEDGER,
                "--nats",
                cluster.urls,
                "executor",
                "run",
                "--host",
                "hc",
                "--netns",
                ns,
                "--physical-interface",
                "eth9",
                "--interval",
                "1",
            ],
            stdout=open(tmp_path / "executor.log", "wb"),
            stderr=subprocess.STDOUT,
        )
        instances = [(f"i-{k}", nets[k % 2]["id"]) for k in range(1500)]
        run = AllocationRun()
        kill: dict[str, float | str] = {}

        async def kill_leader() -> None:
            while await last_seq(admin) < 500:
                await asyncio.sleep(0.02)
            leader = await stream_leader(admin)
            node = cluster.node(leader)
            kill["t"] = time.monotonic()
            kill["node"] = leader
            await asyncio.to_thread(node.kill)
            kill["new_leader"] = await stream_leader(admin)
            kill["elected_after"] = time.monotonic() - float(kill["t"])
            await asyncio.sleep(2.0)
            await asyncio.to_thread(node.start)  # same store: it rejoins and catches up

        try:
            await asyncio.gather(allocate_all(cluster.urls, 16, instances, run), kill_leader())
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{svc.log_path.read_text()[-3000:]}") from None
        t_kill = float(kill["t"])
        after = sorted(t for t in run.ack_times if t > t_kill)
        first_after = after[0] - t_kill if after else float("nan")
        result = await audit(cluster.urls, run)
        reps = await replicas_current(admin)
        end = await last_seq(admin)
        await follower.wait_for(end, timeout=60)
        if projector is not None:
            await projector.wait_for(end, timeout=60)
        report(
            "cluster-leader-kill",
            f"{result.line()} killed={kill['node']} new_leader={kill['new_leader']}"
            f" leader_after={float(kill['elected_after']):.2f}s"
            f" first_ack_after_kill={first_after:.2f}s gap={run.longest_gap():.2f}s"
            f" retries={run.retries} errors={dict(run.errors)}"
            f" projector={'yes' if projector is not None else 'no'}",
        )
        # The executor followed the failover: an allocation on its host after it reaches its
        # kernel (the bridge appears) and its report reaches the log.
        c = await Client.connect(cluster.urls)
        try:
            await c.allocate_fixed_ip("i-hc", network_id=host_net["id"], host="hc")
        finally:
            await c.close()
        for _ in range(300):
            out = subprocess.run(["ip", "-n", ns, "link", "show", "brc"], capture_output=True)
            if out.returncode == 0:
                break
            await asyncio.sleep(0.1)
        assert out.returncode == 0, (tmp_path / "executor.log").read_text()[-3000:]
        assert executor.poll() is None, "the executor died during the failover"
        assert kill["new_leader"] != kill["node"]
        assert result.acked == len(instances)
        assert result.lost == 0 and result.mismatched == 0
        assert result.duplicated_instances == 0 and result.duplicated_addresses == 0
        assert sorted(s for s in seen if s <= end) == list(range(1, end + 1)), (
            "the follower missed or repeated events"
        )
        assert len(seen) == len(set(seen)), "the follower repeated events"
        assert {r.name for r in reps} | {kill["new_leader"]} == {"n0", "n1", "n2"}
    finally:
        if executor is not None and executor.poll() is None:
            executor.terminate()
            executor.wait(20)
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        if projector is not None:
            await projector.close()
        if follower is not None:
            await follower.stop()
        svc.stop()
        if admin is not None:
            await admin.close()
        cluster.stop()


def server_errors(cluster: Cluster) -> list[str]:
    return [
        line
        for n in cluster.nodes
        for line in (n.data_dir / "nats-server.log").read_text(errors="replace").splitlines()
        if "critical write error" in line or "Error applying stream entries" in line
    ]


@pytest.mark.slow
async def test_a_broken_msg_id_link_kills_a_clustered_stream(tmp_path: Path) -> None:
    """The server's behaviour that keeps our pipelined chains off clustered servers
    (Appender.can_chain): one publish whose ``Nats-Expected-Last-Msg-Id`` does not match is
    refused to its publisher *and* stops every replica of an R3 stream (nothing is stored after
    it). If this fails after a nats-server upgrade, the server checks the header before the
    proposal now, and chains may be allowed on clusters again."""
    cluster = Cluster(tmp_path)
    cluster.start()
    admin = None
    try:
        admin = await connect(cluster.urls, name="admin")
        await cluster.wait_formed(admin)
        await ensure_stream(admin, replicas=3)
        await stream_leader(admin)  # created is not yet led: a publish before met no responders
        js = admin.nc.jetstream(timeout=2.0)
        subject = "netledger.evt.network.msgid"
        await js.publish(subject, b"a", headers={"Nats-Msg-Id": "a"})
        with pytest.raises(nats.js.errors.BadRequestError) as refused:
            await js.publish(
                subject, b"b", headers={"Nats-Msg-Id": "b", "Nats-Expected-Last-Msg-Id": "z"}
            )
        assert refused.value.err_code == 10070  # wrong last msg ID
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(subject, b"c", headers={"Nats-Msg-Id": "c"})
        assert len(server_errors(cluster)) >= 3, "every replica stops on the broken link"
    finally:
        if admin is not None:
            await admin.close()
        cluster.stop()


@pytest.mark.slow
async def test_no_chain_reaches_a_clustered_stream(tmp_path: Path) -> None:
    """Two service replicas and 16 clients on one network of an R3 stream: the contention that
    breaks chains on a single server (tests/service/test_pipeline.py) would stop the clustered
    stream (test above); here every command is appended one by one, all are answered, nothing
    twice, and the stream still takes writes."""
    cluster = Cluster(tmp_path)
    cluster.start()
    admin = None
    conns: list[Connection] = []
    svcs: list[CommandService] = []
    try:
        admin = await connect(cluster.urls, name="admin")
        await cluster.wait_formed(admin)
        await ensure_stream(admin, replicas=3)
        conns = [await connect(cluster.urls, name=f"r{i}") for i in range(2)]
        svcs = [CommandService(c) for c in conns]
        for svc in svcs:
            assert svc.pipeline, "chains are on by default"
            assert not svc.appender.can_chain()
            await svc.start()
        c = await Client.connect(cluster.urls)
        try:
            nets = await c.create_networks(
                label="p", cidr="10.9.0.0/22", num_networks=1, network_size=1024, mode="flat"
            )
        finally:
            await c.close()
        instances = [(f"i-{k}", nets[0]["id"]) for k in range(300)]
        run = await allocate_all(cluster.urls, 16, instances, AllocationRun(), within=120)
        result = await audit(cluster.urls, run)
        assert result.acked == len(instances) and result.lost == 0
        assert result.duplicated_instances == 0 and result.duplicated_addresses == 0
        assert sum(svc.stats.pipelined for svc in svcs) == 0
        assert server_errors(cluster) == []
        before = await last_seq(admin)
        await admin.nc.jetstream(timeout=5.0).publish("netledger.evt.network.after", b"x")
        assert await last_seq(admin) == before + 1
    finally:
        for svc in svcs:
            await svc.close()
        for conn in conns:
            await conn.close()
        if admin is not None:
            await admin.close()
        cluster.stop()
