"""VM drivers: the one interface through which the host agent, `api` and the CLI
drive a VM, and the registry of drivers by name (`registry`).

The interface follows Lima's `driver.Driver`, trimmed to what pylima uses and made
of small parts:

- `Driver`, the lifecycle of one instance's VM: `validate` a config for this host
  (a class method: it needs no instance), `create` driver files once, `serve_mounts`
  (the mounts the driver itself serves, e.g. QEMU's virtiofsd), `start` the VM
  process, `wait` for it to end, `stop` it (gracefully, then by force), `kill` it,
  `close` whatever else the driver started. A driver owns every process and file it
  starts or writes (QEMU, virtiofsd, qemu.pid, qmp.sock, ...): nothing outside it
  touches them.
- Optional capabilities, detected with `isinstance` (runtime-checkable protocols):
  `GuestAgentTransport` (a byte stream to the guest agent), `HostPortForwarding`
  (the driver binds host ports and delivers them to a guest port itself, as QEMU's
  user-mode network does), `Screenshotter` (captures the VM's display, Lima's
  driver.Screenshotter; it raises `NoDisplayError` for a VM without one),
  `Snapshotter` (Lima's CreateSnapshot/ApplySnapshot/DeleteSnapshot/ListSnapshots:
  with the memory state while the VM runs, of the disk while it is stopped).
- Capabilities as plain data: `DriverInfo` and its `DriverFeatures`, serialised with
  Lima's JSON keys.

pylima runs guests with QEMU (`drivers.qemu`), or on a local or remote libvirt
host (`drivers.libvirt`, vmType `libvirt`). `vz` (Apple Virtualization.framework)
and `wsl2` exist in Lima's schema, so a lima.yaml that names them loads and validates,
but they are registered as drivers that refuse this host with the requirement spelled
out (`drivers.unsupported`). Lima's external drivers (`lima-driver-NAME` executables)
are discovered and listed, and refused with one line when used (`registry`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from pylima.errors import ConfigError, LimaError

__all__ = ["Driver", "DriverFeatures", "DriverInfo", "GuestAgentTransport",
           "HostPortForwarding", "NoDisplayError", "Screenshotter", "SnapshotError",
           "SnapshotEntry", "Snapshotter", "check_snapshot_tag", "parse_snapshot_table",
           "snapshot_tags",
           "check_vm_type_supported", "rosetta_enabled"]


@dataclass(frozen=True)
class DriverFeatures:
    """What a driver can do and how the host agent must adapt (Lima's DriverFeatures,
    plus pylima's own keys)."""

    can_run_gui: bool = False
    # The SSH address is known only once the VM runs (the host agent asks `ssh_address`).
    dynamic_ssh_address: bool = False
    # The driver uses a fixed SSH port; else the host agent picks a free local port.
    static_ssh_port: bool = False
    skip_socket_forwarding: bool = False
    no_cloud_init: bool = False
    rosetta_enabled: bool = False
    rosetta_binfmt: bool = False
    supported_image_formats: tuple[str, ...] = ()
    # pylima: the driver forwards host ports into the guest itself (`HostPortForwarding`),
    # reaching guest sockets bound to any address or to `guest_address`.
    host_port_forwarding: bool = False
    guest_address: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.can_run_gui:
            out["canRunGui"] = True
        out.update({"dynamicSSHAddress": self.dynamic_ssh_address,
                    "staticSSHPort": self.static_ssh_port,
                    "skipSocketForwarding": self.skip_socket_forwarding,
                    "noCloudInit": self.no_cloud_init,
                    "rosettaEnabled": self.rosetta_enabled,
                    "rosettaBinFmt": self.rosetta_binfmt})
        if self.supported_image_formats:
            out["supportedImageFormats"] = list(self.supported_image_formats)
        out["pylimaHostPortForwarding"] = self.host_port_forwarding
        if self.guest_address:
            out["pylimaGuestAddress"] = self.guest_address
        return out


@dataclass(frozen=True)
class DriverInfo:
    """A driver's identity and capabilities (Lima's driver.Info)."""

    name: str
    vsock_port: int = 0
    virtio_port: str = ""
    instance_dir: str = ""
    features: DriverFeatures = field(default_factory=DriverFeatures)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "vsockPort": self.vsock_port,
                               "virtioPort": self.virtio_port}
        if self.instance_dir:
            out["instanceDir"] = self.instance_dir
        out["features"] = self.features.to_json()
        return out


