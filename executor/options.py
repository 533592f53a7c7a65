"""What an executor is told (:class:`Options`) and what each of its passes reports
(:class:`PassReport`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from netledger.journal.stream import FOLLOW_HEARTBEAT_S

from .dhcp import DhcpPaths
from .kernel import OpResult
from .netlink import CHUNK
from .snapshot import DEFAULT_EVERY


@dataclass
class PassReport:
    applied_seq: int
    results: list[OpResult] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    events: int = 0
    changes: int = 0
    drift_repairs: int = 0
    duration_ms: float = 0.0
    #: a periodic sweep: how long its dump of the kernel took, beside the passes before it
    #: (not in ``duration_ms``: nothing waited for it)
    dump_ms: float = 0.0
    #: a periodic sweep: the longest slice of its check on the event loop — what a change that
    #: came during the sweep could wait for (executor/sweeping.py)
    slice_ms: float = 0.0
    #: messages of the log read since start, and networks in the share (None: whole log)
    events_read: int = 0
    share_networks: int | None = None
    #: the stream sequence of the view snapshot the start began from (None: from the log)
    snapshot_seq: int | None = None

    @property
    def failures(self) -> list[OpResult]:
        return [r for r in self.results if not r.ok]


@dataclass
class Options:
    netns: str | None = None
    interval: float = 30.0
    #: liveness (the status key in the liveness bucket) at least this often, seconds
    heartbeat: float = 60.0
    #: let a burst of events land; small: it is command-to-kernel latency (and a pass that looks
    #: only at what changed is cheap)
    #: Seconds a change waits after the previous pass (0: none). A burst is coalesced anyway:
    #: what arrives while a pass runs is taken by the next one. 5 ms measured 15-18 ms p50
    #: command -> kernel against 13 ms without (bench/kernel.py, one allocation after another).
    debounce: float = 0.0
    #: after the first pass, move what the start loaded out of the cyclic collector's reach
    #: (``gc.freeze``): a process-wide choice, made by the CLI's daemon (not by tests that
    #: run executors inside their own process)
    freeze_gc: bool = False
    chunk_size: int = CHUNK
    pause: float = 0.0
    #: DHCP: where dnsmasq files live and which dnsmasq runs (None: DHCP not managed here).
    dhcp_paths: DhcpPaths | None = None
    dhcp_script: str = ""  # the lease script's text (executor/dhcp.py: script_text)
    #: how often a running executor checks that the log did not go back (and on reconnect)
    watch_interval: float = 5.0
    #: instance sightings (executor/sightings.py): poll period (None: off) and heartbeat
    sightings_poll: float | None = 5.0
    sightings_heartbeat: float = 60.0
    #: report what changed (HostInstancesChanged) rather than the whole set each time (False:
    #: ``--whole-sightings``, for command services older than the change: docs/reclaim.md)
    sighting_changes: bool = True
    #: read only this host's share of the log (executor/share.py); False: the whole stream
    share: bool = True
    #: the follower's idle heartbeat, seconds (``--follow-heartbeat``): a consumer lost (a
    #: server restart, a failover) is made again after two missed; the server sends each
    #: idle host one a period (1,000 hosts at 1 s: ~55 ms/s of its CPU, bench/fleet.py)
    follow_heartbeat: float = FOLLOW_HEARTBEAT_S
    #: keep the kernel cache current by notifications (False for --once: one pass, read back)
    live_kernel: bool = True
    #: the view's snapshot file (executor/snapshot.py; None: none loaded, none written)
    snapshot_path: str | None = None
    #: write one after a pass once this many messages of the log were read since the last
    #: (0: never write)
    snapshot_every: int = DEFAULT_EVERY
    #: start from the snapshot (False: ``--ignore-snapshot``, read the share from sequence 1)
    snapshot_load: bool = True
