"""Whether the log takes writes now, and if not, why: shared by the command service's lanes
(which refuse at once, or report an append that failed) and the storage watcher of ``serve``
(free space, JetStream's usage, the embedded server's health, its restarts). ``status`` and the
metrics read it. No I/O here: the watcher does it (ops/storage.py).

Two kinds of trouble:

* a **refusal**, set by the watcher from what it measured (free space below the reserve, a
  stream latched in a write error, nats-server restarting): every write is answered at once
  with that error, nothing is tried;
* a **failing** log, seen by the writers themselves (an append refused by the server, or not
  acknowledged in time): each command still tries, within its answer budget, and the first
  append that succeeds clears it. This is all there is with a server serve does not own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.js.errors import APIError

from netledger.events.errors import LogStorageFull, LogUnavailable

log = logging.getLogger("netledger.storage")

#: OCC conflict and duplicate batch: not the log's trouble (journal/append.py: the lane decides again)
ERR_WRONG_LAST_SEQ = 10071
ERR_BATCH_DUPLICATE = 10201

#: JetStream error codes meaning "no room to store it": insufficient resources (10023, the
#: server's own limit), insufficient storage / memory resources available (10047 / 10028)
STORAGE_FULL_CODES = frozenset({10023, 10047, 10028})
#: words of a server's refusal that also mean it (10077 "stream store failed" carries the
#: store's own error: "maximum bytes exceeded", "no space left on device")
_FULL_WORDS = ("no space", "insufficient", "resources", "maximum bytes", "disk full")

#: failures after which nothing came back from the stream (the append may have landed)
NO_ANSWER = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
)
#: failures where no stream took the message at all (nothing was stored)
NO_STREAM = (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError)


def log_error(exc: BaseException, waited: float | None = None) -> LogUnavailable | None:
    """What an append's failure tells about the log, as the error a command answers with:
    :class:`LogStorageFull` when the server says it has no room, :class:`LogUnavailable` with
    the server's own words otherwise; None for what is not the log's trouble (an OCC conflict,
    a duplicate batch: the caller decides again). Pure: no I/O."""
    if isinstance(exc, APIError):
        if exc.err_code in (ERR_WRONG_LAST_SEQ, ERR_BATCH_DUPLICATE):
            return None
        desc = (exc.description or "").strip() or exc.__class__.__name__
        details: dict[str, Any] = {
            "reason": desc,
            "err_code": exc.err_code,
            "status": exc.code,
            "outcome": "not_applied",
        }
        if exc.err_code in STORAGE_FULL_CODES or any(w in desc.lower() for w in _FULL_WORDS):
            return LogStorageFull(
                f"the log's storage is full: JetStream refused the append ({desc})", **details
            )
        return LogUnavailable(f"JetStream refused the append: {desc}", **details)
    if isinstance(exc, NO_STREAM):
        why = "no stream answered: JetStream disabled, the stream missing or without a leader"
        return LogUnavailable(
            f"the log cannot take appends now ({why})",
            reason=why,
            outcome="not_applied",
        )
    if isinstance(exc, NO_ANSWER):
        after = f" within {waited:.1f}s" if waited is not None else ""
        why = f"no acknowledgement from JetStream{after} ({exc.__class__.__name__})"
        return LogUnavailable(
            f"the log did not acknowledge the append: {why}; the stream may be unable to"
            " store (see `netledger status`)",
            reason=why,
            outcome="unknown",
        )
    return None


#: states (``state``): the log takes writes, or why it does not
OK = "ok"
STORAGE_LOW = "storage_low"  # below the free-space reserve (or JetStream's limit): refusing
LATCHED = "latched"  # the server reports a stream write error: refusing until a restart
RESTARTING = "restarting"  # the embedded nats-server is being restarted and checked
GAVE_UP = "gave_up"  # restarts did not help: refusing until serve is restarted by hand
FAILING = "failing"  # appends fail (no watcher verdict): each command still tries

RECENT_STEPS = 20


@dataclass
class LogHealth:
    state: str = OK
    #: the error every write gets at once (None: writes are tried)
    refusing: LogUnavailable | None = None
    since: float | None = None
    #: the last append that failed, until one succeeds
    failing: LogUnavailable | None = None
    failing_since: float | None = None
    failed_appends: int = 0
    #: commands answered with ``refusing`` without trying
    refused: int = 0
    #: the watcher's last sample of the store (free space, reserve, JetStream usage and limit)
    store: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    last_restart_at: float | None = None
    #: seconds from "space is back" to "stream verified, writes accepted" (last recovery)
    last_recovery_s: float | None = None
    #: what the watcher did, newest last (also logged)
    steps: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT_STEPS))
    #: the watcher's quick check, used to name the cause of an append that got no answer
    diagnose: Callable[[], Awaitable[LogUnavailable | None]] | None = None
    _wake: asyncio.Event | None = field(default=None, repr=False)

    # --- the watcher's side ---------------------------------------------------------------

    def note(self, message: str, level: int = logging.WARNING) -> None:
        """One step of the watcher, in the log and in ``status`` (recent steps)."""
        log.log(level, "%s", message)
        self.steps.append({"at": time.time(), "state": self.state, "message": message})

    def refuse(self, state: str, err: LogUnavailable, message: str | None = None) -> None:
        """Refuse every write with ``err`` from now on (a change of state is noted once)."""
        changed = state != self.state or self.refusing is None
        self.refusing = err
        if changed:
            self.state = state
            self.since = time.time()
            self.note(message or err.message)

    def accept(self, message: str) -> None:
        """Writes are tried again."""
        if self.refusing is None and self.state == OK:
            return
        self.refusing = None
        self.state = FAILING if self.failing is not None else OK
        self.since = time.time() if self.state != OK else None
        self.note(message, logging.INFO)

    async def wait_suspect(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for a writer to report trouble; True when one did."""
        ev = self._event()
        try:
            await asyncio.wait_for(ev.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            ev.clear()
        return True

    def _event(self) -> asyncio.Event:
        if self._wake is None:
            self._wake = asyncio.Event()
        return self._wake

    # --- the writers' side ----------------------------------------------------------------

    def refusal(self) -> LogUnavailable | None:
        return self.refusing

    def check(self) -> None:
        """Raise the refusal (a fresh copy: many commands answer with it at once), if any.
        An attribute read on the hot path: the watcher keeps the verdict current."""
        err = self.refusing
        if err is not None:
            self.refused += 1
            raise type(err)(err.message, **err.details)

    @property
    def troubled(self) -> bool:
        return self.refusing is not None or self.failing is not None

    def append_failed(self, err: LogUnavailable) -> None:
        if self.failing is None:
            self.failing_since = time.time()
            log.warning("appending to the log failed: %s [%s]", err.message, err.code)
            if self.state == OK:
                self.state, self.since = FAILING, self.failing_since
        self.failing = err
        self.failed_appends += 1
        self.suspect()

    def append_ok(self) -> None:
        if self.failing is None:
            return
        down = time.time() - (self.failing_since or time.time())
        self.failing = self.failing_since = None
        if self.state == FAILING:
            self.state, self.since = OK, None
        log.info("appending to the log works again (after %.1fs)", down)

    def suspect(self) -> None:
        """Ask the watcher to look now (a writer saw something wrong)."""
        if self._wake is not None:
            self._wake.set()

    # --- status -----------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        err = self.refusing or self.failing
        return {
            "state": self.state,
            "writable": self.refusing is None,
            "code": err.code if err is not None else None,
            "reason": err.message if err is not None else None,
            "since": self.since,
            "failed_appends": self.failed_appends,
            "refused": self.refused,
            "store": dict(self.store),
            "restarts": self.restarts,
            "last_restart_at": self.last_restart_at,
            "last_recovery_s": self.last_recovery_s,
            "recent": list(self.steps),
        }
