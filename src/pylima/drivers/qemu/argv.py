"""The QEMU command line of an instance. PURE: every host fact (binary, version,
accelerator, firmware files) comes in as a `QemuHost` value probed elsewhere, and the
files of the instance directory as `BootFiles`; nothing here touches the disk.

The shape follows Lima's QEMU driver (device choices, chardev ids, file names, the
user-mode network addresses, mount tags), trimmed for boot speed under TCG: no USB
controller, no default devices (`-nodefaults`), and direct kernel boot skips the
UEFI firmware (the firmware adds several seconds under emulation).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pylima import filenames as dirs  # the instance file names (pure constants)
from pylima.config.defaults import DEFAULT_9P_SECURITY_MODEL, DEFAULT_VIRTIOFS_QUEUE_SIZE, mount_tag
from pylima.config.defaults import mac_address as _mac_address
from pylima.config.units import parse_size
from pylima.errors import ConfigError, LimaError

# Lima's user-mode network (each QEMU process has its own slirp, so it is fixed).
SLIRP_NETWORK = "192.168.5.0/24"
SLIRP_GATEWAY = "192.168.5.2"
SLIRP_DNS = "192.168.5.3"
SLIRP_IP_ADDRESS = "192.168.5.15"

# Instance files of the QEMU driver that `store.dirs` does not name (Lima's names).
SERIAL_SOCK = "serial.sock"
SERIALP_LOG = "serialp.log"  # PCI serial: ttyS0 on aarch64, where serial.log is ttyAMA0
SERIALP_SOCK = "serialp.sock"
SERIALV_SOCK = "serialv.sock"
VHOST_SOCK = "virtiofsd-{}.sock"
EFI_VARS = "qemu-efi-vars.fd"  # the instance's own copy of the UEFI variable store
EFI_CODE = "qemu-efi-code.fd"  # the UEFI code downloaded from `firmware.images`
SWTPM_SOCK = "swtpm.sock"  # swtpm's control socket (`tpm: true`)
SWTPM_DIR = "swtpm"  # swtpm's TPM state, the instance's own
VNC_DISPLAY_FILE = "vncdisplay"  # `video.display: vnc`: where the server listens
VNC_PASSWORD_FILE = "vncpassword"  # and the password the host agent set

# `qemu-system-<arch>` names, by Lima arch.
_QEMU_ARCH = {"armv7l": "arm", "ppc64le": "ppc64"}


@dataclass(frozen=True)
class QemuHost:
    """What the argv builder needs to know about the host (see `probe.probe_qemu_host`)."""

    binary: str
    version: tuple[int, int, int]
    accel: str  # "kvm" | "tcg"
    firmware_code: str | None
    firmware_vars_template: str | None
    host_arch: str  # Lima arch name of the host: x86_64, aarch64, ...
    machine_id: str = ""  # seeds the stable MAC address, as Lima's MACAddress does


@dataclass(frozen=True)
class BootFiles:
    """Paths of the instance's boot files (inside the instance directory)."""

    disk: str
    cidata_iso: str
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    firmware_vars: str | None = None
    # UEFI code downloaded from `firmware.images` (used instead of the host's)
    firmware_code: str | None = None
    # qcow2 for new instances (so that QEMU can snapshot a running VM), raw for an
    # instance whose store was made as a plain copy
    firmware_vars_format: str = "raw"


def qemu_binary_name(arch: str) -> str:
    return "qemu-system-" + _QEMU_ARCH.get(arch, arch)


def parse_memory_mib(cfg: dict[str, Any]) -> int:
    """`memory` ("4GiB", "512MiB", a byte count) in whole MiB, as `-m` takes it."""
    value = cfg.get("memory")
    if value is None:
        raise ConfigError("field `memory` must be set")
    try:
        size = parse_size(value)
    except ValueError as e:
        raise ConfigError(f"field `memory` has an invalid value: {e}") from None
    mib = size >> 20
    if mib < 1:
        raise ConfigError(f"field `memory` must be at least 1MiB (got `{value}`)")
    return mib




