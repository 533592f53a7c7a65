"""``serve``'s projector as a process of its own: ``netledger projector run``, supervised.

In ``serve``'s process its reader shared the command service's event loop: while it caught up
(a new projection file, a rebuild after an upgrade — tens of seconds on a long log) commands
waited behind the log's messages. Measured on a 300,000-event log, 300 allocations a second
arriving steadily: p50 0.8-1.6 s and p99 2-4 s while it caught up (an append's acknowledgement
even timed out: ``log_unavailable``), against 2.8 ms and 32 ms once caught up. In its own process
it reads beside the service on the other core.

The child connects with serve's NATS settings (in its environment, not its command line: a
password is not for ``ps``), says on its first line of output that the projection is open, and
dies with serve (``PR_SET_PDEATHSIG``). A child that stops on its own (a log regression, a
broken database) stops serve too, with the child's error — as the projector in serve's process
did: a daemon that answers with a frozen projection is worse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

from netledger.common.natsserver import die_with_parent
from netledger.events.errors import NetledgerError, error_from_wire

from .errors import ProjectorError

log = logging.getLogger("netledger.projector")

#: How long the child may take to open (and migrate) the projection and say so.
START_TIMEOUT = 120.0
#: How long a stop may take: the batch being written commits first.
STOP_TIMEOUT = 60.0
#: The child's niceness (and its writers'): on a busy host the command service's answers come
#: before the projection's catch-up. Measured on 2 cores (300,000-event log, 300 allocations a
#: second arriving while a new projection catches up): p50 31-35 ms, p99 350-615 ms without;
#: p50 3-22 ms, p99 65-590 ms with (2.4-2.9 ms and 6-37 ms once caught up) — noisy, never worse.
NICE = 10


def _child_setup() -> None:  # pragma: no cover - runs in the child
    die_with_parent()
    os.nice(NICE)


#: The settings the child takes from its environment (netledger/cli.py's envvars).
_ENV = {"creds": "NETLEDGER_CREDS", "user": "NETLEDGER_USER", "password": "NETLEDGER_PASSWORD"}
_ENV_INBOX = "NETLEDGER_INBOX"


class ProjectorProcess:
    """``netledger projector run --db DB`` as serve's child: :meth:`start` waits until the
    projection is open, :meth:`wait_failed` returns the error it stopped with, :meth:`close`
    stops it (the batch being written commits)."""

    def __init__(
        self,
        nats_url: str,
        db_path: Path,
        *,
        linger: float | None = None,
        connect_kwargs: dict[str, Any] | None = None,
        metrics_port: int | None = None,
        live_period: float | None = None,
    ) -> None:
        self.nats_url = nats_url
        self.metrics_port = metrics_port
        #: its liveness stamp's period (``projector run --live-period``; None: its default)
        self.live_period = live_period
        self.db_path = db_path
        self.linger = linger
        self.connect_kwargs = connect_kwargs or {}
        self.proc: asyncio.subprocess.Process | None = None
        self.last_seq = 0
        self._said: list[str] = []
        self._closing = False
        self._ended: asyncio.Future[NetledgerError] | None = None
        self._reader: asyncio.Task[None] | None = None

    def argv(self) -> list[str]:
        argv = [sys.executable, "-c", "from netledger.cli import main; main()", "--json"]
        argv += ["projector", "run", "--db", str(self.db_path), "--notify-ready"]
        if self.linger is not None:
            argv += ["--linger-ms", f"{self.linger * 1000:g}"]
        if self.metrics_port is not None:
            argv += ["--metrics-port", str(self.metrics_port)]
        if self.live_period is not None:
            argv += ["--live-period", f"{self.live_period:g}"]
        return argv

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NATS_URL"] = self.nats_url
        for key, name in _ENV.items():
            value = self.connect_kwargs.get(key)
            if value:
                env[name] = str(value)
            else:
                env.pop(name, None)
        inbox = self.connect_kwargs.get("inbox_prefix")
        if inbox:
            env[_ENV_INBOX] = str(inbox)
        return env

    async def start(self) -> None:
        """Start the child and wait until it has opened the projection (raises what it
        failed with: a database from another stream, a broken file, …)."""
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,  # its log lines go where serve's go
            env=self.env(),
            preexec_fn=_child_setup,
        )
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        ready = loop.create_future()
        self._reader = asyncio.create_task(self._read(ready), name="netledger-projector-child")
        try:
            await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT)
        except BaseException:
            await self.close()
            raise
        if ready.result() is not None:
            await self.close()
            raise ready.result()

    async def _read(self, ready: asyncio.Future[NetledgerError | None]) -> None:
        """Read what the child says until it exits; settle ``ready`` and then ``_ended``."""
        proc = self.proc
        assert proc is not None and proc.stdout is not None and self._ended is not None
        async for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            self._said = [*self._said[-9:], line]
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("ready") and not ready.done():
                self.last_seq = int(msg.get("last_seq") or 0)
                ready.set_result(None)
        status = await proc.wait()
        err = self._error(status)
        if not ready.done():
            ready.set_result(err)
        if not self._ended.done():
            self._ended.set_result(err)

    def _error(self, status: int) -> NetledgerError:
        """What the child stopped with: its error line (``--json``), or its exit status."""
        for line in reversed(self._said):
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and isinstance(msg.get("error"), dict):
                    return error_from_wire(msg["error"])
        how = f"signal {-status}" if status < 0 else f"status {status}"
        return ProjectorError(
            f"the projector process ({self.db_path}) exited with {how}", db=str(self.db_path)
        )

    async def wait_failed(self) -> NetledgerError:
        """The error the child stopped with, once it stops without being asked to."""
        assert self._ended is not None, "start() first"
        err = await asyncio.shield(self._ended)
        if self._closing:
            await asyncio.Event().wait()  # asked to stop: not a failure
        return err

    async def close(self) -> None:
        """Stop the child (SIGTERM: the batch being written commits), waited for."""
        self._closing = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("the projector process did not stop in %s s: killed", STOP_TIMEOUT)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)
