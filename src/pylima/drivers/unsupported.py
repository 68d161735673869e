"""`vz` and `wsl2`: Lima's drivers for macOS's Virtualization.framework and Windows'
WSL2. pylima registers them so that a lima.yaml naming them loads, validates and
edits, and refuses to run them with the host requirement spelled out."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any, ClassVar

from pylima.drivers import DriverInfo, check_vm_type_supported
from pylima.errors import LimaError


class _RefusingDriver:
    name: ClassVar[str] = ""
    host_os: ClassVar[str] = ""  # platform.system() of the hosts Lima runs it on

    def __init__(self, name: str, inst_dir: Path, cfg: dict[str, Any]) -> None:
        self.validate(cfg)
        self.dir = Path(inst_dir)  # pragma: no cover - validate raises on this host

    @classmethod
    def validate(cls, cfg: dict[str, Any]) -> list[str]:
        check_vm_type_supported({**cfg, "vmType": cls.name}, platform.system(),
                                platform.machine())
        raise LimaError(f"vmType `{cls.name}` is not implemented by pylima",
                        hint="use `--vm-type=qemu`")

    @classmethod
    def host_info(cls) -> dict[str, Any]:
        return {}

    @classmethod
    def available(cls) -> bool:
        """Whether Lima would register this driver on this host (and list it)."""
        return platform.system() == cls.host_os

    @property
    def info(self) -> DriverInfo:
        return DriverInfo(self.name, instance_dir=str(self.dir))

    @property
    def pid(self) -> int:
        return 0

    def create(self) -> None:
        raise LimaError(f"vmType `{self.name}` is not implemented by pylima")

    def serve_mounts(self, mounts: list[dict[str, Any]]) -> list[str | None]:
        raise LimaError(f"vmType `{self.name}` is not implemented by pylima")

    async def start(self, cfg: dict[str, Any], *, ssh_local_port: int,
                    mount_tags: list[str]) -> None:
        raise LimaError(f"vmType `{self.name}` is not implemented by pylima")

    async def wait(self) -> int:
        return 0

    async def stop(self, timeout: float) -> None:
        return None

    async def kill(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # Lima's vz and wsl2 drivers do not implement snapshots.
    async def create_snapshot(self, tag: str, *, running: bool) -> None:
        raise LimaError("unimplemented")

    async def apply_snapshot(self, tag: str, *, running: bool) -> None:
        raise LimaError("unimplemented")

    async def delete_snapshot(self, tag: str, *, running: bool) -> None:
        raise LimaError("unimplemented")

    async def list_snapshots(self, *, running: bool) -> str:
        raise LimaError("unimplemented")


class VzDriver(_RefusingDriver):
    name = "vz"
    host_os = "Darwin"


class Wsl2Driver(_RefusingDriver):
    name = "wsl2"
    host_os = "Windows"
