"""The QEMU driver: everything that is QEMU's lives here, behind `drivers.Driver`.

It probes the host (binary, firmware, accelerator: `probe`), lays out the instance's
boot files, builds the command line (`argv.build_qemu_argv`, pure), starts and owns
the QEMU process (and the virtiofsd processes of virtiofs mounts), talks QMP
(`qmp`), powers the guest off over ACPI and falls back to `quit` and SIGKILL, carries
the guest agent's virtio-serial port (`ga.sock`), forwards host ports with the
user-mode network's `hostfwd_add`/`hostfwd_remove` (QEMU's own, or, when a user-v2
network replaces the user-mode one, its router's: `router`), captures the display
(`screendump`) and takes snapshots (`snapshot`: savevm/loadvm over QMP while the VM
runs, `qemu-img snapshot` on its disk while it is stopped).

It also starts and owns swtpm for `tpm: true` (`swtpm`), sets the VNC password of
`video.display: vnc` (`vnc`) and downloads the UEFI code of `firmware.images`.

Files it owns in the instance directory: qemu.pid, qmp.sock, serial*.sock,
serial*.log, ga.sock, virtiofsd-N.sock, qemu-efi-vars.fd, qemu-efi-code.fd,
swtpm.sock, swtpm/, vncdisplay, vncpassword.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pylima.drivers import DriverFeatures, DriverInfo, check_vm_type_supported
from pylima.drivers.qemu.argv import (
    EFI_CODE,
    EFI_VARS,
    SERIAL_SOCK,
    SERIALP_LOG,
    SERIALP_SOCK,
    SERIALV_SOCK,
    SLIRP_IP_ADDRESS,
    VNC_DISPLAY_FILE,
    VNC_PASSWORD_FILE,
    BootFiles,
    QemuHost,
    build_qemu_argv,
    firmware_images_for,
    parse_memory_mib,
)
from pylima.drivers.qemu.probe import check_arch_runnable, host_architectures, probe_qemu_host
from pylima.drivers.qemu.qmp import QMPClient, QMPError
from pylima.drivers.qemu.snapshot import QemuSnapshots
from pylima.drivers.qemu.swtpm import Swtpm, find_swtpm
from pylima.drivers.qemu.virtiofs import Virtiofsd, virtiofsd_problem
from pylima.errors import ConfigError, LimaError
from pylima.process import kill_and_reap, spawn_owned
from pylima.store import dirs

log = logging.getLogger("pylima.hostagent")

SUPPORTED_ARCHES = ("x86_64", "aarch64", "armv7l", "riscv64")
# The user-mode network device whose host forwards the driver manages.
NETDEV = "net0"
# After `quit` over QMP, how long QEMU may take to exit before it is killed.
QUIT_TIMEOUT = 10.0
# How long QEMU may take to answer on QMP once started (it opens the socket early).
QMP_START_TIMEOUT = 30.0
GUEST_AGENT_CONNECT_TIMEOUT = 10.0


def needs_firmware(cfg: dict[str, Any], inst_dir: Path) -> bool:
    """The host's UEFI firmware is used unless the instance boots its own kernel
    directly or asks for legacy BIOS (x86_64 only); `firmware.images` replace it."""
    if (inst_dir / dirs.KERNEL).is_file():
        return False
    legacy = bool((cfg.get("firmware") or {}).get("legacyBIOS"))
    return not (legacy and cfg.get("arch") == "x86_64")


def ensure_firmware(inst_dir: Path, cfg: dict[str, Any]) -> str | None:
    """The UEFI code of `firmware.images`, as Lima's QEMU driver gets it: the copy in
    the instance directory when there is one, else the first entry for the
    instance's arch (and vmType qemu) that downloads (through the image cache, digest
    checked, decompressed); a failing entry is a warning and the next is tried. None
    when no entry applies or none downloads (the host's firmware is used then)."""
    dest = inst_dir / EFI_CODE
    if dest.is_file():
        log.info("Using existing firmware (`%s`)", dest)
        return str(dest)
    from pylima.images.download import download

    for f in firmware_images_for(cfg):
        location = str(f.get("location") or "")
        try:
            download(location, dest, digest=f.get("digest") or None, decompress=True)
        except LimaError as e:
            log.warning("failed to download `%s`: %s", location, e.message)
            continue
        log.info("Using firmware `%s` (downloaded from `%s`)", dest, location)
        return str(dest)
    return None


def boot_files(inst_dir: Path, cfg: dict[str, Any], host: QemuHost,
               firmware_code: str | None = None) -> BootFiles:
    """The instance's boot files as Lima lays them out (kernel, initrd and
    kernel.cmdline when present), with a private copy of the host firmware's UEFI
    variable store made on first use. `firmware_code` (from `firmware.images`) is
    used with no variable store, as Lima does."""
    from pylima.images.disk import boot_disk_path

    kernel = inst_dir / dirs.KERNEL
    initrd = inst_dir / dirs.INITRD
    cmdline_file = inst_dir / dirs.KERNEL_CMDLINE
    vars_path: str | None = None
    vars_format = "raw"
    if firmware_code is None and needs_firmware(cfg, inst_dir) \
            and host.firmware_vars_template:
        dest = inst_dir / EFI_VARS
        if not dest.exists():
            make_vars_store(Path(host.firmware_vars_template), dest)
        elif vars_store_format(dest) == "raw" and dest.stat().st_size % 512 == 0:
            # a store made by an earlier pylima: the same variables, as qcow2
            make_vars_store(dest, dest)
        vars_path = str(dest)
        vars_format = vars_store_format(dest)
    has_kernel = kernel.is_file()
    disk = boot_disk_path(inst_dir) or inst_dir / dirs.DISK
    return BootFiles(
        disk=str(disk),
        cidata_iso=str(inst_dir / dirs.CIDATA_ISO),
        kernel=str(kernel) if has_kernel else None,
        initrd=str(initrd) if has_kernel and initrd.is_file() else None,
        cmdline=cmdline_file.read_text().strip() if has_kernel and cmdline_file.is_file()
        else None,
        firmware_vars=vars_path,
        firmware_vars_format=vars_format,
        firmware_code=firmware_code,
    )


QCOW2_MAGIC = b"QFI\xfb"


def vars_store_format(path: Path) -> str:
    """qcow2 or raw, by the file's first bytes."""
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"


def make_vars_store(template: Path, dest: Path) -> None:
    """The instance's own UEFI variable store, made from the firmware's template as a
    qcow2 image: QEMU snapshots a running VM only when every writable drive is qcow2,
    and the variable store is one (Lima attaches no store at all). A plain copy where
    qemu-img is missing."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    qemu_img = shutil.which("qemu-img")
    try:
        if qemu_img is None:
            shutil.copyfile(template, tmp)
        else:
            from pylima import process

            process.run([qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2",
                         str(template), str(tmp)])
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def clean_runtime_files(inst_dir: Path) -> None:
    """Remove what a previous QEMU left: sockets it would fail to bind, and serial logs
    (Lima starts each boot with fresh ones)."""
    for name in (dirs.QMP_SOCK, SERIAL_SOCK, SERIALP_SOCK, SERIALV_SOCK, dirs.SERIAL_LOG,
                 SERIALP_LOG, dirs.SERIALV_LOG, dirs.QEMU_PID, dirs.GA_SOCK,
                 VNC_DISPLAY_FILE, VNC_PASSWORD_FILE):
        with contextlib.suppress(FileNotFoundError):
            (inst_dir / name).unlink()


@dataclass(frozen=True)
class QemuLaunch:
    argv: list[str]
    host: QemuHost
    accel_reason: str  # e.g. "/dev/kvm is a software KVM (kvm_pvm), slower than TCG ..."


def prepare_launch(inst_dir: Path, cfg: dict[str, Any], *, ssh_local_port: int,
                   mount_tags: Sequence[str] | None = None,
                   virtiofs_sockets: list[str] | None = None,
                   additional_disks: Sequence[tuple[str, str]] = ()) -> QemuLaunch:
    """Probe the host, download `firmware.images`, prepare the boot files and build
    the argv. Starts nothing."""
    firmware = ensure_firmware(inst_dir, cfg)
    host, reason = probe_qemu_host(str(cfg.get("arch")), need_firmware=firmware is None
                                   and needs_firmware(cfg, inst_dir))
    boot = boot_files(inst_dir, cfg, host, firmware)
    clean_runtime_files(inst_dir)
    from pylima.store.usernet import switch_dir

    switches = {str(nw["lima"]): str(switch_dir(str(nw["lima"])))
                for nw in cfg.get("networks") or [] if nw.get("lima")}
    argv = build_qemu_argv(cfg, host, str(inst_dir), boot, ssh_local_port=ssh_local_port,
                           mount_tags=mount_tags, virtiofs_sockets=virtiofs_sockets,
                           additional_disks=additional_disks, user_switches=switches)
    return QemuLaunch(argv, host, reason)


def restrict_sockets(inst_dir: Path, names: Sequence[str]) -> None:
    """Mode 0600 for the sockets `names` in the instance directory (where they exist)."""
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(inst_dir / name, 0o600)


def hostfwd_spec(protocol: str, host_ip: str, host_port: int, guest_port: int) -> str:
    """`hostfwd_add`'s rule: `tcp:127.0.0.1:8080-:80` (IPv6 host addresses bracketed)."""
    from pylima.usernet_plan import hostfwd_rule

    return hostfwd_rule(protocol, host_ip, host_port, "", guest_port)


def _bracket(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def hostfwd_error(out: str, host: str) -> str:
    """One line from what `hostfwd_add` printed on failure."""
    text = " ".join(out.split())
    if "Could not set up host forwarding rule" in text:
        return f"cannot listen on {host} (in use by another program, or not permitted)"
    return text


class QemuDriver(QemuSnapshots):
    """`Driver` for vmType qemu. QEMU's output goes to the host agent's log as
    `[qemu] ...` lines."""

    name: ClassVar[str] = "qemu"

    def __init__(self, name: str, inst_dir: Path, cfg: dict[str, Any]) -> None:
        self.instance_name = name
        self.dir = Path(inst_dir)
        self.cfg = cfg
        self.process: asyncio.subprocess.Process | None = None
        self.launch: QemuLaunch | None = None
        self.virtiofsd = Virtiofsd(self.dir)
        self.swtpm = Swtpm(self.dir)
        self._relay: asyncio.Task[None] | None = None
        self._qmp_lock = asyncio.Lock()
        self._disks_locked = False
        # (network, guest address) when a user-v2 network replaces the user-mode one
        self.member: tuple[str, str] | None = None

    # ---- without an instance ----

    @classmethod
    def validate(cls, cfg: dict[str, Any]) -> list[str]:
        check_vm_type_supported(cfg, platform.system(), platform.machine())
        warnings: list[str] = []
        arch = cfg.get("arch")
        if arch not in SUPPORTED_ARCHES:
            raise ConfigError(f"field `arch` must be one of {', '.join(SUPPORTED_ARCHES)} "
                              f"for vmType `qemu`, not `{arch}`")
        check_arch_runnable(str(arch))
        parse_memory_mib(cfg)
        if (cfg.get("firmware") or {}).get("legacyBIOS") and arch != "x86_64":
            warnings.append(f"field `firmware.legacyBIOS` is not supported for architecture "
                            f"`{arch}`, ignoring")
        for nw in cfg.get("networks") or []:
            if nw.get("lima"):
                continue  # user-v2 (config validation refuses the macOS-only modes)
            name = nw.get("socket") or ("vzNAT" if nw.get("vzNAT") else "?")
            raise ConfigError(f"network `{name}` is not supported by pylima yet",
                              hint="name a user-v2 network (`lima: user-v2`) instead")
        if cfg.get("mountType") == "virtiofs" and cfg.get("mounts"):
            problem = virtiofsd_problem()
            if problem:
                warnings.append(f"virtiofs mounts cannot be served on this host: "
                                f"{problem[0]} (Hint: {problem[1]})")
        return warnings

    @classmethod
    def check_start(cls, cfg: dict[str, Any]) -> None:
        """What a boot needs from the host beyond QEMU: swtpm for `tpm: true`."""
        if cfg.get("tpm"):
            find_swtpm()
        from pylima.store.usernet import check_networks

        check_networks(cfg)  # user-v2: vde2 installed, the network defined and free

    @classmethod
    def run_network_daemon(cls, **options: Any) -> int:
        """`limactl usernet`: a user-v2 network's switch and router (`usernet`)."""
        from pylima.drivers.qemu.usernet import run_daemon

        return run_daemon(**options)

    @classmethod
    def host_info(cls) -> dict[str, Any]:
        """`pylimaArchitectures`: the guest architectures this host runs, and how."""
        return {"architectures": {
            a.arch: {"mode": a.mode, "qemu": a.qemu, "userMode": a.user_mode}
            for a in host_architectures().values()}}

    # ---- one instance ----

    @property
    def info(self) -> DriverInfo:
        return DriverInfo(self.name, virtio_port=dirs.VIRTIO_PORT, instance_dir=str(self.dir),
                          features=DriverFeatures(
                              supported_image_formats=("qcow2", "raw"),
                              host_port_forwarding=True,
                              guest_address=self.member[1] if self.member else SLIRP_IP_ADDRESS))

    @property
    def pid(self) -> int:
        p = self.process
        return p.pid if p is not None and p.returncode is None else 0

    def create(self) -> None:
        """Nothing: `images.disk` creates the qcow2 disk for every driver."""

    def serve_mounts(self, mounts: list[dict[str, Any]]) -> list[str | None]:
        if self.cfg.get("mountType") != "virtiofs" or not mounts:
            return [None] * len(mounts)
        return self.virtiofsd.start(mounts)

    async def start(self, cfg: dict[str, Any], *, ssh_local_port: int,
                    mount_tags: list[str]) -> None:
        from pylima.images.disk import lock_instance_disks, unlock_instance_disks

        self.cfg = cfg
        # As Lima's driver: the additional disks are locked to this instance (all or
        # none) before QEMU opens them, and unlocked when the VM is gone (close()).
        disks = lock_instance_disks(cfg, self.dir)
        self._disks_locked = bool(disks)
        try:
            launch = await asyncio.to_thread(
                prepare_launch, self.dir, cfg, ssh_local_port=ssh_local_port,
                mount_tags=mount_tags,
                virtiofs_sockets=self.virtiofsd.sockets
                if cfg.get("mountType") == "virtiofs" else None,
                additional_disks=disks)
        except BaseException:
            unlock_instance_disks(cfg, self.dir)
            self._disks_locked = False
            raise
        log.info("Using accelerator %s: %s", launch.host.accel, launch.accel_reason)
        log.debug("QEMU argv: %s", launch.argv)
        self.launch = launch
        try:
            await self._forward_ssh(cfg, ssh_local_port)
            if cfg.get("tpm"):
                await self.swtpm.start()
        except BaseException:
            await self._drop_member_forwards()
            self._unlock_disks()
            raise
        self.process = await spawn_owned(
            *launch.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=str(self.dir), start_new_session=True)
        self._relay = asyncio.create_task(self._relay_output(self.process))
        try:
            # QEMU is up once QMP answers; an early exit is a bad argv or a busy port.
            qmp = QMPClient(str(self.dir / dirs.QMP_SOCK))
            connect = asyncio.ensure_future(qmp.connect(timeout=QMP_START_TIMEOUT))
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._relay), 2)
                raise LimaError(f"QEMU exited with status {exited.result()} at start",
                                hint=f"see {self.dir / dirs.HA_STDERR_LOG}")
            exited.cancel()
            connect.result()
            try:
                if (cfg.get("video") or {}).get("display") == "vnc":
                    await self._set_up_vnc(qmp, cfg)
            finally:
                await qmp.close()
            # QEMU made its sockets with the user's umask (which its 9p file creation
            # needs); they are the user's alone. The instance directory is 0700, so
            # nobody else could reach them in between.
            restrict_sockets(self.dir, [dirs.QMP_SOCK, SERIAL_SOCK, SERIALP_SOCK,
                                        SERIALV_SOCK, dirs.GA_SOCK])
        except BaseException:
            await self.kill()
            await self.swtpm.stop()
            await self._drop_member_forwards()
            self._unlock_disks()
            raise

    async def _forward_ssh(self, cfg: dict[str, Any], ssh_local_port: int) -> None:
        """With a user-v2 network in place of the user-mode one, the guest's SSH port
        is a forward on that network's router (QEMU's own `hostfwd` otherwise); the
        rules a dead host agent of this instance left there go first."""
        from pylima.drivers.qemu import router
        from pylima.store.usernet import primary_member

        self.member = await asyncio.to_thread(primary_member, cfg, self.instance_name)
        if self.member is None:
            return
        network, address = self.member
        await asyncio.to_thread(router.drop_forwards, network, self.instance_name)
        out = await asyncio.to_thread(router.add_forward, network, self.instance_name, "tcp",
                                      "127.0.0.1", ssh_local_port, address, 22)
        if out.strip():
            raise LimaError(f"cannot forward SSH from 127.0.0.1:{ssh_local_port} on network "
                            f"`{network}`: {hostfwd_error(out, f'127.0.0.1:{ssh_local_port}')}")
        log.info("Network `%s`: SSH at 127.0.0.1:%d -> %s:22 (the network's router)",
                 network, ssh_local_port, address)

    async def _drop_member_forwards(self) -> None:
        if self.member is not None:
            from pylima.drivers.qemu import router

            await asyncio.to_thread(router.drop_forwards, self.member[0], self.instance_name)

    async def _set_up_vnc(self, qmp: QMPClient, cfg: dict[str, Any]) -> None:
        """As Lima's host agent: a generated password set over QMP, then where the
        server listens (the display QEMU took, when `to=` let it choose) in
        `vncdisplay`, and the password in `vncpassword`."""
        from pylima.drivers.qemu import vnc

        host, number, may_move = vnc.parse_vnc_display(
            str(((cfg.get("video") or {}).get("vnc") or {}).get("display") or ""))
        password = vnc.generate_password(8)
        await qmp.execute("change-vnc-password", {"password": password})
        port = vnc.VNC_BASE_PORT + number
        if may_move:
            info = await qmp.execute("query-vnc")
            port = int(info["service"])
            number = port - vnc.VNC_BASE_PORT
        display = vnc.vnc_display_text(host, number)
        vnc.write_vnc_files(self.dir, display, password)
        log.info("VNC server running at %s <vnc://%s>", display, vnc.join_host_port(host, port))
        log.info("VNC Display: `%s`", self.dir / vnc.VNC_DISPLAY_FILE)
        log.info("VNC Password: `%s`", self.dir / vnc.VNC_PASSWORD_FILE)

    def _unlock_disks(self) -> None:
        if not self._disks_locked:
            return
        from pylima.images.disk import unlock_instance_disks

        for name in unlock_instance_disks(self.cfg, self.dir):
            log.info("Unmounting disk `%s`", name)
        self._disks_locked = False

    @staticmethod
    async def _relay_output(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            log.info("[qemu] %s", line.decode(errors="replace").rstrip())

    async def wait(self) -> int:
        if self.process is None:
            raise LimaError("QEMU has not been started")
        rc = await self.process.wait()
        if self._relay is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._relay), 2)
        return rc

    async def stop(self, timeout: float) -> None:
        """ACPI power-off; `quit` over QMP after `timeout`; SIGKILL if that fails, or
        at once when the QMP socket is gone (nothing can ask for the power-off)."""
        if self.process is None or self.process.returncode is not None:
            return
        try:
            await self.qmp("system_powerdown")
        except (OSError, LimaError) as e:
            # Nothing asked the guest to power off, so waiting for it is pointless
            # (the QMP socket is gone, e.g. with the instance directory).
            if not (self.dir / dirs.QMP_SOCK).exists():
                log.warning("ACPI power-down over QMP failed: %s; stopping QEMU", e)
                await self.kill()
                return
            log.warning("ACPI power-down over QMP failed: %s", e)
        if await self._exited_within(timeout):
            return
        log.warning("The guest did not power off in %g s; stopping QEMU", timeout)
        with contextlib.suppress(OSError, LimaError):
            await self.qmp("quit")
        if not await self._exited_within(QUIT_TIMEOUT):
            await self.kill()

    async def _exited_within(self, timeout: float) -> bool:
        assert self.process is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), timeout)
        except TimeoutError:
            return False
        return True

    async def kill(self) -> None:
        await kill_and_reap(self.process)

    async def close(self) -> None:
        await self.kill()
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._relay
        await self.virtiofsd.stop()
        await self.swtpm.stop()
        await self._drop_member_forwards()
        self._unlock_disks()
        from pylima.drivers.qemu.vnc import remove_vnc_files

        remove_vnc_files(self.dir)
        for name in (dirs.QEMU_PID, dirs.QMP_SOCK):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()

    # ---- QMP ----

    async def qmp(self, command: str, arguments: dict[str, Any] | None = None, *,
                  connect_timeout: float = 5.0) -> Any:
        """One QMP command on a connection of its own (QEMU serves one monitor client
        at a time, hence the lock)."""
        async with self._qmp_lock:
            client = QMPClient(str(self.dir / dirs.QMP_SOCK))
            await client.connect(timeout=connect_timeout)
            try:
                return await client.execute(command, arguments)
            finally:
                await client.close()

    async def hmp(self, command_line: str) -> str:
        """A human-monitor command; its output (empty on success), or the QMP error."""
        try:
            out = await self.qmp("human-monitor-command", {"command-line": command_line})
        except (OSError, LimaError) as e:
            return f"QMP: {e}"
        return str(out or "")

    async def wait_guest_link(self, timeout: float) -> bool:
        """Until a NIC's receive filter lists multicast groups: the guest's driver
        programs them when the interface goes up (IPv4's all-hosts group at least).
        QEMU reports it for virtio-net; with no NIC that reports, False at once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                nics = await self.qmp("query-rx-filter")
            except (OSError, LimaError):
                nics = None  # QEMU still starting (or busy with another client)
            if nics == []:
                return False
            if any(nic.get("multicast-table") for nic in nics or []):
                return True
            await asyncio.sleep(0.25)
        return False

    # ---- capabilities ----

    async def capture_screenshot(self, fmt: str) -> bytes:
        from pylima.drivers.qemu.screendump import capture

        return await capture(self.qmp, self.dir, fmt)

    async def _hmp_raw(self, command_line: str) -> str:
        """A human-monitor command's output; a failed QMP exchange raises."""
        # A busy host (or another monitor client) may delay QEMU's greeting.
        out = await self.qmp("human-monitor-command", {"command-line": command_line},
                             connect_timeout=60.0)
        return str(out or "")

    async def _disk_image(self) -> tuple[str | Path, list[str]]:
        from pylima.images.disk import boot_disk_path

        disk = boot_disk_path(self.dir)
        if disk is None:
            raise LimaError(f"instance `{self.instance_name}` has no disk")
        return disk, []

    async def guest_agent_connect(
            self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        path = str(self.dir / dirs.GA_SOCK)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + GUEST_AGENT_CONNECT_TIMEOUT
        while True:
            try:
                return await asyncio.open_unix_connection(path)
            except OSError:
                if loop.time() >= deadline:
                    return None
                await asyncio.sleep(0.1)

    async def add_host_forward(self, protocol: str, host_ip: str, host_port: int,
                               guest_port: int) -> str:
        if self.member is not None:
            from pylima.drivers.qemu import router

            network, address = self.member
            out = await asyncio.to_thread(router.add_forward, network, self.instance_name,
                                          protocol, host_ip, host_port, address, guest_port)
            return hostfwd_error(out, f"{_bracket(host_ip)}:{host_port}") if out.strip() else ""
        out = await self.hmp(f"hostfwd_add {NETDEV} "
                             + hostfwd_spec(protocol, host_ip, host_port, guest_port))
        return hostfwd_error(out, f"{_bracket(host_ip)}:{host_port}") if out.strip() else ""

    async def remove_host_forward(self, protocol: str, host_ip: str, host_port: int) -> None:
        if self.member is not None:
            from pylima.drivers.qemu import router

            await asyncio.to_thread(router.remove_forward, self.member[0], self.instance_name,
                                    protocol, host_ip, host_port)
            return
        out = await self.hmp(f"hostfwd_remove {NETDEV} {protocol}:{_bracket(host_ip)}:"
                             f"{host_port}")
        if out.strip():
            log.debug("hostfwd_remove: %s", out.strip())


__all__ = ["QemuDriver", "QemuLaunch", "boot_files", "clean_runtime_files", "hostfwd_spec",
           "needs_firmware", "prepare_launch", "QMPError"]
