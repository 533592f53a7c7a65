"""Deciding on hosts: ``host.retire`` (pure).

A cloud that runs for years sees hosts come and go. A decommissioned host's executor stops, but
what the log said of it stayed for good: its VTEP in every other host's flood entries, its
``--network-host`` role (the networks it served kept it among their serving hosts), its
sighting reports in the fold, and a row in ``status`` saying it had not reported — a problem
nothing could clear. ``host retire`` records that it left (``HostRetired``, on
``netledger.evt.retired.<host>``); everything else follows from the log (the fold, the
executors' views, the projection, ``status``).

Refused while an address is allocated there (``host_in_use``: deallocate, or migrate the
instances, first; or while a live network names it as its ``network_host``: the network would
lose its gateway and DHCP) and for a host no executor ever announced, or retired already and
not back since (``host_not_found``). A host is *back* once its executor announces itself again
(it does at its start) — not by a report of an executor still running there. The check is
this replica's fold: an allocation onto the host decided at the same moment (on another
replica, or in another lane of this one: lanes decide side by side) is not seen — retire a host
nova no longer schedules to (``nova-manage service delete`` asks the same).
"""

from __future__ import annotations

from .commands import HostRetire, Request
from .decide_common import Decision, Pending
from .errors import HostInUse, HostNotFound
from .ids import announce_subject, host_subject, retired_subject
from .state import State
from .types import HostRetired


def host_present(state: State, host: str) -> bool:
    """Whether ``host`` is in the cloud: never retired and known (an announcement, or a report:
    an executor from before the announcement subjects announced on its host's subject), or
    announced since its last retirement (an executor started there again)."""
    if state.seq_of(retired_subject(host)):
        return not state.retired(host)
    return bool(state.seq_of(announce_subject(host)) or state.seq_of(host_subject(host)))


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
    served = sorted(n.network_id for n in state.live_networks() if n.net.network_host == host)
    if served:
        raise HostInUse(
            f"host {host} is the network host of network(s) {', '.join(served[:10])}: delete"
            " them first (they would lose their gateway and DHCP)",
            host=host,
            networks=served,
        )
    if not host_present(state, host):
        retired = state.seq_of(retired_subject(host))
        why = f"retired at seq {retired} and not back since" if retired else "never announced"
        raise HostNotFound(f"host {host} is not in the cloud ({why})", host=host)
    return Decision([HostRetired(host)], {"retired": host})