def default_cpu_type(arch: str, accel: str, version: tuple[int, int, int]) -> str:
    """The `-cpu` model when `vmOpts.qemu.cpuType` does not name one."""
    if accel != "tcg":
        return "host"
    if arch == "aarch64":
        # Measured under TCG (bench/cross_arch.py): `max` spends most of the guest's
        # time in pointer authentication (QARMA), `max,pauth-impdef=on` less; a v8.2
        # core without pointer authentication (Debian's arm64 code runs its PAC
        # instructions as NOPs there) boots the kernel about twice as fast as either.
        # neoverse-n1 exists since QEMU 7.1; before that cortex-a72 is the quick one.
        return "neoverse-n1" if version >= (7, 1, 0) else "cortex-a72"
    return "max"


def resolve_cpu_type(cfg: dict[str, Any], host: QemuHost) -> str:
    arch = str(cfg.get("arch"))
    qemu_opts = (cfg.get("vmOpts") or {}).get("qemu") or {}
    override = (qemu_opts.get("cpuType") or {}).get(arch)
    if override:
        return str(override)
    # The pre-vmOpts top-level field, in case a caller hands in an unfilled config.
    legacy = (cfg.get("cpuType") or {}).get(arch)
    if legacy:
        return str(legacy)
    return default_cpu_type(arch, host.accel, host.version)


def _machine_args(arch: str, accel: str) -> list[str]:
    if arch == "x86_64":
        args = ["-machine", "q35,vmport=off"]
        if accel == "tcg":
            # One host thread per vCPU, and a large translation cache: TCG re-translates
            # less of a booting kernel.
            args += ["-accel", "tcg,thread=multi,tb-size=512"]
        else:
            args += ["-accel", accel]
        # No S3/S4 sleep states: a suspended guest never wakes up under the host agent.
        return args + ["-global", "ICH9-LPC.disable_s3=1", "-global", "ICH9-LPC.disable_s4=1"]
    if arch in ("aarch64", "armv7l"):
        accel_arg = "tcg,thread=multi,tb-size=512" if accel == "tcg" else accel
        return ["-machine", "virt", "-accel", accel_arg]
    if arch == "riscv64":
        return ["-machine", "virt,acpi=off", "-accel", accel]
    raise LimaError(f"architecture `{arch}` is not supported by pylima's QEMU driver")


def _chardev_socket(chardev_id: str, inst_dir: str, sock: str, log: str | None) -> str:
    spec = f"socket,id={chardev_id},path={os.path.join(inst_dir, sock)},server=on,wait=off"
    if log:
        spec += f",logfile={os.path.join(inst_dir, log)}"
    return spec


# Lima's hard minimum on Linux hosts; older QEMU is untested there too.
MINIMUM_QEMU_VERSION = (4, 0, 0)


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def check_qemu_version(cfg: dict[str, Any], version: tuple[int, int, int]) -> None:
    """Refuse QEMU older than pylima supports or than `vmOpts.qemu.minimumVersion`."""
    if version < MINIMUM_QEMU_VERSION:
        raise LimaError(f"QEMU {_version_text(version)} is too old, "
                        f"{_version_text(MINIMUM_QEMU_VERSION)} or later required")
    wanted = ((cfg.get("vmOpts") or {}).get("qemu") or {}).get("minimumVersion")
    if wanted:
        try:
            parts = tuple(int(p) for p in str(wanted).split("."))
        except ValueError:
            raise ConfigError(f"field `vmOpts.qemu.minimumVersion` must be a version like "
                              f"`8.2.1`, not `{wanted}`") from None
        if version < parts:
            raise LimaError(f"QEMU {_version_text(version)} is too old, template requires "
                            f"`{wanted}` or later")


