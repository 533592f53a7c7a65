"""A lane's job whose future its caller cancelled while the lane awaited the append (the reaper's
own submissions, a close) is answered no more: resolving or failing it is a no-op, not an
InvalidStateError out of the lane that failed every other job of its round (review hrev13's
note: ``_append_prelinked`` resolved without looking)."""

from __future__ import annotations

import asyncio
from typing import Any

from netledger.service.lanes import Job


async def test_a_settled_job_is_answered_once() -> None:
    loop = asyncio.get_running_loop()
    heard: list[Any] = []
    job = Job(req=None, fut=loop.create_future(), on_done=heard.append)  # type: ignore[arg-type]
    job.fut.cancel()
    job.resolve({"ok": True})
    job.fail(RuntimeError("late"))
    assert job.fut.cancelled() and heard == []
    done = Job(req=None, fut=loop.create_future(), on_done=heard.append)  # type: ignore[arg-type]
    done.resolve({"first": 1})
    done.resolve({"second": 2})
    done.fail(RuntimeError("late"))
    assert done.fut.result() == {"first": 1} and len(heard) == 1
