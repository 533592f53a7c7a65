"""A running dnsmasq is adopted only with the environment it would be started with now
(executor/dhcpplan.py ``environ_found``, ``env_fits``, ``plan``'s ``env``), pure.

A dnsmasq started before ``dnsmasq_env`` kept the executor's whole environment (its settings,
a password) and handed it to every lease script run; its command line is unchanged, so only its
``/proc/<pid>/environ`` tells. What counts: the kept variables and their values, and that there
is no other. One that fits is left running (no restart at each executor start). What is wanted
is a constant (``dnsmasq_env``): it does not follow the executor's own environment, so
executors of one host that differ there do not replace each other's dnsmasq. With the real
dnsmasq: test_dhcp_adopt_env_netns.py, test_dhcp_env_two_runs_netns.py.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from netledger.executor.dhcpplan import (
    KEPT_ENV,
    SYSTEM_PATH,
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
WANT = dnsmasq_env()


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
        "PATH": "/opt/a=b/bin:/usr/bin",  # '=' in a value
        "NETLEDGER_PASSWORD": "planted-secret",
        "NETLEDGER_CONFIG": "/etc/netledger/netledger.toml",  # kept by an older executor
        "EMPTY": "",
    }
    kept, others = environ_found(raw(env))
    assert kept == (("PATH", "/opt/a=b/bin:/usr/bin"),)
    assert others == ("EMPTY", "NETLEDGER_CONFIG", "NETLEDGER_PASSWORD")
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
    assert ops(found({})) == replaced  # one missing
    assert ops(found({**WANT, "PATH": "/sbin"})) == replaced  # one changed
    assert ops(found({**WANT, "SSL_CERT_FILE": ""})) == replaced  # set, though empty
    # started by the executor before dnsmasq_env was a constant: its PATH and its config file
    # (now on the script's command line) - replaced once
    assert ops(found({"PATH": "/opt/bin:/usr/bin"})) == replaced
    assert ops(found({**WANT, "NETLEDGER_CONFIG": "/etc/netledger/netledger.toml"})) == replaced
    unread = DhcpState("br1", 7, _argv(SPEC), d)  # environ not readable: not replaced on a guess
    assert ops(unread) == ()
    # with no env, as before: the environment is not looked at
    assert plan([SPEC], [found({"SECRET": "x"})], _argv, {"br1": d}) == ()


def test_what_dnsmasq_env_gives_fits() -> None:
    """A dnsmasq started with dnsmasq_env() fits the next start of any executor."""
    executor = {"PATH": SYSTEM_PATH, "NATS_URL": "nats://u:p@x", "HOME": "/root"}
    want = dnsmasq_env()
    kept, others = environ_found(raw(want))
    assert env_fits(DhcpState("br1", 7, env=kept, env_others=others), want)
    kept, others = environ_found(raw(executor))  # the whole environment, as before
    assert not env_fits(DhcpState("br1", 7, env=kept, env_others=others), want)


environments = st.dictionaries(
    st.sampled_from(
        [*KEPT_ENV, "NETLEDGER_CONFIG", "SSL_CERT_FILE", "NATS_URL", "NETLEDGER_PASSWORD", "HOME"]
    ),
    st.sampled_from(["", SYSTEM_PATH, "/usr/bin", "/etc/x.toml", "secret"]),
)


@settings(max_examples=200, deadline=None)
@given(environments)
def test_replaced_exactly_when_the_environment_differs(running: dict[str, str]) -> None:
    """Replaced iff dnsmasq's environment is not what dnsmasq_env gives; after the
    replacement (a start with that environment) the plan has nothing left to do."""
    want = dnsmasq_env()
    ops = plan([SPEC], [found(running)], _argv, {"br1": hosts_digest(SPEC)}, None, want)
    assert (ops != ()) == (running != want)
    if ops:
        assert ops == (StopDhcp("br1", 7, "1", "replaced"), StartDhcp(SPEC, drift=False))
        started = found(want, pid=8)
        assert plan([SPEC], [started], _argv, {"br1": hosts_digest(SPEC)}, None, want) == ()
