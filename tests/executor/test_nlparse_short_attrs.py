"""An attribute shorter than the value nlparse reads from it is taken as absent, never read past.

The kernel never sends one; a short attribute used to be read through its end — into the next
attribute's header (a wrong value), or past the message's end (``struct.error`` — the dump memo
decodes a message alone, from a copy that ends there). Byte-built messages, pure.
"""

from __future__ import annotations

import struct

from netledger.executor import nlencode, nlparse
from netledger.executor.dumpmemo import LinkMemo

U32 = struct.Struct("=I")


def _attr(atype: int, payload: bytes, pad: bool = True) -> bytes:
    """An attribute; ``pad`` False: not padded to 4 bytes (it ends the message)."""
    out = nlparse.NLA_HDR.pack(nlparse.NLA_HDR.size + len(payload), atype) + payload
    return out + b"\0" * (-len(out) % 4) if pad else out


def _link(*attrs: bytes, index: int = 7) -> bytes:
    return nlencode.ifinfo(index) + _attr(nlparse.IFLA_IFNAME, b"br7\0") + b"".join(attrs)


def _info(kind: str, *data: bytes) -> bytes:
    inner = _attr(nlparse.IFLA_INFO_KIND, kind.encode() + b"\0")
    inner += _attr(nlparse.IFLA_INFO_DATA, b"".join(data), pad=False)
    return _attr(nlparse.IFLA_LINKINFO, inner, pad=False)


def _parse(msg: bytes) -> nlparse.Link:
    return nlparse.link(msg, 0, len(msg))


def test_a_short_stp_state_ending_the_message_is_absent() -> None:
    msg = _link(
        _info(
            "bridge",
            _attr(nlparse.IFLA_BR_FORWARD_DELAY, U32.pack(1500)),
            _attr(nlparse.IFLA_BR_STP_STATE, b"\1\0", pad=False),  # 2 bytes, then the end
        )
    )
    x = _parse(msg)
    assert (x.kind, x.forward_delay, x.stp) == ("bridge", 1500, None)


def test_an_empty_forward_delay_does_not_read_the_next_header() -> None:
    stp = _attr(nlparse.IFLA_BR_STP_STATE, U32.pack(0))
    x = _parse(_link(_info("bridge", _attr(nlparse.IFLA_BR_FORWARD_DELAY, b""), stp)))
    assert (x.forward_delay, x.stp) == (None, 0)


def test_the_memo_keeps_what_a_decode_gives_for_a_short_bridge_attribute() -> None:
    """A short attribute leaves the walk's rest uncut (compared whole): a change there decodes."""
    timer = _attr(nlparse.IFLA_BR_HELLO_TIMER, bytes(8))
    short = _attr(nlparse.IFLA_BR_STP_STATE, b"\1\0")
    fd = _attr(nlparse.IFLA_BR_FORWARD_DELAY, U32.pack(1500))
    first = _link(_info("bridge", timer, short, fd, _attr(99, U32.pack(1))))
    second = _link(_info("bridge", timer, short, fd, _attr(99, U32.pack(2))))
    memo = LinkMemo(lambda x: x)
    for msg in (first, second):
        memo.begin()
        assert memo.link(msg, 0, len(msg)) == _parse(msg)
        memo.done()
    assert memo.decoded == 2


def test_short_fixed_size_link_attributes_are_absent() -> None:
    master = _attr(nlparse.IFLA_MASTER, U32.pack(9))
    x = _parse(_link(_attr(nlparse.IFLA_MTU, b""), master, _attr(nlparse.IFLA_LINK, b"\1")))
    assert (x.mtu, x.master, x.parent) == (None, 9, None)


def test_short_vxlan_and_vlan_attributes_are_absent() -> None:
    vx = _parse(
        _link(
            _info(
                "vxlan",
                _attr(nlparse.IFLA_VXLAN_ID, b"\1\2"),
                _attr(nlparse.IFLA_VXLAN_LINK, b""),
                _attr(nlparse.IFLA_VXLAN_PORT, b"\1", pad=False),
            )
        )
    )
    assert (vx.vni, vx.parent, vx.port) == (None, None, None)
    vlan = _parse(_link(_info("vlan", _attr(nlparse.IFLA_VLAN_ID, b"\5", pad=False))))
    assert vlan.vlan is None


def test_a_short_address_flags_attribute_keeps_the_header_flags() -> None:
    body = nlparse.IFADDR.pack(2, 24, 0x80, 0, 3) + _attr(nlparse.IFA_LOCAL, bytes([10, 0, 0, 1]))
    body += _attr(nlparse.IFA_FLAGS, b"\1", pad=False)
    x = nlparse.addr(body, 0, len(body))
    assert (x.address, x.flags) == ("10.0.0.1", 0x80)
