"""Liveness: what is only "still alive" or "still the same" lives in a KV bucket, not the log.

The domain stream records changes (DESIGN.md, "Years and thousands of hosts"). What a running
executor says every minute whether anything happened — "I am alive, this is how my last pass
went", "the instances I see are still exactly those of my last report" — is kept where JetStream
keeps current values: the KV bucket ``NETLEDGER_LIVE`` (a few revisions per key, entries expire
after ``LIVE_TTL_S``). Keys, one host's under ``host.<host>.`` (NATS permissions let only that
host's executor write them):

* ``host.<h>.seen`` — a :class:`~netledger.events.reclaim_events.Heartbeat`: the host's instance
  set is still the one its report at stream sequence ``report_seq`` listed (``digest`` of its
  MACs), at ``time`` on the host's clock. Reclaiming uses it as the latest report (a reclaim
  event carries its revision, time and digest: the evidence it decided on);
* ``host.<h>.status`` — the executor's last pass: when, what it applied up to, how long, what
  changed, what failed (``netledger status`` reads it).

A host whose state does not change appends nothing to the domain stream; it only rewrites its
two keys. An idle cloud of 1,000 hosts adds nothing to the log, and the KV bucket stays at
(hosts x keys x history) entries however long it runs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError

from netledger.events.ids import check_id, is_id
from netledger.events.reclaim_events import Heartbeat
from netledger.journal.cancel_safe import made_or_undone
from netledger.journal.stream import CLOSE_TIMEOUT_S, Connection

log = logging.getLogger("netledger.liveness")

BUCKET = "NETLEDGER_LIVE"
LIVE_STREAM = f"KV_{BUCKET}"
LIVE_HISTORY = 4
#: An entry older than this is gone (a host silent for a day has no liveness left).
LIVE_TTL_S = 86400.0
#: A heartbeat the service's book has not seen rewritten for this long is dropped (its KV entry
#: expired meanwhile: the host is gone, retired or silent); looked for at most this often
HEARTBEAT_KEEP_S = LIVE_TTL_S
HEARTBEAT_PRUNE_EVERY_S = 600.0
#: A reader's consumer is gone this long after its last request (readers may not delete it).
READ_CONSUMER_IDLE_S = 10.0
READ_BATCH = 256


def seen_key(host: str) -> str:
    return f"host.{check_id(host, 'host')}.seen"


def status_key(host: str) -> str:
    return f"host.{check_id(host, 'host')}.status"


def host_keys(host: str) -> str:
    """Every key of one host (a NATS permission: ``$KV.NETLEDGER_LIVE.host.<h>.>``)."""
    return f"host.{check_id(host, 'host')}.>"


def heartbeat_to_json(hb: Heartbeat) -> bytes:
    d: dict[str, Any] = {
        "host": hb.host, "report_seq": hb.report_seq, "time": hb.time, "digest": hb.digest
    }  # fmt: skip
    if hb.since is not None:
        d["since"] = hb.since
    return json.dumps(d, sort_keys=True).encode()


def heartbeat_from_json(data: bytes, revision: int) -> Heartbeat | None:
    """A heartbeat read back (None when the entry is not one: never fatal)."""
    try:
        d = json.loads(data)
        return Heartbeat(
            host=str(d["host"]),
            report_seq=int(d["report_seq"]),
            time=float(d["time"]),
            digest=str(d["digest"]),
            revision=revision,
            since=None if d.get("since") is None else float(d["since"]),
        )
    except Exception:
        return None


async def live_bucket(
    conn: Connection, *, create: bool = False, replicas: int | None = None
) -> Any:
    """The liveness bucket (None when it does not exist and ``create`` is false). The one who
    may create it (the command service) also makes sure its stream refuses ``Nats-Rollup``
    headers: nats-py creates a KV bucket's stream with them allowed, and one put on an
    executor's own key with ``Nats-Rollup: all`` purged every host's keys — the heartbeats
    reclaiming reads (found by review). Puts and deletes need no rollup."""
    js = conn.js
    try:
        kv = await js.key_value(BUCKET)
    except BucketNotFoundError:
        if not create:
            return None
    else:
        if create:
            await _no_rollups(conn)
        return kv
    if replicas is None:
        replicas = 1
        try:
            info = await js.stream_info(conn.stream)
            replicas = info.config.num_replicas or 1
        except Exception:  # the log's replicas are a preference, not a requirement
            pass
    kv = await js.create_key_value(
        KeyValueConfig(
            bucket=BUCKET,
            description="netledger liveness: host heartbeats and executor status (not the log)",
            history=LIVE_HISTORY,
            ttl=LIVE_TTL_S,
            storage=StorageType.FILE,
            replicas=replicas,
        )
    )
    await _no_rollups(conn)
    return kv


async def _no_rollups(conn: Connection) -> None:
    js = conn.js
    info = await js.stream_info(LIVE_STREAM)
    if info.config.allow_rollup_hdrs:
        await js.update_stream(info.config.evolve(allow_rollup_hdrs=False))


async def read_all(conn: Connection, pattern: str = ">") -> dict[str, tuple[bytes, int, float]]:
    """The current value of every key matching ``pattern``: key -> (value, revision, time).

    Read with a pull consumer of the bucket's last message per key, not with nats-py's KV
    watch: the watch says "no more" when the consumer's info shows nothing pending and its
    client has not received anything yet — which is also the case when the server has already
    sent every entry and they are still on their way, and then it returns nothing at all (seen
    in CI: ``status`` and an auditor read an empty bucket right after a put). A pull consumer
    sends nothing before it is asked, so its ``num_pending`` at creation is exactly what there
    is to read.
    """
    kv = await live_bucket(conn)
    if kv is None:
        return {}
    js = conn.js
    sub = await js.pull_subscribe(
        f"$KV.{BUCKET}.{pattern}",
        stream=LIVE_STREAM,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=READ_CONSUMER_IDLE_S,
            mem_storage=True,
        ),
    )
    prefix = len(f"$KV.{BUCKET}.")
    out: dict[str, tuple[bytes, int, float]] = {}
    try:
        left = (await sub.consumer_info()).num_pending or 0
        while left > 0:
            msgs = await sub.fetch(min(left, READ_BATCH), timeout=5.0)
            for msg in msgs:
                left -= 1
                meta = msg.metadata
                key = msg.subject[prefix:]
                if _is_delete(msg.headers):
                    out.pop(key, None)
                    continue
                out[key] = (msg.data or b"", meta.sequence.stream, meta.timestamp.timestamp())
    finally:
        try:
            await asyncio.wait_for(sub.unsubscribe(), CLOSE_TIMEOUT_S)
        except Exception:
            pass
    return out


def _is_delete(headers: dict[str, str] | None) -> bool:
    """A delete or purge marker (``KV-Operation``, or a server's ``Nats-Marker-Reason``)."""
    if not headers:
        return False
    return headers.get("KV-Operation") in ("DEL", "PURGE") or "Nats-Marker-Reason" in headers


async def _stop_watcher(watcher: Any) -> None:
    await watcher.stop()


@dataclass
class HeartbeatBook:
    """Every host's latest heartbeat, kept current by a KV watch (the command service's)."""

    conn: Connection

    def __post_init__(self) -> None:
        self.heartbeats: dict[str, Heartbeat] = {}
        #: host -> when this book last received its heartbeat (monotonic): an entry the bucket
        #: expired sends nothing, and the book kept every host it ever heard of until restart
        self._received: dict[str, float] = {}
        self._pruned = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._watcher: Any = None

    async def start(self) -> None:
        kv = await live_bucket(self.conn, create=True)
        # kv.watch subscribes before it returns (then asks for its consumer's info): a
        # cancellation in between (a close during the service's start) left the watch running
        # with nothing to stop it — its subscription, its tasks, its consumer on the server.
        self._watcher = await made_or_undone(
            kv.watch("host.*.seen", ignore_deletes=True), _stop_watcher
        )
        self._task = asyncio.create_task(self._run(), name="netledger-heartbeats")

    async def _run(self) -> None:
        async for entry in self._watcher:
            if entry is None:
                continue
            # Each entry on its own: one a host wrote wrong (its host not an id, a value of
            # another shape) is skipped, never the end of the watch — the service would keep
            # its last heartbeats forever and reclaim on evidence frozen in time (found by
            # review).
            try:
                hb = heartbeat_from_json(entry.value or b"", int(entry.revision or 0))
                if hb is None or not is_id(hb.host) or entry.key != seen_key(hb.host):
                    log.warning("ignoring a malformed heartbeat at %s", entry.key)
                    continue
                self.heartbeats[hb.host] = hb
                now = self._received[hb.host] = time.monotonic()
                if now - self._pruned >= HEARTBEAT_PRUNE_EVERY_S:
                    self._prune(now)
            except Exception:
                log.exception("ignoring a heartbeat at %s that could not be read", entry.key)

    def _prune(self, now: float) -> None:
        """Drop the heartbeats not rewritten for :data:`HEARTBEAT_KEEP_S` (their hosts' entries
        expired in the bucket): the book follows the hosts that report, not every host the
        cloud had while this service ran. Reclaiming then goes by the host's reports alone, as
        for any host without a heartbeat."""
        self._pruned = now
        for host in [h for h, t in self._received.items() if now - t > HEARTBEAT_KEEP_S]:
            del self._received[host]
            self.heartbeats.pop(host, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=CLOSE_TIMEOUT_S)
            self._task = None
        if self._watcher is not None:
            try:
                await asyncio.wait_for(self._watcher.stop(), CLOSE_TIMEOUT_S)
            except Exception:
                pass
            self._watcher = None
