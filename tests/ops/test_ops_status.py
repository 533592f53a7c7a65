"""``netledger status``: a real stream, two service replicas, a projector and two hosts.

The host executors' reports are appended here by hand (HostAnnounced / HostReconciled on
``netledger.evt.host.<host>``, exactly what an executor appends), one host far behind: the
executor daemon's command did not exist yet when this test was written. ``status`` only reads
the stream, so it cannot tell the difference.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netledger.events.codec import Envelope, encode
from netledger.events.host_events import HostAnnounced, HostLinkCreated, HostReconciled
from netledger.journal.stream import MSG_ID, Connection, last_seq
from netledger.ops.status import StatusResponder, discover, gather
from netledger.projector.runner import project_until
from netledger.service.client import Client
from netledger.service.service import CommandService

NETLEDGER = shutil.which("netledger", path=os.path.dirname(sys.executable)) or "netledger"


async def host_event(conn: Connection, ev: object, n: int) -> int:
    env = Envelope(ev, f"{ev.host}-{n}", f"{ev.host}-cmd-{n}", time.time())  # type: ignore[attr-defined]
    ack = await conn.js.publish(
        ev.subject(),  # type: ignore[attr-defined]
        encode(env),
        stream=conn.stream,
        headers={MSG_ID: env.event_id},
    )
    return int(ack.seq)


async def build_scenario(conn: Connection, service: CommandService, tmp_path: Path) -> Path:
    c = Client(conn)
    [net] = await c.create_networks(label="n", cidr="10.0.0.0/24", mode="flat", bridge="br100")
    for i in range(5):
        await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"], host="compute1")
    behind = await last_seq(conn)
    # compute2 reconciled long ago and then stopped; compute1 is current.
    await host_event(conn, HostAnnounced("compute2", None, "eth0", None, False), 1)
    await host_event(conn, HostReconciled("compute2", 2, 3, 1, 12.5), 2)
    for i in range(5, 25):
        await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"], host="compute1")
    await host_event(conn, HostAnnounced("compute1", None, "eth0", None, True), 1)
    current = await last_seq(conn)
    await host_event(conn, HostReconciled("compute1", current, 7, 2, 30.0), 2)
    # A later event that is not a reconcile: status must look past it.
    await host_event(conn, HostLinkCreated("compute1", "br100", "bridge", net["id"], drift=True), 3)
    # A message nobody can decode: every reader records it as rejected.
    await conn.js.publish("netledger.evt.network.bogus", b"\x00garbage", stream=conn.stream)
    db = tmp_path / "projection.db"
    await project_until(conn, db)
    assert behind < current
    return db


async def test_status_json_shows_sequences_and_the_lagging_host(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    second = CommandService(conn)
    await second.start()
    try:
        async with (
            StatusResponder.for_service(conn, service),
            StatusResponder.for_service(conn, second),
        ):
            db = await build_scenario(conn, service, tmp_path)
            last = await last_seq(conn)
            await second.follower.wait_for(last)
            await service.follower.wait_for(last)
            st = await gather(conn, [db, tmp_path / "missing.db"], max_lag=10, wait=0.3)

            # also the command line, as a script would call it (exit 1: unhealthy)
            proc = await asyncio.create_subprocess_exec(
                NETLEDGER, "--nats", nats_url, "status", "--json", "--db", str(db),
                "--max-lag", "10", "--wait", "0.3",
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
    finally:
        await second.close()

    assert st["stream"]["last_seq"] == last
    assert st["stream"]["messages"] == last
    assert st["stream"]["replicas"] == 1
    assert st["stream"]["bytes"] > 0

    assert len(st["services"]) == 2
    assert {s["applied_seq"] for s in st["services"]} == {last}
    assert sum(s["commands"] for s in st["services"]) == 26  # 1 create + 25 allocations
    assert all(s["rejected"] == 1 and not s["lagging"] for s in st["services"])

    proj, missing = st["projectors"]
    assert (proj["last_seq"], proj["lag"], proj["lagging"], proj["rejected"]) == (last, 0, False, 1)
    assert proj["recent_rejected"][0]["subject"] == "netledger.evt.network.bogus"
    assert missing["error"] == "no such file" and missing["lagging"]
    assert st["rejected"] == 1

    hosts = {h["host"]: h for h in st["hosts"]}
    assert set(hosts) == {"compute1", "compute2"}
    c1, c2 = hosts["compute1"], hosts["compute2"]
    assert c1["applied_seq"] == last - 3 and not c1["lagging"]
    assert (c1["changes"], c1["drift_repairs"], c1["duration_ms"]) == (7, 2, 30.0)
    # (the announcement is on netledger.evt.announce.compute1: 2 events on the host subject)
    assert c1["last_event"] == "HostLinkCreated" and c1["events"] == 2
    assert c1["reconciled_at"] is not None and c1["age_s"] >= 0
    assert c2["applied_seq"] == 2 and c2["lag"] == last - 2 and c2["lagging"]
    assert c2["drift_repairs"] == 1 and c2["last_event"] == "HostReconciled"

    assert not st["healthy"]
    problems = " | ".join(st["problems"])
    assert "host compute2 is" in problems and "compute1" not in problems
    assert "rejected 1" in problems and "missing.db: no such file" in problems

    assert proc.returncode == 1, err.decode()
    cli = json.loads(out)
    assert cli["stream"]["last_seq"] == last
    assert {h["host"]: h["lagging"] for h in cli["hosts"]} == {"compute1": False, "compute2": True}
    assert len(cli["services"]) == 2 and cli["projectors"][0]["lag"] == 0


async def test_healthy_when_everything_is_current(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    async with StatusResponder.for_service(conn, service) as responder:
        c = Client(conn)
        await c.create_networks(label="n", cidr="10.1.0.0/24", mode="flat", bridge="br100")
        await host_event(conn, HostReconciled("h1", await last_seq(conn), 1, 0, 5.0), 1)
        db = tmp_path / "p.db"
        await project_until(conn, db)
        await service.follower.wait_for(await last_seq(conn))
        st = await gather(conn, [db], wait=0.3)
        assert st["healthy"], st["problems"]
        # the micro-service protocol: ping and info answer too, by name
        [ping] = await discover(conn, "PING", wait=0.3)
        assert ping["id"] == responder.id and ping["type"] == "io.nats.micro.v1.ping_response"
        [info] = await discover(conn, "INFO", wait=0.3)
        assert info["endpoints"][0]["subject"] == "netledger.cmd.>"
        # the human screen renders without error and says so
        proc = await asyncio.create_subprocess_exec(
            NETLEDGER, "--nats", nats_url, "status", "--db", str(db), "--wait", "0.3",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert "healthy" in text and "h1" in text and "NETLEDGER" in text


async def test_no_service_is_a_problem(conn: Connection) -> None:
    st = await gather(conn, [], wait=0.1)
    assert not st["healthy"]
    assert "no command-service replica answered" in st["problems"]


@pytest.mark.netns
async def test_status_with_real_executors_in_namespaces(
    conn: Connection, service: CommandService, tmp_path: Path, nats_url: str
) -> None:
    """Two ``netledger executor run --once`` in two network namespaces; one runs early and is
    left behind by 20 allocations, the other runs last: status shows both, one lagging."""
    from tests.executor.test_executor_lab import lab

    with lab() as world:
        h1, h2 = world.ns("st1"), world.ns("st2")
        world.wire(h1, "eth1", h2, "eth1")
        c = Client(conn)
        [net] = await c.create_networks(
            label="st", cidr="10.41.0.0/24", mode="flat_dhcp", bridge="brst", network_host="st1"
        )
        await c.allocate_fixed_ip("vm-0", network_id=net["id"], host="st1")
        await asyncio.to_thread(world.executor, nats_url, "st1", h1, "--physical-interface", "eth1")
        for i in range(1, 21):
            await c.allocate_fixed_ip(f"vm-{i}", network_id=net["id"], host="st2")
        await asyncio.to_thread(world.executor, nats_url, "st2", h2, "--physical-interface", "eth1")
        db = tmp_path / "projection.db"
        await project_until(conn, db)
        async with StatusResponder.for_service(conn, service):
            await service.follower.wait_for(await last_seq(conn))
            st = await gather(conn, [db], max_lag=10, wait=0.3)
    last = st["stream"]["last_seq"]
    hosts = {h["host"]: h for h in st["hosts"]}
    assert set(hosts) == {"st1", "st2"}
    st1, st2 = hosts["st1"], hosts["st2"]
    assert st1["lagging"] and st1["lag"] >= 20 and st1["changes"] > 0
    assert not st2["lagging"] and st2["applied_seq"] > st1["applied_seq"] + 20
    assert st2["lag"] == last - st2["applied_seq"] <= 10
    assert st["projectors"][0]["last_seq"] == last and not st["projectors"][0]["lagging"]
    assert [p for p in st["problems"] if "host" in p] == [
        f"host st1 is {st1['lag']} sequences behind (> 10)"
    ]


def test_the_replicas_table_shows_each_ones_log() -> None:
    """`status`'s table: the log's state, its code when in trouble, the store's free space
    against the reserve, restarts of the embedded nats-server (issue 16)."""
    from netledger.ops_cli import log_cell

    assert log_cell(None) == "-"
    ok = {"state": "ok", "store": {"free_bytes": 50, "total_bytes": 100, "reserve_bytes": 5}}
    assert log_cell(ok) == "ok, 50% free (reserve 5%)"
    low = {
        "state": "storage_low",
        "code": "log_storage_full",
        "store": {"free_bytes": 4, "total_bytes": 100, "reserve_bytes": 5},
        "restarts": 2,
    }
    cell = log_cell(low)
    assert "storage_low" in cell and "log_storage_full" in cell
    assert cell.endswith("4% free (reserve 5%), 2 restarts")
