"""Freeing deallocated addresses whose DHCP release never came (nova leaked these).

In DHCP modes a deallocated address stays held until dnsmasq reports the release. If the
release never comes, the address is freed once ``timeout`` seconds have passed since the
deallocation *as recorded in the log* — the decision reads only the log's times and is appended
with optimistic concurrency like any command, so it can never race a release or an allocation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .commands import Command, Request, command
from .decide import DECIDERS, Decision, Pending
from .errors import InvalidField
from .state import State
from .types import Event, FixedIpFreed

DEFAULT_RELEASE_TIMEOUT = 600.0
#: addresses one reap decision frees at most (its events are one atomic batch, which holds at
#: most 1,000 messages): the rest are freed by the next decision
MAX_REAP = 500


@command
@dataclass(frozen=True)
class FixedIpReap(Command):
    """Free the addresses of one network whose release is overdue as of ``now``."""

    NAME: ClassVar[str] = "fixed_ip.reap"
    ADMIN_ONLY: ClassVar[bool] = True
    network_id: str
    now: float
    timeout: float = DEFAULT_RELEASE_TIMEOUT

    @classmethod
    def parse(cls, a: dict[str, Any]) -> FixedIpReap:
        from .commands import _id

        return cls(
            network_id=_id(a, "network_id", required=True) or "",
            now=_number(a, "now", None),
            timeout=_number(a, "timeout", DEFAULT_RELEASE_TIMEOUT),
        )


def _number(a: dict[str, Any], name: str, default: float | None) -> float:
    v = a.get(name, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
        raise InvalidField(f"{name} must be a non-negative number", field=name)
    return float(v)


def overdue(state: State, now: float, timeout: float) -> dict[str, list[str]]:
    """Network id -> addresses whose release is overdue."""
    out: dict[str, list[str]] = {}
    for (network_id, address), at in state.awaiting_release.items():
        if now - at >= timeout:
            out.setdefault(network_id, []).append(address)
    return out


def decide_reap(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, FixedIpReap)
    events: list[Event] = []
    freed: list[str] = []
    n = state.networks.get(cmd.network_id)
    if n is not None:
        for address in sorted(overdue(state, cmd.now, cmd.timeout).get(cmd.network_id, [])):
            ip = n.fixed.get(address)
            if ip is None or ip.allocated:
                continue
            events.append(
                FixedIpFreed(
                    network_id=n.network_id,
                    address=address,
                    instance=ip.instance,
                    reason=f"no DHCP release {cmd.timeout:.0f}s after deallocation",
                )
            )
            freed.append(address)
            if len(freed) == MAX_REAP:
                break
    return Decision(events, {"network_id": cmd.network_id, "freed": freed})


DECIDERS[FixedIpReap] = decide_reap
