"""NAT (IPv4) and the IPv6 forward filter: nftables tables of our own, replaced atomically in
one ``nft -f -`` transaction.

The table (``table ip netledger``) holds two maps — floating -> fixed (DNAT in prerouting and
output) and fixed -> floating (SNAT in postrouting) — and the set of fixed ranges (every
network's, not only those served here: executor/fragments.py ``fixed_space``): traffic between
fixed ranges is not NATed (accepted first); other traffic from them is SNATed to the floating IP
or the host address (or masqueraded on the public interface when that address is not known). Maps keep the rule
count constant however many floating IPs there are.

Every write is the whole table in one transaction (``table``/``delete table``/definition), the
way Kubernetes' nftables kube-proxy does it: there is no half-applied state to reason about.
Read-back (``nft -j list table``) is parsed into the same :class:`NatTable`; a table whose rules
are not exactly ours (by comment and shape) is reported as not intact and gets replaced.

IPv6 is routed, never NATed (nova-network did not NAT it either; floating IPs stay IPv4):
``table ip6 netledger`` holds the served /64 of each bridge and one forward rule that drops
what a bridge sends out from any other source (an instance cannot use another network's
prefix, nor an address outside its own). It is written in the same transaction as the
``ip`` table — one ``nft -f -`` — and read back with it. A host without IPv6 networks writes
the ``ip`` table exactly as before (and makes sure no ``ip6`` table of ours is left).
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from typing import Any

import netaddr
from msgspec.structs import replace

from . import proc
from .errors import NftError
from .model import NAT_TABLE, NatTable

#: Seconds one ``nft`` run may take (a whole table of thousands of rules loads in ~0.05 s).
NFT_TIMEOUT = 60.0

#: the IPv6 table's only chain and rule
RULES6: dict[str, tuple[str, ...]] = {"forward": ("v6-spoof",)}

RULES = {
    "prerouting": ("fip-dnat",),
    "output": ("fip-dnat",),
    # Order matters: snat is final, so traffic between fixed ranges must be accepted before
    # an instance's floating IP is put on it (nova's ``-s fixed -d fixed -j ACCEPT`` came
    # before its snat chains). A table of ours in another order is not intact: rewritten.
    "postrouting": ("fixed-to-fixed", "fip-snat", "fixed-snat"),
}


def _elements(items: list[str]) -> str:
    return f"    elements = {{ {', '.join(items)} }}\n" if items else ""


def render(t: NatTable) -> str:
    """The whole transaction: the ``ip`` table (deleted when it has nothing to hold) and the
    ``ip6`` one (likewise)."""
    v4 = render_delete4() if t.v4_empty else render4(t)
    return v4 + (render6(t.routed_v6, t.blocked_v6) if t.routed_v6 else render_delete6())


def snat_pairs(floating: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    """``fip_snat``'s elements, (fixed, floating) by fixed address: one per fixed address. A
    fixed address may hold several floating IPs (nova allowed it; the service does too): every
    one is DNATed to it, and its traffic leaves with the lowest. A map holds one value per key:
    nft refuses the whole transaction for a duplicate (found by review hrev16: the host lost
    all of its NAT, its fixed ranges' SNAT too)."""
    first: dict[str, str] = {}
    for f, x in sorted(floating, key=lambda p: int(netaddr.IPAddress(p[0]))):
        first.setdefault(x, f)
    return sorted(first.items(), key=lambda p: int(netaddr.IPAddress(p[0])))


def render4(t: NatTable) -> str:
    dnat = [f"{f} : {x}" for f, x in t.floating]
    snat = [f"{x} : {f}" for x, f in snat_pairs(t.floating)]
    if t.snat_to:
        fixed_snat = f'    ip saddr @fixed snat to {t.snat_to} comment "fixed-snat"\n'
    elif t.masquerade_interface:
        fixed_snat = (
            f'    ip saddr @fixed oifname "{t.masquerade_interface}" masquerade'
            ' comment "fixed-snat"\n'
        )
    else:
        fixed_snat = ""
    return (
        f"table ip {NAT_TABLE}\n"
        f"delete table ip {NAT_TABLE}\n"
        f"table ip {NAT_TABLE} {{\n"
        "  map fip_dnat {\n    type ipv4_addr : ipv4_addr\n" + _elements(dnat) + "  }\n"
        "  map fip_snat {\n    type ipv4_addr : ipv4_addr\n" + _elements(snat) + "  }\n"
        "  set fixed {\n    type ipv4_addr\n    flags interval\n"
        + _elements(list(t.fixed_ranges))
        + "  }\n"
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n"
        '    dnat to ip daddr map @fip_dnat comment "fip-dnat"\n  }\n'
        "  chain output {\n    type nat hook output priority -100; policy accept;\n"
        '    dnat to ip daddr map @fip_dnat comment "fip-dnat"\n  }\n'
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n"
        '    ip saddr @fixed ip daddr @fixed accept comment "fixed-to-fixed"\n'
        '    snat to ip saddr map @fip_snat comment "fip-snat"\n' + fixed_snat + "  }\n"
        "}\n"
    )


def render6(routed: tuple[tuple[str, str], ...], blocked: tuple[str, ...] = ()) -> str:
    """The ``ip6`` table: every bridge of ``routed`` or ``blocked`` in ``bridges``, so IPv6 out
    of a bridge of ``blocked`` (no /64 of its own) matches no ``routed`` element and is dropped."""
    bridges = sorted({f'"{b}"' for b, _ in routed} | {f'"{b}"' for b in blocked})
    elems = [f'"{b}" . {p}' for b, p in routed]
    return (
        f"table ip6 {NAT_TABLE}\n"
        f"delete table ip6 {NAT_TABLE}\n"
        f"table ip6 {NAT_TABLE} {{\n"
        "  set bridges {\n    type ifname\n" + _elements(bridges) + "  }\n"
        "  set routed {\n    type ifname . ipv6_addr\n    flags interval\n"
        + _elements(elems)
        + "  }\n"
        "  chain forward {\n    type filter hook forward priority filter; policy accept;\n"
        "    iifname @bridges iifname . ip6 saddr != @routed drop"
        ' comment "v6-spoof"\n  }\n'
        "}\n"
    )


def render_delete4() -> str:
    # Declaring the table first makes the delete succeed whether or not it exists.
    return f"table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\n"


def render_delete6() -> str:
    return f"table ip6 {NAT_TABLE}\ndelete table ip6 {NAT_TABLE}\n"


def render_delete() -> str:
    return render_delete4() + render_delete6()


def _elem_cidr(e: Any) -> str:
    if isinstance(e, str):
        return f"{e}/32"
    if isinstance(e, dict) and "prefix" in e:
        return f"{e['prefix']['addr']}/{e['prefix']['len']}"
    if isinstance(e, dict) and "range" in e:
        lo, hi = e["range"]
        return str(netaddr.IPRange(lo, hi).cidrs()[0])
    raise ValueError(f"unexpected set element {e!r}")


#: What each rule of ours does, as :func:`_shape` reads it back: besides its comment and place,
#: a rule must still match, map and decide what it was written to (a rule edited in place —
#: ``accept`` turned into ``drop``, another set matched — is not ours any more: found by review).
_SHAPES: dict[str, tuple[tuple[Any, ...], ...]] = {
    "fip-dnat": (("dnat", "daddr", "@fip_dnat", ()),),
    "fixed-to-fixed": (("match", "saddr", "==", "@fixed"), ("match", "daddr", "==", "@fixed"), ("accept",)),
    "fip-snat": (("snat", "saddr", "@fip_snat", ()),),
    "v6-spoof": (
        ("match", "iifname", "==", "@bridges"),
        ("match", "iifname.saddr", "!=", "@routed"),
        ("drop",),
    ),
}  # fmt: skip
#: Every chain of ours: (type, hook); its policy must be accept.
_CHAINS = {
    "prerouting": ("nat", "prerouting"),
    "output": ("nat", "output"),
    "postrouting": ("nat", "postrouting"),
}
_CHAINS6 = {"forward": ("filter", "forward")}


def _left(x: Any) -> str:
    """What a match compares, by name: a payload's field, a meta key, a concatenation."""
    if isinstance(x, dict):
        if "payload" in x:
            return str(x["payload"].get("field"))
        if "meta" in x:
            return str(x["meta"].get("key"))
        if "concat" in x and isinstance(x["concat"], list):
            return ".".join(_left(y) for y in x["concat"])
    return repr(x)


def _shape(rule: dict[str, Any]) -> tuple[tuple[Any, ...], ...]:
    """A rule's statements as :data:`_SHAPES` writes them (counters left out)."""
    out: list[tuple[Any, ...]] = []
    for e in rule.get("expr", []):
        if not isinstance(e, dict) or len(e) != 1:
            out.append(("?", repr(e)))
            continue
        ((kind, v),) = e.items()
        if kind == "counter":
            continue
        if kind == "match" and isinstance(v, dict):
            right = v.get("right")
            out.append(
                (
                    "match",
                    _left(v.get("left")),
                    v.get("op"),
                    right if isinstance(right, str) else repr(right),
                )
            )
        elif kind in ("dnat", "snat") and isinstance(v, dict):
            addr = v.get("addr")
            extra = tuple(sorted(k for k in v if k not in ("addr", "family")))
            if isinstance(addr, dict) and isinstance(addr.get("map"), dict):
                m = addr["map"]
                out.append((kind, _left(m.get("key")), m.get("data"), extra))
            else:
                out.append((kind, None, addr if isinstance(addr, str) else repr(addr), extra))
        else:
            out.append((kind,) if v is None or v == {} else (kind, repr(v)))
    return tuple(out)


def _fixed_snat_shape(t: NatTable) -> tuple[tuple[Any, ...], ...]:
    if t.snat_to:
        return (("match", "saddr", "==", "@fixed"), ("snat", None, t.snat_to, ()))
    return (
        ("match", "saddr", "==", "@fixed"),
        ("match", "oifname", "==", t.masquerade_interface),
        ("masquerade",),
    )


def _chains_ours(chains: dict[str, dict[str, Any]], want: dict[str, tuple[str, str]]) -> bool:
    """The chains are ours: these names, each of its type and hook, its policy accept."""
    return set(chains) == set(want) and all(
        (c.get("type"), c.get("hook")) == want[n] and c.get("policy", "accept") == "accept"
        for n, c in chains.items()
    )


def _rules_ours(
    rules: dict[str, list[dict[str, Any]]], want: dict[str, tuple[str, ...]], fixed_snat: Any
) -> bool:
    """Each chain holds exactly the rules of ``want`` (by comment, in order), each of its shape."""
    for chain, names in want.items():
        have = rules.get(chain, [])
        if tuple(str(r.get("comment")) for r in have) != names:
            return False
        for r, name in zip(have, names, strict=True):
            shape = fixed_snat if name == "fixed-snat" else _SHAPES.get(name)
            if _shape(r) != shape:
                return False
    return set(rules) <= set(want)


def parse(doc: dict[str, Any]) -> tuple[NatTable | None, bool]:
    """``nft -j list table ip`` output -> (table, intact). (None, True) means no table."""
    objs = doc.get("nftables", [])
    maps: dict[str, list[Any]] = {}
    sets: dict[str, list[Any]] = {}
    chains: dict[str, dict[str, Any]] = {}
    rules: dict[str, list[dict[str, Any]]] = {}
    table = False
    for o in objs:
        if "table" in o:
            table = True
        elif "map" in o:
            maps[o["map"]["name"]] = o["map"].get("elem", [])
        elif "set" in o:
            sets[o["set"]["name"]] = o["set"].get("elem", [])
        elif "chain" in o:
            chains[o["chain"]["name"]] = o["chain"]
        elif "rule" in o:
            rules.setdefault(o["rule"]["chain"], []).append(o["rule"])
    if not table:
        return None, True
    try:
        dnat = tuple(
            sorted(
                ((str(f), str(x)) for f, x in maps["fip_dnat"]),
                key=lambda p: int(netaddr.IPAddress(p[0])),
            )
        )
        snat = {(str(x), str(f)) for x, f in maps["fip_snat"]}
        fixed = tuple(
            sorted(
                (_elem_cidr(e) for e in sets["fixed"]),
                key=lambda c: (int(netaddr.IPNetwork(c).network), netaddr.IPNetwork(c).prefixlen),
            )
        )
    except (KeyError, ValueError, TypeError):
        return None, False
    snat_to: str | None = None
    masq: str | None = None
    for r in rules.get("postrouting", []):
        if r.get("comment") != "fixed-snat":
            continue
        for e in r.get("expr", []):
            if "snat" in e and isinstance(e["snat"].get("addr"), str):
                snat_to = e["snat"]["addr"]
            if "match" in e and e["match"].get("left") == {"meta": {"key": "oifname"}}:
                masq = str(e["match"].get("right"))
    t = NatTable(floating=dnat, fixed_ranges=fixed, snat_to=snat_to, masquerade_interface=masq)
    want_rules = {
        c: tuple(x for x in names if x != "fixed-snat" or snat_to or masq)
        for c, names in RULES.items()
    }
    intact = (
        snat == set(snat_pairs(dnat))
        and _chains_ours(chains, _CHAINS)
        and _rules_ours(rules, want_rules, _fixed_snat_shape(t))
        and set(maps) == {"fip_dnat", "fip_snat"}
        and set(sets) == {"fixed"}
    )
    return t, intact


def _canon6(prefix: Any) -> str:
    """An nft prefix element as the desired state writes it (RFC 5952 text)."""
    if not (isinstance(prefix, dict) and "prefix" in prefix):
        raise ValueError(f"unexpected element {prefix!r}")
    p = prefix["prefix"]
    return str(ipaddress.IPv6Network(f"{p['addr']}/{p['len']}"))


def parse6(doc: dict[str, Any]) -> tuple[tuple[tuple[str, str], ...] | None, bool]:
    """``nft -j list table ip6`` output -> (routed /64s by bridge, intact); (None, True): no
    table. (:func:`parse6_blocked` also says which bridges are blocked.)"""
    routed, _, intact = parse6_blocked(doc)
    return routed, intact


def parse6_blocked(
    doc: dict[str, Any],
) -> tuple[tuple[tuple[str, str], ...] | None, tuple[str, ...], bool]:
    """``nft -j list table ip6`` output -> (routed /64s by bridge, the bridges in ``bridges``
    without one: blocked, intact); (None, (), True): no table."""
    sets: dict[str, list[Any]] = {}
    chains: dict[str, dict[str, Any]] = {}
    rules: dict[str, list[dict[str, Any]]] = {}
    table = maps = False
    for o in doc.get("nftables", []):
        if "table" in o:
            table = True
        elif "map" in o:
            maps = True
        elif "set" in o:
            sets[o["set"]["name"]] = o["set"].get("elem", [])
        elif "chain" in o:
            chains[o["chain"]["name"]] = o["chain"]
        elif "rule" in o:
            rules.setdefault(o["rule"]["chain"], []).append(o["rule"])
    if not table:
        return None, (), True
    try:
        routed = []
        for e in sets["routed"]:
            bridge, prefix = e["concat"]
            routed.append((str(bridge), _canon6(prefix)))
        bridges = {str(b) for b in sets["bridges"]}
    except (KeyError, ValueError, TypeError):
        return (), (), False
    out = tuple(
        sorted(routed, key=lambda r: (r[0], int(ipaddress.IPv6Network(r[1]).network_address)))
    )
    with_prefix = {b for b, _ in out}
    intact = (
        not maps
        and _chains_ours(chains, _CHAINS6)
        and _rules_ours(rules, RULES6, None)
        and set(sets) == {"bridges", "routed"}
        and with_prefix <= bridges
    )
    return out, tuple(sorted(bridges - with_prefix)), intact


def _nft_argv(netns: str | None, *args: str) -> list[str]:
    nft = shutil.which("nft") or "/usr/sbin/nft"
    if netns is None:
        return [nft, *args]
    ip = shutil.which("ip") or "/usr/sbin/ip"
    return [ip, "netns", "exec", netns, nft, *args]


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        p: subprocess.CompletedProcess[str] = proc.run(
            argv,
            input=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=NFT_TIMEOUT,
        )
    except FileNotFoundError:
        raise NftError("nft is not installed (Debian: apt-get install nftables)") from None
    except subprocess.TimeoutExpired:
        raise NftError(f"{' '.join(argv)} did not finish within {NFT_TIMEOUT:.0f}s") from None
    return p


def apply(netns: str | None, text: str) -> None:
    p = _run(_nft_argv(netns, "-f", "-"), text)
    if p.returncode != 0:
        raise NftError(f"nft -f failed: {p.stderr.strip()}", returncode=p.returncode)


def _list(netns: str | None, family: str) -> dict[str, Any] | None:
    """``nft -j list table FAMILY netledger`` (None: no such table)."""
    p = _run(_nft_argv(netns, "-j", "list", "table", family, NAT_TABLE))
    if p.returncode != 0:
        if "No such file or directory" in p.stderr or "does not exist" in p.stderr:
            return None
        raise NftError(f"nft list failed: {p.stderr.strip()}", returncode=p.returncode)
    doc: dict[str, Any] = json.loads(p.stdout)
    return doc


def read(netns: str | None) -> tuple[NatTable | None, bool]:
    """Both tables as one :class:`NatTable` (None, True: neither exists)."""
    doc4 = _list(netns, "ip")
    t, intact = parse(doc4) if doc4 is not None else (None, True)
    doc6 = _list(netns, "ip6")
    if doc6 is None:
        return t, intact
    routed, blocked, intact6 = parse6_blocked(doc6)
    routed = routed or ()
    if t is None:
        return NatTable(routed_v6=routed, blocked_v6=blocked), intact and intact6
    return replace(t, routed_v6=routed, blocked_v6=blocked), intact and intact6
