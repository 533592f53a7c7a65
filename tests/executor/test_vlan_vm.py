"""VLAN mode on a real 802.1Q kernel: the executor's vlan<N> links, tagged traffic, re-runs.

This host's kernel may lack ``8021q``. Then one VM (Debian's stock kernel under qemu, see
``tests/vm/README.md``) is booted per test session and ``tests/vm/guest_vlan.py`` runs every
VLAN check inside it; each test below asserts on one group of its JSON results. Where the host
kernel has 8021q, the same script runs directly on the host. No skipping: without qemu or the
kernel package the tests fail and say why (.ci/vm-deps installs what is needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.vm.harness import GUEST_RESULTS, REPO, VlanVm, VmError

GUEST_SCRIPT = "tests/vm/guest_vlan.py"
PROBE_NS = "nlv-probe-host"


def host_has_8021q() -> bool:
    """Try the real thing in a scratch namespace (module autoload included)."""
    subprocess.run(["ip", "netns", "add", PROBE_NS], capture_output=True, check=False)
    try:
        p = subprocess.run(
            ["ip", "-n", PROBE_NS, "-batch", "-"],
            input="link add d0 type dummy\nlink add link d0 name d0.7 type vlan id 7\n",
            capture_output=True,
            text=True,
            check=False,
        )
        return p.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", PROBE_NS], capture_output=True, check=False)


@pytest.fixture(scope="session")
def vlan_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.fail("the VLAN checks need root (network namespaces, qemu's 9p export of /)")
    work = tmp_path_factory.mktemp("vlan")
    t0 = time.monotonic()
    if host_has_8021q():
        out = work / "results.json"
        p = subprocess.run(
            [sys.executable, GUEST_SCRIPT, "--out", str(out)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        where, log = "host", p.stdout + p.stderr
    else:
        vm = VlanVm()
        try:
            vm.prepare()
            res = vm.run(
                ["python", GUEST_SCRIPT, "--out", f"{GUEST_RESULTS}/results.json"],
                timeout=900,
                workdir=work,
            )
        except VmError as exc:
            pytest.fail(f"cannot run the 802.1Q VM: {exc}")
        out = res.results / "results.json"
        where, log = f"vm ({res.accel})", res.describe()
        if not out.exists():
            pytest.fail(f"the guest wrote no results:\n{log}")
        print(
            f"\nVLAN VM: prepare {vm.timings['prepare_s']:.1f}s, qemu {res.wall_s:.1f}s, "
            f"guest boot {res.guest_times.get('init_done_s')}s, qemu peak RSS "
            f"{res.max_rss_mb:.0f} MB"
        )
    if not out.exists():
        pytest.fail(f"the VLAN script wrote no results ({where}):\n{log[-6000:]}")
    data: dict[str, Any] = json.loads(out.read_text())
    data["where"], data["log"] = where, log
    data["timings"]["session_total"] = round(time.monotonic() - t0, 1)
    print(f"VLAN checks ({where}): {data['timings']}")
    return data


def _assert(results: dict[str, Any], *names: str) -> None:
    checks = results["checks"]
    missing = [n for n in names if n not in checks]
    failed = {n: checks[n] for n in names if n in checks and not checks[n]["ok"]}
    if missing or failed:
        ran = {n: c["ok"] for n, c in checks.items()}
        pytest.fail(
            f"({results['where']}) missing checks {missing}, failed: "
            f"{json.dumps(failed, indent=1, default=str)[-5000:]}\nall: {ran}\n"
            f"--- log ---\n{results['log'][-4000:]}"
        )


def test_kernel_has_8021q(vlan_results: dict[str, Any]) -> None:
    _assert(vlan_results, "kernel_8021q")


def test_executor_builds_vlan_links_into_bridges(vlan_results: dict[str, Any]) -> None:
    _assert(
        vlan_results,
        "executor_first_h1",
        "executor_first_h2",
        *(f"links_{h}_{p}" for h in ("h1", "h2") for p in ("alpha", "beta")),
    )


def test_tagged_traffic_within_a_vlan_passes(vlan_results: dict[str, Any]) -> None:
    _assert(
        vlan_results,
        "ping_alpha_h1_to_h2",
        "ping_beta_h1_to_h2",
        "ping_alpha_h2_to_gateway_on_h1",
        "tagged_frames_received_on_h2",
    )


def test_no_traffic_across_vlans(vlan_results: dict[str, Any]) -> None:
    _assert(vlan_results, "intruder_reachable_in_own_vlan", "no_traffic_across_vlans")


def test_second_executor_run_changes_nothing(vlan_results: dict[str, Any]) -> None:
    _assert(vlan_results, "executor_second_noop_h1", "executor_second_noop_h2")


@pytest.mark.timeout(2400)  # the session's VM: apt-get download + boot + checks (each bounded)
def test_every_check_passed(vlan_results: dict[str, Any]) -> None:
    """Catches checks added to the guest script but not asserted above, and scenario errors."""
    _assert(vlan_results, *vlan_results["checks"])
    assert vlan_results["ok"]
