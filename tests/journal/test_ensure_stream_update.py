"""Upgrading a stream keeps what its operator set: ``ensure_stream`` used to write netledger's
whole definition whenever it had to change anything (subjects, atomic batches, direct gets, the
duplicate window), so a log's limits edited by hand (``nats stream edit --max-bytes``) were reset
at the first start of an upgraded service (found by review). Real nats-server."""

from __future__ import annotations

from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from netledger.common.natsserver import EmbeddedNats
from netledger.events.ids import ALL_EVENTS
from netledger.journal.stream import DUPLICATE_WINDOW_S, connect, ensure_stream


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
