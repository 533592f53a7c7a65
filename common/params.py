"""Command-line parameter types several parts share (checked by click, so also when a value
comes from the configuration file: ops/config.py converts each through its option's type)."""

from __future__ import annotations

from typing import Any

import click
import netaddr


def normalized_address(value: Any) -> str | None:
    """An IPv4 or IPv6 address as the log writes it (``fd00::0001`` -> ``fd00::1``), or None
    if ``value`` is none (strict: no octal or shortened IPv4). An IPv4-mapped IPv6 address
    (``::ffff:10.0.0.3``, as a dual-stack socket reports a peer) is that IPv4 address."""
    try:
        ip = netaddr.IPAddress(str(value).strip(), flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    if ip.is_ipv4_mapped():
        ip = ip.ipv4()
    return str(ip)


class IpAddress(click.ParamType):  # type: ignore[type-arg]
    """An IPv4 or IPv6 address, normalized (``fd00::0001`` -> ``fd00::1``)."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        address = normalized_address(value)
        if address is None:
            self.fail(f"{value!r} is not an IPv4 or IPv6 address", param, ctx)
        return address


IP_ADDRESS = IpAddress()


class Ipv4Cidr(click.ParamType):  # type: ignore[type-arg]
    """An IPv4 network in CIDR form, its host bits clear (``10.0.0.0/8``)."""

    name = "cidr"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = str(value).strip()
        try:
            if "/" not in text:
                raise ValueError("no prefix length")
            net = netaddr.IPNetwork(text)
        except (netaddr.AddrFormatError, ValueError, TypeError):
            self.fail(f"{value!r} is not an IPv4 network such as 10.0.0.0/8", param, ctx)
        if net.version != 4:
            self.fail(f"{value!r} is not an IPv4 network", param, ctx)
        if net.ip != net.network:
            self.fail(f"{value!r} has host bits set (did you mean {net.cidr}?)", param, ctx)
        return str(net.cidr)


IPV4_CIDR = Ipv4Cidr()
