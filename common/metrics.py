"""Prometheus metrics of the long-running components (``--metrics-port``).

Two ways numbers get here, chosen so the hot paths stay untouched where they already count:

* **watched objects**, read at scrape time: a :class:`CommandService` (its ``stats``: commands
  by name and outcome and their times, OCC conflicts, decisions taken again, batches; its
  appender's events per append and attempts sent again; its ``rejected`` list and follower
  position) and a projector (``last_seq``, ``events``, ``rejected``, each batch's messages and
  time).
  ``watch_service(svc)`` / ``watch_projector(p, db)`` once, nothing else to call. Their
  histograms are ``journal/buckets.py`` ``Buckets`` (bucket counts and a sum their owner adds
  to, no lock), read here by shape: this room imports no part.
* **hooks** called where something happens and was not counted yet: ``executor_reconciled``,
  ``executor_failed``. They are cheap no-ops until :func:`metrics` is first used, and when
  ``prometheus-client`` is not installed.

Lag is ``stream last sequence - applied sequence``: a :class:`LagWatcher` asks the stream for its
last sequence every few seconds and sets ``netledger_lag_events{component=...}`` for every
component registered with it (its ``applied_seq`` read from the live object).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import click

from netledger.events.errors import NetledgerError

log = logging.getLogger("netledger.common.metrics")

NAMESPACE = "netledger"
#: an executor pass's seconds: the bounds of journal/buckets.py ``SECONDS`` (not imported: this
#: room imports no part)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class MetricsUnavailable(NetledgerError):
    code = "metrics_unavailable"


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ModuleNotFoundError:
        raise MetricsUnavailable(
            "metrics need the prometheus-client package: pip install prometheus-client"
        ) from None
    return prometheus_client


def available() -> bool:
    try:
        _prometheus()
    except MetricsUnavailable:
        return False
    return True


class Metrics:
    """The metric families of one process, registered in ``registry``."""

    def __init__(self, registry: Any = None) -> None:
        pc = _prometheus()
        self.registry = registry if registry is not None else pc.REGISTRY
        r = self.registry
        self.lag = pc.Gauge(
            "netledger_lag_events",
            "Stream last sequence minus the component's applied sequence.",
            ["component"],
            registry=r,
        )
        self.stream_last_seq = pc.Gauge(
            "netledger_stream_last_seq", "The stream's last sequence when last sampled.", registry=r
        )
        self.reconcile_seconds = pc.Histogram(
            "netledger_executor_reconcile_seconds",
            "Duration of one executor reconcile pass.",
            ["host"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.reconcile_changes = pc.Counter(
            "netledger_executor_changes",
            "Kernel changes made by reconcile passes.",
            ["host"],
            registry=r,
        )
        self.drift_repairs = pc.Counter(
            "netledger_executor_drift_repairs",
            "Kernel objects found drifted from the log and repaired.",
            ["host"],
            registry=r,
        )
        self.executor_applied_seq = pc.Gauge(
            "netledger_executor_applied_seq",
            "Stream sequence the host's kernel matched at its last reconcile.",
            ["host"],
            registry=r,
        )
        self.executor_failures = pc.Counter(
            "netledger_executor_failures",
            "Kernel operations that failed.",
            ["host", "operation"],
            registry=r,
        )
        self.watched = _Watched()
        r.register(self.watched)


# --- objects read at scrape time -----------------------------------------------------------


@dataclass(eq=False)  # registries keep collectors in a dict: identity hash
class _Watched:
    """A collector over live components: their counters are read when Prometheus scrapes."""

    services: weakref.WeakSet[Any] = field(default_factory=weakref.WeakSet)
    projectors: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> list[Any]:
        return []  # dynamic: not checked for duplicates at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        commands = CounterMetricFamily(
            "netledger_commands",
            "Commands handled, by command name and outcome (ok or the error code).",
            labels=["command", "outcome"],
        )
        conflicts = CounterMetricFamily(
            "netledger_occ_conflicts",
            "Appends refused because another writer appended to the subject first.",
        )
        batches = CounterMetricFamily(
            "netledger_atomic_batches",
            "Atomic batch appends (group commits, decisions touching several aggregates).",
        )
        batched = CounterMetricFamily(
            "netledger_atomic_batch_events", "Events appended in atomic batches."
        )
        pipelined = CounterMetricFamily(
            "netledger_pipelined_appends",
            "Single-event decisions appended in pipelined chains (each after the one before it).",
        )
        prelinked = CounterMetricFamily(
            "netledger_prelinked_appends",
            "Decisions appended right after their placements instead of in an atomic batch"
            " (a host's first address in a network); outcome: ok, or broken (another message"
            " came between: decided again as an atomic batch).",
            labels=["outcome"],
        )
        old_retries = CounterMetricFamily(
            "netledger_old_retry_lookups",
            "Commands looked up in the log as maybe retries older than what the service"
            " remembers and the duplicate window (service/old_retry.py).",
        )
        old_scanned = CounterMetricFamily(
            "netledger_old_retry_scanned_messages", "Messages those lookups read."
        )
        rejected = CounterMetricFamily(
            "netledger_rejected_events",
            "Stream messages a reader could not use (undecodable, wrong subject), by component.",
            labels=["component"],
        )
        applied = GaugeMetricFamily(
            "netledger_applied_seq",
            "Last stream sequence a component has applied.",
            labels=["component"],
        )
        projected = CounterMetricFamily(
            "netledger_projector_events", "Events applied to the projection.", labels=["db"]
        )
        log_metrics = _log_families()
        log_seen = False
        totals: dict[str, int] = {}
        conflicts_n = batches_n = batched_n = rejected_n = 0
        pipelined_n = prelinked_n = broken_n = old_n = scanned_n = 0
        applied_seq = 0
        for svc in list(self.services):
            st = svc.stats
            for key, n in list(st.commands.items()):  # a copy: the loop may add a key meanwhile
                totals[key] = totals.get(key, 0) + n
            conflicts_n += st.conflicts
            batches_n += st.batches
            batched_n += st.batched_events
            pipelined_n += st.pipelined
            prelinked_n += st.prelinked
            broken_n += st.prelink_broken
            old_n += st.old_id_lookups
            scanned_n += st.old_id_scanned
            rejected_n += svc.rejected_total
            applied_seq = max(applied_seq, svc.follower.applied_seq)
            health = getattr(svc, "health", None)
            if health is not None and not log_seen:
                log_seen = True  # one process, one log: the first replica speaks for it
                _add_log(log_metrics, health)
        for key, n in sorted(totals.items()):
            name, _, outcome = key.rpartition(":")
            commands.add_metric([name, outcome], n)
        conflicts.add_metric([], conflicts_n)
        batches.add_metric([], batches_n)
        batched.add_metric([], batched_n)
        pipelined.add_metric([], pipelined_n)
        prelinked.add_metric(["ok"], prelinked_n)
        prelinked.add_metric(["broken"], broken_n)
        old_retries.add_metric([], old_n)
        old_scanned.add_metric([], scanned_n)
        if self.services:
            rejected.add_metric(["service"], rejected_n)
            applied.add_metric(["service"], applied_seq)
        paused = GaugeMetricFamily(
            "netledger_projector_disk_full",
            "1 while a projector is stopped at its last commit because its disk is full.",
            labels=["db"],
        )
        for db, p in list(self.projectors.items()):
            rejected.add_metric([f"projector:{db}"], p.rejected)
            applied.add_metric([f"projector:{db}"], p.last_seq)
            projected.add_metric([db], p.events)
            paused.add_metric([db], 1 if getattr(p, "paused", None) else 0)
        yield from (commands, conflicts, batches, batched, pipelined, prelinked)
        yield from (old_retries, old_scanned)
        yield from (rejected, applied, projected, paused)
        yield from log_metrics.values()
        yield from self._timings()

    def _timings(self) -> Iterator[Any]:
        """The histograms the watched objects keep (``Buckets``) and the decisions their lanes
        took again."""
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        seconds = HistogramMetricFamily(
            "netledger_command_seconds",
            "Time from a command's arrival to its answer, whatever its outcome (each also in"
            " netledger_commands_total), by command name.",
            labels=["command"],
        )
        appended = HistogramMetricFamily(
            "netledger_append_batch_events",
            "Events per append stored: one message (alone, a pipelined chain's link, a"
            " pre-linked decision) or one atomic batch (group commits make it grow).",
        )
        retries = CounterMetricFamily(
            "netledger_append_retries",
            "Decisions taken again: another writer came first (conflict), or an append that"
            " may have landed was looked for (maybe_applied).",
            labels=["reason"],
        )
        resends = CounterMetricFamily(
            "netledger_append_resends",
            "Appends sent again with the same ids: the publish got no answer (no_answer), or no"
            " stream took it — a 503, no responders (unavailable).",
            labels=["reason"],
        )
        timed: dict[str, list[Any]] = {}
        appends: list[Any] = []
        again: dict[str, int] = {}
        sent_again: dict[str, int] = {}
        for svc in list(self.services):
            st = svc.stats
            for name, b in list(st.seconds.items()):
                timed.setdefault(name, []).append(b)
            for reason, n in list(st.retries.items()):
                again[reason] = again.get(reason, 0) + n
            appends.append(svc.appender.appended)
            for reason, n in list(svc.appender.resends.items()):
                sent_again[reason] = sent_again.get(reason, 0) + n
        for name, parts in sorted(timed.items()):
            _add_histogram(seconds, [name], parts)
        if appends:
            _add_histogram(appended, [], appends)
        for reason, n in sorted(again.items()):
            retries.add_metric([reason], n)
        for reason, n in sorted(sent_again.items()):
            resends.add_metric([reason], n)
        batch_seconds = HistogramMetricFamily(
            "netledger_projector_batch_seconds",
            "The projector's writer's time on one batch: decode, project, commit.",
            labels=["db"],
        )
        batch_messages = HistogramMetricFamily(
            "netledger_projector_batch_events",
            "Messages (events and rejected ones) per projector transaction.",
            labels=["db"],
        )
        for db, p in list(self.projectors.items()):
            _add_histogram(batch_seconds, [db], [p.batch_seconds])
            _add_histogram(batch_messages, [db], [p.batch_messages])
        yield from (seconds, appended, retries, resends, batch_seconds, batch_messages)


def _add_histogram(family: Any, labels: list[str], parts: list[Any]) -> None:
    """One series of ``family``: the sum of ``parts`` (``Buckets`` of the same bounds: several
    replicas' of one command), their counts made cumulative as Prometheus wants them."""
    from prometheus_client import utils

    # the bounds' labels as prometheus-client's own histograms write them ("1.0", "0.0025")
    le_label = cast(Callable[[float], str], utils.floatToGoString)
    bounds = parts[0].bounds
    counts = [0] * (len(bounds) + 1)
    total = 0.0
    for b in parts:
        for i, n in enumerate(list(b.counts)):  # a copy: the event loop may add meanwhile
            counts[i] += n
        total += b.sum
    cumulative = list(itertools.accumulate(counts))
    buckets = [(le_label(le), n) for le, n in zip(bounds, cumulative, strict=False)]
    buckets.append(("+Inf", cumulative[-1]))
    family.add_metric(labels, buckets, total)


#: the states of the log's health (journal/loghealth.py), one 0/1 series each
LOG_STATES = ("ok", "storage_low", "latched", "restarting", "gave_up", "failing")
#: the store's sample (ops/storage.py) -> metric name
_STORE_GAUGES = {
    "free_bytes": "netledger_log_store_free_bytes",
    "total_bytes": "netledger_log_store_size_bytes",
    "reserve_bytes": "netledger_log_store_reserve_bytes",
    "js_used_bytes": "netledger_log_jetstream_used_bytes",
    "js_limit_bytes": "netledger_log_jetstream_limit_bytes",
}


def _log_families() -> dict[str, Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    out: dict[str, Any] = {
        "state": GaugeMetricFamily(
            "netledger_log_state",
            "Whether the log takes writes: 1 for the current state (ok, storage_low, latched,"
            " restarting, gave_up, failing).",
            labels=["state"],
        ),
        "refused": CounterMetricFamily(
            "netledger_log_refused_commands",
            "Commands answered log_storage_full / log_unavailable without trying to append.",
        ),
        "failed": CounterMetricFamily(
            "netledger_log_failed_appends", "Appends the log refused or did not acknowledge."
        ),
        "restarts": CounterMetricFamily(
            "netledger_log_nats_restarts",
            "Restarts of the embedded nats-server to heal a stream latched in a write error.",
        ),
    }
    for key, name in _STORE_GAUGES.items():
        out[key] = GaugeMetricFamily(name, f"The log's store: {key.replace('_', ' ')}.")
    return out


def _add_log(families: dict[str, Any], health: Any) -> None:
    for state in LOG_STATES:
        families["state"].add_metric([state], 1 if health.state == state else 0)
    families["refused"].add_metric([], health.refused)
    families["failed"].add_metric([], health.failed_appends)
    families["restarts"].add_metric([], health.restarts)
    for key in _STORE_GAUGES:
        value = health.store.get(key)
        if isinstance(value, int):
            families[key].add_metric([], value)


# --- the process-wide instance and the hooks -----------------------------------------------

_lock = threading.Lock()
_metrics: Metrics | None = None


def metrics() -> Metrics:
    """The process's metrics (created on first use, in prometheus-client's default registry)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = Metrics()
        return _metrics


def _active() -> Metrics | None:
    # Hooks do nothing until something asked for metrics (a server, a watch).
    return _metrics


def watch_service(service: Any) -> None:
    """Expose a command service's counters (``service.stats``) and position."""
    metrics().watched.services.add(service)


def watch_projector(projector: Any, db: str) -> None:
    """Expose a projector's position, event and rejection counts (``last_seq``/``events``/...)."""
    metrics().watched.projectors[db] = projector


def unwatch(obj: Any) -> None:
    m = _active()
    if m is None:
        return
    m.watched.services.discard(obj)
    for db, p in list(m.watched.projectors.items()):
        if p is obj:
            del m.watched.projectors[db]


_EXECUTOR_APPLIED: dict[str, int] = {}


def executor_applied(host: str) -> int:
    """The last sequence the host's executor reconciled to (0 before its first pass)."""
    return _EXECUTOR_APPLIED.get(host, 0)


def executor_reconciled(
    host: str, applied_seq: int, changes: int, drift_repairs: int, duration_ms: float
) -> None:
    """Call with the fields of the HostReconciled event the executor appends."""
    _EXECUTOR_APPLIED[host] = applied_seq
    if (m := _active()) is not None:
        m.reconcile_seconds.labels(host).observe(duration_ms / 1000.0)
        m.reconcile_changes.labels(host).inc(changes)
        m.drift_repairs.labels(host).inc(drift_repairs)
        m.executor_applied_seq.labels(host).set(applied_seq)


def executor_failed(host: str, operation: str) -> None:
    if (m := _active()) is not None:
        m.executor_failures.labels(host, operation).inc()


# --- lag -----------------------------------------------------------------------------------


class LagWatcher:
    """Samples the stream's last sequence and sets each registered component's lag.

    Owns one task; ``await close()`` (or ``async with``) cancels and awaits it.
    """

    def __init__(self, conn: Any, interval: float = 5.0) -> None:
        self.conn = conn
        self.interval = interval
        self.components: dict[str, Callable[[], int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def add(self, component: str, applied_seq: Callable[[], int]) -> None:
        self.components[component] = applied_seq

    async def sample(self) -> int:
        # Asked of the connection itself (a journal Connection: ``js`` and ``stream``) rather than
        # through journal/stream.py: this room imports no part. A failed sample keeps the last
        # values (``_run``), so the journal's retrying is not wanted here anyway.
        info = await self.conn.js.stream_info(self.conn.stream)
        last = int(info.state.last_seq)
        m = metrics()
        m.stream_last_seq.set(last)
        for name, applied in self.components.items():
            m.lag.labels(name).set(max(0, last - applied()))
        return last

    async def _run(self) -> None:
        # A stop flag besides cancellation: nats-py may turn a cancelled request into a
        # TimeoutError, which the loop below would otherwise swallow and sleep on.
        while not self._stop.is_set():
            try:
                await self.sample()
            except Exception as exc:  # NATS away for a moment: keep the last values
                log.debug("lag sample failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="netledger-lag-watcher")

    async def close(self) -> None:
        if self._task is not None:
            self._stop.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def __aenter__(self) -> LagWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- the HTTP endpoint ---------------------------------------------------------------------


class MetricsServer:
    """``GET /metrics`` on ``addr:port`` in a daemon thread (prometheus-client's server)."""

    def __init__(self, port: int, addr: str = "0.0.0.0") -> None:
        pc = _prometheus()
        m = metrics()
        try:
            self._server, self._thread = pc.start_http_server(port, addr, registry=m.registry)
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot serve metrics on {addr}:{port}: {exc.strerror}", port=port
            ) from None
        self.port: int = self._server.server_port
        self.addr = addr
        log.info("metrics on http://%s:%d/metrics", addr, self.port)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.addr in ("0.0.0.0", "") else self.addr
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve this process's metrics; ``port=0`` picks a free port (see ``.port``)."""
    return MetricsServer(port, addr)


def metrics_port_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--metrics-port PORT`` for a long-running command (file key ``metrics-port``)."""
    return click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        metavar="PORT",
        help="Serve Prometheus metrics on this port (/metrics; off by default).",
    )(fn)


async def observe(
    conn: Any, port: int | None, components: dict[str, Callable[[], int]], watch: Any = None
) -> contextlib.AsyncExitStack:
    """Serve metrics on ``port`` (None: nothing) and keep each component's lag current.

    ``components`` maps a component name to a function giving its applied sequence;
    ``watch`` is a command service or ``(projector, db)`` whose counters are exposed too.
    Close the returned stack to stop it all.
    """
    stack = contextlib.AsyncExitStack()
    if port is None:
        return stack
    server = start_metrics_server(port)
    stack.callback(server.close)
    if isinstance(watch, tuple):
        watch_projector(*watch)
        stack.callback(unwatch, watch[0])
    elif watch is not None:
        watch_service(watch)
        stack.callback(unwatch, watch)
    lag = LagWatcher(conn)
    for name, fn in components.items():
        lag.add(name, fn)
    await stack.enter_async_context(lag)
    return stack
