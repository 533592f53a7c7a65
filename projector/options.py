"""The projector's options shared by ``projector run`` and ``serve`` (click only: ``serve``'s
module imports it at every CLI start)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from netledger.common.ranges import FiniteFloatRange

#: :data:`.runner.LINGER` in milliseconds (the CLI shows its help without importing the runner;
#: tests/projector/test_projector_linger.py checks that they agree)
LINGER_MS = 20.0


def linger_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The projector's linger, in milliseconds: ``projector run --linger-ms``, ``serve
    --projector-linger-ms``."""
    return click.option(
        name,
        type=FiniteFloatRange(min=0),
        default=LINGER_MS,
        show_default=True,
        help="How long the projector lets a new event wait for others before it writes them"
        " together: the projection follows the log up to this much later, and a steady trickle"
        " of events costs one commit per interval instead of one per event (0: each at once).",
    )


#: :data:`.liveness.DEFAULT_PERIOD_S` and :data:`.liveness.DEAD_AFTER_PERIODS` (the CLI shows
#: its help without importing the stamp's module; tests/ops/test_serve_live_period.py checks
#: that they agree)
LIVE_PERIOD_S = 10.0
DEAD_AFTER_PERIODS = 3


def live_period_option(
    name: str, more: str = ""
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """How often the following projector stamps its file (projector/liveness.py): ``projector
    run --live-period``, ``serve --projector-live-period`` (handed to its child). ``more``: the
    command's own last words in the help."""
    return click.option(
        name,
        type=FiniteFloatRange(min=0.1, max=3600),
        default=LIVE_PERIOD_S,
        show_default=True,
        metavar="SECONDS",
        help="How often the running projector confirms in the database that it has all the stream"
        " holds (one small UPDATE, nothing in the log): `netledger status` calls it not live after"
        f" {DEAD_AFTER_PERIODS} periods without one, even at lag 0." + more,
    )
