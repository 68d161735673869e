"""The driver interface: vmType/Rosetta refusals, the registry, and the QEMU driver's
file layout, probe decisions and host forwards."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from pylima.drivers import (
    Driver,
    GuestAgentTransport,
    HostPortForwarding,
    check_vm_type_supported,
    registry,
    rosetta_enabled,
)
from pylima.drivers.qemu import (
    QemuDriver,
    boot_files,
    clean_runtime_files,
    hostfwd_error,
    hostfwd_spec,
    needs_firmware,
    prepare_launch,
    probe,
)
from pylima.drivers.qemu.argv import EFI_VARS, QemuHost
from pylima.errors import ConfigError, LimaError


def test_vz_needs_macos() -> None:
    with pytest.raises(ConfigError) as e:
        check_vm_type_supported({"vmType": "vz"}, "Linux", "x86_64")
    assert str(e.value) == "vmType `vz` requires macOS 13 or later (this host is Linux)"
    assert e.value.hint == "use `--vm-type=qemu`"
    with pytest.raises(ConfigError, match=r"this host is macOS 12\.6"):
        check_vm_type_supported({"vmType": "vz"}, "Darwin", "arm64", macos_version=(12, 6))
    check_vm_type_supported({"vmType": "vz"}, "Darwin", "arm64", macos_version=(14, 1))


def test_wsl2_needs_windows() -> None:
    with pytest.raises(ConfigError) as e:
        check_vm_type_supported({"vmType": "wsl2"}, "Linux", "x86_64")
    assert str(e.value) == ("vmType `wsl2` requires Windows 10 build 19041 or later, or "
                            "Windows 11 (this host is Linux)")
    with pytest.raises(ConfigError, match="this host is Windows build 18363"):
        check_vm_type_supported({"vmType": "wsl2"}, "Windows", "AMD64", windows_build=18363)
    check_vm_type_supported({"vmType": "wsl2"}, "Windows", "AMD64", windows_build=22631)


@pytest.mark.parametrize("cfg", [{"vmOpts": {"vz": {"rosetta": {"enabled": True}}}},
                                 {"rosetta": {"enabled": True}}])
def test_rosetta_needs_apple_silicon(cfg: dict[str, Any]) -> None:
    assert rosetta_enabled(cfg)
    with pytest.raises(ConfigError) as e:
        check_vm_type_supported({"vmType": "qemu", **cfg}, "Linux", "x86_64")
    assert str(e.value) == ("Rosetta requires macOS 13 or later on Apple silicon with "
                            "`vmType: vz`")
    assert e.value.hint and "binfmt" in e.value.hint
    with pytest.raises(ConfigError):
        check_vm_type_supported({"vmType": "vz", **cfg}, "Darwin", "x86_64")
    check_vm_type_supported({"vmType": "vz", **cfg}, "Darwin", "arm64")


def test_qemu_runs_anywhere() -> None:
    check_vm_type_supported({"vmType": "qemu", "rosetta": {"enabled": False}}, "Linux", "x86_64")


def test_qemu_driver_is_a_driver(tmp_path: Path) -> None:
    driver: Driver = QemuDriver("x", tmp_path, {"arch": "x86_64"})
    assert driver.name == "qemu"
    assert isinstance(driver, GuestAgentTransport) and isinstance(driver, HostPortForwarding)
    info = driver.info.to_json()
    assert info["name"] == "qemu" and info["virtioPort"] == "io.lima-vm.guest_agent.0"
    assert info["instanceDir"] == str(tmp_path)
    assert info["features"]["pylimaGuestAddress"] == "192.168.5.15"
    assert info["features"]["noCloudInit"] is False
    assert driver.pid == 0


def test_qemu_driver_validate() -> None:
    driver = QemuDriver
    base = {"vmType": "qemu", "arch": "x86_64", "memory": "4GiB", "networks": []}
    assert driver.validate(base) == []
    assert driver.validate({**base, "arch": "aarch64", "firmware": {"legacyBIOS": True}}) == [
        "field `firmware.legacyBIOS` is not supported for architecture `aarch64`, ignoring"]
    with pytest.raises(ConfigError, match="field `arch`"):
        driver.validate({**base, "arch": "sparc"})
    # `lima:` networks: their mode is checked by the config's validation (networks.yaml)
    # and at start (check_start); other kinds are refused here
    assert driver.validate({**base, "networks": [{"lima": "user-v2"}]}) == []
    with pytest.raises(ConfigError, match="network `/run/x.sock` is not supported"):
        driver.validate({**base, "networks": [{"socket": "/run/x.sock"}]})


HOST = QemuHost("/usr/bin/qemu-system-x86_64", (7, 2, 0), "tcg", "/fw/code.fd",
                "/fw/vars.fd", "x86_64")


def test_boot_files_firmware(tmp_path: Path) -> None:
    """A new instance's variable store is a qcow2 copy of the template (so that QEMU
    can snapshot the running VM); an existing store is kept, raw ones too."""
    import shutil
    import subprocess

    if shutil.which("qemu-img") is None:
        pytest.skip("needs qemu-img")
    template = tmp_path / "vars-template.fd"
    content = bytes(range(256)) * 256
    template.write_bytes(content)
    host = QemuHost(HOST.binary, HOST.version, "tcg", "/fw/code.fd", str(template), "x86_64")
    cfg = {"arch": "x86_64", "firmware": {"legacyBIOS": False}}
    boot = boot_files(tmp_path, cfg, host)
    assert boot.kernel is None and boot.firmware_vars == str(tmp_path / EFI_VARS)
    assert boot.firmware_vars_format == "qcow2"
    assert (tmp_path / EFI_VARS).read_bytes()[:4] == b"QFI\xfb"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                    str(tmp_path / EFI_VARS), str(tmp_path / "back.raw")], check=True)
    assert (tmp_path / "back.raw").read_bytes() == content
    assert not list(tmp_path.glob(".*.tmp"))
    # The instance keeps its own variable store from then on; a raw one (made by an
    # earlier pylima) becomes qcow2 with the same variables.
    changed = bytes(reversed(content))
    (tmp_path / EFI_VARS).write_bytes(changed)
    boot = boot_files(tmp_path, cfg, host)
    assert boot.firmware_vars_format == "qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw",
                    str(tmp_path / EFI_VARS), str(tmp_path / "back.raw")], check=True)
    assert (tmp_path / "back.raw").read_bytes() == changed
    boot_files(tmp_path, cfg, host)
    assert (tmp_path / "back.raw").read_bytes() == changed
    # one that is not whole sectors stays as it is
    (tmp_path / EFI_VARS).write_bytes(b"changed by the guest")
    boot = boot_files(tmp_path, cfg, host)
    assert (tmp_path / EFI_VARS).read_bytes() == b"changed by the guest"
    assert boot.firmware_vars_format == "raw"


def test_boot_files_direct_kernel(tmp_path: Path) -> None:
    (tmp_path / "kernel").write_bytes(b"k")
    (tmp_path / "initrd").write_bytes(b"i")
    (tmp_path / "kernel.cmdline").write_text("root=/dev/vda rw\n")
    cfg = {"arch": "x86_64", "firmware": {"legacyBIOS": False}}
    assert not needs_firmware(cfg, tmp_path)
    boot = boot_files(tmp_path, cfg, HOST)
    assert (boot.kernel, boot.initrd, boot.cmdline, boot.firmware_vars) == (
        str(tmp_path / "kernel"), str(tmp_path / "initrd"), "root=/dev/vda rw", None)


def test_legacy_bios_needs_no_firmware(tmp_path: Path) -> None:
    assert not needs_firmware({"arch": "x86_64", "firmware": {"legacyBIOS": True}}, tmp_path)
    assert needs_firmware({"arch": "aarch64", "firmware": {"legacyBIOS": True}}, tmp_path)


def test_clean_runtime_files(tmp_path: Path) -> None:
    for name in ("qmp.sock", "serial.log", "serialv.sock", "qemu.pid", "disk"):
        (tmp_path / name).write_text("")
    clean_runtime_files(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["disk"]


# ---- the registry ----


def test_registry_lists_what_this_host_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIMA_DRIVERS_PATH", raising=False)
    # As Lima on Linux: vz and wsl2 are built only for macOS and Windows; libvirt is
    # pylima's, for any host with a libvirt to reach.
    assert registry.list_drivers() == {"qemu": "internal", "libvirt": "internal"}
    assert registry.driver_class("qemu") is QemuDriver
    with pytest.raises(ConfigError, match="vmType `vz` requires macOS 13"):
        registry.validate({"vmType": "vz", "arch": "x86_64"})
    with pytest.raises(ConfigError, match="vmType `wsl2` requires Windows"):
        registry.new_driver("x", Path("/nonexistent"), {"vmType": "wsl2"})
    with pytest.raises(ConfigError) as e:
        registry.driver_class("krunkit")
    assert str(e.value) == "vmType `krunkit` is not a registered driver"
    assert e.value.hint == "see `limactl create --list-drivers`"


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_external_drivers_are_listed_and_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "drivers"
    d.mkdir()
    krunkit = _executable(d / "lima-driver-krunkit")
    (d / "lima-driver-notexec").write_text("")
    _executable(d / "lima-driver-qemu")  # a built-in name stays internal
    _executable(d / "other-tool")
    single = _executable(tmp_path / "lima-driver-libkrun")
    monkeypatch.setenv("LIMA_DRIVERS_PATH", os.pathsep.join([str(d), str(single)]))
    assert registry.list_drivers() == {"qemu": "internal", "libvirt": "internal",
                                       "krunkit": str(krunkit), "libkrun": str(single)}
    with pytest.raises(ConfigError) as e:
        registry.validate({"vmType": "krunkit"})
    assert str(e.value) == (f"vmType `krunkit` is the external driver `{krunkit}`, which "
                            "pylima cannot use yet (it does not speak Lima's external "
                            "driver protocol)")


def test_drivers_beside_limactl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lima's LibexecLima: <prefix>/libexec/lima next to <prefix>/bin/limactl."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "libexec" / "lima").mkdir(parents=True)
    found = _executable(tmp_path / "libexec" / "lima" / "lima-driver-ext")
    monkeypatch.delenv("LIMA_DRIVERS_PATH", raising=False)
    monkeypatch.setattr("sys.argv", [str(tmp_path / "bin" / "limactl")])
    assert registry.list_drivers()["ext"] == str(found)


# ---- the QEMU driver's decisions ----


def test_legacy_bios_starts_without_uefi_firmware(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without OVMF: legacyBIOS x86_64 builds its command line (SeaBIOS, no
    pflash); without legacyBIOS the start is refused, naming the package and the field."""
    if probe.process.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    monkeypatch.setenv(probe.ACCEL_ENV, "tcg")
    monkeypatch.setattr(probe, "find_firmware", lambda arch, binary=None: None)
    (tmp_path / "disk").write_bytes(b"")
    cfg = {"arch": "x86_64", "cpus": 1, "memory": "1GiB", "mounts": [], "vmType": "qemu",
           "firmware": {"legacyBIOS": True}}
    launch = prepare_launch(tmp_path, cfg, ssh_local_port=60022)
    assert not any("pflash" in a for a in launch.argv)
    assert not (tmp_path / EFI_VARS).exists()
    with pytest.raises(LimaError) as e:
        prepare_launch(tmp_path, {**cfg, "firmware": {"legacyBIOS": False}},
                       ssh_local_port=60022)
    assert str(e.value) == "could not find UEFI firmware for `x86_64`"
    assert e.value.hint and "ovmf" in e.value.hint and "legacyBIOS" in e.value.hint


