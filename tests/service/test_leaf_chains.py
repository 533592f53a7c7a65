"""A leaf node of a cluster: its clients' JetStream requests go to the hub's clustered stream,
where one broken ``Nats-Expected-Last-Msg-Id`` link stops every replica
(tests/service/test_cluster.py). The command service connected to the leaf must never chain
nor pre-link. (A review asked whether ``Appender.can_chain``, which reads only the connected
server's INFO, lets chains through a leaf: it does not — nats-server names a cluster in a leaf
node's INFO, its own name — and this test keeps it so.)"""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

from netledger.common.natsserver import find_nats_server, free_port
from netledger.journal.append import Appender
from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.fault_helpers import Cluster, stream_leader


def leaf_server(tmp: Path, hub_leaf_port: int) -> tuple[subprocess.Popen[bytes], str]:
    """A nats-server without JetStream, a leaf of the hub at ``hub_leaf_port``."""
    port = free_port()
    conf = tmp / "leaf.conf"
    # One key per line: nats-server rejects one-line blocks (JETSTREAM_NOTES.md).
    # Its clients' JetStream requests go to the hub's domain, as they are (a mapping).
    conf.write_text(
        f"port: {port}\nserver_name: leaf\nleafnodes {{\n  remotes: [\n    {{\n"
        f'      url: "nats-leaf://127.0.0.1:{hub_leaf_port}"\n    }}\n  ]\n}}\n'
        'mappings {\n  "$JS.API.>": "$JS.hub.API.>"\n}\n'
    )
    log = (tmp / "leaf.log").open("wb")
    proc = subprocess.Popen([find_nats_server(), "-c", str(conf)], stdout=log, stderr=log)
    return proc, f"nats://127.0.0.1:{port}"


async def through_leaf(url: str, timeout: float = 30.0) -> Connection:
    """A connection to the leaf once the hub's stream answers through it."""
    end = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            conn = await connect(url, name="via-leaf")
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.2)
            continue
        try:
            await conn.nc.jetstream(timeout=1.0).stream_info(conn.stream)
            return conn
        except Exception as exc:
            last = exc
            await conn.close()
            await asyncio.sleep(0.2)
    raise AssertionError(f"the hub's stream did not answer through the leaf: {last!r}")


async def test_no_chain_through_a_leaf_node_to_a_clustered_stream(
    tmp_path: Path, conn: Connection
) -> None:
    hub_leaf_port = free_port()
    cluster = Cluster(tmp_path)
    for node in cluster.nodes:  # the hub's JetStream domain, which the leaf maps its API to
        text = node.config_text
        node.config_text = lambda text=text: text().replace(
            "jetstream {\n", "jetstream {\n  domain: hub\n"
        )  # type: ignore[method-assign]
    cluster.nodes[0].extra_config += f"leafnodes {{\n  listen: 127.0.0.1:{hub_leaf_port}\n}}\n"
    cluster.start()
    leaf: subprocess.Popen[bytes] | None = None
    admin = via = None
    svc: CommandService | None = None
    try:
        admin = await connect(cluster.urls, name="admin")
        await cluster.wait_formed(admin)
        await ensure_stream(admin, replicas=3)
        await stream_leader(admin)
        leaf, url = leaf_server(tmp_path, hub_leaf_port)
        via = await through_leaf(url)
        appender = Appender(via)
        assert not appender.can_chain(), f"chains through a leaf: {via.nc._server_info}"
        assert Appender(conn).can_chain()  # a standalone server (the conn fixture): as ever

        svc = CommandService(via, reap_interval=None)
        await svc.start()
        c = Client(via)
        [net] = await c.create_networks(label="n", cidr="10.9.0.0/24", mode="flat", bridge="br9")
        got = await asyncio.gather(
            *(
                c.allocate_fixed_ip(f"i{i}", network_id=net["id"], host=f"h{i % 3}")
                for i in range(12)
            )
        )
        assert len({g["address"] for g in got}) == 12
        assert svc.stats.prelinked == 0 and svc.stats.pipelined == 0
        # the stream still takes writes (no broken link reached it)
        await c.allocate_fixed_ip("late", network_id=net["id"], host="h9")
    finally:
        if svc is not None:
            await svc.close()
        for cn in (via, admin):
            if cn is not None:
                await cn.close()
        if leaf is not None:
            leaf.terminate()
            leaf.wait(10)
        cluster.stop()
