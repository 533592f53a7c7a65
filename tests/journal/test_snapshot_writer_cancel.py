"""A snapshot write given up (the service closing, or the writer wedged): its forked child is
killed and reaped at once and its files are removed — it does not run on, nor hold the thread
that waits for it (the interpreter's exit joins that thread)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from netledger.events.state import State
from netledger.journal import snapshot_store
from netledger.journal.snapshot_store import write_forked


def _wedged(*args: Any, **kwargs: Any) -> bytes:
    time.sleep(120)  # the child encodes forever
    return b""


async def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not await asyncio.to_thread(os.path.exists, f"/proc/{pid}"):
            return True
        await asyncio.sleep(0.05)
    return False


def record_forks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on every child ``os.fork`` makes in this process, by pid (in order)."""
    forked: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork)
    return forked


@pytest.mark.parametrize("how", ["cancelled", "timed_out"])
async def test_a_write_given_up_kills_and_reaps_its_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    forked = record_forks(monkeypatch)
    monkeypatch.setattr(snapshot_store, "dumps", _wedged)
    if how == "timed_out":
        monkeypatch.setattr(snapshot_store, "CHILD_TIMEOUT_S", 0.5)
    write = asyncio.create_task(
        write_forked(State(), OrderedDict(), seq=1, stream="S", created="c", tmpdir=str(tmp_path))
    )
    if how == "cancelled":
        await asyncio.sleep(0.5)
        write.cancel()
        with pytest.raises(asyncio.CancelledError):
            await write
    else:
        with pytest.raises(RuntimeError, match="took too long and was killed"):
            await write
    assert len(forked) == 1
    assert await _gone(forked[0]), "the child still runs (or was never reaped)"
    assert os.listdir(tmp_path) == []
