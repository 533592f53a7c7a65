"""The service's requests: taken in the read loop, checked against the subject they came on
(admin, project, host subjects and their credentials), parsed, and queued in their lane or
answered (reads, the reclaim sweep). A mixin of
:class:`~netledger.service.service.CommandService`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable
from time import perf_counter
from typing import Any, cast

import msgpack

from netledger.events.commands import (
    MAX_REQUEST_BYTES,
    FixedIpLease,
    Request,
    parse_command,
)
from netledger.events.decide import decide
from netledger.events.errors import (
    Forbidden,
    NetledgerError,
    RequestTooLarge,
    ValidationError,
)
from netledger.events.ids import (
    ADMIN_COMMAND_PREFIX,
    HOST_COMMAND_NAMES,
    parse_command_subject,
)
from netledger.events.reclaim import FixedIpReclaimSweep
from netledger.events.state import State
from netledger.journal.stream import Connection
from netledger.service.answers import reply_error, reply_ok
from netledger.service.reclaim_run import CommandService as Reclaiming
from netledger.service.reclaim_run import sweep
from netledger.service.stats import Stats

log = logging.getLogger("netledger.service")

#: reply subjects the service never answers on: netledger's own (the log's events, commands)
#: and the server's ($JS, $KV, $O, $SYS, ...) — a request's reply subject is the sender's
#: choice, and the service publishes its answer there with its own permissions
_NOT_AN_INBOX = ("netledger.", "$")


def answerable(reply: str) -> bool:
    """Whether a request's reply subject may be answered (empty: no answer wanted)."""
    return not reply.startswith(_NOT_AN_INBOX)


def _internal(exc: BaseException) -> bytes:
    return reply_error(NetledgerError(f"internal error: {exc.__class__.__name__}: {exc}"))