class Driver(Protocol):
    """One instance's VM, as the host agent drives it.

    Built as `DriverClass(name, inst_dir, cfg)` from the instance's filled config.
    Order of calls: `validate` (class method; at create and at start), `create`
    (once, when the instance is created), then per boot `serve_mounts` (before the
    cidata seed is written, so that mounts the driver cannot serve are left out of
    it), `start`, `wait` (concurrently with the boot), `stop` or `kill`, and always
    `close` last.
    """

    name: ClassVar[str]

    @classmethod
    def validate(cls, cfg: dict[str, Any]) -> list[str]:
        """Raise LimaError when this host cannot run `cfg`; return warnings to show.
        Probes the host as needed, never starts a VM."""
        ...

    # Optional: `check_start(cfg)` (class method) raises LimaError, before a start
    # downloads or spawns anything, when the host lacks what the boot needs.
    # Optional: `local_disk` (class attribute, True when absent): the instance's disk
    # is a file of the instance directory, made by `images.disk` before the host agent
    # starts. False for a driver that keeps the disk elsewhere (libvirt: a pool volume).
    # Optional: `run_network_daemon(**options)` (class method; the QEMU driver's): runs
    # a user-v2 network's daemon, `limactl usernet`, until its last member is gone.

    @classmethod
    def host_info(cls) -> dict[str, Any]:
        """Facts for `limactl info` (e.g. the guest architectures the driver runs)."""
        ...

    @property
    def info(self) -> DriverInfo: ...

    @property
    def pid(self) -> int:
        """The VM process's pid while it runs (Lima's driverPID), else 0."""
        ...

    def create(self) -> None:
        """Driver files made once when the instance is created (none for QEMU)."""
        ...

    def serve_mounts(self, mounts: list[dict[str, Any]]) -> list[str | None]:
        """Start whatever serves `mounts` on the host side (QEMU: virtiofsd). Returns
        one entry per mount: None when it is served (or needs nothing from the
        driver), else why it cannot be."""
        ...

    async def start(self, cfg: dict[str, Any], *, ssh_local_port: int,
                    mount_tags: list[str]) -> None:
        """Launch the VM with `cfg` (the config less the mounts that cannot be
        served) and return once its process runs; raise LimaError if it cannot."""
        ...

    async def wait(self) -> int:
        """Wait until the VM process has ended; its exit status."""
        ...

    async def stop(self, timeout: float) -> None:
        """Ask the guest to power off; after `timeout` seconds end the VM process by
        force. Returns once the process is gone."""
        ...

    async def kill(self) -> None:
        """End the VM process at once (a forced stop)."""
        ...

    async def close(self) -> None:
        """Stop every helper process the driver started (virtiofsd, ...) and remove
        its runtime files. Safe to call more than once and after a failed start."""
        ...


