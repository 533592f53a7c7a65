"""``serve --projector-live-period`` reaches serve's projector child (projector/child.py): the
child stamps its file with that period, not the default 10 s — ``status`` judges a projector by
the period it stamped. With it, ``serve --projector-metrics-port``, which never reached the
child (``_start_projector`` took the port and did not pass it on). A real ``netledger serve``
on a real nats-server, its real child, the real projection file."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from netledger.common.natsserver import free_port
from netledger.journal.stream import Connection, last_seq
from netledger.projector.liveness import FOLLOW, STOPPED, Stamp, read_stamp
from netledger.service.client import Client

NETLEDGER = str(Path(sys.executable).parent / "netledger")
PERIOD = 0.3
#: a guard against a hang only: every wait below ends when what it waits for happens
HANG_S = 60.0


def _stamp(db: Path) -> Stamp | None:
    if not db.is_file():
        return None
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return read_stamp(conn)
    except sqlite3.Error:  # the file being created
        return None
    finally:
        conn.close()


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _argv(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")


async def test_serve_hands_its_projector_the_live_period_and_the_metrics_port(
    conn: Connection, nats_url: str, tmp_path: Path
) -> None:
    metrics_port = free_port()
    data = tmp_path / "data"
    serve = await asyncio.create_subprocess_exec(
        NETLEDGER, "--nats", nats_url, "serve", "--data", str(data),
        "--projector-live-period", str(PERIOD), "--projector-metrics-port", str(metrics_port),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    db = data / "projection.db"
    try:
        assert serve.stdout is not None
        line = await asyncio.wait_for(serve.stdout.readline(), HANG_S)
        assert line.decode().startswith("netledger ready: "), line
        [child] = _children(serve.pid)
        argv = _argv(child)
        assert argv[argv.index(b"--live-period") + 1] == str(PERIOD).encode()

        client = Client(conn)  # serve is the command service
        [net] = await client.create_networks(
            label="n", cidr="10.5.0.0/24", mode="flat", bridge="br5"
        )
        await client.allocate_fixed_ip("i-1", network_id=net["id"], host="h1")
        end, stamp = await last_seq(conn), None
        deadline = time.monotonic() + HANG_S
        while stamp is None or stamp.seq < end:
            assert time.monotonic() < deadline, f"no stamp at seq {end}: {stamp}"
            await asyncio.sleep(0.05)
            stamp = _stamp(db)
        # the child's stamp, with serve's period (the default would say 10.0)
        assert (stamp.mode, stamp.period_s, stamp.pid) == (FOLLOW, PERIOD, child)

        url = f"http://127.0.0.1:{metrics_port}/metrics"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        assert f'netledger_projector_events_total{{db="{db}"}} {end}.0'.encode() in body, body
    finally:
        if serve.returncode is None:
            serve.send_signal(signal.SIGTERM)
        _, err = await serve.communicate()
    assert serve.returncode == 0, err.decode()
    last = _stamp(db)
    assert last is not None and (last.mode, last.period_s) == (STOPPED, PERIOD)


def test_the_options_help_agrees_with_the_stamp() -> None:
    """The option's default and help (projector/options.py, read at every CLI start without
    importing the stamp's module) are the stamp's own numbers."""
    from netledger.projector import liveness, options

    assert options.LIVE_PERIOD_S == liveness.DEFAULT_PERIOD_S
    assert options.DEAD_AFTER_PERIODS == liveness.DEAD_AFTER_PERIODS


def test_serve_and_projector_run_take_the_same_option() -> None:
    import click

    from netledger.cli import cli

    ctx = click.Context(cli)
    serve = cli.get_command(ctx, "serve")
    group = cli.get_command(ctx, "projector")
    assert serve is not None and isinstance(group, click.Group)
    run = group.get_command(ctx, "run")
    assert run is not None
    ours = {p.name: p for p in serve.params}["projector_live_period"]
    theirs = {p.name: p for p in run.params}["live_period"]
    assert isinstance(ours, click.Option) and isinstance(theirs, click.Option)
    assert ours.default == theirs.default == 10.0
    assert isinstance(ours.type, click.FloatRange) and isinstance(theirs.type, click.FloatRange)
    assert (ours.type.min, ours.type.max) == (theirs.type.min, theirs.type.max)
    assert theirs.help == f"{ours.help} Not with --once."
