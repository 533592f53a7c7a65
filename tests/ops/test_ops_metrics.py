"""Metrics: scrape the real endpoint before and after real commands; logs as JSON lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from netledger.common import metrics
from netledger.events.errors import NetledgerError
from netledger.journal.stream import Connection, last_seq
from netledger.ops.logs import setup_logging
from netledger.service.client import Client
from netledger.service.service import CommandService


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def server():
    s = metrics.start_metrics_server(0, "127.0.0.1")
    try:
        yield s
    finally:
        s.close()


async def test_counters_move_after_real_commands(
    conn: Connection, service: CommandService, server: metrics.MetricsServer
) -> None:
    metrics.watch_service(service)
    lag = metrics.LagWatcher(conn, interval=3600)
    lag.add("service", lambda: service.follower.applied_seq)
    try:
        before = await asyncio.to_thread(scrape, server.url)
        c = Client(conn)
        net, _ = await c.create_networks(  # two events: one atomic batch
            label="n", cidr="10.0.0.0/23", num_networks=2, mode="vlan", vlan_start=100
        )
        for i in range(3):
            await c.allocate_fixed_ip(f"i-{i}", network_id=net["id"])
        # a host's first address in the network: appended right after its join
        await c.allocate_fixed_ip("i-h", network_id=net["id"], host="h1")
        with pytest.raises(NetledgerError) as refused:
            await c.create_networks(label="m", cidr="10.0.0.0/25", mode="flat", bridge="br2")
        # the executor's hook (its reconcile passes run in another process)
        metrics.executor_reconciled("compute1", 42, changes=5, drift_repairs=2, duration_ms=120)
        await lag.sample()
        after = await asyncio.to_thread(scrape, server.url)
    finally:
        metrics.unwatch(service)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("netledger_commands_total", command="network.create", outcome="ok") == 1
    code = refused.value.code
    assert moved("netledger_commands_total", command="network.create", outcome=code) == 1
    assert moved("netledger_commands_total", command="fixed_ip.allocate", outcome="ok") == 4
    assert moved("netledger_atomic_batches_total") == 1
    assert moved("netledger_atomic_batch_events_total") == 2
    assert moved("netledger_prelinked_appends_total", outcome="ok") == 1
    assert moved("netledger_prelinked_appends_total", outcome="broken") == 0
    assert moved("netledger_old_retry_lookups_total") == 0  # new commands: never looked up
    assert moved("netledger_old_retry_scanned_messages_total") == 0
    assert value(after, "netledger_applied_seq", component="service") == await last_seq(conn)
    assert value(after, "netledger_lag_events", component="service") == 0
    assert value(after, "netledger_stream_last_seq") == await last_seq(conn)
    # per append stored: the atomic batch (2 events), the three allocations alone and the
    # pre-linked one (1 each: its join is not waited for, not counted)
    assert moved("netledger_append_batch_events_count") == 5
    assert moved("netledger_append_batch_events_sum") == 6
    assert moved("netledger_append_batch_events_bucket", le="1.0") == 4
    assert moved("netledger_append_batch_events_bucket", le="2.0") == 5
    # every command answered is timed, whatever its outcome
    assert moved("netledger_command_seconds_count", command="network.create") == 2
    assert moved("netledger_command_seconds_count", command="fixed_ip.allocate") == 4
    # one writer, one client at a time: nothing decided again (a real conflict:
    # tests/ops/test_metrics_review21.py)
    assert moved("netledger_append_retries_total", reason="conflict") == 0
    assert moved("netledger_append_retries_total", reason="maybe_applied") == 0
    assert moved("netledger_executor_drift_repairs_total", host="compute1") == 2
    assert moved("netledger_executor_changes_total", host="compute1") == 5
    assert value(after, "netledger_executor_applied_seq", host="compute1") == 42
    assert moved("netledger_executor_reconcile_seconds_count", host="compute1") == 1


async def test_lag_of_a_component_behind_the_stream(
    conn: Connection, service: CommandService
) -> None:
    c = Client(conn)
    await c.create_networks(label="n", cidr="10.0.0.0/24", mode="flat", bridge="br1")
    lag = metrics.LagWatcher(conn, interval=3600)
    lag.add("projector:/x.db", lambda: 0)
    async with lag:
        last = await lag.sample()
    assert last >= 1
    assert metrics.metrics().lag.labels("projector:/x.db")._value.get() == last


def test_metrics_port_in_use_is_a_clear_error(server: metrics.MetricsServer) -> None:
    with pytest.raises(metrics.MetricsUnavailable) as exc:
        metrics.start_metrics_server(server.port, "127.0.0.1")
    assert exc.value.code == "metrics_unavailable" and str(server.port) in exc.value.message


def test_json_logs_carry_extras() -> None:
    buf = io.StringIO()
    setup_logging("info", json_lines=True, stream=buf)
    try:
        logging.getLogger("netledger.test").info("applied %d", 7, extra={"seq": 7})
        logging.getLogger("netledger.test").debug("hidden")
        [line] = buf.getvalue().splitlines()
        obj = json.loads(line)
        assert obj["message"] == "applied 7" and obj["seq"] == 7 and obj["level"] == "info"
        assert obj["logger"] == "netledger.test" and obj["time"].endswith("Z")
        buf.truncate(0)
        buf.seek(0)
        setup_logging("debug", json_lines=False, stream=buf)
        logging.getLogger("netledger.test").debug("now %s", "visible", extra={"host": "h1"})
        assert "DEBUG netledger.test: now visible host=h1" in buf.getvalue()
        with pytest.raises(ValueError):
            setup_logging("loud")
    finally:
        setup_logging("warning")
