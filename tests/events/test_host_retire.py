"""``host retire`` (events/decide_host.py): a decommissioned host leaves the cloud — decided on
the fold (refused while an address is allocated there, for a host never announced or retired
already), folded by every reader (its sighting reports, its network-host role go), and read in
any order a share's start reads subjects (retirements after announcements) with the same result
as in the log's order. Pure; the real service, executors and status:
tests/executor/test_host_retire_share.py, tests/ops/test_status_retired.py."""

from __future__ import annotations

import pytest

from netledger.events.codec import SYSTEM, Actor, Envelope
from netledger.events.commands import parse_command
from netledger.events.decide import decide
from netledger.events.errors import HostInUse, HostNotFound
from netledger.events.host_events import HostAnnounced, HostInstancesSeen
from netledger.events.ids import host_subject, retired_subject
from netledger.events.snapshot import state_from_wire, state_to_wire
from netledger.events.state import State
from netledger.events.types import HostRetired
from tests.events.test_review72_fold import History

ADMIN = Actor(role="admin", user="ops")


def retire(h: History, host: str) -> int:
    req = parse_command(
        "host.retire", {"command_id": f"r-{len(h.log)}", "actor": ADMIN.to_wire(),
                        "args": {"host": host}},
    )  # fmt: skip
    d = decide(h.state, req)
    assert d.events == [HostRetired(host)] and d.result == {"retired": host}
    h.decided(d.events)
    return len(h.log)


def announce(h: History, host: str, network_host: bool = False) -> int:
    return h.add(HostAnnounced(host, "192.0.2.1", "eth1", "pub0", network_host))


def cloud() -> History:
    """h1 (a network host) and h2 announced, each reporting; vm-a on h2."""
    h = History()
    h.run("network.create", label="a", cidr="10.6.0.0/24", mode="flat_dhcp", multi_host=True)
    announce(h, "h1", network_host=True)
    announce(h, "h2")
    for host in ("h1", "h2"):
        h.add(HostInstancesSeen(host, [], ["1"], "start"))
    got = h.run("fixed_ip.allocate", instance="vm-a", host="h2", network_id="1")
    assert got is not None
    return h


def test_a_host_leaves_with_its_reports_and_its_role() -> None:
    h = cloud()
    assert "h1" in h.state.network_hosts and "h1" in h.state.sightings
    seq = retire(h, "h1")
    assert h.log[-1][1] == retired_subject("h1")
    assert "h1" not in h.state.network_hosts and "h1" not in h.state.sightings
    assert h.state.retired("h1") and not h.state.retired("h2")
    # The fold keeps its subjects' sequences only: a snapshot says the same.
    again = state_from_wire(state_to_wire(h.state))
    assert again.retired("h1") and again.seq_of(retired_subject("h1")) == seq


def test_a_host_with_an_address_allocated_is_refused() -> None:
    h = cloud()
    with pytest.raises(HostInUse) as info:
        retire(h, "h2")
    assert info.value.code == "host_in_use" and info.value.details["addresses"] == 1
    h.run("fixed_ip.deallocate", instance="vm-a")
    retire(h, "h2")


def test_a_host_never_announced_or_retired_already_is_not_found() -> None:
    h = cloud()
    with pytest.raises(HostNotFound, match="never announced"):
        retire(h, "h9")
    retire(h, "h1")
    with pytest.raises(HostNotFound, match="retired at seq"):
        retire(h, "h1")


def test_a_host_is_back_once_it_announces_again_not_when_it_reports() -> None:
    h = cloud()
    retire(h, "h1")
    announce(h, "h1", network_host=True)
    assert not h.state.retired("h1") and "h1" in h.state.network_hosts
    retire(h, "h1")
    # An executor still running there after the retirement reports: the host stays retired
    # (its own view drops its announcement, its next start announces it again: review hrev86)
    h.add(HostInstancesSeen("h1", ["02:00:00:00:00:01"], ["1"], "change"))
    assert h.state.retired("h1")
    with pytest.raises(HostNotFound, match="retired at seq"):
        retire(h, "h1")
    announce(h, "h1")
    retire(h, "h1")


def test_a_network_host_named_by_a_live_network_is_refused() -> None:
    h = cloud()
    h.run("network.create", label="s", cidr="10.8.0.0/24", mode="flat_dhcp", network_host="h1")
    with pytest.raises(HostInUse, match="network host of network") as info:
        retire(h, "h1")
    assert info.value.details["networks"] == ["2"]
    assert h.run("network.delete", network_id="2") is not None
    retire(h, "h1")


def test_a_host_known_only_by_its_reports_may_be_retired() -> None:
    """An executor from before the announcement subjects announced on its own subject."""
    h = cloud()
    h.add(HostInstancesSeen("h5", [], [], "start"))
    retire(h, "h5")
    assert h.state.retired("h5")


def test_a_share_reading_retirements_after_announcements_agrees_with_the_log() -> None:
    """A share's start reads subject by subject (journal/follow.py): every announcement, then
    every retirement. A host retired, then back (announced again), stays; one retired for good
    goes — as in the log's order."""
    h = cloud()
    retire(h, "h1")
    announce(h, "h1", network_host=True)  # back
    h.run("fixed_ip.deallocate", instance="vm-a")
    retire(h, "h2")  # gone for good
    by_subject = sorted(h.log, key=lambda m: (m[1], m[0]))
    share = State()
    for seq, subject, env in by_subject:
        if subject.startswith(host_subject("")) or "network" in subject:
            continue  # a share reads no other host's subject (nor, here, the network)
        assert share.fold_message(seq, subject, env) is None
    assert share.network_hosts == h.state.network_hosts == {"h1"}
    assert not share.retired("h1") and share.retired("h2")


def test_an_announcement_read_after_a_newer_retirement_is_superseded() -> None:
    """A legacy announcement a share fetches through its pointer comes after the share read
    the host's retirement (newer in the log): it must not bring the host back."""
    share = State()
    old = HostAnnounced("h3", "192.0.2.3", "eth1", "pub0", True)
    retired = HostRetired("h3")
    env = Envelope(retired, "e10", "c10", 1.0, SYSTEM)
    assert share.fold_message(10, retired.subject(), env) is None
    assert share.fold_message(5, host_subject("h3"), Envelope(old, "e5", "c5", 1.0, SYSTEM)) is None
    assert "h3" not in share.network_hosts and "h3" not in share.legacy_announced
    # (without the retirement, the same announcement is the host's role)
    other = State()
    assert other.fold_message(5, host_subject("h3"), Envelope(old, "e5", "c5", 1.0, SYSTEM)) is None
    assert "h3" in other.network_hosts
