"""Review h107: a refusal while the log is away is still answered within the client's deadline.

A refusal is checked against the log's end before it is answered (service/lanes.py, 98a85aa),
waiting at most REFUSAL_CATCH_UP_S for the fold — but the catch-up first asks the stream's last
sequence, which retries transient errors for up to 30 s (journal/stream.py ``last_seq``). With
the stream's quorum lost (a 3-node cluster, two nodes gone; NATS itself still up on the third,
where the client and the service are) the refusal was held there past the client's deadline:
the client heard nothing (outcome unknown) where it had been told "network does not exist" at
once. Real nats-server cluster, real command service."""

from __future__ import annotations

from pathlib import Path

import pytest

from netledger.events.errors import NetworkNotFound
from netledger.journal.stream import connect, ensure_stream
from netledger.service.client import Client
from netledger.service.lanes import REFUSAL_CATCH_UP_S
from netledger.service.service import CommandService
from tests.fault_helpers import Cluster, stream_leader

#: the client's per-request timeout and whole deadline: well above the refusal's own wait for
#: the log (REFUSAL_CATCH_UP_S), well under the 30 s the stream's last sequence is asked for
CLIENT_TIMEOUT_S = 10.0
CLIENT_DEADLINE_S = 20.0


@pytest.mark.slow
async def test_a_refusal_with_the_streams_quorum_lost_is_still_answered(
    tmp_path: Path,
) -> None:
    assert REFUSAL_CATCH_UP_S < CLIENT_TIMEOUT_S
    cluster = Cluster(tmp_path)
    cluster.start()
    admin = conn = None
    svc: CommandService | None = None
    try:
        admin = await connect(cluster.urls, name="admin")
        await cluster.wait_formed(admin)
        await ensure_stream(admin, replicas=3)
        # The service and the client on a node that stays (no failover to a dead one), not
        # the stream's leader: a leader left alone still answers the stream's info a while.
        leader = await stream_leader(admin)
        stays = next(n for n in cluster.nodes if n.server_name != leader)
        conn = await connect(stays.url, name="service")
        svc = CommandService(conn)
        await svc.start()
        c = Client(conn, timeout=CLIENT_TIMEOUT_S, deadline=CLIENT_DEADLINE_S)
        [net] = await c.create_networks(label="q", cidr="10.80.0.0/24", mode="flat", bridge="brq")
        await admin.close()
        admin = None
        for node in cluster.nodes:
            if node is not stays:
                node.kill()
        before = svc.stats.retries["refusal"]
        with pytest.raises(NetworkNotFound):
            await c.allocate_fixed_ip("i-away", network_id=str(int(net["id"]) + 100), host="h1")
        # answered within the client's timeout: one attempt, one check (the client sent it
        # again when its first attempt's answer was held past its timeout)
        assert svc.stats.retries["refusal"] == before + 1
    finally:
        if svc is not None:
            await svc.close()
        for cn in (conn, admin):
            if cn is not None:
                await cn.close()
        cluster.stop()