def test_host_forwards_over_the_monitor(tmp_path: Path) -> None:
    assert hostfwd_spec("tcp", "127.0.0.1", 8080, 41000) == "tcp:127.0.0.1:8080-:41000"
    assert hostfwd_spec("udp", "::1", 53, 53) == "udp:[::1]:53-:53"
    assert hostfwd_error("Could not set up host forwarding rule 'tcp:127.0.0.1:80-:80'\r\n",
                         "127.0.0.1:80") == ("cannot listen on 127.0.0.1:80 (in use by "
                                             "another program, or not permitted)")
    driver = QemuDriver("x", tmp_path, {"arch": "x86_64"})
    lines: list[str] = []

    async def hmp(line: str) -> str:
        lines.append(line)
        return "Could not set up host forwarding rule 'x'\r\n" if ":81-" in line else ""

    driver.hmp = hmp  # type: ignore[method-assign]

    async def calls() -> list[str]:
        return [await driver.add_host_forward("tcp", "127.0.0.1", 8080, 41000),
                await driver.add_host_forward("tcp", "::1", 81, 81),
                await driver.remove_host_forward("tcp", "127.0.0.1", 8080) or ""]

    assert asyncio.run(calls()) == [
        "", "cannot listen on [::1]:81 (in use by another program, or not permitted)", ""]
    assert lines == ["hostfwd_add net0 tcp:127.0.0.1:8080-:41000",
                     "hostfwd_add net0 tcp:[::1]:81-:81",
                     "hostfwd_remove net0 tcp:127.0.0.1:8080"]


