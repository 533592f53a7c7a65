"""Moments given on the command line: ISO 8601 with a time zone, nothing else."""

from __future__ import annotations

import datetime

from .errors import BadTime, NaiveTime


def parse_moment(text: str, what: str = "time") -> datetime.datetime:
    """``2026-05-01T10:00:00+02:00`` or ``...Z`` -> an aware datetime.

    A naive time is refused: the log's times are absolute, and guessing the zone (local? UTC?)
    would silently answer a question about another moment.
    """
    value = text.strip()
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise BadTime(
            f"{what} {text!r} is not an ISO 8601 time (like 2026-05-01T10:00:00+00:00)",
            value=text,
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise NaiveTime(
            f"{what} {text!r} has no time zone: add one (Z, +00:00, +02:00, ...)", value=text
        )
    return moment


def iso(epoch: float | None) -> str | None:
    """An epoch in seconds as ISO 8601 UTC with milliseconds (how audit prints times)."""
    if epoch is None:
        return None
    t = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
