"""A dump of the kernel never loses a change the cache's reader applied while it ran.

``KernelCache.resync`` dumps links, addresses and flood entries and replaces the cache with
them. The reader thread goes on applying notifications meanwhile — to the state being
replaced: a link created after the dump had read the links was applied there, then dropped by
the swap, and the cache said it did not exist until the next sweep (a pass's own link could
"vanish"; found while making the periodic sweep's dump run beside the passes). Now what the
reader applies during a dump is applied again on the dump before it is swapped in.

Real namespace (root; deleted at the end); the change is made at the worst moment by wrapping
the dump: after the links were read, before the swap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from netledger.executor.cache import KernelCache
from netledger.executor.errors import DumpInterrupted
from tests.executor.test_executor_index_race import ns as ns
from tests.executor.test_executor_index_race import sh


def _names(cache: KernelCache) -> set[str]:
    with cache._lock:
        return {x.name for x in cache.links.values() if x.name}


def test_a_link_created_while_the_links_are_dumped_stays_in_the_cache(ns: str) -> None:
    cache = KernelCache(ns, live=True)
    cache.start()
    try:
        dumper = cache._dumper
        assert dumper is not None
        real = dumper.dump_raw
        calls = 0

        def dump_raw(*args: Any, **kw: Any) -> Iterator[Any]:
            nonlocal calls
            calls += 1
            got = list(real(*args, **kw))
            if calls == 1:  # the links were read: now a link appears, and the reader sees it
                sh("ip", "-n", ns, "link", "add", "late0", "type", "bridge")
                deadline = time.monotonic() + 5
                while "late0" not in _names(cache):
                    assert time.monotonic() < deadline, "the reader never applied it"
                    time.sleep(0.01)
            return iter(got)

        dumper.dump_raw = dump_raw  # type: ignore[method-assign]
        cache.resync()
        dumper.dump_raw = real  # type: ignore[method-assign]
        assert calls == 3  # links, addresses, flood entries
        assert "late0" in _names(cache)
        # and what the cache holds is what a fresh dump reads
        cache.resync()
        assert "late0" in _names(cache)
    finally:
        cache.close()


def test_a_failed_read_after_lost_notifications_is_tried_again(ns: str) -> None:
    """The read that follows lost notifications (an overrun) can fail — its dumps marked
    interrupted by a storm of changes. The notifications applied after it cannot stand for the
    lost ones: the reader tries the read again (it used to log and wait for the periodic sweep,
    minutes away), and the owner is told once it succeeds."""
    told = threading.Event()
    cache = KernelCache(ns, on_change=told.set, live=True)
    cache.start()
    try:
        dumper = cache._dumper
        assert dumper is not None
        real = dumper.read_raw
        failures = 0

        def read_raw(*args: Any, **kw: Any) -> Any:
            nonlocal failures
            if failures < 2:  # two reads in a row fail: the retry waits longer the second time
                failures += 1
                raise DumpInterrupted(f"every dump marked interrupted (test, {failures})")
            return real(*args, **kw)

        dumper.read_raw = read_raw  # type: ignore[method-assign]
        before = cache.resyncs
        # a change whose notification is lost: made, applied by the reader, then taken out
        sh("ip", "-n", ns, "link", "add", "lost0", "type", "bridge")
        deadline = time.monotonic() + 5
        while "lost0" not in _names(cache):
            assert time.monotonic() < deadline, "the reader never applied it"
            time.sleep(0.01)
        with cache._lock:
            cache.links = {i: x for i, x in cache.links.items() if x.name != "lost0"}
        told.clear()
        cache._safe_resync()  # what the reader does after an overrun: fails
        assert failures == 1 and cache.resyncs == before and not told.is_set()
        assert "lost0" not in _names(cache)
        assert told.wait(30), "the failed read was never tried again"
        assert failures == 2 and cache.resyncs == before + 1
        assert "lost0" in _names(cache)
    finally:
        cache.close()
