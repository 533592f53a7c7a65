"""The executor's view skips what the fold refuses as the service does (events/state.py
``fold_message``): an undecodable message, an event whose values the fold cannot take —
never an exception into its follower (which would stop the executor's reading for good)."""

from __future__ import annotations

from netledger.events.codec import decode
from netledger.events.errors import DecodeError
from netledger.executor.view import HostView
from tests.poison import stored_network_created


def test_the_view_skips_what_the_fold_refuses() -> None:
    view = HostView(None, "h1")  # type: ignore[arg-type]  # folds only
    env = decode(stored_network_created(gateway="10.78.0.1"))  # outside its network
    view._on_message(1, "netledger.evt.registry", env, None, None)  # type: ignore[arg-type]
    assert "77" not in view.state.networks
    assert view.state.seq_of("netledger.evt.registry") == 1
    err = DecodeError("not msgpack: FormatError")
    view._on_message(2, "netledger.evt.network.7", None, err, None)  # type: ignore[arg-type]
    assert view.state.seq_of("netledger.evt.network.7") == 2
    try:
        decode(stored_network_created(cidr=True))
    except DecodeError as exc:
        assert "cidr is bool" in exc.message
    else:
        raise AssertionError("a bool cidr decoded")