def test_stop_without_a_qmp_socket_does_not_wait_for_the_guest(tmp_path: Path) -> None:
    """With its QMP socket gone (the instance directory removed under it), nothing can
    ask the guest to power off: stop ends QEMU at once instead of waiting out the
    power-down timeout."""
    import time

    driver = QemuDriver("x", tmp_path, {"arch": "x86_64"})

    async def scenario() -> tuple[float, int | None]:
        driver.process = await asyncio.create_subprocess_exec("sleep", "600")
        t0 = time.monotonic()
        await driver.stop(timeout=300)
        return time.monotonic() - t0, driver.process.returncode

    elapsed, rc = asyncio.run(scenario())
    assert rc == -9 and elapsed < 10, (elapsed, rc)


# ---- the seam is enforced ----


# libvirt's domains are QEMU VMs: the libvirt driver shares the QEMU driver's monitor
# snapshots and its verdict on this host's KVM, and nothing else of it.
SHARED_WITH_LIBVIRT = ("pylima.drivers.qemu.snapshot", "pylima.drivers.qemu.probe")


def test_nothing_outside_the_qemu_driver_imports_it() -> None:
    """Only drivers/qemu/ knows QEMU: the host agent, api and the CLI go through the
    interface and the registry (which names the built-in drivers as strings)."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "pylima"
    qemu_dir = src / "drivers" / "qemu"
    libvirt_dir = src / "drivers" / "libvirt"
    offenders = []
    for path in sorted(src.rglob("*.py")):
        if qemu_dir in path.parents:
            continue
        shared = SHARED_WITH_LIBVIRT if libvirt_dir in path.parents else ()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if any((n == "pylima.drivers.qemu" or n.startswith("pylima.drivers.qemu."))
                   and not n.startswith(shared) for n in names):
                offenders.append(f"{path.relative_to(src.parent)}:{node.lineno}")
    assert offenders == [], "modules outside drivers/qemu/ import it: " + ", ".join(offenders)
