"""A throwaway VM with Debian's stock kernel, for tests that need kernel features this host lacks.

The host kernel has no 802.1Q (``8021q``), so the VLAN tests boot Debian's own kernel under qemu
and run a command of this repository inside it. Nothing is installed on the host beyond qemu
(``.ci/vm-deps``): the kernel package and ``busybox-static`` are fetched with ``apt-get download``
and unpacked in Python into a cache directory that later runs reuse. The guest sees the host's
root read-only over 9p, so it runs this checkout with this venv at the very same paths; a second,
writable 9p share carries the command in and its output, exit code and result files out.

See ``tests/vm/README.md`` for the boot sequence, timings and memory.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import lzma
import os
import re
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
INIT_SCRIPT = HERE / "init.sh"
#: Where the writable results share is mounted inside the guest (after the chroot).
GUEST_RESULTS = "/run/nlvm"

#: Modules the guest needs; their dependencies are added from each module's ``.modinfo``.
#: 9p + virtio: the two shares. 8021q/bridge/veth: the VLAN checks. nf_tables & co: the executor
#: reads (and may write) its NAT table with ``nft``. vxlan/dummy: cheap, for vxlan-mode checks.
WANTED_MODULES = (
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "8021q",
    "bridge",
    "veth",
    "dummy",
    "vxlan",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
)
KERNEL_APPEND = (
    "console=ttyS0 quiet loglevel=3 panic=-1 mitigations=off tsc=reliable no_timer_check"
    " rdinit=/init"
)
XZ_MAGIC = b"\xfd7zXZ\x00"
#: Bump when the unpacking logic changes: cached kernel directories are then rebuilt.
PREPARE_VERSION = 2


class VmError(RuntimeError):
    """The VM could not be prepared or run; the message says why (tests fail with it)."""


def default_cache_dir() -> Path:
    env = os.environ.get("NETLEDGER_VM_CACHE")
    if env:
        return Path(env)
    system = Path("/var/cache/netledger-vm")
    if os.geteuid() == 0 and os.access("/var/cache", os.W_OK):
        return system
    return Path.home() / ".cache" / "netledger-vm"


def _run(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> str:
    try:
        p = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise VmError(f"{argv[0]} not found (Debian: run .ci/vm-deps)") from None
    except subprocess.TimeoutExpired:
        raise VmError(f"{' '.join(argv)} timed out after {timeout:.0f}s") from None
    if p.returncode != 0:
        raise VmError(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p.stdout


# --- kernel and busybox ---------------------------------------------------------------------


def pick_kernel_package() -> str:
    """The Debian kernel image package to boot: $NETLEDGER_VM_KERNEL, else what the
    ``linux-image-amd64`` meta-package currently depends on (the distribution's kernel)."""
    pinned = os.environ.get("NETLEDGER_VM_KERNEL")
    if pinned:
        return pinned
    out = _run(["apt-cache", "depends", "linux-image-amd64"])
    m = re.search(r"Depends:\s*(linux-image-\S+-amd64)\b", out)
    if m:
        return m.group(1)
    # No meta-package: the newest versioned image listed by apt-cache search.
    out = _run(["apt-cache", "search", "--names-only", r"^linux-image-[0-9].*-amd64$"])
    names = [line.split(" ", 1)[0] for line in out.splitlines() if line.strip()]
    names = [n for n in names if not n.endswith(("-dbg", "-unsigned"))]
    if not names:
        raise VmError(
            "no linux-image-*-amd64 package known to apt (run `apt-get update`, or .ci/vm-deps)"
        )
    return max(names, key=lambda n: [int(x) for x in re.findall(r"\d+", n)])


def apt_download(package: str, dest: Path) -> Path:
    """``apt-get download`` one package into ``dest`` (reused when already there)."""
    dest.mkdir(parents=True, exist_ok=True)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    _run(["apt-get", "download", "-q", package], cwd=dest)
    found = sorted(dest.glob(f"{package}_*.deb"))
    if not found:
        raise VmError(f"apt-get download {package} left no .deb in {dest}")
    return found[-1]


def _deb_members(deb: Path) -> Iterable[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Stream the data tarball of a .deb (no unpacking to disk)."""
    proc = subprocess.Popen(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                yield info, tar
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.wait() != 0:
            raise VmError(f"dpkg-deb --fsys-tarfile {deb} failed: {err.strip()}")


def modinfo(ko: bytes) -> list[tuple[str, str]]:
    """The ``key=value`` entries of a kernel module's ``.modinfo`` ELF section."""
    if ko[:4] != b"\x7fELF" or ko[4] != 2:
        raise VmError("not a 64-bit ELF kernel module")
    shoff = struct.unpack_from("<Q", ko, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", ko, shoff + i * shentsize
        )
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = ko.index(b"\0", stroff + name)
        if ko[stroff + name : end] == b".modinfo":
            out = []
            for entry in ko[off : off + size].split(b"\0"):
                key, eq, value = entry.decode(errors="replace").partition("=")
                if eq:
                    out.append((key, value))
            return out
    return []


@dataclass
class ModInfo:
    depends: list[str]
    softdeps: list[str]  # "softdep=pre: a b": loaded before, by name or alias (crc32c)
    aliases: list[str]

    @classmethod
    def parse(cls, ko: bytes) -> ModInfo:
        info = modinfo(ko)
        pre: list[str] = []
        for key, value in info:
            if key == "softdep":
                m = re.search(r"pre:\s*([^:]*?)(?:\s+post:.*)?$", value)
                pre += m.group(1).split() if m else []
        return cls(
            depends=[_norm(d) for k, v in info if k == "depends" for d in v.split(",") if d],
            softdeps=[_norm(d) for d in pre],
            aliases=[v for k, v in info if k == "alias"],
        )


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The uncompressed kernel (PVH entry point: qemu boots it without firmware)."""
    start = vmlinuz.find(XZ_MAGIC)
    if start < 0:
        raise VmError("no xz stream in vmlinuz (not a Debian amd64 kernel?)")
    # The payload ends with padding / trailer data; a decompressor object stops at stream end.
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(vmlinuz[start:])


def _norm(name: str) -> str:
    return name.replace("-", "_")


def prepare_kernel(deb: Path, out: Path, wanted: Iterable[str] = WANTED_MODULES) -> None:
    """Unpack ``vmlinux`` and the module closure of ``wanted`` (load order in modules.order)."""
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "modules").mkdir(parents=True)
    mods: dict[str, ModInfo] = {}
    builtin: set[str] = set()
    # Pass 1: vmlinux, every module's dependencies, the list of built-in modules.
    for info, tar in _deb_members(deb):
        name = info.name
        if not info.isfile():
            continue
        if re.search(r"/boot/vmlinuz-", name):
            f = tar.extractfile(info)
            assert f is not None
            (tmp / "vmlinux").write_bytes(extract_vmlinux(f.read()))
        elif name.endswith(".ko"):
            f = tar.extractfile(info)
            assert f is not None
            mods[_norm(Path(name).stem)] = ModInfo.parse(f.read())
        elif name.endswith("/modules.builtin"):
            f = tar.extractfile(info)
            assert f is not None
            builtin = {_norm(Path(line).stem) for line in f.read().decode().split()}
    if not (tmp / "vmlinux").exists():
        raise VmError(f"no /boot/vmlinuz-* in {deb.name}")
    order: list[str] = []
    by_alias: dict[str, list[str]] = {}
    for mod, mi in sorted(mods.items()):
        for alias in mi.aliases:
            by_alias.setdefault(_norm(alias), []).append(mod)

    def resolve(soft: str) -> str | None:
        if soft in mods or soft in builtin:
            return soft
        # Several providers (crc32c: generic, intel...): the portable one runs on -cpu qemu64.
        cands = sorted(by_alias.get(soft, []), key=lambda m: (not m.endswith("_generic"), m))
        return cands[0] if cands else None

    def visit(mod: str, path: tuple[str, ...]) -> None:
        if mod in order or mod in builtin:
            return
        if mod not in mods:
            raise VmError(f"kernel module {mod} is neither in {deb.name} nor built in")
        if mod in path:
            raise VmError(f"module dependency cycle: {' -> '.join((*path, mod))}")
        for soft in mods[mod].softdeps:
            target = resolve(soft)
            if target is not None and target not in path:
                visit(target, (*path, mod))
        for d in mods[mod].depends:
            visit(d, (*path, mod))
        order.append(mod)

    for mod in wanted:
        visit(_norm(mod), ())
    # Pass 2: the modules themselves.
    needed = set(order)
    for info, tar in _deb_members(deb):
        if info.isfile() and info.name.endswith(".ko") and _norm(Path(info.name).stem) in needed:
            f = tar.extractfile(info)
            assert f is not None
            (tmp / "modules" / f"{_norm(Path(info.name).stem)}.ko").write_bytes(f.read())
    (tmp / "modules.order").write_text("".join(f"{m}.ko\n" for m in order))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def prepare_busybox(deb: Path, out: Path) -> None:
    for info, tar in _deb_members(deb):
        if info.isfile() and info.name.endswith("/bin/busybox"):
            f = tar.extractfile(info)
            assert f is not None
            part = out.with_name(out.name + ".part")
            part.write_bytes(f.read())
            part.chmod(0o755)
            part.rename(out)
            return
    raise VmError(f"no bin/busybox in {deb.name}")


# --- initramfs --------------------------------------------------------------------------------


class Cpio:
    """A minimal ``newc`` cpio writer (what the kernel unpacks as initramfs); no root needed
    for device nodes because they are only records in the archive."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        nb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % v for v in fields) + nb)
        self.buf.write(b"\0" * (-(110 + len(nb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initramfs(kernel_dir: Path, busybox: Path, out: Path) -> None:
    c = Cpio()
    for d in ("bin", "dev", "proc", "sys", "host", "modules"):
        c.dir(d)
    c.chardev("dev/console", 5, 1)
    c.chardev("dev/null", 1, 3)
    c.file("bin/busybox", busybox.read_bytes(), 0o755)
    c.file("init", INIT_SCRIPT.read_bytes(), 0o755)
    c.file("modules.order", (kernel_dir / "modules.order").read_bytes())
    for ko in sorted((kernel_dir / "modules").glob("*.ko")):
        c.file(f"modules/{ko.name}", ko.read_bytes())
    part = out.with_name(out.name + ".part")
    part.write_bytes(gzip.compress(c.finish(), compresslevel=1))
    part.rename(out)


# --- running ----------------------------------------------------------------------------------


def kvm_candidate() -> bool:
    """Hardware virtualisation visible to us: the CPU flag and a usable /dev/kvm. (A /dev/kvm
    without vmx/svm exists on some sandboxes and hangs a stock kernel: not a candidate.)"""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set(re.findall(r"\b(vmx|svm)\b", cpuinfo))
    return bool(flags) and os.access("/dev/kvm", os.R_OK | os.W_OK)


@dataclass
class GuestResult:
    rc: int | None  # the guest command's exit code; None: it never reported one
    out: str  # the command's stdout + stderr
    console: str  # the serial console (kernel + init messages)
    results: Path  # the results share on the host (files the command wrote)
    accel: str
    wall_s: float  # qemu launch -> qemu exit
    qemu_rc: int | None
    max_rss_mb: float
    guest_times: dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        extra = ""
        err = self.results / "init-error"
        if err.exists():
            extra = f"\ninit error: {err.read_text().strip()}"
        return (
            f"guest rc={self.rc} qemu rc={self.qemu_rc} accel={self.accel} "
            f"wall={self.wall_s:.1f}s{extra}\n--- guest output (tail) ---\n{self.out[-6000:]}"
            f"\n--- console (tail) ---\n{self.console[-3000:]}"
        )


class VlanVm:
    """Prepare once (cached), then ``run`` a command of this repository inside the VM."""

    def __init__(
        self,
        cache_dir: Path | None = None,
        memory_mb: int = 768,
        python: str | None = None,
        accel: str | None = None,
    ) -> None:
        self.cache = cache_dir or default_cache_dir()
        self.memory_mb = memory_mb
        self.python = python or sys.executable
        self.forced_accel = accel or os.environ.get("NETLEDGER_VM_ACCEL")
        self.kernel_dir: Path | None = None
        self.initramfs: Path | None = None
        self.timings: dict[str, float] = {}
        self._accel: str | None = None

    # --- preparation ----------------------------------------------------------------------

    def prepare(self) -> None:
        t0 = time.monotonic()
        self.cache.mkdir(parents=True, exist_ok=True)
        # Two test sessions preparing at once would race on the same cache entries.
        with open(self.cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._prepare()
        self.timings["prepare_s"] = time.monotonic() - t0

    def _prepare(self) -> None:
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise VmError("qemu-system-x86_64 is not installed (Debian: .ci/vm-deps)")
        if shutil.which("timeout") is None:
            raise VmError("timeout (coreutils) is not installed")
        self.cache.mkdir(parents=True, exist_ok=True)
        debs = self.cache / "debs"
        try:
            package = pick_kernel_package()
        except VmError:
            # Offline with a warm cache: boot the kernel we already have.
            cached = sorted(self.cache.glob("kernel-linux-image-*"))
            if not cached:
                raise
            package = cached[-1].name.removeprefix("kernel-")
        kernel_dir = self.cache / f"kernel-{package}"
        wanted_key = hashlib.sha256(
            f"{PREPARE_VERSION} {' '.join(WANTED_MODULES)}".encode()
        ).hexdigest()[:12]
        stamp = kernel_dir / "wanted"
        if not (stamp.exists() and stamp.read_text() == wanted_key):
            prepare_kernel(apt_download(package, debs), kernel_dir)
            stamp.write_text(wanted_key)
        busybox = self.cache / "busybox"
        if not busybox.exists():
            prepare_busybox(apt_download("busybox-static", debs), busybox)
        h = hashlib.sha256()
        for part in (
            INIT_SCRIPT.read_bytes(),
            busybox.read_bytes(),
            (kernel_dir / "modules.order").read_bytes(),
            package.encode(),
        ):
            h.update(hashlib.sha256(part).digest())
        initramfs = self.cache / f"initramfs-{h.hexdigest()[:16]}.cpio.gz"
        if not initramfs.exists():
            for old in self.cache.glob("initramfs-*.cpio.gz"):
                old.unlink()
            build_initramfs(kernel_dir, busybox, initramfs)
        self.kernel_dir, self.initramfs = kernel_dir, initramfs
        # Debian moved to a newer kernel: drop the old one (~140 MB each with its .deb).
        for old in self.cache.glob("kernel-linux-image-*"):
            if old != kernel_dir:
                shutil.rmtree(old, ignore_errors=True)
        for deb in debs.glob("linux-image-*.deb"):
            if not deb.name.startswith(f"{package}_"):
                deb.unlink()
        self.package = package

    # --- running --------------------------------------------------------------------------

    def qemu_argv(self, accel: str, results: Path) -> list[str]:
        assert self.kernel_dir is not None and self.initramfs is not None
        if accel == "kvm":
            machine = ["-accel", "kvm", "-cpu", "host"]
        else:
            # qemu64 is ~1.7x faster than -cpu max under TCG; tb-size bounds the code cache.
            machine = ["-accel", "tcg,thread=multi,tb-size=64", "-cpu", "qemu64"]
        return [
            "qemu-system-x86_64",
            "-M", "q35",
            *machine,
            "-smp", "1",
            "-m", str(self.memory_mb),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio",
            "-kernel", str(self.kernel_dir / "vmlinux"),
            "-initrd", str(self.initramfs),
            "-append", KERNEL_APPEND,
            "-fsdev", "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
            "-fsdev", f"local,id=results,path={results},security_model=none",
            "-device", "virtio-9p-pci,fsdev=results,mount_tag=results",
        ]  # fmt: skip

    def accel(self) -> str:
        """``kvm`` when hardware virtualisation really works (tried with a tiny boot), else
        ``tcg``. $NETLEDGER_VM_ACCEL forces one."""
        if self._accel is None:
            if self.forced_accel:
                self._accel = self.forced_accel
            elif kvm_candidate():
                probe = self._boot(["true"], timeout=60, accel="kvm", workdir=None)
                shutil.rmtree(probe.results, ignore_errors=True)
                self._accel = "kvm" if probe.rc == 0 else "tcg"
            else:
                self._accel = "tcg"
        return self._accel

    def run(
        self,
        argv: list[str],
        timeout: float = 900,
        workdir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> GuestResult:
        """Boot, run ``argv`` in the guest as root (cwd: the repo root), power off.

        ``argv[0] == "python"`` means this venv's interpreter. The guest's results share is
        ``GUEST_RESULTS`` inside the guest and ``GuestResult.results`` on the host."""
        if self.initramfs is None:
            self.prepare()
        return self._boot(argv, timeout, self.accel(), workdir, env)

    def _boot(
        self,
        argv: list[str],
        timeout: float,
        accel: str,
        workdir: Path | None,
        env: dict[str, str] | None = None,
    ) -> GuestResult:
        results = Path(tempfile.mkdtemp(prefix="nlvm-", dir=workdir))
        if argv and argv[0] == "python":
            argv = [self.python, *argv[1:]]
        venv_bin = str(Path(self.python).parent)
        environ = {
            "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/run/tmp",
            "TMPDIR": "/run/tmp",
            "LANG": "C.UTF-8",
            # The host root is read-only in the guest: no bytecode writes to attempt.
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "NETLEDGER_IN_VM": "1",
            **(env or {}),
        }
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in environ.items())
        (results / "cmd.sh").write_text(
            f"cd {shlex.quote(str(REPO))} || exit 126\nexport {exports}\nexec {shlex.join(argv)}\n"
        )
        console_path = results / "console.log"
        t0 = time.monotonic()
        with open(console_path, "wb") as console:
            proc = subprocess.Popen(
                ["timeout", "-k", "10", str(int(timeout)), *self.qemu_argv(accel, results)],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                # Own process group: on an interrupt we signal exactly our timeout + qemu.
                start_new_session=True,
            )
            qemu_rc, rss_kb = self._wait(proc, timeout + 30)
        wall = time.monotonic() - t0
        rc_file = results / "rc"
        rc = int(rc_file.read_text().strip()) if rc_file.exists() else None
        times: dict[str, float] = {}
        try:
            start, mounted = (results / "init-times").read_text().split()
            times = {"kernel_to_init_s": float(start), "init_done_s": float(mounted)}
            times["guest_end_s"] = float((results / "end-time").read_text())
        except (OSError, ValueError):
            pass
        out = (
            (results / "out.log").read_text(errors="replace")
            if (results / "out.log").exists()
            else ""
        )
        return GuestResult(
            rc=rc,
            out=out,
            console=console_path.read_text(errors="replace"),
            results=results,
            accel=accel,
            wall_s=wall,
            qemu_rc=qemu_rc,
            max_rss_mb=rss_kb / 1024,
            guest_times=times,
        )

    @staticmethod
    def _wait(proc: subprocess.Popen[bytes], limit: float) -> tuple[int | None, int]:
        """Wait for ``timeout`` (and so qemu) with wait4, to get qemu's peak RSS."""
        deadline = time.monotonic() + limit
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    return proc.returncode, usage.ru_maxrss
                if time.monotonic() > deadline:
                    raise TimeoutError
                time.sleep(0.1)
        except BaseException:
            # Interrupted (or `timeout` itself stuck): end our own process group only.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            if isinstance(sys.exc_info()[1], TimeoutError):
                return None, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            raise
