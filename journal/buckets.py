"""Histograms kept by the component that observes them, read when Prometheus scrapes.

A command's time, an append's events, a projector batch's size and time are observed on hot
paths (the command service answers ~1,000 commands a second on one core): a
``prometheus_client.Histogram`` takes a lock and looks its labels up at every observation, and
the service's room may not import the metrics room anyway. A :class:`Buckets` is a bucket list
and a sum that its owner adds to — no lock (one event loop writes it), no allocation — and
``common/metrics.py`` turns it into a histogram family at scrape time (from another thread:
it copies the counts first; an observation landing in between only shows at the next scrape).

Here, in the log's room, because every part that observes one (the appender, the command
service, the projector) may import it; ``common`` reads it by its shape (``bounds``, ``counts``,
``sum``), without importing it.
"""

from __future__ import annotations

from bisect import bisect_left

#: seconds: a command's answer, a projector batch's write
SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: events in one append (one message, or one atomic batch: group commits make it grow)
APPEND_EVENTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
#: messages in one projector transaction
PROJECTOR_MESSAGES = (1, 10, 100, 500, 1000, 2000, 5000)


class Buckets:
    """Observations counted in Prometheus buckets: ``counts[i]`` holds those ``<= bounds[i]``
    (and above the bound before it), ``counts[-1]`` those above every bound (``+Inf``);
    ``sum`` adds them up. Not cumulative: the scrape makes them so."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum: float = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Count ``value`` (``times`` observations of it: a chain's links, one event each)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times

    @property
    def count(self) -> int:
        return sum(self.counts)
