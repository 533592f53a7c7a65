"""Pipelined single-event appends (Appender.append_chain) under contention on one network:
two replicas in this process, 16 clients; every client gets the right answer and no address or
instance is handed out twice, while the two replicas' chains break each other."""

from __future__ import annotations

from netledger.journal.stream import Connection, connect, ensure_stream
from netledger.service.client import Client
from netledger.service.service import CommandService
from tests.service.test_service import allocate_many, check_allocations, read_all


async def test_two_replicas_pipelining_on_one_network(conn: Connection, nats_url: str) -> None:
    conns = [await connect(nats_url, name=f"r{i}") for i in range(2)]
    svcs = [CommandService(c) for c in conns]
    for s in svcs:
        s.pipeline = True  # off by default (service/service.py)
    try:
        for c in conns:
            await ensure_stream(c)
        for s in svcs:
            await s.start()
        nets = await Client(conn).create_networks(
            label="p", cidr="10.9.0.0/22", num_networks=1, network_size=1024, mode="flat"
        )
        instances = [(f"i-{k}", nets[0]["id"]) for k in range(600)]
        results = await allocate_many(nats_url, 16, instances)
        events = await read_all(conn)
        check_allocations(events, results, nets)
        assert len(results) == 600
        assert sum(s.stats.pipelined for s in svcs) > 0, "no chain was used"
    finally:
        for s in svcs:
            await s.close()
        for c in conns:
            await c.close()
