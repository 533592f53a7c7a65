"""Numeric option types every command can use without importing more than click."""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and the infinities: ``nan`` compares false
    with both bounds, so a plain range passed it on (``executor run --follow-heartbeat nan``
    reached nats-py's consumer configuration and the executor's start failed there; ``--interval
    nan`` swept at every turn of the loop: review h110), and a period of ``inf`` seconds is
    none (``--heartbeat inf``: no liveness ever written)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv
