"""Stopping the executor's background tasks so that they do stop."""

from __future__ import annotations

import asyncio
from typing import Any


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it runs: on Python 3.11 a
    cancellation that meets an awaited call finishing at that moment (``asyncio.wait_for``
    inside nats-py's request, a thread's result) can be swallowed, and a loop would then go on
    for ever (seen: an executor that did not stop within 90 s in CI)."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
    await asyncio.gather(task, return_exceptions=True)
