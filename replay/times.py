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


def moment_end(text: str, moment: datetime.datetime) -> datetime.datetime:
    """The last microsecond of the unit ``text`` names ``moment`` to (``10:00:00Z``: its
    whole second; ``10:00:00.074Z``: its whole millisecond), for an upper bound: a time
    audit printed (cut to the millisecond, :func:`iso`), given back as ``--until`` or
    ``--at``, then covers the event it was printed for (found by review: it left it out).
    Given to the microsecond or finer, the moment itself."""
    clock = text.strip().partition("T")[2] or text.strip().partition(" ")[2]
    hms = clock.rstrip("Zz").split("+")[0].split("-")[0]
    if hms.count(":") < 2 and "." not in hms and "," not in hms:  # 10:00Z: the whole minute
        return moment + datetime.timedelta(minutes=1, microseconds=-1)
    digits = 0
    if "." in hms or "," in hms:
        frac = hms.replace(",", ".").partition(".")[2]
        while digits < len(frac) and frac[digits].isdigit():
            digits += 1
    if digits >= 6:
        return moment
    return moment + datetime.timedelta(microseconds=10 ** (6 - digits) - 1)


def iso(epoch: float | None) -> str | None:
    """An epoch in seconds as ISO 8601 UTC with milliseconds (how audit prints times)."""
    if epoch is None:
        return None
    t = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_us(moment: datetime.datetime) -> str:
    """An aware moment as ISO 8601 UTC with microseconds (a bound ``--at`` / ``--until`` covers,
    which :func:`iso`'s milliseconds would round away)."""
    t = moment.astimezone(datetime.UTC)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")
