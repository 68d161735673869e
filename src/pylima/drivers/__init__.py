"""VM drivers: the interface the host agent drives, and the checks that refuse a
`vmType` this host cannot run.

pylima runs guests with QEMU (`drivers.qemu`). `vz` (Apple Virtualization.framework)
and `wsl2` exist in Lima's schema, so a lima.yaml that names them loads and validates,
but starting one is refused here with the requirement spelled out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pylima.errors import ConfigError

__all__ = ["Driver", "check_vm_type_supported", "rosetta_enabled"]


class Driver(Protocol):
    """A VM backend as the host agent sees it.

    Lifecycle: `validate` at create and start (raises LimaError when the host cannot
    run this config, returns warnings to show); `create_disk` once when the instance is
    created (driver-specific files; may do nothing); `start` launches the VM and
    returns once its process runs (readiness is the host agent's SSH probe); `stop`
    asks the guest to power off and ends the VM process, forcibly after `timeout`.
    """

    name: str

    def validate(self, cfg: dict[str, Any]) -> list[str]: ...

    def create_disk(self, inst_dir: Path, cfg: dict[str, Any]) -> None: ...

    async def start(self, inst_dir: Path, cfg: dict[str, Any], *, ssh_local_port: int) -> None:
        ...

    async def stop(self, inst_dir: Path, cfg: dict[str, Any], *, timeout: float) -> None: ...


def rosetta_enabled(cfg: dict[str, Any]) -> bool:
    """`vmOpts.vz.rosetta.enabled`, or the legacy top-level `rosetta.enabled`."""
    vz = (cfg.get("vmOpts") or {}).get("vz") or {}
    return bool(((vz.get("rosetta") or {}).get("enabled"))
                or (cfg.get("rosetta") or {}).get("enabled"))


def _host_name(host_os: str) -> str:
    return {"Darwin": "macOS"}.get(host_os, host_os)


def check_vm_type_supported(cfg: dict[str, Any], host_os: str, host_machine: str, *,
                            macos_version: tuple[int, ...] | None = None,
                            windows_build: int | None = None) -> None:
    """Raise ConfigError when this host cannot run `cfg`'s vmType (or Rosetta).

    `host_os` and `host_machine` are `platform.system()` and `platform.machine()`;
    the optional versions, when known, tighten the macOS 13 / Windows build checks.
    """
    vm_type = cfg.get("vmType") or "qemu"
    is_mac = host_os == "Darwin"
    mac_too_old = macos_version is not None and macos_version < (13,)
    if vm_type == "vz" and (not is_mac or mac_too_old):
        this = _host_name(host_os)
        if is_mac and macos_version is not None:
            this += " " + ".".join(map(str, macos_version))
        raise ConfigError(f"vmType `vz` requires macOS 13 or later (this host is {this})",
                          hint="use `--vm-type=qemu`")
    if vm_type == "wsl2" and (host_os != "Windows"
                              or (windows_build is not None and windows_build < 19041)):
        this = host_os if windows_build is None else f"{host_os} build {windows_build}"
        raise ConfigError("vmType `wsl2` requires Windows 10 build 19041 or later, or "
                          f"Windows 11 (this host is {this})", hint="use `--vm-type=qemu`")
    apple_silicon = host_machine.lower() in ("arm64", "aarch64")
    if rosetta_enabled(cfg) and (not is_mac or mac_too_old or not apple_silicon):
        raise ConfigError("Rosetta requires macOS 13 or later on Apple silicon with "
                          "`vmType: vz`",
                          hint="use fast mode (QEMU user-mode emulation with binfmt) instead")
