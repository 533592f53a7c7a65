"""Deciding on hosts: ``host.retire`` (pure).

A cloud that runs for years sees hosts come and go. A decommissioned host's executor stops, but
what the log said of it stayed for good: its VTEP in every other host's flood entries, its
``--network-host`` role (the networks it served kept it among their serving hosts), its
sighting reports in the fold, and a row in ``status`` saying it had not reported — a problem
nothing could clear. ``host retire`` records that it left (``HostRetired``, on
``netledger.evt.retired.<host>``); everything else follows from the log (the fold, the
executors' views, the projection, ``status``).

Refused while an address is allocated there (``host_in_use``: deallocate, or migrate the
instances, first) and for a host no executor ever announced, or retired already and not back
since (``host_not_found``). A host is *back* once its executor writes again (an announcement
or any event on its own subject after the retirement). The check is this replica's fold: an
allocation onto the host decided at the same moment on another replica is not seen — retire a
host nova no longer schedules to (``nova-manage service delete`` asks the same).
"""

from __future__ import annotations

from .commands import HostRetire, Request
from .decide_common import Decision, Pending
from .errors import HostInUse, HostNotFound
from .ids import announce_subject, host_subject, retired_subject
from .state import State
from .types import HostRetired


def host_present(state: State, host: str) -> bool:
    """Whether ``host``'s executor wrote anything (an announcement, a report) after the host's
    last retirement, if any."""
    wrote = max(state.seq_of(announce_subject(host)), state.seq_of(host_subject(host)))
    return wrote > state.seq_of(retired_subject(host))


def decide_host_retire(state: State, req: Request, pending: Pending) -> Decision:
    cmd = req.command
    assert isinstance(cmd, HostRetire)
    host = cmd.host
    held = sum(state.host_macs.get(host, {}).values())
    if held:
        raise HostInUse(
            f"host {host} has {held} address(es) allocated: deallocate them (or move their"
            " instances) first",
            host=host,
            addresses=held,
        )
    if not host_present(state, host):
        retired = state.seq_of(retired_subject(host))
        why = f"retired at seq {retired} and not back since" if retired else "never announced"
        raise HostNotFound(f"host {host} is not in the cloud ({why})", host=host)
    return Decision([HostRetired(host)], {"retired": host})