def build_qemu_argv(cfg: dict[str, Any], host: QemuHost, inst_dir: str, boot: BootFiles, *,
                    ssh_local_port: int, mount_tags: Sequence[str] | None = None,
                    virtiofs_sockets: Sequence[str] | None = None,
                    additional_disks: Sequence[tuple[str, str]] = (),
                    user_switches: Mapping[str, str] | None = None) -> list[str]:
    """The full QEMU command line (binary first) for the filled config `cfg`.

    `mount_tags` (one per `cfg["mounts"]` entry) default to Lima's tags;
    `virtiofs_sockets` (one per mount) are the vhost-user sockets of the running
    virtiofsd processes, required when `mountType` is virtiofs; `additional_disks`
    are the (path, format) of the `additionalDisks` the caller has locked;
    `user_switches` maps each user-v2 network `networks[].lima` names to the socket
    directory of its running switch.
    """
    arch = str(cfg.get("arch"))
    accel = host.accel
    check_qemu_version(cfg, host.version)
    if accel not in ("kvm", "tcg"):
        raise LimaError(f"accelerator `{accel}` is not supported by pylima's QEMU driver")
    if accel == "kvm" and arch != host.host_arch:
        raise LimaError(f"KVM cannot run an `{arch}` guest on this `{host.host_arch}` host",
                        hint="use the `tcg` accelerator (PYLIMA_QEMU_ACCEL=tcg)")
    name = os.path.basename(os.path.normpath(inst_dir))
    mem_mib = parse_memory_mib(cfg)
    cpus = int(cfg.get("cpus") or 1)
    mount_type = cfg.get("mountType") or "9p"
    mounts: list[dict[str, Any]] = list(cfg.get("mounts") or [])

    args = [host.binary, "-name", f"lima-{name}", "-nodefaults"]
    args += ["-m", str(mem_mib)]
    if mount_type == "virtiofs" and mounts:
        # vhost-user-fs needs guest RAM that virtiofsd can map: a shared memfd.
        args += ["-object", f"memory-backend-memfd,id=mem,size={mem_mib}M,share=on",
                 "-numa", "node,memdev=mem"]
    args += ["-cpu", resolve_cpu_type(cfg, host)]
    args += _machine_args(arch, accel)
    args += ["-smp", f"{cpus},sockets=1,cores={cpus},threads=1"]

    # Firmware. Direct kernel boot needs none: SeaBIOS (x86_64) or the virt board's
    # own loader (aarch64) jump straight into the kernel, several seconds sooner.
    # Firmware from `firmware.images` is used as Lima uses it, kernel or not, and with
    # no variable store (Lima attaches none).
    legacy_bios = bool((cfg.get("firmware") or {}).get("legacyBIOS")) and arch == "x86_64"
    if boot.firmware_code:
        args += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={boot.firmware_code}"]
    elif not boot.kernel and not legacy_bios:
        if not host.firmware_code:
            raise LimaError(f"could not find UEFI firmware for `{arch}`",
                            hint="install the firmware package (ovmf, qemu-efi-aarch64)"
                            + (", or set `firmware.legacyBIOS: true`"
                               if arch == "x86_64" else ""))
        args += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={host.firmware_code}"]
        if boot.firmware_vars:
            args += ["-drive", f"if=pflash,format={boot.firmware_vars_format},unit=1,"
                     f"file={boot.firmware_vars}"]

    # Disks: the boot disk first so that it is /dev/vda; the NoCloud seed as a read-only
    # virtio disk (label `cidata`), which needs no AHCI, SCSI or CD-ROM driver in the
    # guest's initrd.
    args += ["-drive", f"file={boot.disk},if=none,format=qcow2,discard=on,id=boot-disk",
             "-device", "virtio-blk-pci,drive=boot-disk,bootindex=1"]
    # The additional disks next, in `additionalDisks` order, so that the guest sees
    # them as vdb, vdc, ... (the names the boot script uses, as Lima's does). Explicit
    # devices: an `if=virtio` drive would be created after every `-device`, behind the
    # seed.
    for i, (path, fmt) in enumerate(additional_disks):
        args += ["-drive", f"file={path},if=none,format={fmt},discard=on,id=disk{i}",
                 "-device", f"virtio-blk-pci,drive=disk{i}"]
    args += ["-drive", f"file={boot.cidata_iso},if=none,format=raw,readonly=on,id=cidata",
             "-device", "virtio-blk-pci,drive=cidata"]

    if boot.kernel:
        args += ["-kernel", boot.kernel]
        if boot.cmdline is not None:
            args += ["-append", boot.cmdline]
        if boot.initrd:
            args += ["-initrd", boot.initrd]

    args += _tpm_args(cfg, arch, inst_dir)

    # Network: Lima's user-mode network, SSH forwarded from 127.0.0.1; or, as in Lima,
    # the instance's first user-v2 network in its place (the network's router forwards
    # SSH, see `router`). Each further user-v2 network is one more NIC, on the
    # network's switch.
    mac = _mac_address(host.machine_id, inst_dir)
    if not any(nw.get("lima") for nw in cfg.get("networks") or []):
        args += ["-netdev",
                 f"user,id=net0,net={SLIRP_NETWORK},host={SLIRP_GATEWAY},dns={SLIRP_DNS},"
                 f"dhcpstart={SLIRP_IP_ADDRESS},hostfwd=tcp:127.0.0.1:{ssh_local_port}-:22",
                 "-device", f"virtio-net-pci,netdev=net0,mac={mac}"]
    args += user_network_args(cfg, user_switches or {})

    # Entropy: the guest's early boot (sshd host keys, systemd) does not wait for it.
    args += ["-device", "virtio-rng-pci"]

    args += _audio_args(cfg)
    args += _display_args(cfg, arch)

    # Serial consoles, each a socket for interactive use and a log file.
    args += ["-chardev", _chardev_socket("char-serial", inst_dir, SERIAL_SOCK, dirs.SERIAL_LOG),
             "-serial", "chardev:char-serial"]
    if arch in ("aarch64", "armv7l"):
        # ttyAMA0 is the board's PL011; this PCI serial is the guest's ttyS0.
        args += ["-chardev",
                 _chardev_socket("char-serial-pci", inst_dir, SERIALP_SOCK, SERIALP_LOG),
                 "-device", "pci-serial,chardev=char-serial-pci"]
    args += ["-chardev",
             _chardev_socket("char-serial-virtio", inst_dir, SERIALV_SOCK, dirs.SERIALV_LOG),
             # One port only: the guest's hvc0.
             "-device", "virtio-serial-pci,id=virtio-serial0,max_ports=1",
             "-device", "virtconsole,chardev=char-serial-virtio,id=console0"]

    args += _mount_args(mounts, mount_type, inst_dir, mount_tags, virtiofs_sockets)

    args += ["-chardev", _chardev_socket("char-qmp", inst_dir, dirs.QMP_SOCK, None),
             "-qmp", "chardev:char-qmp"]
    # The guest agent's port, on a bus of its own (the console's bus has one port).
    args += ["-chardev", _chardev_socket("char-ga", inst_dir, dirs.GA_SOCK, None),
             "-device", "virtio-serial-pci,id=virtio-serial1",
             "-device",
             f"virtserialport,bus=virtio-serial1.0,chardev=char-ga,name={dirs.VIRTIO_PORT}"]
    args += ["-pidfile", os.path.join(inst_dir, dirs.QEMU_PID)]
    return args


