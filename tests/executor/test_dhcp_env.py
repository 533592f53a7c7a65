"""dnsmasq's environment out of the executor's (executor/dhcpplan.py ``dnsmasq_env``), pure:
what the lease script needs alone. With the real dnsmasq: test_dhcp_env_netns.py."""

from __future__ import annotations

from netledger.executor.dhcpplan import DEFAULT_PATH, dnsmasq_env


def test_only_what_the_lease_script_needs_is_kept() -> None:
    executor = {
        "PATH": "/opt/bin:/usr/bin",
        "NETLEDGER_CONFIG": "/etc/netledger/host.toml",
        "SSL_CERT_FILE": "/etc/netledger/ca.pem",
        "NATS_URL": "nats://u:p@nats:4222",
        "NETLEDGER_CREDS": "/etc/netledger/executor.creds",
        "NETLEDGER_PASSWORD": "secret",
        "NETLEDGER_COMMAND_TIMEOUT": "120",
        "HOME": "/root",
        "NOTIFY_SOCKET": "/run/systemd/notify",
    }
    assert dnsmasq_env(executor) == {
        "PATH": "/opt/bin:/usr/bin",
        "NETLEDGER_CONFIG": "/etc/netledger/host.toml",
        "SSL_CERT_FILE": "/etc/netledger/ca.pem",
    }


def test_a_path_always_and_nothing_empty() -> None:
    assert dnsmasq_env({}) == {"PATH": DEFAULT_PATH}
    assert dnsmasq_env({"PATH": "", "NETLEDGER_CONFIG": ""}) == {"PATH": DEFAULT_PATH}
