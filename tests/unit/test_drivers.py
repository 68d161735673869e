"""The driver interface: vmType/Rosetta refusals and the QEMU driver's file layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pylima.drivers import Driver, check_vm_type_supported, rosetta_enabled
from pylima.drivers.qemu import QemuDriver, boot_files, clean_runtime_files, needs_firmware
from pylima.drivers.qemu.argv import EFI_VARS, QemuHost
from pylima.errors import ConfigError


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


def test_qemu_driver_is_a_driver() -> None:
    driver: Driver = QemuDriver()
    assert driver.name == "qemu"


def test_qemu_driver_validate() -> None:
    driver = QemuDriver()
    base = {"vmType": "qemu", "arch": "x86_64", "memory": "4GiB", "networks": []}
    assert driver.validate(base) == []
    assert driver.validate({**base, "arch": "aarch64", "firmware": {"legacyBIOS": True}}) == [
        "field `firmware.legacyBIOS` is not supported for architecture `aarch64`, ignoring"]
    with pytest.raises(ConfigError, match="field `arch`"):
        driver.validate({**base, "arch": "sparc"})
    with pytest.raises(ConfigError, match="network `shared`"):
        driver.validate({**base, "networks": [{"lima": "shared"}]})


HOST = QemuHost("/usr/bin/qemu-system-x86_64", (7, 2, 0), "tcg", "/fw/code.fd",
                "/fw/vars.fd", "x86_64")


def test_boot_files_firmware(tmp_path: Path) -> None:
    template = tmp_path / "vars-template.fd"
    template.write_bytes(b"vars")
    host = QemuHost(HOST.binary, HOST.version, "tcg", "/fw/code.fd", str(template), "x86_64")
    cfg = {"arch": "x86_64", "firmware": {"legacyBIOS": False}}
    boot = boot_files(tmp_path, cfg, host)
    assert boot.kernel is None and boot.firmware_vars == str(tmp_path / EFI_VARS)
    assert (tmp_path / EFI_VARS).read_bytes() == b"vars"
    # The instance keeps its own variable store from then on.
    (tmp_path / EFI_VARS).write_bytes(b"changed by the guest")
    boot_files(tmp_path, cfg, host)
    assert (tmp_path / EFI_VARS).read_bytes() == b"changed by the guest"


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
