"""Probe the host for what the QEMU argv builder needs: the binary and its version,
the UEFI firmware files, and an accelerator that really runs guests at speed.

`/dev/kvm` existing proves little: a software ("PVM") KVM, or a nested one without
hardware support, runs guest kernels slower than TCG or kills them. So "auto" checks
cheap facts first and then times a tiny guest under KVM; the verdict is cached per
kernel release, QEMU version and CPU flags so only the first start pays.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pylima import process
from pylima.drivers.qemu.argv import QemuHost, qemu_binary_name
from pylima.errors import LimaError

ACCEL_ENV = "PYLIMA_QEMU_ACCEL"

# Debian packages that provide each piece (named in errors).
_QEMU_PACKAGE = {"x86_64": "qemu-system-x86", "aarch64": "qemu-system-arm",
                 "armv7l": "qemu-system-arm", "riscv64": "qemu-system-misc"}
_FIRMWARE_PACKAGE = {"x86_64": "ovmf", "aarch64": "qemu-efi-aarch64", "armv7l": "qemu-efi-arm",
                     "riscv64": "qemu-efi-riscv64"}

# The guest self-test must exit within this time under KVM. Real KVM runs its loop in
# well under a second; TCG needs ~0.5 s; a software KVM does not finish in 20 s.
SELFTEST_TIMEOUT = 3.0
SELFTEST_LOOPS = 100_000_000
SELFTEST_EXIT_VALUE = 0x10  # isa-debug-exit turns value v into exit status (v << 1) | 1


@dataclass(frozen=True)
class FirmwarePair:
    code: str
    vars_template: str | None


def _user_share() -> Path:
    return Path.home() / ".local" / "share" / "qemu"


def firmware_candidates(arch: str, qemu_binary: str | None = None) -> list[FirmwarePair]:
    """UEFI code/vars files in the order they are tried (Lima's search order, with the
    4 MiB OVMF build first: the 2 MiB one cannot hold larger variable stores)."""
    prefixes = [_user_share()]
    if qemu_binary:
        prefixes.append(Path(qemu_binary).resolve().parent.parent / "share" / "qemu")
    prefixes.append(Path("/usr/local/share/qemu"))
    edk2 = {"x86_64": ("x86_64", "i386"), "aarch64": ("aarch64", "arm"),
            "armv7l": ("arm", "arm"), "riscv64": ("riscv", "riscv")}.get(arch)
    out: list[FirmwarePair] = []
    seen: set[str] = set()
    if edk2:
        for prefix in prefixes:
            code = str(prefix / f"edk2-{edk2[0]}-code.fd")
            if code not in seen:
                seen.add(code)
                out.append(FirmwarePair(code, str(prefix / f"edk2-{edk2[1]}-vars.fd")))
    system: dict[str, list[tuple[str, str | None]]] = {
        "x86_64": [("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
                   ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
                   ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
                   ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
                   ("/usr/share/qemu/ovmf-x86_64-4m.bin", None),
                   ("/usr/share/qemu/ovmf-x86_64.bin", None)],
        # pflash on the virt board takes 64 MiB images: AAVMF_* are padded to that;
        # the unpadded /usr/share/qemu-efi-aarch64/QEMU_EFI.fd is not usable here.
        "aarch64": [("/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"),
                    ("/usr/share/edk2/aarch64/QEMU_CODE.fd",
                     "/usr/share/edk2/aarch64/QEMU_VARS.fd")],
        "armv7l": [("/usr/share/AAVMF/AAVMF32_CODE.fd", "/usr/share/AAVMF/AAVMF32_VARS.fd"),
                   ("/usr/share/edk2/arm/QEMU_CODE.fd", "/usr/share/edk2/arm/QEMU_VARS.fd")],
        "riscv64": [("/usr/share/qemu-efi-riscv64/RISCV_VIRT_CODE.fd",
                     "/usr/share/qemu-efi-riscv64/RISCV_VIRT_VARS.fd")],
    }
    out += [FirmwarePair(c, v) for c, v in system.get(arch, [])]
    return out


def find_firmware(arch: str, qemu_binary: str | None = None) -> FirmwarePair | None:
    for pair in firmware_candidates(arch, qemu_binary):
        if os.path.isfile(pair.code):
            vars_ok = pair.vars_template and os.path.isfile(pair.vars_template)
            return FirmwarePair(pair.code, pair.vars_template if vars_ok else None)
    return None


def find_qemu_binary(arch: str) -> str:
    """`qemu-system-<arch>` on $PATH (or $QEMU_SYSTEM_<ARCH>, as in Lima)."""
    base = qemu_binary_name(arch)
    env = os.environ.get("QEMU_SYSTEM_" + base.removeprefix("qemu-system-").upper())
    found = process.which(env or base)
    if not found:
        package = _QEMU_PACKAGE.get(arch)
        hint = f"install the Debian package `{package}`" if package else None
        raise LimaError(f"`{env or base}` not found; QEMU is needed to run `{arch}` guests",
                        hint=hint)
    return found


# The guest architectures pylima's QEMU driver runs, in the order they are listed.
GUEST_ARCHES = ("x86_64", "aarch64", "armv7l", "riscv64")


@dataclass(frozen=True)
class ArchSupport:
    """How this host runs guests of one architecture."""

    arch: str
    mode: str            # "native" (same architecture as the host) or "emulated" (TCG)
    qemu: str            # the qemu-system binary
    user_mode: bool      # foreign binaries of this arch run on the host (binfmt_misc)


def qemu_package(arch: str) -> str | None:
    """The Debian package that provides `qemu-system-<arch>`."""
    return _QEMU_PACKAGE.get(arch)


def firmware_package(arch: str) -> str | None:
    return _FIRMWARE_PACKAGE.get(arch)


def _binfmt_enabled(arch: str) -> bool:
    name = {"armv7l": "arm"}.get(arch, arch)
    for entry in (f"qemu-{name}", f"qemu-{name}-static"):
        try:
            with open(f"/proc/sys/fs/binfmt_misc/{entry}") as f:
                if f.readline().strip() == "enabled":
                    return True
        except OSError:
            continue
    return False


def host_architectures(host_arch: str | None = None) -> dict[str, ArchSupport]:
    """The guest architectures this host can run now, and how: its own natively (with
    KVM when it works, else TCG), the others emulated by QEMU's TCG. An architecture
    whose qemu-system binary is missing is left out (see `arch_unavailable_hint`)."""
    host_arch = host_arch or lima_arch()
    out: dict[str, ArchSupport] = {}
    for arch in GUEST_ARCHES:
        base = qemu_binary_name(arch)
        env = os.environ.get("QEMU_SYSTEM_" + base.removeprefix("qemu-system-").upper())
        found = process.which(env or base)
        if not found:
            continue
        native = arch == host_arch
        out[arch] = ArchSupport(arch, "native" if native else "emulated", found,
                                arch == host_arch or _binfmt_enabled(arch))
    return out


def describe_architectures(support: dict[str, ArchSupport]) -> str:
    """`x86_64 (native), aarch64 (emulated)`."""
    return ", ".join(f"{a.arch} ({a.mode})" for a in support.values()) or "none"


def check_arch_runnable(arch: str, host_arch: str | None = None) -> None:
    """Refuse (at create) a guest architecture this host has no QEMU for, naming the
    package to install and the architectures it can run."""
    support = host_architectures(host_arch)
    if arch in support:
        return
    runnable = describe_architectures(support)
    if arch not in GUEST_ARCHES:
        raise LimaError(f"this host cannot run `{arch}` guests; it can run: {runnable}")
    package = qemu_package(arch)
    raise LimaError(f"this host cannot run `{arch}` guests: `{qemu_binary_name(arch)}` not "
                    f"found; it can run: {runnable}",
                    hint=f"install the Debian package `{package}`" if package else None)


def find_qemu_img() -> str:
    found = process.which("qemu-img")
    if not found:
        raise LimaError("`qemu-img` not found", hint="install the Debian package `qemu-utils`")
    return found


_VERSION_RE = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


def parse_qemu_version(text: str) -> tuple[int, int, int]:
    m = _VERSION_RE.search(text)
    if not m:
        raise LimaError(f"cannot read the QEMU version from {text.strip()[:80]!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def qemu_version(binary: str) -> tuple[int, int, int]:
    return parse_qemu_version(process.run([binary, "--version"], timeout=30).stdout)


def lima_arch(machine: str | None = None) -> str:
    m = (machine or platform.machine()).lower()
    return {"amd64": "x86_64", "arm64": "aarch64", "armv8l": "armv7l"}.get(m, m)


def probe_qemu_host(arch: str, *, need_firmware: bool = True,
                    cache_file: Path | None = None) -> tuple[QemuHost, str]:
    """Everything `build_qemu_argv` needs for an `arch` guest, and the sentence saying
    why the accelerator was chosen."""
    binary = find_qemu_binary(arch)
    version = qemu_version(binary)
    host_arch = lima_arch()
    firmware = find_firmware(arch, binary)
    if need_firmware and firmware is None:
        package = _FIRMWARE_PACKAGE.get(arch)
        hint = f"install the Debian package `{package}`" if package else None
        if arch == "x86_64":
            hint = (hint or "install UEFI firmware") + ", or set `firmware.legacyBIOS: true`"
        raise LimaError(f"could not find UEFI firmware for `{arch}`", hint=hint)
    accel, reason = choose_accel(arch, binary, version, host_arch=host_arch,
                                 cache_file=cache_file)
    host = QemuHost(binary=binary, version=version, accel=accel,
                    firmware_code=firmware.code if firmware else None,
                    firmware_vars_template=firmware.vars_template if firmware else None,
                    host_arch=host_arch, machine_id=machine_id())
    return host, reason


def probe_qemu(arch: str, *, firmware: bool = True) -> tuple[QemuHost, str]:
    """`probe_qemu_host` under the name the host agent calls it by."""
    return probe_qemu_host(arch, need_firmware=firmware)


def machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return ""


# ---------------------------------------------------------------------------
# Accelerator

def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_flags() -> set[str]:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def kvm_is_software() -> bool:
    """A PVM ("pagetable virtual machine") KVM: it runs without VMX/SVM, by emulation."""
    if os.path.isdir("/sys/module/kvm_pvm"):
        return True
    return any(line.split(" ", 1)[0] == "kvm_pvm"
               for line in _read("/proc/modules").splitlines())


def kvm_cheap_check(guest_arch: str, host_arch: str) -> str | None:
    """None when KVM may work; otherwise the reason it cannot (a human sentence)."""
    if guest_arch != host_arch:
        return f"a `{guest_arch}` guest cannot use KVM on this `{host_arch}` host"
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm does not exist"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return f"/dev/kvm cannot be opened for reading and writing ({e.strerror})"
    os.close(fd)
    if kvm_is_software():
        return "/dev/kvm is a software KVM (kvm_pvm), slower than TCG for guest kernels"
    if host_arch == "x86_64" and not cpu_flags() & {"vmx", "svm"}:
        return "the CPU has no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
    return None


def make_boot_sector(message: bytes = b"", loops: int = 0,
                     exit_value: int = SELFTEST_EXIT_VALUE) -> bytes:
    """A 512-byte x86 boot sector (real mode, loaded at 0:7c00) that writes `message`
    to COM1, counts `loops` down in ECX, writes `exit_value` to port 0xf4 (QEMU's
    isa-debug-exit, when present, then exits) and halts. Hand-assembled: no assembler
    is needed on the host."""
    origin = 0x7C00
    code = bytearray(b"\xfa\x31\xc0\x8e\xd8")  # cli; xor ax,ax; mov ds,ax
    msg_operand = -1
    if message:
        msg_operand = len(code) + 1
        code += b"\xbe\x00\x00"  # mov si, <message> (patched below)
        code += b"\xba\xf8\x03"  # mov dx, 0x3f8
        top = len(code)
        code += b"\xac\x84\xc0\x74\x03\xee\xeb"  # lodsb; test al,al; jz +3; out dx,al; jmp
        code.append((top - (len(code) + 1)) & 0xFF)
    if loops:
        code += b"\x66\xb9" + struct.pack("<I", loops)  # mov ecx, loops
        code += b"\x66\x49\x75\xfc"  # dec ecx; jnz back to the dec
    code += b"\xb0" + bytes([exit_value & 0xFF]) + b"\xe6\xf4"  # mov al, v; out 0xf4, al
    code += b"\xf4\xeb\xfd"  # hlt; jmp back to hlt
    if message:
        struct.pack_into("<H", code, msg_operand, origin + len(code))
        code += message + b"\x00"
    if len(code) > 510:
        raise ValueError("boot sector code too long")
    return bytes(code) + bytes(510 - len(code)) + b"\x55\xaa"


def accel_selftest(binary: str, accel: str, *, timeout: float = SELFTEST_TIMEOUT,
                   loops: int = SELFTEST_LOOPS) -> tuple[bool, float, str]:
    """Boot the loop guest under `accel`; (finished in time, seconds, detail)."""
    with tempfile.TemporaryDirectory(prefix="pylima-accel-") as tmp:
        sector = os.path.join(tmp, "boot.img")
        Path(sector).write_bytes(make_boot_sector(loops=loops))
        argv = [binary, "-machine", "pc", "-accel", accel, "-nodefaults", "-display", "none",
                "-m", "16", "-drive", f"format=raw,file={sector}",
                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        # Not process.run: a timeout here is a verdict, not an error, and the child
        # must be killed and reaped before the temporary directory goes.
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return False, time.monotonic() - start, f"did not finish within {timeout:g} s"
        elapsed = time.monotonic() - start
        expected = (SELFTEST_EXIT_VALUE << 1) | 1
        if proc.returncode != expected:
            tail = " ".join(err.strip().splitlines()[-2:])
            return False, elapsed, f"exited with status {proc.returncode}: {tail}".rstrip(": ")
        return True, elapsed, f"finished in {elapsed:.2f} s"


def accel_cache_file() -> Path:
    env = os.environ.get("XDG_CACHE_HOME")
    base = Path(env) if env else Path.home() / ".cache"
    return base / "pylima" / "accel.json"


def _cache_key(binary: str, version: tuple[int, int, int], guest_arch: str) -> str:
    flags = " ".join(sorted(cpu_flags()))
    raw = f"{os.uname().release}|{binary}|{'.'.join(map(str, version))}|{guest_arch}|{flags}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _cache_load(path: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _cache_store(path: Path, key: str, accel: str, reason: str) -> None:
    data = _cache_load(path)
    data[key] = {"accel": accel, "reason": reason}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # a cache that cannot be written only costs the next start the probe


def choose_accel(guest_arch: str, binary: str, version: tuple[int, int, int], *,
                 host_arch: str | None = None,
                 cache_file: Path | None = None) -> tuple[str, str]:
    """("kvm" | "tcg", why). $PYLIMA_QEMU_ACCEL=kvm|tcg forces one; auto (the default)
    decides by cheap checks, then by the guest self-test, remembered in `cache_file`."""
    choice = os.environ.get(ACCEL_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "kvm", "tcg"):
        raise LimaError(f"${ACCEL_ENV} must be `auto`, `kvm` or `tcg`, not `{choice}`")
    if choice != "auto":
        return choice, f"${ACCEL_ENV} is set to `{choice}`"
    host_arch = host_arch or lima_arch()
    problem = kvm_cheap_check(guest_arch, host_arch)
    if problem:
        return "tcg", problem
    cache_file = cache_file or accel_cache_file()
    key = _cache_key(binary, version, guest_arch)
    hit = _cache_load(cache_file).get(key)
    if isinstance(hit, dict) and hit.get("accel") in ("kvm", "tcg"):
        return str(hit["accel"]), str(hit.get("reason") or "") + " (cached)"
    if host_arch != "x86_64":
        # The self-test guest is x86 code; elsewhere the cheap checks decide.
        accel, reason = "kvm", "/dev/kvm is usable"
    else:
        ok, _, detail = accel_selftest(binary, "kvm")
        if ok:
            accel, reason = "kvm", f"a test guest under KVM {detail}"
        else:
            accel, reason = "tcg", f"KVM is too slow or broken here: a test guest {detail}"
    _cache_store(cache_file, key, accel, reason)
    return accel, reason