class Requests:
    """What a request goes through before its lane (what :class:`CommandService` sets up)."""

    conn: Connection
    state: State
    stats: Stats
    _tasks: set[asyncio.Task[None]]

    def _submit_nowait(
        self,
        req: Request,
        on_done: Callable[[asyncio.Future[dict[str, Any]]], None] | None = None,
    ) -> asyncio.Future[dict[str, Any]]:
        raise NotImplementedError  # Lanes'

    async def _submit(self, req: Request) -> dict[str, Any]:
        raise NotImplementedError  # Lanes'

    def _on_request(self, subject: bytes, reply: bytes, data: bytes, hdr: bytes | None) -> None:
        """A request, in the read loop (journal/natsclient.py ``subscribe_direct``): checked
        and parsed here; a command for a lane is queued at once and answered when its future
        is (no task of its own); the rest (reads, the reclaim sweep) get a task. Each answer is
        counted with its time since here (``Stats.count``)."""
        t0 = perf_counter()
        subj = subject.decode()
        route = parse_command_subject(subj)
        name = route.name if route is not None else subj
        to = reply.decode()
        if not answerable(to):
            # The service would publish its answer there with its own rights (and nats-server's
            # allow_responses): a client could have it write on the log's subjects, another
            # host's, or the liveness bucket. Nothing is decided, nothing answered (review).
            self.stats.count(name, "reply_subject_refused", perf_counter() - t0)
            log.warning("refused %s: its reply subject %r is not a client's inbox", name, to)
            return
        try:
            if route is None:  # only served subjects arrive; say so rather than guess
                raise Forbidden(f"{subj} is not a command subject")
            req = self._parse(
                name, data, privileged=route.privileged, project=route.project, host=route.host
            )
            if not self._reads(req):
                self._submit_nowait(req, functools.partial(self._answer, name, to, t0))
                return
        except NetledgerError as err:
            self.stats.count(name, err.code, perf_counter() - t0)
            self._respond(name, to, reply_error(err))
            return
        except Exception as exc:  # never leave a client without an answer
            log.exception("command %s failed", name)
            self.stats.count(name, NetledgerError.code, perf_counter() - t0)
            self._respond(name, to, _internal(exc))
            return
        task = asyncio.create_task(self._serve(name, req, to, t0))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _answer(self, name: str, to: str, t0: float, fut: asyncio.Future[dict[str, Any]]) -> None:
        if fut.cancelled():
            return  # shutting down: no answer (the client retries with the same id)
        err = fut.exception()
        if err is None:
            self.stats.count(name, "ok", perf_counter() - t0)
            data = reply_ok(fut.result())
        elif isinstance(err, NetledgerError):
            self.stats.count(name, err.code, perf_counter() - t0)
            data = reply_error(err)
        else:
            log.error("command %s failed", name, exc_info=err)
            self.stats.count(name, NetledgerError.code, perf_counter() - t0)
            data = _internal(err)
        self._respond(name, to, data)

    def _respond(self, name: str, to: str, data: bytes) -> None:
        if to:
            try:
                self.conn.nc.publish_nowait(to, data)
            except Exception:
                log.info("could not reply to %s", name)

    async def _serve(self, name: str, req: Request, to: str, t0: float) -> None:
        try:
            result = await self._run(name, req, t0)
            data = reply_ok(result)
        except NetledgerError as err:
            data = reply_error(err)
        except Exception as exc:  # never leave a client without an answer
            log.exception("command %s failed", name)
            data = _internal(exc)
        self._respond(name, to, data)

    async def handle(
        self,
        name: str,
        raw: bytes,
        *,
        privileged: bool = True,
        project: str | None = None,
        host: str | None = None,
    ) -> dict[str, Any]:
        """Answer one request. ``privileged`` says it came on the admin subject, which NATS
        permissions reserve for admins: only there may a request act with the admin role.
        ``project`` says it came on that project's subject (credentials may be bound to it):
        there it must act as a member of exactly that project. ``host`` says it came on that
        host's subject (its executor's credentials): there only a DHCP lease or release of an
        address whose DHCP that host serves is accepted."""
        t0 = perf_counter()
        try:
            req = self._parse(name, raw, privileged=privileged, project=project, host=host)
        except NetledgerError as err:
            self.stats.count(name, err.code, perf_counter() - t0)
            raise
        return await self._run(name, req, t0)

    def _parse(
        self,
        name: str,
        raw: bytes,
        *,
        privileged: bool,
        project: str | None,
        host: str | None,
    ) -> Request:
        """The request, checked against the subject it came on (see :meth:`handle`)."""
        if len(raw) > MAX_REQUEST_BYTES:
            raise RequestTooLarge(f"request of {len(raw)} bytes exceeds {MAX_REQUEST_BYTES}")
        try:
            payload = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        except Exception:
            raise ValidationError("request is not a msgpack map") from None
        req = parse_command(name, payload)
        if host is not None:
            self._check_host_route(host, name, req)
        elif req.actor.role in ("admin", "system") and not privileged:
            raise Forbidden(
                f"a request acting as {req.actor.role} must be sent on"
                f" {ADMIN_COMMAND_PREFIX}.{name}, which only admins may publish to",
                command=name,
            )
        if project is not None and (req.actor.role != "member" or req.actor.project != project):
            raise Forbidden(
                f"a request on the subject of project {project or '?'} must act as a member"
                f" of that project, not as {req.actor.role}"
                + (f" of project {req.actor.project}" if req.actor.project else ""),
                command=name,
            )
        if not req.command_id:
            req = Request(req.command, uuid.uuid4().hex, req.actor)
        return req

    @staticmethod
    def _reads(req: Request) -> bool:
        """Answered without a lane: reads, and the reclaim sweep (which runs its own)."""
        return bool(req.command.READ_ONLY) or isinstance(req.command, FixedIpReclaimSweep)

    async def _run(self, name: str, req: Request, t0: float) -> dict[str, Any]:
        """Answer a parsed request; counted with its time since ``t0`` (its arrival)."""
        try:
            if req.command.READ_ONLY:
                result = decide(self.state, req).result
            elif isinstance(req.command, FixedIpReclaimSweep):
                decide(self.state, req)  # authorisation (admin only); appends nothing
                result = await sweep(cast(Reclaiming, self), req.command)  # CommandService's
            else:
                result = await self._submit(req)
            self.stats.count(name, "ok", perf_counter() - t0)
            return result
        except NetledgerError as err:
            self.stats.count(name, err.code, perf_counter() - t0)
            raise
        except Exception:
            # Answered "internal error" by the caller: counted and timed as such (it was
            # neither, the metrics short of the very failures worth alerting on).
            self.stats.count(name, NetledgerError.code, perf_counter() - t0)
            raise

    def _check_host_route(self, host: str, name: str, req: Request) -> None:
        if name not in HOST_COMMAND_NAMES or not isinstance(req.command, FixedIpLease):
            raise Forbidden(
                f"a host's subject takes only {' and '.join(HOST_COMMAND_NAMES)}, not {name}",
                command=name,
                host=host,
            )
        if req.actor.role != "system":
            raise Forbidden(
                f"a request on the subject of host {host} acts as the system (the host's DHCP"
                f" lease script), not as {req.actor.role}",
                command=name,
                host=host,
            )
        found = self.state.find_fixed(req.command.address)
        if found is not None and host not in self.state.dhcp_hosts(*found):
            raise Forbidden(
                f"host {host} does not serve DHCP for {req.command.address}",
                command=name,
                host=host,
                address=req.command.address,
            )
