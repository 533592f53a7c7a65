"""The async Python client of the command service.

    async with await Client.connect("nats://127.0.0.1:4222") as c:
        ip = await c.allocate_fixed_ip(instance="i-42", project="p1", host="compute1")

Every call carries a command id (generated unless given); when the service does not answer in
time the call is retried with the same id, so a retry is never applied twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import msgpack
import nats

from netledger.events.codec import Actor
from netledger.events.errors import (
    Forbidden,
    LogStorageFull,
    LogUnavailable,
    NetledgerError,
    Unavailable,
    ValidationError,
    error_from_wire,
)
from netledger.events.ids import command_subject
from netledger.journal.stream import Connection, connect

#: Seconds without an answer after which a client's ``on_waiting`` hears that it goes on trying.
WAITING_HINT_S = 2.0
#: How long a command keeps asking while it is refused for a moment (serve restarting its
#: nats-server: ``retry``), from the first such refusal, before it tells that refusal: the log's
#: trouble is answered within a few seconds, never at the client's deadline (the storage
#: issue's bound, tests/ops/test_storage_serve.py) — a restart that takes longer is told.
REFUSED_RETRY_S = 3.0


def new_command_id() -> str:
    """A UUIDv7 (RFC 9562) as 32 hex digits: as unique as a uuid4 (74 random bits within the
    millisecond) and carrying the millisecond it was made, so that ``netledger revert`` reads
    the log from about then instead of from its start (events/ids.py ``command_time``)."""
    ms = time.time_ns() // 1_000_000 & (1 << 48) - 1
    rand = int.from_bytes(os.urandom(10), "big")
    n = ms << 80 | 7 << 76 | (rand >> 62 & 0xFFF) << 64 | 0b10 << 62 | rand & (1 << 62) - 1
    return uuid.UUID(int=n).hex


def _passing(msg: bytes) -> NetledgerError | None:
    """The refusal a reply is when it refuses a command for a moment only (else None): an
    error whose details say ``retry`` (the service's log is being brought back: ops/storage.py
    RESTARTING), nothing applied. The client asks again within its deadline, as it does while
    nobody answers."""
    if b"retry" not in msg:  # (the cheap test first: an answer is read once, below)
        return None
    try:
        reply = msgpack.unpackb(msg, raw=False)
    except Exception:
        return None
    err = reply.get("error") if isinstance(reply, dict) and not reply.get("ok") else None
    details = err.get("details") if isinstance(err, dict) else None
    if (
        isinstance(err, dict)
        and isinstance(details, dict)
        and details.get("retry") is True
        and details.get("outcome") == "not_applied"
    ):
        return error_from_wire(err)
    return None


class Client:
    def __init__(
        self,
        conn: Connection,
        actor: Actor | None = None,
        *,
        timeout: float = 10.0,
        deadline: float = 60.0,
        host: str | None = None,
    ) -> None:
        self.conn = conn
        self.actor = actor or Actor(role="admin")
        #: send on this host's subject (a DHCP lease script with its executor's credentials)
        self.host = host
        self.timeout = timeout
        self.deadline = deadline
        #: on_waiting(command, subject, why, seconds left): called once a command when no
        #: answer came for WAITING_HINT_S (no service listening, or none answering in time; or
        #: only refusals for a moment, ``why`` the refusal) and the client goes on trying until
        #: its deadline (the CLI tells a person watching)
        self.on_waiting: Callable[[str, str, Exception, float], None] | None = None

    @classmethod
    async def connect(cls, url: str, actor: Actor | None = None, **kwargs: Any) -> Client:
        conn = await connect(url, name="netledger-client", **kwargs)
        return cls(conn, actor)

    async def close(self) -> None:
        await self.conn.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ask(self, subject: str, data: bytes, who: Actor, timeout: float) -> bytes:
        """One request (its reply's data); ``forbidden`` at once when the server refuses these credentials the
        subject (it drops the message and says so on the connection: no reply would come).

        The refusal cancels this task (connect()'s error callback); the cancellation is taken
        back here, so nothing outside sees it. Cheaper than racing a second future."""
        conn = self.conn
        key = subject.lower()
        if key in conn.refused:
            raise self._refused(subject, who, self.host)
        task = asyncio.current_task()
        assert task is not None
        waiting = conn.waiting.setdefault(key, set())
        waiting.add(task)
        try:
            reply, _ = await conn.nc.request_raw(subject, data, timeout)
            return reply
        except asyncio.CancelledError:
            if key in conn.refused and task.uncancel() == 0:
                raise self._refused(subject, who, self.host) from None
            raise
        finally:
            waiting.discard(task)

    @staticmethod
    def _refused(subject: str, who: Actor, host: str | None) -> Forbidden:
        if host is not None:  # "acting as system" did not say which host's credentials it needs
            acting = f"host {host}'s DHCP lease script"
        elif who.role == "member":
            acting = f"member of project {who.project}"
        else:
            acting = who.role
        return Forbidden(
            f"the NATS server refused these credentials the subject {subject}: they may not"
            f" send commands acting as {acting} (credentials of another project or role?)",
            subject=subject,
        )

    async def request(
        self,
        name: str,
        args: dict[str, Any],
        *,
        command_id: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Send one command; return its result or raise the error the service named."""
        payload = {
            "command_id": command_id or new_command_id(),
            "actor": (actor or self.actor).to_wire(),
            "args": {k: v for k, v in args.items() if v is not None},
        }
        data = msgpack.packb(payload, use_bin_type=True)
        who = actor or self.actor
        if self.host is not None:
            subject = command_subject(name, host=self.host)
        else:
            admin = who.role in ("admin", "system")
            project = who.project if who.role == "member" and who.project else None
            subject = command_subject(name, admin=admin, project=project)
        loop = asyncio.get_running_loop()
        started = loop.time()
        end = started + self.deadline
        delay = 0.1
        last: Exception | None = None
        attempts = 0
        #: an attempt that may have reached a service (anything but "no responders"): the
        #: command's outcome is unknown if none answers
        reached = False
        #: an attempt that may have reached a service and got no answer (not one refused for a
        #: moment): what a later refusal says was not applied speaks for its own attempt only
        unanswered = False
        hinted = False
        #: the last attempt's answer when it was a refusal for a moment: told if the deadline
        #: comes while waiting to ask again (not "did not answer": it did)
        refused_now: bytes | None = None
        #: when the first refusal for a moment came (asked again for REFUSED_RETRY_S from it)
        refused_since: float | None = None
        #: the answer (None: none yet, or the attempt after it failed — a connection closed
        #: under the first attempt ends the loop with none: it met an unbound name, review h120)
        msg: bytes | None = None
        while loop.time() < end:
            attempts += 1
            try:
                # never past the deadline: the last attempt gets what is left of it (an attempt
                # started just before it waited a whole timeout more; review hrev21)
                msg = await self._ask(subject, data, who, min(self.timeout, end - loop.time()))
                passing = _passing(msg)
                if passing is not None:
                    if refused_since is None:
                        refused_since = loop.time()
                    if loop.time() + delay < min(end, refused_since + REFUSED_RETRY_S):
                        # The service refused it for a moment (its log's nats-server
                        # restarting): nothing was applied; asked again with the same id, as
                        # if unanswered — and a person watching is told why nothing happens
                        # yet, as then.
                        reached, refused_now = True, msg
                        hinted = self._hint(hinted, started, end, name, subject, passing)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
                break
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.ConnectionClosedError,
            ) as exc:
                last, refused_now, msg = exc, None, None
                reached = reached or not isinstance(exc, nats.errors.NoRespondersError)
                unanswered = unanswered or not isinstance(exc, nats.errors.NoRespondersError)
                if isinstance(exc, nats.errors.ConnectionClosedError):
                    break
                hinted = self._hint(hinted, started, end, name, subject, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        else:
            # The deadline came while waiting to ask again: after a refusal for a moment, that
            # refusal (the pause was checked against the deadline, but a loop held up past it
            # woke too late: review h120), else nobody answered.
            msg = refused_now
        if msg is None:
            gave_up = await self._why_no_answer(name, subject, last, attempts)
            # what a script needs to know before it retries or looks (as the service's own
            # log_unavailable says): nothing received it, or it may have been applied
            gave_up.details["outcome"] = "unknown" if reached else "not_applied"
            raise gave_up
        try:
            reply = msgpack.unpackb(msg, raw=False)
        except Exception:
            raise NetledgerError(f"unreadable reply to {name}") from None
        if not isinstance(reply, dict):
            raise NetledgerError(f"unreadable reply to {name}")
        if reply.get("ok"):
            result = reply.get("result")
            return result if isinstance(result, dict) else {}
        err = reply.get("error")
        refused = error_from_wire(err if isinstance(err, dict) else {"message": str(err)})
        if unanswered and refused.details.get("outcome") == "not_applied":
            # The service speaks for the attempt it answered, refused before it was tried (the
            # log refuses writes: ops/storage.py) — refused so whenever it has not folded the
            # command id, also when an earlier attempt whose answer was lost (the server
            # restarting, say) landed (review h120). It folds the log's end before refusing
            # when it can read it (service/lanes.py _log_readable, review h125), but not
            # while its nats-server restarts, and an earlier attempt may still be on its way
            # (another replica's append in doubt): it cannot say more than "not now". The
            # command's outcome is unknown: a retry with the same id is safe, a new command
            # may apply it twice.
            refused.details["outcome"] = "unknown"
        raise refused

    def _hint(
        self, hinted: bool, started: float, end: float, name: str, subject: str, why: Exception
    ) -> bool:
        """Tell ``on_waiting`` why the command waits, once a command (returns whether told by
        now): after WAITING_HINT_S without an answer, or refused for a moment meanwhile."""
        now = asyncio.get_running_loop().time()
        if hinted or self.on_waiting is None or now - started < WAITING_HINT_S:
            return hinted
        self.on_waiting(name, subject, why, end - now)
        return True

    async def _why_no_answer(
        self, name: str, subject: str, last: Exception | None, attempts: int
    ) -> NetledgerError:
        """The error for a command nobody answered: what can be told about why."""
        if isinstance(last, nats.errors.NoRespondersError):
            return Unavailable(
                f"no command service is running for {name}: nothing listens on {subject}"
                f" (asked for {self.deadline:g} s; is `netledger serve` running, connected to"
                " this NATS server?)",
                subject=subject,
            )
        if isinstance(
            last, nats.errors.ConnectionClosedError | nats.errors.ConnectionReconnectingError
        ):
            return Unavailable(
                f"lost the connection to NATS while sending {name}"
                f" ({last.__class__.__name__}); retry with the same command id is safe",
            )
        # Someone listens but did not answer: ask the replicas how their log is (one short
        # status request); a log that refuses writes is the likely cause.
        log = await self._log_state()
        waited = f"{self.deadline:g} s, {attempts} attempt(s)"
        if log is not None and not log.get("writable", True):
            cls = LogStorageFull if log.get("code") == LogStorageFull.code else LogUnavailable
            return cls(
                f"the command service did not answer {name} within {waited}; it reports its log"
                f" {log.get('state')}: {log.get('reason')}",
                reason=log.get("reason"),
                state=log.get("state"),
            )
        state = f" (its log: {log.get('state')})" if log is not None else ""
        return Unavailable(
            f"the command service did not answer {name} within {waited}{state}: it may be"
            " overloaded or stuck (see `netledger status`); a retry with the same command id is"
            " safe",
            last=last.__class__.__name__ if last else "TimeoutError",
        )

    async def _log_state(self) -> dict[str, Any] | None:
        try:
            msg = await self.conn.nc.request("$SRV.STATS.netledger", b"", timeout=1.0)
            data = json.loads(msg.data)["endpoints"][0]["data"]["log"]
        except Exception:
            return None
        return data if isinstance(data, dict) else None

    # --- conveniences -------------------------------------------------------------------

    async def create_networks(self, **args: Any) -> list[dict[str, Any]]:
        return list((await self.request("network.create", args))["networks"])

    async def list_networks(self, project: str | None = None) -> list[dict[str, Any]]:
        return list((await self.request("network.list", {"project": project}))["networks"])

    async def allocate_fixed_ip(
        self,
        instance: str,
        *,
        project: str | None = None,
        network_id: str | None = None,
        host: str | None = None,
        mac: str | None = None,
        command_id: str | None = None,
    ) -> dict[str, Any]:
        if project is None and network_id is None:
            raise ValidationError("give project or network_id")
        return await self.request(
            "fixed_ip.allocate",
            {
                "instance": instance,
                "project": project,
                "network_id": network_id,
                "host": host,
                "mac": mac,
            },
            command_id=command_id,
        )

    async def deallocate_fixed_ip(
        self, instance: str, network_id: str | None = None
    ) -> dict[str, Any]:
        return await self.request(
            "fixed_ip.deallocate", {"instance": instance, "network_id": network_id}
        )
