"""What the diagnostic probes watch in the process they start (bench/tail_probe.py: serve;
bench/executor_probe.py: an executor), besides their own stamps:

- its garbage collections: (start, generation, wall seconds, the thread's own CPU seconds — not
  lengthened by the scheduler);
- its event loop's stalls: a task sleeping 1 ms notes each wake-up later than ``stall_s``, and a
  thread watching that task's beat takes the main thread's stack once while a stall lasts (what
  ran instead: a stall in C code without the GIL released shows only as its Python caller).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
import traceback
from typing import Any

now = time.monotonic


class LoopWatch:
    def __init__(self, stall_s: float, look_every: float) -> None:
        self.stall_s = stall_s
        #: how often the watcher thread looks at the beat (seconds)
        self.look_every = look_every
        self.gcs: list[tuple[float, int, float, float]] = []
        self.stalls: list[tuple[float, float]] = []
        self.stacks: list[tuple[float, str]] = []
        self._gc_start = (0.0, 0.0)
        self._beat = 0.0

    def watch_collections(self) -> None:
        gc.callbacks.append(self._on_gc)

    def start(self) -> asyncio.Task[None]:
        """The beat (a task on the running loop: the caller cancels it) and its watcher."""
        task = asyncio.get_running_loop().create_task(self._beat_forever())
        main = threading.main_thread().ident
        threading.Thread(target=self._watch, args=(main,), daemon=True).start()
        return task

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = (now(), time.thread_time())
        else:
            t, cpu = self._gc_start
            self.gcs.append((t, info["generation"], now() - t, time.thread_time() - cpu))

    def _watch(self, main: int | None) -> None:
        sampled = 0.0
        while True:
            time.sleep(self.look_every)
            b = self._beat
            if b and now() - b > self.stall_s and sampled != b:
                sampled = b
                frame = sys._current_frames().get(main) if main is not None else None
                if frame is not None:
                    st = traceback.extract_stack(frame)[-8:]
                    where = " < ".join(
                        f"{f.name}@{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in reversed(st)
                    )
                    self.stacks.append((b, where))

    async def _beat_forever(self) -> None:
        loop_sleep = asyncio.sleep
        while True:
            before = now()
            self._beat = before
            await loop_sleep(0.001)
            late = now() - before - 0.001
            if late > self.stall_s:
                self.stalls.append((before, late))
