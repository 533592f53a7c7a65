"""The projector's options shared by ``projector run`` and ``serve`` (click only: ``serve``'s
module imports it at every CLI start)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

#: :data:`.runner.LINGER` in milliseconds (the CLI shows its help without importing the runner;
#: tests/projector/test_projector_linger.py checks that they agree)
LINGER_MS = 20.0


def linger_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The projector's linger, in milliseconds: ``projector run --linger-ms``, ``serve
    --projector-linger-ms``."""
    return click.option(
        name,
        type=click.FloatRange(min=0),
        default=LINGER_MS,
        show_default=True,
        help="How long the projector lets a new event wait for others before it writes them"
        " together: the projection follows the log up to this much later, and a steady trickle"
        " of events costs one commit per interval instead of one per event (0: each at once).",
    )
