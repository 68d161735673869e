"""The QEMU driver: probe the host, lay out the instance's boot files, build the
command line (`argv.build_qemu_argv`, pure) and run QEMU, stopping it over QMP.

The host agent may use `QemuDriver` as a whole or the pieces: `prepare_launch`
gives the argv (and why the accelerator was chosen) without starting anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylima.drivers import check_vm_type_supported
from pylima.drivers.qemu.argv import (
    EFI_VARS,
    SERIAL_SOCK,
    SERIALP_LOG,
    SERIALP_SOCK,
    SERIALV_SOCK,
    BootFiles,
    QemuHost,
    build_qemu_argv,
    parse_memory_mib,
)
from pylima.drivers.qemu.probe import probe_qemu_host
from pylima.drivers.qemu.qmp import QMPClient, QMPError
from pylima.errors import ConfigError, LimaError
from pylima.store import dirs
from pylima.store.instance import pid_alive, read_pid_file

log = logging.getLogger(__name__)

SUPPORTED_ARCHES = ("x86_64", "aarch64", "armv7l", "riscv64")


def needs_firmware(cfg: dict[str, Any], inst_dir: Path) -> bool:
    """UEFI firmware is used unless the instance boots its own kernel directly or asks
    for legacy BIOS (x86_64 only)."""
    if (inst_dir / dirs.KERNEL).is_file():
        return False
    legacy = bool((cfg.get("firmware") or {}).get("legacyBIOS"))
    return not (legacy and cfg.get("arch") == "x86_64")


def boot_files(inst_dir: Path, cfg: dict[str, Any], host: QemuHost) -> BootFiles:
    """The instance's boot files as Lima lays them out (kernel, initrd and
    kernel.cmdline when present), with a private copy of the UEFI variable store made
    on first use."""
    kernel = inst_dir / dirs.KERNEL
    initrd = inst_dir / dirs.INITRD
    cmdline_file = inst_dir / dirs.KERNEL_CMDLINE
    vars_path: str | None = None
    if needs_firmware(cfg, inst_dir) and host.firmware_vars_template:
        dest = inst_dir / EFI_VARS
        if not dest.exists():
            tmp = dest.with_name(f".{EFI_VARS}.tmp")
            shutil.copyfile(host.firmware_vars_template, tmp)
            os.replace(tmp, dest)
        vars_path = str(dest)
    has_kernel = kernel.is_file()
    return BootFiles(
        disk=str(inst_dir / dirs.DISK),
        cidata_iso=str(inst_dir / dirs.CIDATA_ISO),
        kernel=str(kernel) if has_kernel else None,
        initrd=str(initrd) if has_kernel and initrd.is_file() else None,
        cmdline=cmdline_file.read_text().strip() if has_kernel and cmdline_file.is_file()
        else None,
        firmware_vars=vars_path,
    )


def clean_runtime_files(inst_dir: Path) -> None:
    """Remove what a previous QEMU left: sockets it would fail to bind, and serial logs
    (Lima starts each boot with fresh ones)."""
    for name in (dirs.QMP_SOCK, SERIAL_SOCK, SERIALP_SOCK, SERIALV_SOCK, dirs.SERIAL_LOG,
                 SERIALP_LOG, dirs.SERIALV_LOG, dirs.QEMU_PID):
        with contextlib.suppress(FileNotFoundError):
            (inst_dir / name).unlink()


@dataclass(frozen=True)
class QemuLaunch:
    argv: list[str]
    host: QemuHost
    accel_reason: str  # e.g. "/dev/kvm is a software KVM (kvm_pvm), slower than TCG ..."


def prepare_launch(inst_dir: Path, cfg: dict[str, Any], *, ssh_local_port: int,
                   virtiofs_sockets: list[str] | None = None,
                   additional_disks: Sequence[tuple[str, str]] = ()) -> QemuLaunch:
    """Probe the host, prepare the boot files and build the argv. Starts nothing."""
    host, reason = probe_qemu_host(str(cfg.get("arch")),
                                   need_firmware=needs_firmware(cfg, inst_dir))
    boot = boot_files(inst_dir, cfg, host)
    clean_runtime_files(inst_dir)
    argv = build_qemu_argv(cfg, host, str(inst_dir), boot, ssh_local_port=ssh_local_port,
                           virtiofs_sockets=virtiofs_sockets,
                           additional_disks=additional_disks)
    return QemuLaunch(argv, host, reason)


class QemuDriver:
    """`Driver` for vmType qemu. QEMU's stderr goes to the caller's stderr (the host
    agent's ha.stderr.log)."""

    name = "qemu"

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.launch: QemuLaunch | None = None

    def validate(self, cfg: dict[str, Any]) -> list[str]:
        check_vm_type_supported(cfg, platform.system(), platform.machine())
        warnings: list[str] = []
        arch = cfg.get("arch")
        if arch not in SUPPORTED_ARCHES:
            raise ConfigError(f"field `arch` must be one of {', '.join(SUPPORTED_ARCHES)} "
                              f"for vmType `qemu`, not `{arch}`")
        parse_memory_mib(cfg)
        if (cfg.get("firmware") or {}).get("legacyBIOS") and arch != "x86_64":
            warnings.append(f"field `firmware.legacyBIOS` is not supported for architecture "
                            f"`{arch}`, ignoring")
        for nw in cfg.get("networks") or []:
            name = nw.get("lima") or nw.get("socket") or "?"
            raise ConfigError(f"network `{name}` is not supported by pylima yet",
                              hint="remove it from `networks`; the user-mode network "
                              "is always on")
        return warnings

    def create_disk(self, inst_dir: Path, cfg: dict[str, Any]) -> None:
        """Nothing: `images.disk` creates the qcow2 disk for every driver."""

    async def start(self, inst_dir: Path, cfg: dict[str, Any], *, ssh_local_port: int,
                    virtiofs_sockets: list[str] | None = None,
                    additional_disks: Sequence[tuple[str, str]] = ()) -> None:
        launch = await asyncio.to_thread(prepare_launch, inst_dir, cfg,
                                         ssh_local_port=ssh_local_port,
                                         virtiofs_sockets=virtiofs_sockets,
                                         additional_disks=additional_disks)
        log.info("Using accelerator %s: %s", launch.host.accel, launch.accel_reason)
        self.launch = launch
        self.process = await asyncio.create_subprocess_exec(
            *launch.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            cwd=str(inst_dir))
        try:
            # QEMU is up once QMP answers; an early exit is a bad argv or a busy port.
            qmp = QMPClient(str(inst_dir / dirs.QMP_SOCK))
            connect = asyncio.ensure_future(qmp.connect(timeout=30))
            exited = asyncio.ensure_future(self.process.wait())
            done, _ = await asyncio.wait({connect, exited},
                                         return_when=asyncio.FIRST_COMPLETED)
            if exited not in done and connect.exception() is not None:
                # QEMU opens the QMP socket before it checks the rest of its options:
                # a failed handshake usually means it is exiting.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(exited), 2)
            if exited.done():
                connect.cancel()
                with contextlib.suppress(asyncio.CancelledError, LimaError):
                    await connect
                raise LimaError(f"QEMU exited with status {exited.result()} at start",
                                hint=f"see {inst_dir / dirs.HA_STDERR_LOG}")
            exited.cancel()
            connect.result()
            await qmp.close()
        except BaseException:
            await self._kill()
            raise

    async def stop(self, inst_dir: Path, cfg: dict[str, Any], *, timeout: float = 300) -> None:
        """ACPI power-off, then `quit` over QMP after `timeout`, then SIGKILL."""
        sock = str(inst_dir / dirs.QMP_SOCK)
        try:
            async with QMPClient(sock) as qmp:
                await qmp.system_powerdown()
        except QMPError as e:
            log.warning("Could not ask the guest to power off: %s", e)
        if await self._wait(inst_dir, timeout):
            return
        log.warning("The guest did not power off within %g s; stopping QEMU", timeout)
        with contextlib.suppress(QMPError):
            async with QMPClient(sock) as qmp:
                await qmp.quit()
        if not await self._wait(inst_dir, 10):
            await self._kill(inst_dir)

    async def _wait(self, inst_dir: Path, timeout: float) -> bool:
        if self.process is None:
            # QEMU started by another process (limactl stop): follow qemu.pid.
            pid = read_pid_file(inst_dir / dirs.QEMU_PID)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while pid and pid_alive(pid):
                if loop.time() >= deadline:
                    return False
                await asyncio.sleep(0.2)
            return True
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _kill(self, inst_dir: Path | None = None) -> None:
        if self.process is not None:
            if self.process.returncode is None:
                self.process.kill()
                await self.process.wait()
        elif inst_dir is not None and (pid := read_pid_file(inst_dir / dirs.QEMU_PID)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
