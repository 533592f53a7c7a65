"""``serve``'s storage watcher: keep the log's store from filling, and heal a store that did.

Every ``interval`` seconds (and at once when a writer reports trouble) it samples

* the free space of the embedded server's store folder (``os.statvfs``) against the reserve
  (``--storage-reserve``: bytes or a percentage of the filesystem);
* JetStream's usage against its limit (account info; the account's ``max_storage`` when set);
* for the embedded server, its log: ``Critical write error`` means the filestore latched a
  write error (nats-server then stores nothing on that stream until it is restarted).

and keeps the shared :class:`~netledger.journal.loghealth.LogHealth` current: the command
service refuses writes at once with ``log_storage_full`` while the store is below its reserve
(reads, audit and replay keep working), and accepts them again when space is back. A stream
latched in a write error is healed by restarting the embedded nats-server once space is back
(bounded, with backoff), then checking the stream before writes are accepted. A server serve
does not own (``--nats``) is never restarted: its trouble is reported and writers keep trying.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from netledger.common.natsserver import EmbeddedNats
from netledger.common.output import plural
from netledger.events.errors import LogStorageFull, LogUnavailable
from netledger.journal.loghealth import (
    GAVE_UP,
    LATCHED,
    OK,
    RESTARTING,
    STORAGE_LOW,
    LogHealth,
)
from netledger.journal.stream import Connection
from netledger.ops.config import Reserve, parse_reserve

log = logging.getLogger("netledger.storage")

DEFAULT_RESERVE = "5%"
__all__ = ["Reserve", "StorageWatcher", "below_reserve", "parse_reserve"]
DEFAULT_INTERVAL = 1.0
DEFAULT_RESTARTS = 5
#: after a restart, an append without answer within this many seconds counts as the stream
#: still latched (another restart, towards the bound)
PROBATION_S = 60.0
#: what nats-server logs when a filestore latches a write error (or fails one store)
_LATCH = re.compile(r"critical write error|failed to store a msg", re.IGNORECASE)


def below_reserve(sample: dict[str, Any]) -> str | None:
    """Why the store is too full to take writes (None: it is not). Pure."""
    free, reserve = sample.get("free_bytes"), sample.get("reserve_bytes")
    if free is not None and reserve and free < reserve:
        return f"{_mib(free)} free in {sample.get('store')}, below the reserve of {_mib(reserve)}"
    used, limit = sample.get("js_used_bytes"), sample.get("js_limit_bytes")
    js_reserve = sample.get("js_reserve_bytes") or 0
    if used is not None and limit and limit > 0 and used >= limit - js_reserve:
        return f"JetStream uses {_mib(used)} of its limit of {_mib(limit)}"
    return None


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


class StorageWatcher:
    """Keeps ``health`` current for one ``serve`` (see the module's docstring)."""

    def __init__(
        self,
        health: LogHealth,
        conn: Connection,
        *,
        reserve: Reserve,
        server: EmbeddedNats | None = None,
        store_dir: Path | None = None,
        interval: float = DEFAULT_INTERVAL,
        max_restarts: int = DEFAULT_RESTARTS,
        seen_seq: Callable[[], int] | None = None,
    ) -> None:
        self.health = health
        self.conn = conn
        self.reserve = reserve
        self.server = server
        self.store_dir = store_dir or (server.store_dir if server is not None else None)
        self.interval = interval
        self.max_restarts = max_restarts
        #: the highest stream sequence the service has seen: a restarted stream must have it
        self.seen_seq = seen_seq
        #: the embedded server latched a write error (or exited): writes wait for a restart
        self.latched = False
        #: why the restart is needed, for what the restarts say ("space is back" only when
        #: it was the store)
        self._restart_because = "a store write error"
        self._low_episode = False  # the store was below its reserve since the last good append
        self._probation_until = 0.0
        #: the attempt that healed the last episode and the backoff it reached: trouble again
        #: within PROBATION_S goes on from there (towards the bound), not from attempt 1
        self._attempt = 0
        self._delay = 1.0
        self._log_offset = self._log_size()
        self._task: asyncio.Task[None] | None = None
        health.diagnose = self.diagnose

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="netledger-storage-watch")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.health.diagnose = None

    async def _run(self) -> None:
        while True:
            await self.health.wait_suspect(self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # the watcher must outlive whatever one look ran into
                log.exception("storage watcher: one check failed")

    # --- looking -----------------------------------------------------------------------------

    def _statvfs(self) -> dict[str, Any]:
        if self.store_dir is None:
            return {}
        path = self.store_dir if self.store_dir.exists() else self.store_dir.parent
        try:
            st = os.statvfs(path)
        except OSError as exc:
            return {"store": str(self.store_dir), "statvfs_error": str(exc)}
        total = st.f_blocks * st.f_frsize
        return {
            "store": str(self.store_dir),
            "free_bytes": st.f_bavail * st.f_frsize,
            "total_bytes": total,
            "reserve_bytes": self.reserve.of(total),
            "reserve": str(self.reserve),
        }

    async def sample(self) -> dict[str, Any]:
        """Free space (embedded store) and JetStream's usage vs its limit, now."""
        out: dict[str, Any] = {"embedded": self.server is not None, **self._statvfs()}
        try:
            info = await asyncio.wait_for(self.conn.js.account_info(), 2.0)
        except Exception as exc:
            out["js_error"] = f"{exc.__class__.__name__}: {exc}".strip(": ")
        else:
            out["js_used_bytes"] = int(info.storage or 0)
            limit = info.limits.max_storage if info.limits is not None else None
            if (limit is None or limit < 0) and self.server is not None:
                limit = self.server.max_file_store()
            if limit is not None and limit > 0:
                out["js_limit_bytes"] = int(limit)
                js_reserve = self.reserve.of(limit)
                if self.reserve.percent is None:  # bytes: never more than a tenth of the limit
                    js_reserve = min(js_reserve, limit // 10)
                out["js_reserve_bytes"] = js_reserve
        out["sampled_at"] = time.time()
        return out

    def _log_size(self) -> int:
        try:
            return self.server.log_path.stat().st_size if self.server is not None else 0
        except OSError:
            return 0

    def _scan_log(self) -> str | None:
        """A write-error line nats-server logged since the last look (None: none)."""
        if self.server is None:
            return None
        try:
            with self.server.log_path.open("rb") as f:
                f.seek(self._log_offset)
                data = f.read(4 << 20)
        except OSError:
            return None
        self._log_offset += len(data)
        found = None
        for line in data.decode(errors="replace").splitlines():
            if _LATCH.search(line):
                found = line.split("] ", 2)[-1].strip()
        return found

    async def diagnose(self) -> LogUnavailable | None:
        """Why an append got no answer, from what can be seen locally (no round trip)."""
        s = self._statvfs()
        why = below_reserve(s)
        if why is not None:
            return self._full(why, s)
        line = self._scan_log()
        if line is not None:
            self._latch(line)
            return self._latched_error(line, s)
        return None

    # --- deciding ----------------------------------------------------------------------------

    def _full(self, why: str, s: dict[str, Any]) -> LogStorageFull:
        return LogStorageFull(
            f"the log's storage is full: {why}; new commands are refused until space is freed"
            " (reads, audit and replay keep working)",
            reason=why,
            free_bytes=s.get("free_bytes"),
            reserve_bytes=s.get("reserve_bytes"),
            store=s.get("store"),
            outcome="not_applied",
        )

    def _latched_error(self, line: str, s: dict[str, Any]) -> LogUnavailable:
        fix = (
            "serve restarts its nats-server once space is back"
            if self.server is not None
            else "restart the NATS server once space is back"
        )
        if "no space" in line.lower() or below_reserve(s) is not None:
            return LogStorageFull(
                f"the log's store hit a write error and stores nothing more ({line}); {fix}",
                reason=line,
                free_bytes=s.get("free_bytes"),
                reserve_bytes=s.get("reserve_bytes"),
                store=s.get("store"),
                outcome="not_applied",
            )
        return LogUnavailable(
            f"the log's store hit a write error and stores nothing more ({line}); {fix}",
            reason=line,
            outcome="not_applied",
        )

    def _latch(self, line: str, exited: bool = False) -> None:
        if not self.latched:
            self.latched = True
            self._restart_because = "it exited" if exited else "a store write error"
            self.health.note(
                line if exited else f"nats-server reports a store write error: {line}",
                logging.ERROR,
            )

    async def tick(self) -> None:
        """One look, and what follows from it."""
        s = await self.sample()
        self.health.store = s
        h = self.health
        if self.server is not None:
            line = self._scan_log()
            if line is not None:
                self._latch(line)
            failing = h.failing
            if (
                not self.latched
                and failing is not None
                and failing.details.get("outcome") == "unknown"
                and (
                    self._low_episode
                    or below_reserve(s) is not None
                    or time.monotonic() < self._probation_until
                )
            ):
                # Appends unanswered while (or since) the store was full: the filestore has
                # latched its write error even where its log line could not be written.
                self._latch(f"appends unanswered since the store ran low ({failing.message})")
            if not self.server.running and h.state != RESTARTING:
                self._latch(f"the embedded nats-server exited ({self._exit()})", exited=True)
        why = below_reserve(s)
        if why is not None:
            self._low_episode = True
            state = LATCHED if self.latched else STORAGE_LOW
            h.refuse(state, self._full(why, s), f"refusing writes: {why}")
            return
        if self.latched and self.server is not None:
            if h.state != GAVE_UP:
                await self._recover()
            return
        if h.failing is None:
            self._low_episode = False
        if h.refusing is not None and h.state in (STORAGE_LOW, LATCHED):
            h.accept(f"free space back above the reserve ({_mib(s.get('free_bytes') or 0)} free)")

    def _exit(self) -> str:
        """How the embedded nats-server ended: killed by a signal, or its exit status."""
        assert self.server is not None
        rc = self.server.proc.returncode if self.server.proc is not None else None
        if rc is None:
            return "never started"
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exit status {rc}"

    async def _recover(self) -> None:
        """Restart the embedded nats-server until its stream is verified (bounded, backoff)."""
        assert self.server is not None
        h = self.health
        t0 = time.monotonic()
        # Dead (or latched) again soon after the restart that healed it: the same trouble, so
        # the bound and the backoff go on from where that episode left them — a server that
        # dies right after every restart is not restarted forever, once a second (review).
        again = t0 < self._probation_until
        first = self._attempt + 1 if again else 1
        delay = self._delay if again else 1.0
        for attempt in range(first, self.max_restarts + 1):
            h.refuse(
                RESTARTING,
                LogUnavailable(
                    f"the log's nats-server is being restarted after {self._restart_because};"
                    " retry in a few seconds",
                    reason="restarting nats-server",
                    outcome="not_applied",
                    # (it comes back by itself: a client asks again within its deadline)
                    retry=True,
                ),
                (
                    "space is back: restarting nats-server"
                    if self._restart_because == "a store write error"
                    else f"restarting nats-server: {self._restart_because}"
                )
                + f" (attempt {attempt} of {self.max_restarts})",
            )
            if again and attempt == first:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            try:
                await asyncio.to_thread(self.server.restart)
                h.restarts += 1
                h.last_restart_at = time.time()
                self._log_offset = self._log_size()
                h.note(f"nats-server restarted; checking the stream {self.conn.stream}")
                seq = await self._verify()
            except Exception as exc:
                h.note(f"restart {attempt} did not bring the stream back: {exc}", logging.ERROR)
                if attempt < self.max_restarts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                continue
            self.latched = False
            self._low_episode = False
            self._attempt, self._delay = attempt, delay
            self._probation_until = time.monotonic() + PROBATION_S
            h.failing = h.failing_since = None
            h.last_recovery_s = round(time.monotonic() - t0, 3)
            h.accept(
                f"stream {self.conn.stream} verified at seq {seq} after restarting nats-server"
                f" ({h.last_recovery_s:.1f}s): writes accepted"
            )
            return
        h.refuse(
            GAVE_UP,
            LogUnavailable(
                f"the log's nats-server was restarted {plural(self.max_restarts, 'time')} and its stream"
                " still fails: see DATA/nats-server.log, then restart serve",
                reason="restarts exhausted",
                outcome="not_applied",
            ),
        )

    async def _verify(self, timeout: float = 30.0) -> int:
        """The stream answers again, is what it was (not shorter), and the store takes a
        write (the latched error is gone from the server's log)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while True:
            try:
                info = await asyncio.wait_for(self.conn.js.stream_info(self.conn.stream), 2.0)
                break
            except Exception as exc:
                if loop.time() > end:
                    raise RuntimeError(
                        f"the stream did not answer within {timeout:.0f}s: {exc}"
                    ) from None
                await asyncio.sleep(0.2)
        seq = int(info.state.last_seq)
        seen = self.seen_seq() if self.seen_seq is not None else 0
        if seq < seen:
            raise RuntimeError(f"the stream ends at {seq}, before {seen} already seen")
        line = self._scan_log()
        if line is not None:
            raise RuntimeError(f"nats-server still reports a write error: {line}")
        return seq


def storage_state(health: LogHealth) -> dict[str, Any]:
    """The log's health as ``status`` and the metrics show it."""
    d = health.as_dict()
    d["ok"] = d["state"] == OK
    return d
