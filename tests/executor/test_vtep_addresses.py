"""A VTEP that is not an address never reaches the kernel work of any host: ``--vtep-address``
(and ``--snat-address``) are checked on the command line, and an announcement from before that
check (or any other writer) with one is left out of every host's flood entries — as a host
without a VTEP — instead of failing every other host's pass."""

from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from netledger.cli import cli
from netledger.events.codec import SYSTEM, Envelope
from netledger.events.host_events import HostAnnounced
from netledger.executor.hosts import HostBook


@pytest.mark.parametrize("option", ["--vtep-address", "--snat-address"])
@pytest.mark.parametrize("value", ["abc", "10.0.0.300", "10.1", "fd00::1::2"])
def test_an_address_option_that_is_no_address_is_a_usage_error(option: str, value: str) -> None:
    # click refuses it before anything connects (no server at that port).
    argv = ["--nats", "nats://127.0.0.1:9", "executor", "run", "--host", "h1", option, value]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert f"{value!r} is not an IPv4 or IPv6 address" in result.output


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("10.0.0.0", "is not an IPv4 network"),
        ("fd00::/64", "is not an IPv4 network"),
        ("10.0.0.1/8", "has host bits set (did you mean 10.0.0.0/8?)"),
        ("abc/8", "is not an IPv4 network"),
    ],
)
def test_a_fixed_range_that_is_no_ipv4_network_is_a_usage_error(value: str, says: str) -> None:
    argv = ["--nats", "nats://127.0.0.1:9", "executor", "run", "--host", "h1", "--fixed-range",
            value]  # fmt: skip
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert says in result.output


@pytest.mark.parametrize("option", ["--interval", "--heartbeat"])
@pytest.mark.parametrize("value", ["0", "-1", "0.01"])
def test_a_period_below_a_tenth_of_a_second_is_a_usage_error(option: str, value: str) -> None:
    # 0 or less was taken, and a daemon then ran its passes (or wrote liveness) back to back
    argv = ["--nats", "nats://127.0.0.1:9", "executor", "run", "--host", "h1", option, value]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    assert option in result.output and "x>=0.1" in result.output


def test_an_announced_vtep_that_is_no_address_gets_no_flood_entries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    book = HostBook("h1")
    for host, vtep in [("h2", "192.0.2.2"), ("h3", "not-an-address"), ("h4", "fd00::4")]:
        ev = HostAnnounced(host, vtep, "eth1", "pub0", False)
        with caplog.at_level(logging.WARNING, logger="netledger.executor"):
            book.apply(Envelope(ev, f"{host}:0", f"{host}", 1.0, SYSTEM))
    assert book.vteps() == {"h2": "192.0.2.2", "h4": "fd00::4"}
    assert "host h3 announced a VTEP that is no address: 'not-an-address'" in caplog.text
