"""Helpers shared by the decider tests (``tests/events/test_deciders_*.py`` and others).

A ``Ledger`` plays the part of the log: it decides a request, wraps the events in envelopes and
folds them into the state with increasing stream sequences, exactly as the command service's
follower would. ``Ledger.refuse`` checks a refusal raises its own error class and leaves the
state untouched (a decider that raises has nothing to append). Also here: ``fingerprint`` (a
state as plain values), nova's reserved and usable addresses of a network, computed without
``State``, and ``_floating_world`` (two project networks and a floating pool).
"""

from __future__ import annotations

import itertools
from typing import Any

import netaddr
import pytest

from netledger.events import errors as E
from netledger.events.codec import Actor, Envelope
from netledger.events.commands import Request, parse_command
from netledger.events.decide import Decision, decide
from netledger.events.state import NetworkState, State
from netledger.events.types import (
    Event,
)

ADMIN = Actor(role="admin", user="ops")


def member(project: str) -> Actor:
    return Actor(project=project, role="member", user=f"user-{project}")


def fingerprint(state: State) -> Any:
    """Everything a decider could conceivably change, as plain values."""
    nets = {
        nid: (
            n.project,
            n.seq,
            sorted((a, repr(ip)) for a, ip in n.fixed.items()),
            sorted(n.by_instance.items()),
            sorted(n.macs.items()),
            (n.pool.next_unused, list(n.pool.freed), n.pool.used),
        )
        for nid, n in state.networks.items()
    }
    pools = {
        name: (
            p.seq,
            sorted(repr(vars(f)) for f in p.floating.values()),
            (p.pool.next_unused, list(p.pool.freed), p.pool.used),
        )
        for name, p in state.pools.items()
    }
    return (
        nets,
        pools,
        sorted(state.project_networks.items()),
        sorted((k, sorted(v)) for k, v in state.instance_ips.items()),
        sorted(state.subject_seq.items()),
        state.last_seq,
        state.next_network_number,
    )


class Ledger:
    """A State plus a stand-in for the log: decide, then fold with increasing seqs."""

    def __init__(self) -> None:
        self.state = State()
        self.seq = 0
        self.log: list[Event] = []
        self._ids = itertools.count(1)

    def request(self, name: str, actor: Actor = ADMIN, **args: Any) -> Request:
        payload = {
            "command_id": f"cmd-{next(self._ids)}",
            "actor": actor.to_wire(),
            "args": {k: v for k, v in args.items() if v is not None},
        }
        return parse_command(name, payload)

    def fold(self, req: Request, events: list[Event]) -> None:
        for i, ev in enumerate(events):
            self.seq += 1
            env = Envelope(ev, f"{req.command_id}:{i}", req.command_id, 1.0, req.actor)
            assert self.state.apply(self.seq, ev.subject(), env)
            self.log.append(ev)

    def run(self, name: str, actor: Actor = ADMIN, **args: Any) -> Decision:
        req = self.request(name, actor, **args)
        d = decide(self.state, req)
        self.fold(req, d.events)
        return d

    def refuse(
        self, error: type[E.NetledgerError], name: str, actor: Actor = ADMIN, **args: Any
    ) -> E.NetledgerError:
        """``name`` must raise exactly ``error`` and leave the state as it was."""
        before = fingerprint(self.state)
        req = self.request(name, actor, **args)
        with pytest.raises(E.NetledgerError) as info:
            decide(self.state, req)
        assert type(info.value) is error, f"{info.value!r} is not {error.__name__}"
        assert info.value.code == error.code
        assert fingerprint(self.state) == before
        return info.value

    # conveniences ----------------------------------------------------------------------

    def networks(self, **args: Any) -> list[dict[str, Any]]:
        args.setdefault("label", "net")
        return list(self.run("network.create", **args).result["networks"])

    def allocate(self, instance: str, actor: Actor = ADMIN, **args: Any) -> dict[str, Any]:
        return self.run("fixed_ip.allocate", actor, instance=instance, **args).result

    def deallocate(self, instance: str, actor: Actor = ADMIN, **args: Any) -> Decision:
        return self.run("fixed_ip.deallocate", actor, instance=instance, **args)


def reserved_of(net: dict[str, Any]) -> set[str]:
    """What must never be handed out, computed from nova's rules (not from State)."""
    block = netaddr.IPNetwork(net["cidr"])
    out = {str(block.network), str(block.broadcast), net["gateway"]}
    if net["mode"] == "vlan":
        out.add(str(block[2]))
    start = netaddr.IPAddress(net["dhcp_start"])
    out |= {str(ip) for ip in block if ip < start}
    return out


def network_dict_of(n: NetworkState) -> dict[str, Any]:
    return {
        "cidr": n.net.cidr,
        "gateway": n.net.gateway,
        "mode": n.net.mode,
        "dhcp_start": n.net.dhcp_start,
    }


def usable_of(net: dict[str, Any]) -> list[str]:
    block = netaddr.IPNetwork(net["cidr"])
    reserved = reserved_of(net)
    return [str(ip) for ip in block if str(ip) not in reserved]


def _floating_world() -> tuple[Ledger, dict[str, Any], dict[str, Any]]:
    led = Ledger()
    led.networks(cidr="10.0.0.0/23", num_networks=2)
    led.run("floating_ip.pool_create", pool="public", cidr="203.0.113.0/29")
    a = led.allocate("vm-a", project="pa")
    b = led.allocate("vm-b", project="pb")
    return led, a, b