@runtime_checkable
class GuestAgentTransport(Protocol):
    """The driver carries the guest agent's byte stream (QEMU: a virtio-serial port)."""

    async def guest_agent_connect(
            self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the guest agent's port, or None when there is none."""
        ...


@runtime_checkable
class GuestLinkWatch(Protocol):
    """The driver sees when the guest brings its network interface up (QEMU: the
    virtio-net receive filter the guest's driver programs)."""

    async def wait_guest_link(self, timeout: float) -> bool:
        """Return True once the guest has brought a network interface up; False when
        the driver cannot tell (a NIC without receive-filter reports) or `timeout`
        seconds have passed first."""
        ...


@runtime_checkable
class HostPortForwarding(Protocol):
    """The driver binds host ports and forwards them to guest ports itself."""

    async def add_host_forward(self, protocol: str, host_ip: str, host_port: int,
                               guest_port: int) -> str:
        """Forward host `host_ip:host_port` to the guest's `guest_port`; returns ""
        on success, else why not (one line)."""
        ...

    async def remove_host_forward(self, protocol: str, host_ip: str, host_port: int) -> None:
        ...


class NoDisplayError(LimaError):
    """The VM has no display to capture (Lima's driver.ErrNoDisplay)."""


@runtime_checkable
class Screenshotter(Protocol):
    """The driver captures the VM's display."""

    async def capture_screenshot(self, fmt: str) -> bytes:
        """The display as `fmt` ("png" or "bmp"); NoDisplayError when there is none."""
        ...


@runtime_checkable
class Snapshotter(Protocol):
    """The driver saves and restores named snapshots of the instance.

    `running` says whether the VM runs (then only the process that owns the VM, the
    host agent, may call these): a running VM is saved with its memory and device
    state and resumes where the snapshot was taken; a stopped one has its disk
    snapshotted. Raise LimaError with one line on failure, leaving no partial
    snapshot behind."""

    async def create_snapshot(self, tag: str, *, running: bool) -> None: ...

    async def apply_snapshot(self, tag: str, *, running: bool) -> None: ...

    async def delete_snapshot(self, tag: str, *, running: bool) -> None: ...

    async def list_snapshots(self, *, running: bool) -> str:
        """The snapshot table as Lima prints it: a header line (ID, TAG, VM SIZE,
        DATE, VM CLOCK, ICOUNT) and one line per snapshot; "" when there is none."""
        ...


class SnapshotError(LimaError):
    """A snapshot operation that the driver refused or that cannot be done."""


@dataclass(frozen=True)
class SnapshotEntry:
    """One line of QEMU's snapshot table."""

    id: str
    tag: str
    vm_size: str
    date: str
    vm_clock: str
    icount: str = ""

    def to_json(self) -> dict[str, str]:
        return {"id": self.id, "tag": self.tag, "vmSize": self.vm_size, "date": self.date,
                "vmClock": self.vm_clock, "icount": self.icount}


_DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def parse_snapshot_table(table: str) -> list[SnapshotEntry]:
    """The entries of a `list_snapshots` table. The
    header must be QEMU's; a section that follows the first (QEMU's partial,
    non-loadable snapshots of single disks) ends the table."""
    lines = table.split("\n")
    if not lines or not lines[0].strip():
        return []
    header = lines[0].split()
    if len(header) < 2 or header[1] != "TAG":
        raise SnapshotError(f"unknown header: {lines[0]}")
    entries = []
    for line in lines[1:]:
        if not line.strip():
            continue
        m = _DATE.search(line)
        fields = line.split()
        if m is None or len(fields) < 2 or line.endswith(":"):
            break
        head = line[:m.start()].split()
        tail = line[m.end():].split()
        # ID, TAG (which may hold spaces), the size as number and unit
        ident, size = head[0], " ".join(head[-2:])
        tag = " ".join(head[1:-2])
        entries.append(SnapshotEntry(ident, tag, size, m.group(0),
                                     tail[0] if tail else "",
                                     tail[1] if len(tail) > 1 else ""))
    return entries


def check_snapshot_tag(tag: str) -> None:
    """Lima's `expected tag` for an empty tag; pylima also refuses whitespace, which a
    monitor's command line would split."""
    if tag == "":
        raise SnapshotError("expected tag")
    if any(c.isspace() for c in tag):
        raise SnapshotError(f"invalid tag {tag!r}: must not contain whitespace")


def snapshot_tags(table: str) -> list[str]:
    """`limactl snapshot list --quiet`: the TAG column of a `list_snapshots` table, as
    Lima takes it (the second field of each line after the header; Lima's `unknown
    header: ...` when the header is not the expected one)."""
    out = []
    for i, line in enumerate(table.split("\n")):
        fields = line.split()
        if i == 0 and len(fields) > 1 and fields[1] != "TAG":
            raise SnapshotError(f"unknown header: {line}")
        if i == 0 or line == "":
            continue
        out.append(fields[1])
    return out


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
                          f"Windows 11 (this host is {this})",
                          hint="use `--vm-type=qemu`")
    apple_silicon = host_machine.lower() in ("arm64", "aarch64")
    if rosetta_enabled(cfg) and (not is_mac or mac_too_old or not apple_silicon):
        raise ConfigError("Rosetta requires macOS 13 or later on Apple silicon with "
                          "`vmType: vz`",
                          hint="use fast mode (QEMU user-mode emulation with binfmt) instead")

