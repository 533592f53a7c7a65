"""The deciders: pure functions ``decide(state, request, pending) -> Decision``.

They read :class:`~netledger.events.state.State` and never change it; the events they return are
appended by the command service and folded back into state from the log. ``Pending`` holds the
decisions already made for the same atomic batch (group commit), so that several allocations
decided together never pick the same address, MAC or network.

This module is the entry point: the dispatch table :data:`DECIDERS` and :func:`decide`. The
deciders themselves live by subject — networks in :mod:`.decide_network`, fixed IPs in
:mod:`.decide_fixed`, floating IPs in :mod:`.decide_floating`, hosts in :mod:`.decide_host` —
over the types and checks they share in :mod:`.decide_common`; their public names are
re-exported here, so callers import only this module. Other modules (reclaim, reaper, revert) add their commands to ``DECIDERS``.
"""

from __future__ import annotations

from collections.abc import Callable

from .commands import (
    Command,
    FixedIpAllocate,
    FixedIpDeallocate,
    FixedIpLease,
    FixedIpRelease,
    FloatingIpAllocate,
    FloatingIpAssociate,
    FloatingIpDeallocate,
    FloatingIpDisassociate,
    FloatingPoolCreate,
    HostRetire,
    NetworkCreate,
    NetworkDelete,
    NetworkDisassociate,
    NetworkList,
    NetworkShow,
    Request,
)
from .decide_common import Decision, Pending
from .decide_fixed import (
    decide_fixed_allocate,
    decide_fixed_deallocate,
    decide_fixed_lease,
    decide_fixed_release,
)
from .decide_floating import (
    decide_floating_allocate,
    decide_floating_associate,
    decide_floating_deallocate,
    decide_floating_disassociate,
    decide_pool_create,
)
from .decide_host import decide_host_retire
from .decide_network import (
    DEFAULT_FLAT_BRIDGE,
    MAX_VNI,
    decide_network_create,
    decide_network_delete,
    decide_network_disassociate,
    decide_network_list,
    decide_network_show,
    network_dict,
    network_state_dict,
)
from .errors import Forbidden
from .state import State

__all__ = [
    "DECIDERS",
    "DEFAULT_FLAT_BRIDGE",
    "MAX_VNI",
    "Decider",
    "Decision",
    "Pending",
    "decide",
    "decide_fixed_allocate",
    "decide_fixed_deallocate",
    "decide_fixed_lease",
    "decide_fixed_release",
    "decide_floating_allocate",
    "decide_floating_associate",
    "decide_floating_deallocate",
    "decide_floating_disassociate",
    "decide_network_create",
    "decide_network_delete",
    "decide_network_disassociate",
    "decide_network_list",
    "decide_network_show",
    "decide_pool_create",
    "network_dict",
    "network_state_dict",
]

Decider = Callable[[State, Request, Pending], Decision]

DECIDERS: dict[type[Command], Decider] = {
    NetworkCreate: decide_network_create,
    NetworkDelete: decide_network_delete,
    NetworkDisassociate: decide_network_disassociate,
    NetworkList: decide_network_list,
    NetworkShow: decide_network_show,
    FixedIpAllocate: decide_fixed_allocate,
    FixedIpDeallocate: decide_fixed_deallocate,
    FixedIpLease: decide_fixed_lease,
    FixedIpRelease: decide_fixed_release,
    FloatingPoolCreate: decide_pool_create,
    FloatingIpAllocate: decide_floating_allocate,
    FloatingIpAssociate: decide_floating_associate,
    FloatingIpDisassociate: decide_floating_disassociate,
    FloatingIpDeallocate: decide_floating_deallocate,
    HostRetire: decide_host_retire,
}


def decide(state: State, req: Request, pending: Pending | None = None) -> Decision:
    """Decide one request on ``state`` (plus ``pending`` decisions of the same batch)."""
    cmd = req.command
    if cmd.ADMIN_ONLY and req.actor.role not in ("admin", "system"):
        raise Forbidden(f"{cmd.NAME} needs the admin role", command=cmd.NAME)
    return DECIDERS[type(cmd)](state, req, pending if pending is not None else Pending())
