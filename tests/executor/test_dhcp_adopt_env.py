"""A running dnsmasq is adopted only with the environment it would be started with now
(executor/dhcpplan.py ``environ_found``, ``env_fits``, ``plan``'s ``env``), pure.

A dnsmasq started before ``dnsmasq_env`` kept the executor's whole environment (its settings,
a password) and handed it to every lease script run; its command line is unchanged, so only its
``/proc/<pid>/environ`` tells. What counts: the kept variables and their values, and that there
is no other. One that fits is left running (no restart at each executor start). With the real
dnsmasq: test_dhcp_adopt_env_netns.py.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.executor.dhcpplan import (
    KEPT_ENV,
    DhcpPaths,
    dnsmasq_argv,
    dnsmasq_env,
    env_fits,
    environ_found,
    hosts_digest,
    plan,
)
from netledger.executor.model import (
    DhcpHost,
    DhcpSpec,
    DhcpState,
    DhcpSubnet,
    ReloadDhcp,
    StartDhcp,
    StopDhcp,
)

PATHS = DhcpPaths("/run/t")
SPEC = DhcpSpec(
    bridge="br1",
    network_id="1",
    subnets=(DhcpSubnet("1", "10.0.1.1", "255.255.255.0", "10.0.1.2", 256),),
    hosts=(DhcpHost("02:00:00:00:00:02", "a", "10.0.1.2"),),
)
WANT = {"PATH": "/usr/bin:/bin", "NETLEDGER_CONFIG": "/etc/netledger/netledger.toml"}


def _argv(spec: DhcpSpec) -> tuple[str, ...]:
    return dnsmasq_argv(spec, PATHS)


def raw(env: dict[str, str]) -> bytes:
    """``/proc/<pid>/environ``'s form."""
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items())


def found(env: dict[str, str], pid: int = 7) -> DhcpState:
    kept, others = environ_found(raw(env))
    return DhcpState("br1", pid, _argv(SPEC), hosts_digest(SPEC), env=kept, env_others=others)


def test_environ_found_keeps_values_of_the_kept_variables_and_names_of_the_others() -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "NETLEDGER_PASSWORD": "planted-secret",
        "NETLEDGER_CONFIG": "/etc/netledger/a=b.toml",  # '=' in a value
        "EMPTY": "",
    }
    kept, others = environ_found(raw(env))
    assert kept == (("NETLEDGER_CONFIG", "/etc/netledger/a=b.toml"), ("PATH", "/usr/bin:/bin"))
    assert others == ("EMPTY", "NETLEDGER_PASSWORD")
    assert b"planted-secret" not in msgspec.json.encode(found(env))  # the state never holds it
    # a kept name twice is not what dnsmasq_env gives: counted among the others
    assert environ_found(b"PATH=/a\0PATH=/b\0") == ((("PATH", "/a"),), ("PATH",))
    assert environ_found(b"") == ((), ())


def test_plan_replaces_a_dnsmasq_whose_environment_is_not_the_wanted_one() -> None:
    d = hosts_digest(SPEC)
    replaced = (StopDhcp("br1", 7, "1", "replaced"), StartDhcp(SPEC, drift=False))

    def ops(state: DhcpState, recorded: dict[str, str] | None = None) -> object:
        return plan(
            [SPEC], [state], _argv, {"br1": d} if recorded is None else recorded, None, WANT
        )

    assert ops(found(WANT)) == ()  # right: left running
    assert ops(found(WANT), {}) == (ReloadDhcp(SPEC, 7, "adopted"),)  # right, unknown to the log
    assert ops(found({**WANT, "NETLEDGER_PASSWORD": "s"})) == replaced  # one more
    assert ops(found({**WANT, "NETLEDGER_PASSWORD": "s"}), {}) == replaced  # not adopted
    assert ops(found({"PATH": WANT["PATH"]})) == replaced  # one missing
    assert ops(found({**WANT, "PATH": "/sbin"})) == replaced  # one changed
    assert ops(found({**WANT, "SSL_CERT_FILE": ""})) == replaced  # set, though empty
    unread = DhcpState("br1", 7, _argv(SPEC), d)  # environ not readable: not replaced on a guess
    assert ops(unread) == ()
    # with no env, as before: the environment is not looked at
    assert plan([SPEC], [found({"SECRET": "x"})], _argv, {"br1": d}) == ()


def test_what_dnsmasq_env_gives_fits() -> None:
    """A dnsmasq started with dnsmasq_env(executor) fits that same executor's next start."""
    executor = {"PATH": "/usr/bin", "NATS_URL": "nats://u:p@x", "HOME": "/root"}
    want = dnsmasq_env(executor)
    kept, others = environ_found(raw(want))
    assert env_fits(DhcpState("br1", 7, env=kept, env_others=others), want)
    kept, others = environ_found(raw(executor))  # the whole environment, as before
    assert not env_fits(DhcpState("br1", 7, env=kept, env_others=others), want)


environments = st.dictionaries(
    st.sampled_from([*KEPT_ENV, "NATS_URL", "NETLEDGER_PASSWORD", "HOME"]),
    st.sampled_from(["", "/usr/bin", "/etc/x.toml", "secret"]),
)


@settings(max_examples=200, deadline=None)
@given(environments, environments)
def test_replaced_exactly_when_the_environment_differs(
    running: dict[str, str], executor: dict[str, str]
) -> None:
    """Replaced iff dnsmasq's environment is not what dnsmasq_env gives the executor; after
    the replacement (a start with that environment) the plan has nothing left to do."""
    want = dnsmasq_env(executor)
    ops = plan([SPEC], [found(running)], _argv, {"br1": hosts_digest(SPEC)}, None, want)
    assert (ops != ()) == (running != want)
    if ops:
        assert ops == (StopDhcp("br1", 7, "1", "replaced"), StartDhcp(SPEC, drift=False))
        started = found(want, pid=8)
        assert plan([SPEC], [started], _argv, {"br1": hosts_digest(SPEC)}, None, want) == ()