def user_network_args(cfg: dict[str, Any], switches: Mapping[str, str]) -> list[str]:
    """One virtio NIC per `networks` entry, on its user-v2 network's vde_switch; the
    first is net0 (the NIC of the default network, which it replaces), the others
    net1, net2, ... by their place in `networks`."""
    args: list[str] = []
    first = True
    for i, nw in enumerate(cfg.get("networks") or [], start=1):
        what = nw.get("lima") or nw.get("socket") or ("vzNAT" if nw.get("vzNAT") else "?")
        sock = switches.get(str(nw.get("lima") or ""))
        if not nw.get("lima") or sock is None:
            raise LimaError(f"network `{what}` is not supported by pylima yet",
                            hint="only user-v2 networks (`lima: NAME`) are")
        if "," in sock:
            raise LimaError(f"the switch path `{sock}` contains a comma, which QEMU "
                            "cannot take", hint="use a LIMA_HOME without commas")
        netdev = "net0" if first else f"net{i}"
        first = False
        args += ["-netdev", f"vde,id={netdev},sock={sock}",
                 "-device", f"virtio-net-pci,netdev={netdev},mac={nw['macAddress']}"]
    return args


def _tpm_args(cfg: dict[str, Any], arch: str, inst_dir: str) -> list[str]:
    """Lima's TPM devices: an emulator backend on swtpm's socket, CRB on x86_64 and a
    TIS device on the virt boards."""
    if not cfg.get("tpm"):
        return []
    device = {"x86_64": "tpm-crb", "aarch64": "tpm-tis-device", "armv7l": "tpm-tis-device",
              "riscv64": "tpm-tis-device"}.get(arch)
    if device is None:
        raise ConfigError(f"field `tpm` is not supported on architecture `{arch}`")
    return ["-chardev", f"socket,id=chrtpm,path={os.path.join(inst_dir, SWTPM_SOCK)}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", f"{device},tpmdev=tpm0"]


