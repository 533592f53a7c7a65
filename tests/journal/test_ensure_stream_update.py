"""Upgrading a stream keeps what its operator set: ``ensure_stream`` used to write netledger's
whole definition whenever it had to change anything (subjects, atomic batches, direct gets, the
duplicate window), so a log's limits edited by hand (``nats stream edit --max-bytes``) were reset
at the first start of an upgraded service (found by review). Real nats-server."""

from __future__ import annotations

import dataclasses

from nats.js.api import ConsumerConfig, DeliverPolicy, DiscardPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from netledger.common.natsserver import EmbeddedNats
from netledger.events.ids import ALL_EVENTS
from netledger.journal.stream import (
    DUPLICATE_WINDOW_S,
    MAX_CONSUMERS,
    Connection,
    connect,
    ensure_stream,
    stream_config,
)

#: nats-server's "maximum consumers limit reached"
MAX_CONSUMERS_REACHED = 10026


async def test_an_update_changes_only_what_netledger_needs(nats_server: EmbeddedNats) -> None:
    conn = await connect(nats_server.url, name="ops")
    try:
        # As older code made it, then edited by an operator: limits, a description.
        await conn.js.add_stream(
            StreamConfig(
                name=conn.stream,
                subjects=[ALL_EVENTS],
                storage=StorageType.FILE,
                discard=DiscardPolicy.OLD,
                duplicate_window=60.0,
                deny_delete=True,
                deny_purge=True,
                max_bytes=512 * 1024 * 1024,
                max_msgs_per_subject=1_000_000,
                description="netledger event log (ops: 512 MiB cap, ticket 4711)",
            )
        )
        await ensure_stream(conn)
        cfg = (await conn.js.stream_info(conn.stream)).config
        assert cfg.allow_atomic and cfg.allow_direct  # what netledger needs...
        assert cfg.duplicate_window == DUPLICATE_WINDOW_S
        assert cfg.subjects == [ALL_EVENTS]
        assert cfg.max_bytes == 512 * 1024 * 1024  # ...and what the operator set, kept
        assert cfg.max_msgs_per_subject == 1_000_000
        assert cfg.description == "netledger event log (ops: 512 MiB cap, ticket 4711)"
        assert cfg.deny_delete and cfg.deny_purge
    finally:
        await conn.nc.close()


async def _consumers_accepted(conn: Connection, upto: int) -> int:
    """Push consumers the log accepts, one per subject, up to ``upto`` (then all deleted)."""
    made: list[str] = []
    try:
        for i in range(upto):
            try:
                info = await conn.js.add_consumer(
                    conn.stream,
                    ConsumerConfig(
                        deliver_policy=DeliverPolicy.NEW,
                        filter_subject=f"netledger.evt.host.h{i}",
                        deliver_subject=f"_fleet.{i}",
                        mem_storage=True,
                    ),
                )
            except BadRequestError as exc:
                assert exc.err_code == MAX_CONSUMERS_REACHED, exc
                break
            made.append(info.name)
    finally:
        for name in made:
            await conn.js.delete_consumer(conn.stream, name)
    return len(made)


async def test_the_log_holds_a_consumer_per_host_of_a_1000_host_cloud(
    nats_server: EmbeddedNats,
) -> None:
    """A stream without a consumer limit of its own gets nats-server's default (1,000 on 2.15):
    a cloud of 1,000 hosts (a follower each, plus the service's and the projector's) could not
    attach (bench/fleet.py). The log says its own limit; an older log is given it at the next
    start; an operator's own limit is kept."""
    conn = await connect(nats_server.url, name="ops")
    try:
        # As older code made the log: no consumer limit of its own.
        await conn.js.add_stream(dataclasses.replace(stream_config(), max_consumers=-1))
        assert await _consumers_accepted(conn, 1_010) == 1_000  # the server's default
        await ensure_stream(conn)
        assert (await conn.js.stream_info(conn.stream)).config.max_consumers == MAX_CONSUMERS
        assert await _consumers_accepted(conn, 1_010) == 1_010
        # An operator's limit stays.
        cfg = (await conn.js.stream_info(conn.stream)).config
        await conn.js.update_stream(dataclasses.replace(cfg, max_consumers=5_000))
        await ensure_stream(conn)
        assert (await conn.js.stream_info(conn.stream)).config.max_consumers == 5_000
    finally:
        await conn.nc.close()
