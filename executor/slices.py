"""Computations made in steps, so that the event loop runs between them.

A computation in steps is a generator that yields (``None``) wherever it may be interrupted
and returns its result: :func:`complete` runs one to its end at once (what the passes do),
:func:`in_slices` runs it on the event loop in slices of about ``budget`` seconds, letting
the loop run between slices. A step looks at :data:`ITEMS` objects or so — tens of
microseconds — whatever the host's size: the loops of the periodic sweep's whole-host check
(executor/sweep.py) yield every :data:`ITEMS` objects, and its sorts and indexes are made in
steps too (:func:`sorted_steps`, :func:`index_steps`).

Between two slices anything on the loop may happen — folding the log, a change's pass — so a
computation in steps reads what may change (the fold, the kernel cache) only inside a step,
and its caller judges what a later step's view made stale (executor/sweep.py).
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Generator, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
#: a computation in steps returning a T
Steps = Generator[None, None, T]
#: objects looked at between two points where a computation in steps may be interrupted
ITEMS = 64
#: objects sorted, or merged, in one step
SORT_ITEMS = 256


def complete(steps: Steps[T]) -> T:
    """Run ``steps`` to their end now."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def sorted_steps(items: Iterable[T], key: Callable[[T], Any] | None = None) -> Steps[list[T]]:
    """``sorted(items, key=key)`` in steps: runs of :data:`SORT_ITEMS` sorted, then merged
    (stable, as ``sorted`` is): a sort of thousands of links at once takes a millisecond or
    more, and grows with the host."""
    todo = list(items)
    if len(todo) <= SORT_ITEMS:
        return sorted(todo, key=key)  # type: ignore[type-var, arg-type]
    runs = []
    for start in range(0, len(todo), SORT_ITEMS):
        yield
        runs.append(sorted(todo[start : start + SORT_ITEMS], key=key))  # type: ignore[type-var, arg-type]
    out: list[T] = []
    for i, x in enumerate(heapq.merge(*runs, key=key)):  # type: ignore[arg-type]
        if not i % SORT_ITEMS:
            yield
        out.append(x)
    return out


def index_steps(
    items: Iterable[T], key: Callable[[T], K], keep: Callable[[T], bool] | None = None
) -> Steps[dict[K, T]]:
    """``{key(x): x for x in items if keep(x)}`` in steps."""
    out: dict[K, T] = {}
    for i, x in enumerate(items):
        if not i % ITEMS:
            yield
        if keep is None or keep(x):
            out[key(x)] = x
    return out


@dataclass
class Slicing:
    """How a computation went in slices: how many, the longest (seconds)."""

    slices: int = 0
    longest: float = 0.0


async def in_slices(
    steps: Steps[T], budget: float, pause: float, stop: Callable[[], bool], slicing: Slicing
) -> T | None:
    """Run ``steps`` on the loop, yielding to it for ``pause`` seconds once a slice has taken
    ``budget``; None if ``stop()`` says so between two slices (the steps are closed then).

    A pause, not a bare ``sleep(0)``: that lets the loop run once, and a message on its way
    from the socket to the fold and to the pass it wakes goes through several tasks — one
    slice each. During a pause the loop runs until nothing is ready, so what arrived is
    folded and its pass begun before the next slice."""
    while True:
        t0 = time.perf_counter()
        try:
            while True:
                next(steps)
                if time.perf_counter() - t0 >= budget:
                    break
        except StopIteration as done:
            slicing.slices += 1
            slicing.longest = max(slicing.longest, time.perf_counter() - t0)
            return done.value  # type: ignore[no-any-return]
        slicing.slices += 1
        slicing.longest = max(slicing.longest, time.perf_counter() - t0)
        await asyncio.sleep(pause)
        if stop():
            steps.close()
            return None
