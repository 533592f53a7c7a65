"""`--metrics-port` on the long-running projector: a real scrape shows its position and lag."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from pathlib import Path

from netledger.common.natsserver import free_port
from netledger.journal.stream import Connection, last_seq
from netledger.service.client import Client
from netledger.service.service import CommandService

NETLEDGER = str(Path(sys.executable).parent / "netledger")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


async def test_projector_exposes_lag_and_position(
    conn: Connection, service: CommandService, nats_url: str, tmp_path: Path
) -> None:
    c = Client(conn)
    [net] = await c.create_networks(label="m", cidr="10.11.0.0/24", mode="flat")
    for k in range(5):
        await c.allocate_fixed_ip(f"i-{k}", network_id=net["id"])
    port = free_port()
    db = tmp_path / "p.db"
    p = subprocess.Popen(
        [
            NETLEDGER,
            "--nats",
            nats_url,
            "projector",
            "run",
            "--db",
            str(db),
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        target = await last_seq(conn)
        text = ""
        for _ in range(200):
            try:
                text = await asyncio.to_thread(_scrape, port)
            except OSError:
                text = ""
            if f'component="projector:{db}"' in text and "netledger_lag_events" in text:
                lines = [
                    ln
                    for ln in text.splitlines()
                    if ln.startswith("netledger_lag_events") and "projector:" in ln
                ]
                if lines and float(lines[0].split()[-1]) == 0.0:
                    break
            await asyncio.sleep(0.1)
        assert "netledger_stream_last_seq" in text, text[:2000]
        lag = [
            ln
            for ln in text.splitlines()
            if ln.startswith("netledger_lag_events") and "projector:" in ln
        ]
        assert lag and float(lag[0].split()[-1]) == 0.0, lag
        assert f"netledger_stream_last_seq {float(target)}" in text
    finally:
        p.terminate()
        assert p.wait(20) == 0
