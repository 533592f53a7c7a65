"""What a generated cloud history is: :class:`History` (returned by ``build_history`` and
``History.extend``) and the :class:`Live` instances it ends with. See bench/history_gen.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from history_gen import Cloud

    from netledger.journal.stream import Connection

Progress = Callable[[int], None]


@dataclass
class Live:
    """A live instance at the end of the history."""

    instance: str
    network_id: str
    address: str
    mac: str
    host: str
    project: str
    floating: str | None = None


@dataclass
class History:
    """What :func:`build_history` wrote (and :meth:`History.extend` added)."""

    #: the stream's last sequence (= events written: the stream started empty)
    last_seq: int
    #: events per type name
    counts: dict[str, int]
    domain_events: int
    host_events: int
    #: events per subject (for any host's share: :meth:`share`)
    subject_counts: dict[str, int]
    instances: dict[str, Live]
    hosts: list[str]
    networks: list[str]
    pool: str
    #: the host the benchmark follows, the networks it has instances in, the events about it
    focus_host: str
    focus_networks: list[str]
    focus_share: int
    #: wall time of the last build/extend (generation + publishing) and what it wrote
    seconds: float
    written: int
    cloud: Cloud = field(repr=False)

    def networks_of(self, host: str) -> list[str]:
        return self.cloud.networks_of(host)

    def share_subjects(self, host: str) -> list[str]:
        """What concerns ``host``: the registry, every host's announcement, its own subject
        (and placement subject), the subjects of the networks it has instances in."""
        return self.cloud.share_subjects(host)

    def share(self, host: str) -> int:
        """How many events of the history are on :meth:`share_subjects` of ``host``."""
        return self.cloud.share(host)

    async def extend(
        self, conn: Connection | None, events: int, progress: Progress | None = None
    ) -> History:
        """Append at least ``events`` more churn events (the cloud ages; its size stays)."""
        return await self.cloud.extend(conn, events, progress)
