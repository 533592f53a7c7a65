"""Durations on the command line: ``90``, ``90s``, ``15m``, ``2h``, ``1.5d``."""

from __future__ import annotations

import math
import re
from typing import Any

import click

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; raises ValueError for anything else (or a zero duration)."""
    m = _RE.match(text.lower())
    if m is None:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 2h, 1d)")
    return checked(float(m.group(1)) * _UNITS[m.group(2)])


def checked(seconds: float) -> float:
    """``seconds`` if positive and finite, else ValueError: a number from the config file (TOML
    has nan and inf) went through as it was, and 400 digits of text are inf (review h114)."""
    if not math.isfinite(seconds):
        raise ValueError(f"{seconds!r} is not a finite duration")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    return seconds


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return checked(float(value))
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
