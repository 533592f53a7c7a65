"""JetStream API requests that fail at once when the server refuses these credentials their
subject.

nats-server drops a publish its permissions refuse and says so only on the connection (an
``-ERR`` that nats-py hands to the error callback); the request itself then waits out its whole
timeout. With a reader command run under a user that may not read the log (``status`` with a
``client-<p>`` file) that was 10 s and then ``unavailable``, "did not answer a request in
time" — which sends an operator looking at the servers, not the credentials (found walking
docs/security.md). The connection's error callback (``stream.connect``) records the refused
subject and cancels the tasks registered as waiting on it; here each API request registers, and
a cancellation for a refusal becomes ``Forbidden`` naming the subject."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.js import JetStreamContext

from netledger.events.errors import Forbidden


class RefusalAwareJetStream(JetStreamContext):
    """nats-py's JetStream context whose API requests (stream info, consumer create, …) end
    with ``Forbidden`` as soon as the server reports it refused their subject."""

    def __init__(
        self,
        nc: Any,
        refused: set[str],
        waiting: dict[str, set[asyncio.Task[Any]]],
        **opts: Any,
    ) -> None:
        super().__init__(nc, **opts)
        self._refused = refused
        self._waiting = waiting

    async def _api_request(
        self, req_subject: str, req: bytes = b"", timeout: float = 5
    ) -> dict[str, Any]:
        key = req_subject.lower()  # as nats-py reports the refusal
        if key in self._refused:
            raise refused_request(req_subject)
        task = asyncio.current_task()
        assert task is not None
        waiting = self._waiting.setdefault(key, set())
        waiting.add(task)
        try:
            resp: dict[str, Any] = await super()._api_request(req_subject, req, timeout)
            return resp
        except asyncio.CancelledError:
            # Cancelled by the refusal (and by nothing else: uncancel() leaves no other
            # cancellation pending), taken back here so that nothing outside sees it.
            if key in self._refused and task.uncancel() == 0:
                raise refused_request(req_subject) from None
            raise
        finally:
            waiting.discard(task)


def refused_request(subject: str) -> Forbidden:
    return Forbidden(
        f"the NATS server refused these credentials the JetStream request {subject}"
        " (reading the log takes the projector, auditor or admin credentials of"
        " `netledger auth init`: docs/security.md)",
        subject=subject,
    )
