"""Diagnostic (not part of ``bench/run``): what one atomic batch commit costs the server.

    .venv/bin/python bench/batch_commit_cost.py [--rounds 2] [--reps 60]

One fresh nats-server per case (as the tests start it), one R1 stream with ``allow_atomic``;
milliseconds per sequential operation: a plain publish-ack with the OCC header, and atomic
batches of 1, 16 and 64 messages (OCC on the first, the first sent with ``publish`` or with
``request``). Cases: ``sync_interval`` default / always x file / memory storage, and
``--stage-on-tmpfs`` adds file storage with the stream's ``batches/`` directory (where nats-server
stages every atomic batch of an R1 file stream in its own file store) symlinked into /dev/shm.
That last case is an experiment on the server's internal layout, not a deployment option.
See bench/README.md section 1 for what it showed and the server code behind it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from pathlib import Path

import nats
from nats.js.api import StorageType, StreamConfig

from netledger.common.natsserver import EmbeddedNats, free_port

OCC = "Nats-Expected-Last-Subject-Sequence"


async def measure(sync: str, storage: StorageType, tmpfs: bool, reps: int) -> dict[str, float]:
    srv = EmbeddedNats(data_dir=Path(tempfile.mkdtemp()), port=free_port(), sync_interval=sync)
    srv.start()
    try:
        nc = await nats.connect(srv.url)
        js = nc.jetstream()
        await js.add_stream(
            StreamConfig(name="S", subjects=["s.>"], storage=storage, allow_atomic=True)
        )
        if tmpfs:
            batches = srv.store_dir / "jetstream" / "$G" / "streams" / "S" / "batches"
            if not batches.exists():
                os.symlink(tempfile.mkdtemp(dir="/dev/shm"), batches)
        out: dict[str, float] = {}
        last = 0
        t = time.perf_counter()
        for _ in range(reps):
            ack = await js.publish("s.a", b"x" * 100, headers={OCC: str(last)})
            last = ack.seq
        out["plain"] = (time.perf_counter() - t) / reps * 1e3
        for n in (1, 16, 64):
            for first_req in (False, True):
                t = time.perf_counter()
                for _ in range(reps):
                    bid = uuid.uuid4().hex
                    for i in range(1, n + 1):
                        h = {"Nats-Batch-Id": bid, "Nats-Batch-Sequence": str(i)}
                        if i == 1:
                            h[OCC] = str(last)
                        if i == n:
                            h["Nats-Batch-Commit"] = "1"
                            ack = await js.publish("s.a", b"x" * 100, headers=h)
                            last = ack.seq
                        elif i == 1 and first_req:
                            await nc.request("s.a", b"x" * 100, headers=h, timeout=5)
                        else:
                            await nc.publish("s.a", b"x" * 100, headers=h)
                key = f"batch{n}{'-req' if first_req else ''}"
                out[key] = (time.perf_counter() - t) / reps * 1e3
        await nc.close()
        return out
    finally:
        srv.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--reps", type=int, default=60)
    ap.add_argument("--stage-on-tmpfs", action="store_true")
    a = ap.parse_args()
    cases = [
        (sync, st, False)
        for sync in ("default", "always")
        for st in (StorageType.FILE, StorageType.MEMORY)
    ]
    if a.stage_on_tmpfs:
        cases += [("always", StorageType.FILE, True)]
    for rnd in range(a.rounds):
        for sync, st, tmpfs in cases:
            o = await measure(sync, st, tmpfs, a.reps)
            name = f"{sync:7} {st.value:6}{' batches-on-tmpfs' if tmpfs else ''}"
            print(rnd, name, " ".join(f"{k}={v:.2f}ms" for k, v in o.items()), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