def firmware_images_for(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The `firmware.images` entries for this instance, in order: Lima's QEMU driver
    takes those of the instance's arch whose `vmType` is empty or `qemu`, and none
    with `firmware.legacyBIOS` (no UEFI at all)."""
    arch = cfg.get("arch")
    if (cfg.get("firmware") or {}).get("legacyBIOS") and arch == "x86_64":
        return []
    return [f for f in (cfg.get("firmware") or {}).get("images") or []
            if isinstance(f, dict) and (f.get("vmType") or "qemu") == "qemu"
            and (f.get("arch") or arch) == arch]


def _audio_args(cfg: dict[str, Any]) -> list[str]:
    audio = cfg.get("audio") or {}
    device = audio.get("device") or ""
    if device in ("", "none"):
        return []
    if device == "default":
        device = "pa"  # pulseaudio: the QEMU driver runs on Linux hosts
    interface = audio.get("interface") or "hda"
    args = ["-audiodev", f"{device},id=snd0"]
    if interface == "virtio":
        return args + ["-device", "virtio-sound-pci,audiodev=snd0"]
    if interface == "hda":
        return args + ["-device", "ich9-intel-hda", "-device", "hda-output,audiodev=snd0"]
    raise ConfigError(f"field `audio.interface` has an unknown value `{interface}`")


def _display_args(cfg: dict[str, Any], arch: str) -> list[str]:
    video = cfg.get("video") or {}
    display = video.get("display") or "none"
    if display == "none":
        return ["-display", "none"]
    pointer = "mouse"
    if display == "vnc":
        vnc = (video.get("vnc") or {}).get("display") or "127.0.0.1:0,to=9"
        display = f"vnc={vnc},password=on"
        pointer = "tablet"  # absolute pointer: no second cursor in VNC viewers
    gpu = "virtio-vga" if arch in ("x86_64", "riscv64") else "virtio-gpu"
    return ["-display", display, "-device", gpu, "-device", "virtio-keyboard-pci",
            "-device", f"virtio-{pointer}-pci"]


def _mount_args(mounts: list[dict[str, Any]], mount_type: str, inst_dir: str,
                tags: Sequence[str] | None, sockets: Sequence[str] | None) -> list[str]:
    if mount_type not in ("9p", "virtiofs") or not mounts:
        return []
    if tags is None:
        tags = [mount_tag(str(m["location"]), str(m.get("mountPoint") or m["location"]))
                for m in mounts]
    if len(tags) != len(mounts):
        raise LimaError(f"{len(tags)} mount tags given for {len(mounts)} mounts")
    args: list[str] = []
    if mount_type == "9p":
        for m, tag in zip(mounts, tags, strict=True):
            model = (m.get("9p") or {}).get("securityModel") or DEFAULT_9P_SECURITY_MODEL
            opts = f"local,path={m['location']},mount_tag={tag},security_model={model},id={tag}"
            if not m.get("writable"):
                opts += ",readonly=on"
            args += ["-virtfs", opts]
        return args
    if sockets is None or len(sockets) != len(mounts):
        raise LimaError("virtiofs mounts need one virtiofsd socket per mount")
    for i, (m, tag, sock) in enumerate(zip(mounts, tags, sockets, strict=True)):
        queue = (m.get("virtiofs") or {}).get("queueSize") or DEFAULT_VIRTIOFS_QUEUE_SIZE
        chardev = f"char-virtiofs-{i}"
        # virtiofsd has no read-only mode; `writable: false` is enforced in the guest.
        args += ["-chardev", f"socket,id={chardev},path={sock}",
                 "-device", f"vhost-user-fs-pci,queue-size={queue},chardev={chardev},tag={tag}"]
    return args
