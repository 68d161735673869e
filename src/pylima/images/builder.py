"""The local Debian image builder.

Cloud images cannot always be downloaded, so pylima can build a bootable Debian
cloud-style image from the Debian mirror the host's apt sources name:

1. `mmdebstrap --variant=minbase` bootstraps the packages (root mode as root,
   unshare mode with subordinate ids otherwise), with INITRD=No so that no initrd
   is built while packages go in. A setup hook puts the initramfs configuration
   (MODULES=list: a small initrd) in place first; a customize hook tunes the guest,
   holds the kernel, builds the initrd once and exports it with vmlinuz.
2. `mkfs.ext4 -d` makes the root file system from the tree (no loop mounts), an ESP
   is made with `mkfs.vfat` + mtools holding a `grub-mkstandalone` BOOT*.EFI.
3. Both are written into a GPT disk file (sfdisk, `dd conv=notrunc,sparse`) and
   converted to qcow2.

Results are cached under `cache_dir()/images/<recipe-hash>/` where the hash covers
everything that shapes the image (recipe version, suite, arch, packages, tuning and
the files written into the guest). Builds happen in a temporary directory next to
the cache and are renamed into place only when complete.

The pure parts (mirror choice, recipe, disk layout, the files written into the guest)
take their inputs as arguments and are unit-tested; the outer layer runs the tools.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pylima import process
from pylima.errors import LimaError
from pylima.store.dirs import cache_dir

log = logging.getLogger("pylima")

# Bump when the build procedure changes in a way the hashed recipe does not show.
RECIPE_VERSION = 1

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
MIRROR_ENV = "PYLIMA_DEBIAN_MIRROR"
SECURITY_MIRROR_ENV = "PYLIMA_DEBIAN_SECURITY_MIRROR"

DISK_FILE = "disk.qcow2"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
CMDLINE_FILE = "cmdline"
RECIPE_FILE = "recipe.json"
SUMS_FILE = "sha256sums"
IMAGES_SUBDIR = "images"

ROOT_LABEL = "rootfs"
ESP_LABEL = "ESP"
ESP_TYPE_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_FS_TYPE_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SECTOR = 512
MIB = 1024 * 1024

# Namespace for the ids derived from a recipe hash (partition and fs UUIDs).
_ID_NAMESPACE = uuid.UUID("5a3f7c1e-4e0b-4d53-9a57-70796c696d61")

# Packages the rest of pylima relies on in the guest (besides the kernel).
BASE_PACKAGES: tuple[str, ...] = (
    "initramfs-tools",
    "zstd",               # initrd compression (absent from minbase)
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",     # logind sessions for SSH logins (XDG_RUNTIME_DIR, linger)
    "systemd-resolved",   # DNS from DHCP: networkd does not write resolv.conf itself
    "python3-yaml",       # pylima-init reads the seed's YAML (cloud-init needs it too)
    "openssh-server",
    "openssh-sftp-server",
    "sshfs",
    "python3",
    "sudo",
    "ca-certificates",
    "iproute2",
    "netbase",
    "procps",
    "cloud-guest-utils",  # growpart, used to grow the root partition at first boot
    "e2fsprogs",          # resize2fs
    "busybox-static",     # the shell and tools of the small initrd pylima boots with
    # What a Lima user (and Lima's own tests) find in Ubuntu's cloud image:
    "rsync",              # `limactl copy --backend rsync`, Lima's copy tests
    "curl",
    "netcat-openbsd",     # `nc`, which Lima's test-port-forwarding.pl listens with
    "socat",
    "less",
    "vim-tiny",
    "iputils-ping",
    "bind9-dnsutils",     # dig, nslookup
    "inotify-tools",      # inotifywait: watching mountInotify's events
    "xauth",              # sshd's X11 forwarding (`ssh.forwardX11`) stores its cookie
)


# --------------------------------------------------------------------------------------
# Architectures


@dataclass(frozen=True)
class ArchSpec:
    """What differs between guest architectures."""

    name: str               # Lima's name: x86_64, aarch64
    deb_arch: str           # Debian's name: amd64, arm64
    kernel_package: str
    grub_platform: str      # grub-mkstandalone -O
    grub_host_package: str  # host package that ships /usr/lib/grub/<platform>
    efi_boot_file: str      # removable-media path name under EFI/BOOT/
    serial_console: str
    uname_machine: str      # os.uname().machine of a host that runs it natively


ARCHES: dict[str, ArchSpec] = {
    "x86_64": ArchSpec("x86_64", "amd64", "linux-image-amd64", "x86_64-efi",
                       "grub-efi-amd64-bin", "BOOTX64.EFI", "ttyS0", "x86_64"),
    "aarch64": ArchSpec("aarch64", "arm64", "linux-image-arm64", "arm64-efi",
                        "grub-efi-arm64-bin", "BOOTAA64.EFI", "ttyAMA0", "aarch64"),
}


def arch_spec(arch: str) -> ArchSpec:
    try:
        return ARCHES[arch]
    except KeyError:
        raise LimaError(f"image builder: unsupported arch `{arch}`",
                        hint="supported: " + ", ".join(ARCHES)) from None


# --------------------------------------------------------------------------------------
# Mirror choice (pure)


@dataclass(frozen=True)
class AptSource:
    """One apt source: a one-line `deb` entry or a deb822 stanza."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...] = ()
    enabled: bool = True
    origin: str = ""


def parse_one_line_sources(text: str, origin: str = "") -> list[AptSource]:
    """Parse the classic sources.list format (`deb [opts] URI suite comp...`)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        # Options in brackets may contain spaces: `deb [ arch=amd64 ] URI ...`.
        line = re.sub(r"\[[^\]]*\]", " ", line)
        words = line.split()
        if len(words) < 3 or words[0] not in ("deb", "deb-src"):
            continue
        out.append(AptSource((words[0],), (words[1],), (words[2],), tuple(words[3:]),
                             True, origin))
    return out


def parse_deb822_sources(text: str, origin: str = "") -> list[AptSource]:
    """Parse deb822 `.sources` stanzas (Types/URIs/Suites/Components/Enabled)."""
    out: list[AptSource] = []
    for stanza in _deb822_stanzas(text):
        fields = {k.lower(): v for k, v in stanza.items()}
        types = tuple(fields.get("types", "").split())
        uris = tuple(fields.get("uris", "").split())
        suites = tuple(fields.get("suites", "").split())
        if not types or not uris or not suites:
            continue
        enabled = fields.get("enabled", "yes").strip().lower() not in ("no", "false", "0")
        out.append(AptSource(types, uris, suites, tuple(fields.get("components", "").split()),
                             enabled, origin))
    return out


def _deb822_stanzas(text: str) -> Iterator[dict[str, str]]:
    stanza: dict[str, str] = {}
    key: str | None = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if stanza:
                yield stanza
            stanza, key = {}, None
            continue
        if raw[0] in " \t" and key is not None:
            stanza[key] += "\n" + raw.strip()
            continue
        if ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip()
            stanza[key] = value.strip()
    if stanza:
        yield stanza


def read_host_sources(root: str | os.PathLike[str] = "/") -> list[AptSource]:
    """The apt sources of the host: sources.list, sources.list.d/*.list and *.sources."""
    base = Path(root) / "etc" / "apt"
    out: list[AptSource] = []
    files = [base / "sources.list"]
    files += sorted((base / "sources.list.d").glob("*.list"))
    files += sorted((base / "sources.list.d").glob("*.sources"))
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":
            out += parse_deb822_sources(text, str(path))
        else:
            out += parse_one_line_sources(text, str(path))
    return out


@dataclass(frozen=True)
class MirrorChoice:
    """Where the packages come from, and why (for messages)."""

    mirror: str
    security: str | None
    origin: str
    updates: bool = True

    def source_lines(self, suite: str) -> list[str]:
        lines = [f"deb {self.mirror} {suite} main"]
        if suite in ("sid", "unstable", "experimental"):
            return lines
        if self.updates:
            lines.append(f"deb {self.mirror} {suite}-updates main")
        if self.security:
            lines.append(f"deb {self.security} {suite}-security main")
        return lines


def _is_security(uri: str, suites: Iterable[str]) -> bool:
    return "security" in uri or any(s.endswith("-security") for s in suites)


def _usable_uri(uri: str) -> bool:
    return uri.split(":", 1)[0] in ("http", "https", "file", "mirror+http", "mirror+https")


def choose_mirror(sources: Sequence[AptSource], suite: str = DEFAULT_SUITE,
                  override: str | None = None,
                  env: Mapping[str, str] | None = None) -> MirrorChoice:
    """Pick the Debian mirror: argument, then $PYLIMA_DEBIAN_MIRROR, then the host's
    apt sources (an entry for `suite`, else any Debian archive entry), else
    deb.debian.org. The security archive comes from $PYLIMA_DEBIAN_SECURITY_MIRROR or
    the host's `<suite>-security` entry; an explicit mirror only gets a security
    archive when one is named, since a private mirror may have no other way out."""
    env = env if env is not None else {}
    sec_env = env.get(SECURITY_MIRROR_ENV) or None
    if override:
        return MirrorChoice(override.rstrip("/"), sec_env, "argument")
    if env.get(MIRROR_ENV):
        return MirrorChoice(env[MIRROR_ENV].rstrip("/"), sec_env, f"${MIRROR_ENV}")

    debs = [s for s in sources if s.enabled and "deb" in s.types]
    main: tuple[str, str] | None = None  # (uri, origin)
    for s in debs:
        if suite in s.suites and not _is_security(s.uris[0], s.suites):
            uris = [u for u in s.uris if _usable_uri(u)]
            if uris:
                main = (uris[0], s.origin)
                break
    if main is None:
        # A host on another Debian release still names a usable Debian archive.
        for s in debs:
            for u in s.uris:
                if (_usable_uri(u) and not _is_security(u, s.suites)
                        and u.rstrip("/").endswith("/debian")):
                    main = (u, s.origin)
                    break
            if main:
                break
    security = sec_env
    if security is None and main is not None:
        for s in debs:
            if f"{suite}-security" in s.suites:
                uris = [u for u in s.uris if _usable_uri(u)]
                if uris:
                    security = uris[0]
                    break
        if security is None:
            for s in debs:
                for u in s.uris:
                    if _usable_uri(u) and u.rstrip("/").endswith("/debian-security"):
                        security = u
                        break
                if security:
                    break
    if main is not None:
        return MirrorChoice(main[0].rstrip("/"), security.rstrip("/") if security else None,
                            f"host apt sources ({main[1]})" if main[1] else "host apt sources")
    return MirrorChoice(DEFAULT_MIRROR, sec_env or DEFAULT_SECURITY_MIRROR, "default")


# --------------------------------------------------------------------------------------
# Recipe (pure)


@dataclass(frozen=True)
class Tuning:
    """How the guest is tuned for boot speed under emulation. Part of the recipe hash."""

    # Put into the initrd (MODULES=list keeps the rest out: a ~6 MB initrd).
    initrd_modules: tuple[str, ...] = (
        "virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "virtio_scsi",
        "9p", "9pnet_virtio", "virtiofs", "ext4",
    )
    initrd_compress: str = "zstd"
    # The initrd of a direct kernel boot (pylima's fast path) is pylima's own: a static
    # busybox, these modules and their dependencies, and a short /init that mounts
    # the root and switches to it (initramfs-tools' initrd, with udev, took ~4 s of
    # emulated time for the same; it stays in the image for firmware boots).
    small_initrd_modules: tuple[str, ...] = (
        "virtio_pci", "virtio_mmio", "virtio_blk", "virtio_console", "ext4",
        "crc32c_generic",
    )
    # `-cpu max` advertises SVM/VMX and frequency scaling: loading these is wasted time.
    blacklist_modules: tuple[str, ...] = (
        "kvm", "kvm_amd", "kvm_intel", "acpi_cpufreq", "pcc_cpufreq",
        "amd_freq_sensitivity",
        # q35's AHCI, SMBus, LPC watchdog and PC speaker: pylima's disks are virtio.
        "ahci", "libahci", "i2c_i801", "i2c_smbus", "lpc_ich", "iTCO_wdt",
        "iTCO_vendor_support", "intel_pmc_bxt", "pcspkr",
        # The kernel's SIMD crypto, loaded for the emulated CPU's flags: each load
        # registers algorithms while udev's coldplug competes with the boot for the
        # two emulated CPUs; ssh's crypto is OpenSSL's, in user space.
        "aesni_intel", "ghash_clmulni_intel", "sha512_ssse3", "sha256_ssse3",
        "sha1_ssse3", "crc32_pclmul", "crct10dif_pclmul",
    )
    mask_units: tuple[str, ...] = (
        "systemd-networkd-wait-online.service",
        "e2scrub_all.timer", "e2scrub_reap.service",
        "apt-daily.timer", "apt-daily-upgrade.timer",
        "fstrim.timer", "dpkg-db-backup.timer",
        # Each measured at 1.2-1.4 s of emulated CPU while the guest boots, for things
        # a pylima guest does not use: DRM, EFI pstore and device-mapper modules,
        # debugfs/tracefs and huge pages.
        "modprobe@drm.service", "modprobe@efi_pstore.service", "modprobe@dm_mod.service",
        "sys-kernel-debug.mount", "sys-kernel-tracing.mount", "dev-hugepages.mount",
    )
    enable_units: tuple[str, ...] = ("systemd-networkd.service", "systemd-resolved.service")
    # systemd runs every generator before it loads a unit (about 4 s under emulation
    # for Debian's twelve); these have nothing to find in a pylima guest (no LUKS,
    # dm-verity/integrity, hibernation, GPT auto-discovery, SysV or rc.local scripts,
    # offline updates, systemd.run=/systemd.debug_shell). fstab and getty stay.
    disable_generators: tuple[str, ...] = (
        "systemd-cryptsetup-generator", "systemd-gpt-auto-generator",
        "systemd-hibernate-resume-generator", "systemd-integritysetup-generator",
        "systemd-veritysetup-generator", "systemd-sysv-generator",
        "systemd-rc-local-generator", "systemd-system-update-generator",
        "systemd-run-generator", "systemd-debug-generator",
    )
    # The serial console is quiet: printing to an emulated UART costs ~20 s of boot.
    # pylima may swap `console=` for a virtio console (hvc0) carrying the full log.
    cmdline_extra: tuple[str, ...] = ("quiet", "loglevel=3", "systemd.show_status=false")
    # cloud-init stages, trimmed to what pylima's cidata uses.
    cloud_init_modules: tuple[str, ...] = (
        "seed_random", "bootcmd", "write_files", "growpart", "resizefs", "disk_setup",
        "mounts", "set_hostname", "update_hostname", "update_etc_hosts", "ca_certs",
        "users_groups", "ssh",
    )
    cloud_config_modules: tuple[str, ...] = ("set_passwords", "timezone", "runcmd")
    cloud_final_modules: tuple[str, ...] = (
        "package_update_upgrade_install", "write_files_deferred", "scripts_vendor",
        "scripts_per_once", "scripts_per_boot", "scripts_per_instance", "scripts_user",
        "final_message", "power_state_change",
    )
    ssh_host_key_types: tuple[str, ...] = ("ed25519",)
    # PAM modules of sshd's session stack left out: pam_motd runs the motd scripts
    # (a fork each) at every SSH connection, about 0.15 s under emulation, and its
    # text is never seen (pylima's sessions go over a master connection).
    sshd_pam_drop: tuple[str, ...] = ("pam_motd.so",)
    # Files packages install that cost time on every command: cloud-init's locale
    # warning runs `locale` in each login shell, ~100 ms per `lima CMD` under emulation.
    remove_files: tuple[str, ...] = ("/etc/profile.d/Z99-cloud-locale-test.sh",)
    # dpkg leaves these out of the guest (and of later installs there).
    dpkg_path_exclude: tuple[str, ...] = (
        "/usr/share/man/*", "/usr/share/info/*", "/usr/share/doc/*",
        "/usr/share/locale/*/LC_MESSAGES/*.mo",
    )
    # Kernel modules for hardware a virtual machine does not have: about half of the
    # generic kernel's 400 MB, which every build writes, copies and hashes.
    kernel_module_exclude: tuple[str, ...] = (
        "kernel/sound/*", "kernel/drivers/media/*", "kernel/drivers/net/wireless/*",
        "kernel/net/wireless/*", "kernel/net/mac80211/*", "kernel/drivers/net/ethernet/*",
        "kernel/drivers/infiniband/*", "kernel/drivers/staging/*", "kernel/drivers/iio/*",
        "kernel/drivers/comedi/*", "kernel/drivers/isdn/*",
        "kernel/drivers/gpu/drm/amd/*", "kernel/drivers/gpu/drm/nouveau/*",
        "kernel/drivers/gpu/drm/i915/*", "kernel/drivers/gpu/drm/radeon/*",
    )
    # ... except what QEMU commonly emulates.
    kernel_module_include: tuple[str, ...] = (
        "kernel/drivers/net/ethernet/intel/e1000/*", "kernel/drivers/net/ethernet/intel/e1000e/*",
    )
    dpkg_path_include: tuple[str, ...] = ("/usr/share/doc/*/copyright",)
    # cloud-init's output goes to its log file, not the (slow) serial console.
    cloud_init_output: str = ">> /var/log/cloud-init-output.log"
    esp_mib: int = 100
    # Root fs = used space * ratio + headroom; growpart/resize2fs enlarge it at boot.
    root_size_ratio: float = 1.2
    root_headroom_mib: int = 512


@dataclass(frozen=True)
class GuestFile:
    content: str
    mode: int = 0o644
    symlink: bool = False  # content is the link target


@dataclass(frozen=True)
class Recipe:
    arch: str
    suite: str
    packages: tuple[str, ...]
    tuning: Tuning
    # Written before packages are installed (so the first initrd is already right).
    pre_files: Mapping[str, GuestFile] = field(default_factory=dict)
    # Written after installation.
    post_files: Mapping[str, GuestFile] = field(default_factory=dict)
    customize_script: str = ""

    def to_dict(self) -> dict[str, Any]:
        def files(d: Mapping[str, GuestFile]) -> dict[str, Any]:
            return {p: asdict(f) for p, f in sorted(d.items())}

        return {
            "recipe_version": RECIPE_VERSION,
            "arch": self.arch,
            "suite": self.suite,
            "packages": list(self.packages),
            "tuning": asdict(self.tuning),
            "pre_files": files(self.pre_files),
            "post_files": files(self.post_files),
            "customize_script": self.customize_script,
        }

    def digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


# Image variants: the base image plus packages baked in, so that a template which
# needs them (a container engine, user-mode emulation) does not install them at every
# boot under emulation. "" is the base image. Each variant is its own recipe (and so
# its own cache entry); the base recipe's digest does not change when variants are
# added here.
VARIANTS: dict[str, tuple[str, ...]] = {
    "": (),
    # The container engines of template:docker, docker-rootful, podman, podman-rootful
    # and of `containerd` from the distro: Debian's docker.io (with containerd and
    # runc), what rootless docker and podman need (rootlesskit, slirp4netns, newuidmap,
    # a D-Bus user session), podman itself, and busybox-static to make small local
    # images without a registry. Also QEMU user-mode emulation (fast mode, below), so
    # that `docker run --platform` can run other architectures' images.
    "docker": ("docker.io", "containerd", "rootlesskit", "slirp4netns", "uidmap",
               "dbus-user-session", "podman", "busybox-static", "iptables",
               "qemu-user-static"),
}
# Fast mode (template:binfmt): QEMU user-mode emulation for other architectures'
# binaries; its binfmt.d files make systemd-binfmt register them at every boot. The
# same package list as "docker", so one image (one build) serves both.
VARIANTS["qemu-user"] = VARIANTS["docker"]
# The boot path of cloud images: cloud-init instead of pylima-init, so that this path
# is built and tested locally too (`limactl image build --variant=cloud-init`).
VARIANTS["cloud-init"] = ("cloud-init",)


def variant_packages(variant: str) -> tuple[str, ...]:
    try:
        return VARIANTS[variant]
    except KeyError:
        raise LimaError(f"unknown image variant `{variant}`",
                        hint="one of: " + ", ".join(v for v in VARIANTS if v)) from None


def package_list(spec: ArchSpec, extra: Iterable[str] = ()) -> tuple[str, ...]:
    return tuple(sorted({spec.kernel_package, *BASE_PACKAGES, *extra}))


def boots_with_cloud_init(packages: Iterable[str]) -> bool:
    """An image with cloud-init boots through it; any other through pylima-init."""
    return "cloud-init" in packages


def make_recipe(arch: str = "x86_64", suite: str = DEFAULT_SUITE,
                tuning: Tuning | None = None,
                extra_packages: Iterable[str] = (), variant: str = "") -> Recipe:
    spec = arch_spec(arch)
    extra_packages = (*extra_packages, *variant_packages(variant))
    tuning = tuning or Tuning()
    packages = package_list(spec, extra_packages)
    cloud_init = boots_with_cloud_init(packages)
    return Recipe(
        arch=spec.name,
        suite=suite,
        packages=packages,
        tuning=tuning,
        pre_files=render_pre_files(tuning),
        post_files=render_post_files(spec, tuning, cloud_init),
        customize_script=render_customize_script(spec, tuning, cloud_init),
    )


def render_pre_files(tuning: Tuning) -> dict[str, GuestFile]:
    """Files in place before any package is installed: the initramfs set-up (read
    by the one initrd build of the customize script) and the module blacklist."""
    modules = " ".join(tuning.initrd_modules)
    hook = (
        "#!/bin/sh\n"
        "# pylima: the virtio, 9p and virtiofs modules a pylima guest needs early.\n"
        'PREREQ=""\n'
        'prereqs() { echo "$PREREQ"; }\n'
        'case "$1" in prereqs) prereqs; exit 0 ;; esac\n'
        ". /usr/share/initramfs-tools/hook-functions\n"
        f"manual_add_modules {modules}\n"
    )
    conf = (
        "# pylima: only the listed modules (see hooks/pylima) keep the initrd small.\n"
        "MODULES=list\n"
        f"COMPRESS={tuning.initrd_compress}\n"
    )
    blacklist = "# pylima: nothing to gain from these in an emulated guest.\n" + "".join(
        f"blacklist {m}\n" for m in tuning.blacklist_modules)
    return {
        "etc/initramfs-tools/conf.d/pylima.conf": GuestFile(conf),
        "etc/initramfs-tools/hooks/pylima": GuestFile(hook, 0o755),
        "etc/modprobe.d/pylima-blacklist.conf": GuestFile(blacklist),
    }


def render_cloud_cfg(tuning: Tuning) -> str:
    def block(name: str, items: Sequence[str]) -> str:
        return f"{name}:\n" + "".join(f"  - {i}\n" for i in items)

    return (
        "# pylima: cloud-init trimmed for boot speed under emulation.\n"
        "datasource_list: [NoCloud, None]\n"
        "ssh_genkeytypes: [" + ", ".join(tuning.ssh_host_key_types) + "]\n"
        "ssh_deletekeys: true\n"
        # A 127.0.1.1 line for the hostname cloud-init sets, so that sudo and friends
        # resolve it without asking DNS.
        "manage_etc_hosts: localhost\n"
        # Keep the mirror the image was built from, even if apt-configure runs.
        "apt:\n"
        "  preserve_sources_list: true\n"
        f"output: {{all: '{tuning.cloud_init_output}'}}\n"
        "system_info:\n"
        "  network:\n"
        "    renderers: [networkd]\n"
        + block("cloud_init_modules", tuning.cloud_init_modules)
        + block("cloud_config_modules", tuning.cloud_config_modules)
        + block("cloud_final_modules", tuning.cloud_final_modules)
    )


INIT_LAUNCHER = "/usr/local/lib/pylima/init-launch"
INIT_UNITS = ("pylima-init.service", "pylima-final.service")
INIT_CACHE_DIR = "/var/lib/pylima/init"
INIT_CACHE_MODULE = "pylima_init.py"
INIT_STATE_DIR = "/run/pylima-init"  # pylima-init's STATE_DIR
PER_BOOT_DIR = "/var/lib/cloud/scripts/per-boot"  # pylima-init's PER_BOOT_DIR


def render_init_files() -> dict[str, GuestFile]:
    """pylima-init's launcher and units: they run the seed's `pylima-init` in two
    stages (see guestagent/init.py). The program itself travels on the seed, so a new
    pylima changes it without a new image."""
    launcher = (
        "#!/bin/sh\n"
        "# pylima: mount the cidata seed and run its pylima-init STAGE.\n"
        "set -eu\n"
        # The early stage found nothing for the final stage but the per-boot scripts
        # (see pylima-init's SCRIPTS_ONLY_FILE): run them here, without Python.
        f'plan={INIT_STATE_DIR}/final-scripts-only\n'
        'if [ "$1" = final ] && [ -s "$plan" ]; then\n'
        '  read -r iid <"$plan"\n'
        '  echo "pylima-init: final stage of $iid (per-boot scripts only)"\n'
        f"  for f in {PER_BOOT_DIR}/*; do\n"
        '    [ -f "$f" ] && [ -x "$f" ] || continue\n'
        '    echo "pylima-init: running $f"\n'
        '    rc=0; "$f" </dev/null || rc=$?\n'
        '    [ "$rc" = 0 ] || echo "pylima-init: ${f##*/} exited with status $rc"\n'
        "  done\n"
        f'  echo "$iid" >{INIT_STATE_DIR}/final.done\n'
        '  echo "pylima-init: final stage done"\n'
        "  exit 0\n"
        "fi\n"
        "mnt=/mnt/lima-cidata\n"
        'mkdir -p -m 700 "$mnt"\n'
        'if ! mountpoint -q "$mnt"; then\n'
        # blkid probes the disks itself: no waiting for udev's by-label links (the
        # initrd loaded virtio_blk, so the seed's disk is there already)
        "  i=0\n"
        '  until dev=$(blkid -L cidata); do\n'
        '    i=$((i + 1)); [ "$i" -lt 100 ] || { echo "pylima-init: no cidata disk"; exit 1; }\n'
        "    sleep 0.2\n"
        "  done\n"
        '  mount -t iso9660 -o ro,mode=0700,dmode=0700,overriderockperm,exec,uid=0 "$dev" "$mnt"\n'
        "fi\n"
        'if [ ! -f "$mnt/pylima-init" ]; then\n'
        '  msg="pylima-init: the seed carries no pylima-init (the image has no cloud-init)"\n'
        '  echo "$msg"; echo "$msg" >>/run/lima-boot-errors; exit 1\n'
        "fi\n"
        # Run as a module from a copy on the root disk, not as a script from the
        # seed: Python caches the module's bytecode there, so only the first boot of
        # a new pylima-init compiles it (2 s under emulation). -S: no site module
        # (0.5 s), the one path it would add is given here.
        f"lib={INIT_CACHE_DIR}\n"
        f'if ! cmp -s "$mnt/pylima-init" "$lib/{INIT_CACHE_MODULE}"; then\n'
        '  mkdir -p -m 700 "$lib"\n'
        f'  cp "$mnt/pylima-init" "$lib/{INIT_CACHE_MODULE}.new"\n'
        f'  mv -f "$lib/{INIT_CACHE_MODULE}.new" "$lib/{INIT_CACHE_MODULE}"\n'
        "fi\n"
        "exec /usr/bin/python3 -S -c 'import sys; sys.path[:0] = [sys.argv[1], "
        f'"/usr/lib/python3/dist-packages"]; import {INIT_CACHE_MODULE[:-3]}; '
        f"sys.exit({INIT_CACHE_MODULE[:-3]}.main(sys.argv[2:]))' \"$lib\" \"$1\" \"$mnt\"\n"
    )
    early = (
        "# pylima: the guest's user, keys, host name and network from the cidata seed,\n"
        "# before anything that needs them starts.\n"
        "[Unit]\n"
        "Description=pylima-init (early stage)\n"
        "DefaultDependencies=no\n"
        "Wants=network-pre.target\n"
        "After=systemd-remount-fs.service systemd-journald.socket\n"
        "Before=sysinit.target network-pre.target systemd-networkd.service ssh.service "
        "systemd-logind.service systemd-user-sessions.service shutdown.target\n"
        "Conflicts=shutdown.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={INIT_LAUNCHER} early\n"
        "StandardOutput=journal+console\n"
        "TimeoutSec=0\n"
        "\n"
        "[Install]\n"
        "WantedBy=sysinit.target\n"
    )
    final = (
        "# pylima: package updates and the per-boot scripts (boot.sh) once the network\n"
        "# and sshd are up, as cloud-init's final stage.\n"
        "[Unit]\n"
        "Description=pylima-init (final stage)\n"
        "Wants=pylima-init.service\n"
        "After=pylima-init.service network.target ssh.service systemd-logind.service "
        "dbus.service systemd-user-sessions.service\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n"
        f"ExecStart={INIT_LAUNCHER} final\n"
        # boot.sh's launcher copies its log to the console itself
        "StandardOutput=journal\n"
        "TimeoutSec=0\n"
        # what provisioning starts in the background keeps running, as under cloud-final
        "KillMode=process\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    return {
        INIT_LAUNCHER.lstrip("/"): GuestFile(launcher, 0o755),
        f"etc/systemd/system/{INIT_UNITS[0]}": GuestFile(early),
        f"etc/systemd/system/{INIT_UNITS[1]}": GuestFile(final),
    }


def render_post_files(spec: ArchSpec, tuning: Tuning,
                      cloud_init: bool = False) -> dict[str, GuestFile]:
    network = (
        "# pylima: DHCP on the first NIC whatever its name.\n"
        "[Match]\n"
        "Name=en* eth*\n"
        "\n"
        "[Network]\n"
        "DHCP=yes\n"
    )
    keygen = (
        "#!/bin/sh\n"
        "# pylima: host keys come from the seed; this only covers a boot without one.\n"
        "for f in /etc/ssh/ssh_host_*_key; do\n"
        '  [ -e "$f" ] && exit 0\n'
        "done\n"
        "exec ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key\n"
    )
    ssh_dropin = (
        "# pylima: make sure a host key exists. Debian's `sshd -t` check is dropped: it\n"
        "# costs a second under emulation and sshd itself refuses a bad config.\n"
        "[Service]\n"
        "ExecStartPre=\n"
        "ExecStartPre=/usr/local/sbin/pylima-ssh-hostkeys\n"
    )
    hosts = (
        "127.0.0.1\tlocalhost\n"
        "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        "ff02::1\t\tip6-allnodes\n"
        "ff02::2\t\tip6-allrouters\n"
    )
    files = {
        "etc/systemd/network/80-pylima-dhcp.network": GuestFile(network),
        "usr/local/sbin/pylima-ssh-hostkeys": GuestFile(keygen, 0o755),
        "etc/systemd/system/ssh.service.d/pylima-hostkeys.conf": GuestFile(ssh_dropin),
        # What the seed's boot/20 writes (Lima's cgroup delegation to the user's
        # manager), in place before the first boot: written then, it would need a
        # `systemctl daemon-reload` (seconds under emulation) in the boot's path.
        "etc/systemd/system/user@.service.d/lima.conf": GuestFile(
            "[Service]\nDelegate=yes\n"),
        "etc/hostname": GuestFile("localhost\n"),
        "etc/hosts": GuestFile(hosts),
        # systemd-resolved's stub, fed by networkd's DHCP lease.
        "etc/resolv.conf": GuestFile("../run/systemd/resolve/stub-resolv.conf", symlink=True),
    }
    if cloud_init:
        files["etc/cloud/cloud.cfg.d/90_pylima.cfg"] = GuestFile(render_cloud_cfg(tuning))
    else:
        files.update(render_init_files())
    for unit in tuning.mask_units:
        files[f"etc/systemd/system/{unit}"] = GuestFile("/dev/null", symlink=True)
    for gen in tuning.disable_generators:
        # a link to /dev/null in /etc masks the generator of that name (systemd.generator(7))
        files[f"etc/systemd/system-generators/{gen}"] = GuestFile("/dev/null", symlink=True)
    return files


def render_customize_script(spec: ArchSpec, tuning: Tuning, cloud_init: bool = False) -> str:
    """The mmdebstrap customize hook: `sh customize.sh ROOT STAGE`, where STAGE is a
    directory inside the chroot holding `post/` (files pylima adds) and receiving
    `out/` (exports). It runs outside the chroot, as real root or as root of
    mmdebstrap's user namespace: it applies the files, holds the kernel and exports
    vmlinuz and the initrd."""
    q = shlex.quote
    enable = " ".join(q(u) for u in (*tuning.enable_units,
                                     *(() if cloud_init else INIT_UNITS)))
    remove = " ".join(q(f) for f in tuning.remove_files)
    pam_drop = " ".join(q(m.replace(".", "[.]")) for m in tuning.sshd_pam_drop)
    magic = {"zstd": "28b52ffd", "gzip": "1f8b"}.get(tuning.initrd_compress, "")
    return f"""#!/bin/sh
# pylima image builder: customize the bootstrapped root file system.
set -eu
ROOT="$1"
STAGE="$2"
echo "pylima: phase: configuring guest"
# pylima's files replace what packages left there (regular files and symlinks alike).
(cd "$STAGE/post" && find . ! -type d) | while read -r path; do rm -f "$ROOT/$path"; done
cp -R "$STAGE/post/." "$ROOT/"
if chroot "$ROOT" dpkg-query -W -f='${{Status}}' ifupdown 2>/dev/null | grep -q installed; then
  chroot "$ROOT" apt-get -y -q purge ifupdown
fi
chroot "$ROOT" systemctl enable {enable}
for f in {remove}; do rm -f "$ROOT$f"; done
if [ -f "$ROOT{INIT_CACHE_DIR}/{INIT_CACHE_MODULE}" ]; then
  chmod 700 "$ROOT{INIT_CACHE_DIR}"
  chroot "$ROOT" python3 -c \\
    'import py_compile, sys; py_compile.compile(sys.argv[1], doraise=True)' \\
    {INIT_CACHE_DIR}/{INIT_CACHE_MODULE}
fi
# /etc/profile forks `id -u` in every login shell (each `lima CMD` runs one, as
# Lima's): bash and zsh know their uid already.
sed -i 's/"$(id -u)"/"${{EUID:-$(id -u)}}"/g' "$ROOT/etc/profile"
for m in {pam_drop}; do
  sed -i "/^[^#].*[[:space:]]$m/s/^/# pylima: /" "$ROOT/etc/pam.d/sshd"
done
# No keys and no identity in the image: the seed provides them at first boot.
rm -f "$ROOT"/etc/ssh/ssh_host_*
: > "$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
KVER=$(ls "$ROOT/lib/modules" | sort -V | tail -n 1)
[ -n "$KVER" ] || {{ echo "pylima: no kernel in the image" >&2; exit 1; }}
# The exported kernel must keep matching the modules on disk.
chroot "$ROOT" apt-mark hold {q(spec.kernel_package)} "linux-image-$KVER" >/dev/null
INITRD="$ROOT/boot/initrd.img-$KVER"
# The one initrd build: packages were installed with INITRD=No, so neither the
# kernel's postinst nor initramfs-tools' trigger built one (each build runs dozens
# of programs, slow under user-mode emulation for a foreign architecture).
echo "pylima: phase: building initrd"
rm -f "$INITRD"
chroot "$ROOT" update-initramfs -c -k "$KVER"
MAGIC=$(od -An -tx1 -N4 "$INITRD" | tr -d ' \n')
case "$MAGIC" in
  {magic}*) ;;
  *) echo "pylima: the initrd is not {tuning.initrd_compress}-compressed" >&2; exit 1 ;;
esac
# The /vmlinuz and /initrd.img links the ESP's GRUB boots: the kernel's postinst
# left out the initrd link, since there was no initrd yet.
env -u INITRD chroot "$ROOT" linux-update-symlinks install "$KVER" "/boot/vmlinuz-$KVER"
[ -e "$ROOT/initrd.img" ] || {{ echo "pylima: no /initrd.img link" >&2; exit 1; }}
mkdir -p "$STAGE/out"
cp "$ROOT/boot/vmlinuz-$KVER" "$STAGE/out/{KERNEL_FILE}"
cp "$INITRD" "$STAGE/out/{INITRD_FILE}"
chmod 0644 "$STAGE/out/{KERNEL_FILE}" "$STAGE/out/{INITRD_FILE}"
echo "$KVER" > "$STAGE/out/kernel-version"
# The parts of pylima's small initrd (assembled by the builder, which knows the disk's
# ids): busybox, and the root file system's modules in load order.
SMALL="$STAGE/out/small-initrd"
mkdir -p "$SMALL/modules"
cp "$ROOT/bin/busybox" "$SMALL/busybox"
for m in {" ".join(q(m) for m in tuning.small_initrd_modules)}; do
  chroot "$ROOT" modprobe --set-version "$KVER" --show-depends "$m" 2>/dev/null || true
done | awk '$1 == "insmod" && !seen[$2]++ {{print $2}}' | while read -r ko; do
  cp "$ROOT$ko" "$SMALL/modules/"
  echo "${{ko##*/}}" >> "$SMALL/load"
done
grep -q '^virtio_blk.ko$' "$SMALL/load" || {{ echo "pylima: no virtio_blk module" >&2; exit 1; }}
echo "pylima: customized for kernel $KVER"
"""


# --------------------------------------------------------------------------------------
# Disk identity and layout (pure)


@dataclass(frozen=True)
class DiskIds:
    disk_guid: str
    esp_partuuid: str
    root_partuuid: str
    root_fs_uuid: str
    esp_volume_id: str  # 8 hex digits (FAT volume id)


def disk_ids(recipe_hash: str) -> DiskIds:
    """Ids derived from the recipe hash: the same recipe gives the same disk."""
    def u(what: str) -> str:
        return str(uuid.uuid5(_ID_NAMESPACE, f"{recipe_hash}/{what}"))

    return DiskIds(u("disk"), u("esp-part"), u("root-part"), u("root-fs"),
                   hashlib.sha256(f"{recipe_hash}/esp-fs".encode()).hexdigest()[:8])


@dataclass(frozen=True)
class DiskLayout:
    esp_start: int     # sectors
    esp_sectors: int
    root_start: int
    root_sectors: int
    total_bytes: int


def plan_layout(root_bytes: int, esp_mib: int) -> DiskLayout:
    """GPT: 1 MiB gap, the ESP, then the root partition last (so growpart can grow it),
    1 MiB at the end for the backup GPT. Everything MiB-aligned."""
    per_mib = MIB // SECTOR
    root_mib = -(-root_bytes // MIB)
    esp_start = per_mib
    esp_sectors = esp_mib * per_mib
    root_start = esp_start + esp_sectors
    root_sectors = root_mib * per_mib
    total = (root_start + root_sectors) * SECTOR + MIB
    return DiskLayout(esp_start, esp_sectors, root_start, root_sectors, total)


def root_fs_bytes(used_bytes: int, tuning: Tuning) -> int:
    size = int(used_bytes * tuning.root_size_ratio) + tuning.root_headroom_mib * MIB
    # Round to 64 MiB so small changes keep the same size.
    step = 64 * MIB
    return -(-size // step) * step


def render_sfdisk_script(layout: DiskLayout, ids: DiskIds) -> str:
    return (
        "label: gpt\n"
        f"label-id: {ids.disk_guid}\n"
        "unit: sectors\n"
        f"start={layout.esp_start}, size={layout.esp_sectors}, type={ESP_TYPE_GUID}, "
        f'uuid={ids.esp_partuuid}, name="esp"\n'
        f"start={layout.root_start}, size={layout.root_sectors}, type={LINUX_FS_TYPE_GUID}, "
        f'uuid={ids.root_partuuid}, name="root"\n'
    )


def kernel_cmdline(spec: ArchSpec, ids: DiskIds, tuning: Tuning) -> str:
    return " ".join([f"root=PARTUUID={ids.root_partuuid}", "rw",
                     f"console={spec.serial_console}", *tuning.cmdline_extra])


def render_grub_cfg(ids: DiskIds, cmdline: str) -> str:
    # GRUB 2.06 `search` has no --part-uuid: find the root fs by its UUID. /vmlinuz and
    # /initrd.img are Debian's symlinks to the current kernel.
    return (
        "set timeout=0\n"
        f"search --no-floppy --fs-uuid --set=root {ids.root_fs_uuid}\n"
        f"linux /vmlinuz {cmdline}\n"
        "initrd /initrd.img\n"
        "boot\n"
    )


def render_fstab(ids: DiskIds) -> str:
    return (
        "# pylima: the root partition by PARTUUID (stable across disk names).\n"
        f"PARTUUID={ids.root_partuuid}\t/\text4\tdefaults,errors=remount-ro\t0\t1\n"
    )


def render_small_init(ids: DiskIds) -> str:
    """/init of pylima's small initrd: load the modules the root file system needs
    (in /load's order), mount the root named by `root=` and switch to it. The root's
    PARTUUID (the kernel's own form, which busybox cannot look up) is mapped to the
    file system UUID of this image. Any failure is said on the console and the VM
    powers off, so the host reports it instead of waiting."""
    return f"""#!/bin/busybox sh
# pylima's initrd: modules, root, switch_root.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() {{
\techo "pylima initrd: $*" >/dev/console
\tsleep 3
\tpoweroff -f
}}
while read -r m; do
\tinsmod "/lib/modules/$m" || echo "pylima initrd: could not load $m" >/dev/console
done </load
root= flags=ro fstype=ext4 init=/sbin/init
for arg in $(cat /proc/cmdline); do
\tcase "$arg" in
\troot=*) root=${{arg#root=}} ;;
\trootfstype=*) fstype=${{arg#rootfstype=}} ;;
\tinit=*) init=${{arg#init=}} ;;
\trw) flags=rw ;;
\tro) flags=ro ;;
\tesac
done
case "$root" in
PARTUUID={ids.root_partuuid}) spec=UUID={ids.root_fs_uuid} ;;
/dev/*|UUID=*|LABEL=*) spec=$root ;;
*) fail "cannot look up root=$root" ;;
esac
i=0
dev=
while [ -z "$dev" ]; do
\tcase "$spec" in
\t/dev/*) [ -b "$spec" ] && dev=$spec ;;
\t*) dev=$(findfs "$spec" 2>/dev/null) ;;
\tesac
\t[ -n "$dev" ] && break
\ti=$((i + 1))
\t[ "$i" -lt 300 ] || fail "no device for root=$root"
\tsleep 0.1
done
mount -t "$fstype" -o "$flags" "$dev" /root || fail "cannot mount $dev on /"
mount -o move /dev /root/dev 2>/dev/null || umount /dev
umount /sys /proc
exec switch_root /root "$init"
"""


@dataclass(frozen=True)
class CpioEntry:
    path: str           # without a leading /
    mode: int           # with the file type bits (stat.S_IFREG | 0o755, ...)
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # for device nodes


def newc_archive(entries: Sequence[CpioEntry]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks as an initramfs. All
    entries are root's, timestamps 0: the same inputs give the same bytes."""
    out = bytearray()

    def pad(n: int) -> None:
        out.extend(b"\0" * (-n % 4))

    for ino, e in enumerate([*entries, CpioEntry("TRAILER!!!", 0)], 1):
        name = e.path.encode() + b"\0"
        fields = (ino if e.path != "TRAILER!!!" else 0, e.mode, 0, 0,
                  2 if e.mode & 0o170000 == 0o040000 else 1, 0, len(e.data), 0, 0,
                  e.rdev[0], e.rdev[1], len(name), 0)
        out.extend(b"070701" + "".join(f"{f:08x}" for f in fields).encode())
        out.extend(name)
        pad(110 + len(name))
        out.extend(e.data)
        pad(len(e.data))
    return bytes(out)


def small_initrd_entries(ids: DiskIds, busybox: bytes, modules: Mapping[str, bytes],
                         load_order: Sequence[str]) -> list[CpioEntry]:
    import stat

    d, f = stat.S_IFDIR | 0o755, stat.S_IFREG
    entries = [CpioEntry(p, d) for p in ("bin", "dev", "proc", "sys", "root", "lib",
                                           "lib/modules")]
    # the kernel opens /dev/console for /init's stdio before anything is mounted
    entries.append(CpioEntry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(CpioEntry("init", f | 0o755, render_small_init(ids).encode()))
    entries.append(CpioEntry("bin/busybox", f | 0o755, busybox))
    entries.append(CpioEntry("load", f | 0o644, "".join(m + "\n" for m in load_order).encode()))
    entries += [CpioEntry(f"lib/modules/{name}", f | 0o644, modules[name])
                for name in sorted(modules)]
    return entries


# The ext4 features GRUB 2.06 and Linux 6.1 both read. Newer e2fsprogs enable
# orphan_file/metadata_csum_seed by default, which bookworm's GRUB refuses.
MKE2FS_CONF = """[defaults]
	base_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
	default_mntopts = acl,user_xattr
	enable_periodic_fsck = 0
	blocksize = 4096
	inode_size = 256
	inode_ratio = 16384

[fs_types]
	ext4 = {
		features = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
	}
"""

GRUB_MODULES = ("part_gpt", "ext2", "fat", "search", "search_fs_uuid", "linux", "normal",
                "boot", "echo", "test", "configfile", "gzio", "efi_gop", "all_video")


# --------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class BuiltImage:
    directory: Path
    arch: str
    suite: str
    recipe_hash: str
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str
    digests: Mapping[str, str]  # file name -> sha256 hex
    kernel_version: str = ""

    def images_entry(self) -> dict[str, Any]:
        return images_entry(self)


def images_entry(image: BuiltImage) -> dict[str, Any]:
    """A lima.yaml `images:` entry, so instances treat the build like a download."""
    d = image.digests
    return {
        "location": image.disk.as_uri(),
        "arch": image.arch,
        "digest": f"sha256:{d[DISK_FILE]}",
        "kernel": {
            "location": image.kernel.as_uri(),
            "digest": f"sha256:{d[KERNEL_FILE]}",
            "cmdline": image.cmdline,
        },
        "initrd": {
            "location": image.initrd.as_uri(),
            "digest": f"sha256:{d[INITRD_FILE]}",
        },
    }


def parse_sha256sums(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line.strip())
        if m:
            out[m.group(2)] = m.group(1)
    return out


def render_sha256sums(digests: Mapping[str, str]) -> str:
    return "".join(f"{h}  {name}\n" for name, h in sorted(digests.items()))


def images_root(cache_root: Path | None = None) -> Path:
    return (cache_root if cache_root is not None else cache_dir()) / IMAGES_SUBDIR


def load_built_image(directory: Path) -> BuiltImage | None:
    """A complete result directory, or None (missing files count as incomplete)."""
    try:
        digests = parse_sha256sums((directory / SUMS_FILE).read_text())
        meta = json.loads((directory / RECIPE_FILE).read_text())
        cmdline = (directory / CMDLINE_FILE).read_text().strip()
    except (OSError, ValueError):
        return None
    for name in (DISK_FILE, KERNEL_FILE, INITRD_FILE):
        if name not in digests or not (directory / name).is_file():
            return None
    recipe = meta.get("recipe", {})
    return BuiltImage(
        directory=directory,
        arch=recipe.get("arch", ""),
        suite=recipe.get("suite", ""),
        recipe_hash=meta.get("recipe_hash", directory.name),
        disk=directory / DISK_FILE,
        kernel=directory / KERNEL_FILE,
        initrd=directory / INITRD_FILE,
        cmdline=cmdline,
        digests=digests,
        kernel_version=meta.get("build", {}).get("kernel_version", ""),
    )


def find_cached_image(arch: str = "x86_64", suite: str = DEFAULT_SUITE, *,
                      cache_root: Path | None = None, variant: str = "") -> BuiltImage | None:
    recipe = make_recipe(arch, suite, variant=variant)
    return load_built_image(images_root(cache_root) / recipe.digest())


# --------------------------------------------------------------------------------------
# Host requirements


_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """Like `which`, also looking in the sbin directories (not on a user's PATH)."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(name, path=os.pathsep.join([path, *_SBIN]))


# (tool, Debian package)
_TOOLS: tuple[tuple[str, str], ...] = (
    ("mmdebstrap", "mmdebstrap"),
    ("qemu-img", "qemu-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("mkfs.vfat", "dosfstools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
    ("sfdisk", "fdisk"),
    ("grub-mkstandalone", "grub-common"),
)
_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def build_mode(euid: int) -> str:
    return "root" if euid == 0 else "unshare"


def _has_subids(user: str, uid: int) -> bool:
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(path).read_text().splitlines()
        except OSError:
            return False
        if not any(ln.split(":", 1)[0] in (user, str(uid)) for ln in lines if ln.strip()):
            return False
    return True


def missing_requirements(arch: str = "x86_64") -> list[tuple[str, str]]:
    """(what is missing, Debian package that provides it) for building `arch`."""
    spec = arch_spec(arch)
    missing = [(tool, pkg) for tool, pkg in _TOOLS if find_tool(tool) is None]
    if grub_dir(spec) is None and spec.uname_machine == os.uname().machine:
        # A foreign arch's GRUB is not installable beside the host's (Debian ships it
        # for that arch only): its image boots by direct kernel boot without it.
        missing.append((f"GRUB modules for {spec.grub_platform}", spec.grub_host_package))
    if not Path(_KEYRING).is_file():
        missing.append(("the Debian archive keyring", "debian-archive-keyring"))
    if os.geteuid() != 0:
        for tool, pkg in (("unshare", "util-linux"), ("newuidmap", "uidmap"),
                          ("newgidmap", "uidmap")):
            if find_tool(tool) is None:
                missing.append((tool, pkg))
    if os.uname().machine != spec.uname_machine:
        if not Path(qemu_user_static(spec)).is_file():
            missing.append((f"qemu-{spec.uname_machine}-static", "qemu-user-static"))
        elif (binfmt_entry(spec) is None and os.geteuid() != 0
              and find_tool("update-binfmts") is None):
            missing.append((f"binfmt support for {spec.uname_machine}", "binfmt-support"))
    return missing


def grub_dir(spec: ArchSpec) -> Path | None:
    path = Path(f"/usr/lib/grub/{spec.grub_platform}")
    return path if path.is_dir() else None


BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")


def qemu_user_static(spec: ArchSpec) -> str:
    return f"/usr/bin/qemu-{spec.uname_machine}-static"


def binfmt_entry(spec: ArchSpec) -> Path | None:
    """The enabled binfmt_misc entry that runs `spec`'s binaries on this host."""
    for name in (f"qemu-{spec.uname_machine}", f"qemu-{spec.uname_machine}-static"):
        path = BINFMT_DIR / name
        try:
            if path.read_text().splitlines()[0].strip() == "enabled":
                return path
        except (OSError, IndexError):
            continue
    return None


def ensure_binfmt(spec: ArchSpec, say: Callable[[str], None] | None = None) -> None:
    """Make the host run `spec`'s binaries through qemu-user-static (mmdebstrap runs
    the foreign packages' scripts that way): mount binfmt_misc and enable Debian's
    registration when they are missing, saying so. Needs root for either step."""
    if binfmt_entry(spec) is not None:
        return
    what = f"binfmt_misc registration for {spec.uname_machine} binaries"
    if os.geteuid() != 0:
        raise LimaError(f"cannot build the {spec.name} image: no {what}",
                        hint=f"as root: mount -t binfmt_misc binfmt_misc {BINFMT_DIR}; "
                        f"update-binfmts --enable qemu-{spec.uname_machine}")
    if not (BINFMT_DIR / "register").exists():
        if say:
            say(f"mounting binfmt_misc on {BINFMT_DIR} (it was not mounted)")
        process.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                    hint="binfmt_misc is needed to run foreign binaries while building")
    if binfmt_entry(spec) is None:
        update = find_tool("update-binfmts")
        if update is None:
            raise LimaError(f"cannot build the {spec.name} image: no {what}",
                            hint="apt-get install binfmt-support qemu-user-static")
        if say:
            say(f"enabling the {what} (update-binfmts --enable qemu-{spec.uname_machine})")
        process.run([update, "--enable", f"qemu-{spec.uname_machine}"], check=False)
    if binfmt_entry(spec) is None:
        raise LimaError(f"cannot build the {spec.name} image: could not set up the {what}",
                        hint=f"check `update-binfmts --display qemu-{spec.uname_machine}`")


def install_hint(packages: Iterable[str]) -> str:
    return "apt-get install " + " ".join(dict.fromkeys(
        p for pkgs in packages for p in pkgs.split()))


def can_build(arch: str = "x86_64") -> tuple[bool, str]:
    """Whether this host can build the image, else the reason and an install hint."""
    try:
        missing = missing_requirements(arch)
    except LimaError as e:
        return False, e.message
    if missing:
        what = ", ".join(w for w, _ in missing)
        return False, f"missing {what}; run: {install_hint(p for _, p in missing)}"
    if os.geteuid() != 0:
        import pwd

        user = pwd.getpwuid(os.getuid()).pw_name
        if not _has_subids(user, os.getuid()):
            return False, (f"user {user!r} has no subordinate ids in /etc/subuid and "
                           f"/etc/subgid (needed for an unprivileged build); run: "
                           f"usermod --add-subuids 100000-165535 --add-subgids "
                           f"100000-165535 {user}")
    return True, "ok"


# --------------------------------------------------------------------------------------
# Building (the outer layer)


PhaseCallback = Callable[[str], None]
LineCallback = Callable[[str], None]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MIB):
            h.update(chunk)
    return h.hexdigest()


def _write_tree(base: Path, files: Mapping[str, GuestFile]) -> None:
    for rel, gf in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == base or base not in parent.parents:
                break
            parent.chmod(0o755)
        if gf.symlink:
            os.symlink(gf.content, path)
        else:
            path.write_text(gf.content)
            path.chmod(gf.mode)
    base.chmod(0o755)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Progress:
    """Turns tool output into phases and lines for the caller's callbacks."""

    def __init__(self, on_phase: PhaseCallback | None, on_line: LineCallback | None):
        self._on_phase = on_phase
        self._on_line = on_line
        self.phases: list[tuple[str, float]] = []
        self._initrd_seen = False

    def phase(self, name: str) -> None:
        self.phases.append((name, time.monotonic()))
        if self._on_phase:
            self._on_phase(name)

    def line(self, text: str) -> None:
        if text.startswith("pylima: phase: "):
            self.phase(text.removeprefix("pylima: phase: "))
        elif "update-initramfs: Generating" in text and not self._initrd_seen:
            self._initrd_seen = True
            self.phase("building initrd")
        if self._on_line:
            self._on_line(text)


# Where pylima's files travel inside the chroot. Special hooks (sync-in, upload,
# sync-out) move them, so the build directory need not be reachable from
# mmdebstrap's user namespace, and `cp` inside makes them owned by the guest's root.
_SETUP_STAGE = "/.pylima-setup"
_STAGE = "/tmp/pylima"


def _mmdebstrap_argv(recipe: Recipe, mirror: MirrorChoice, mode: str, target: Path,
                     work: Path) -> list[str]:
    spec = arch_spec(recipe.arch)
    tool = find_tool("mmdebstrap") or "mmdebstrap"
    argv = [
        tool,
        f"--mode={mode}",
        "--variant=minbase",
        f"--architectures={spec.deb_arch}",
        "--include=" + ",".join(recipe.packages),
        "--verbose",
        # The image is written once and checked by sha256: per-file fsync buys nothing.
        "--dpkgopt=force-unsafe-io",
        '--aptopt=Acquire::Retries "3"',
    ]
    argv += [f"--dpkgopt=path-exclude={p}" for p in recipe.tuning.dpkg_path_exclude]
    argv += [f"--dpkgopt=path-include={p}" for p in recipe.tuning.dpkg_path_include]
    # Bookworm's kernel package names /lib/modules; later releases /usr/lib/modules.
    for kind, patterns in (("exclude", recipe.tuning.kernel_module_exclude),
                           ("include", recipe.tuning.kernel_module_include)):
        argv += [f"--dpkgopt=path-{kind}={prefix}/*/{p}" for p in patterns
                 for prefix in ("/lib/modules", "/usr/lib/modules")]
    argv += [
        # Before any package: the initramfs settings (one small initrd build).
        f'--setup-hook=mkdir -p "$1{_SETUP_STAGE}"',
        f"--setup-hook=sync-in {work / 'pre'} {_SETUP_STAGE}",
        f'--setup-hook=cp -R "$1{_SETUP_STAGE}/." "$1/" && rm -rf "$1{_SETUP_STAGE}"',
        # After installation: pylima's files, tuning, and the kernel/initrd export.
        f'--customize-hook=mkdir -p "$1{_STAGE}/post" "$1{_STAGE}/out"',
        f"--customize-hook=sync-in {work / 'post'} {_STAGE}/post",
        f"--customize-hook=upload {work / 'customize.sh'} {_STAGE}/customize.sh",
        f'--customize-hook=sh "$1{_STAGE}/customize.sh" "$1" "$1{_STAGE}"',
        f"--customize-hook=sync-out {_STAGE}/out {work / 'out'}",
        f'--customize-hook=rm -rf "$1{_STAGE}"',
        recipe.suite,
        str(target),
        *mirror.source_lines(recipe.suite),
    ]
    return argv


def build_debian_image(arch: str = "x86_64", suite: str = DEFAULT_SUITE,
                       mirror: str | None = None, *,
                       on_phase: PhaseCallback | None = None,
                       on_line: LineCallback | None = None,
                       force: bool = False,
                       cache_root: Path | None = None,
                       variant: str = "") -> BuiltImage:
    """Build (or reuse) the Debian image for `arch`/`suite` and return it.

    An existing complete result for the same recipe is returned at once unless
    `force`. Raises LimaError naming the packages to install when tools are missing.
    `variant` names a set of extra packages baked in (see `VARIANTS`).
    """
    recipe = make_recipe(arch, suite, variant=variant)
    digest = recipe.digest()
    root = images_root(cache_root)
    final = root / digest
    if not force:
        found = load_built_image(final)
        if found is not None:
            return found
    missing = missing_requirements(arch)
    if missing:
        raise LimaError("cannot build the Debian image: missing "
                        + ", ".join(w for w, _ in missing),
                        hint=install_hint(p for _, p in missing))
    ok, reason = can_build(arch)
    if not ok:
        raise LimaError(f"cannot build the Debian image: {reason}")
    spec = arch_spec(arch)
    if spec.uname_machine != os.uname().machine:
        ensure_binfmt(spec, lambda msg: log.warning("Image build: %s", msg))
    choice = choose_mirror(read_host_sources(), suite, mirror, os.environ)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{digest}.lock"):
        if not force:
            found = load_built_image(final)
            if found is not None:  # built by someone else while we waited
                return found
        _remove_stale_work_dirs(root, digest)
        work = Path(tempfile.mkdtemp(prefix=f".build-{digest[:16]}-", dir=root))
        progress = _Progress(on_phase, on_line)
        try:
            _build_into(work, recipe, digest, choice, progress)
            _install_result(work / "out", final)
        finally:
            _remove_work_dir(work)
    built = load_built_image(final)
    if built is None:
        raise LimaError(f"image build finished but {final} is incomplete")
    return built


def _remove_stale_work_dirs(root: Path, digest: str) -> None:
    # Only called with the recipe's lock held: no live build uses these.
    for stale in root.glob(f".build-{digest[:16]}-*"):
        _remove_work_dir(stale)


def _mounts_under(path: Path, mountinfo: str) -> list[str]:
    """Mount points at or below `path` in /proc/self/mountinfo text, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    points = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4:
            # Octal escapes (\040 for a space) as the kernel writes them.
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def _remove_work_dir(work: Path) -> None:
    if not work.exists():
        return
    if os.geteuid() == 0:
        # A root-mode mmdebstrap killed mid-way leaves /proc, /sys, /dev mounts in the
        # tree: unmount them so that removing the tree cannot reach into the host's.
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
        for point in _mounts_under(work, mountinfo):
            process.run(["umount", "--lazy", point], check=False)
    if os.geteuid() != 0 and (work / "rootfs").exists():
        # Extracted in a user namespace: files owned by subordinate ids.
        _in_userns(["rm", "-rf", str(work / "rootfs")], check=False)
    shutil.rmtree(work, ignore_errors=True)
    if work.exists():  # a file appeared while removing: once more
        time.sleep(1)
        shutil.rmtree(work, ignore_errors=True)


def _in_userns(argv: Sequence[str], *, check: bool = True,
               env: Mapping[str, str] | None = None) -> None:
    unshare = find_tool("unshare") or "unshare"
    process.run([unshare, "--map-root-user", "--map-auto", "--", *argv], check=check,
                env=env)


def _build_into(work: Path, recipe: Recipe, digest: str, mirror: MirrorChoice,
                progress: _Progress) -> None:
    started = time.monotonic()
    spec = arch_spec(recipe.arch)
    tuning = recipe.tuning
    ids = disk_ids(digest)
    cmdline = kernel_cmdline(spec, ids, tuning)
    mode = build_mode(os.geteuid())

    post = dict(recipe.post_files)
    post["etc/fstab"] = GuestFile(render_fstab(ids))
    if INIT_LAUNCHER.lstrip("/") in post:
        # A cache, not part of the recipe: the pylima-init of this build, compiled by
        # the customize script, so a first boot with the same program on its seed
        # does not compile it (the launcher keeps a copy equal to the seed's). A
        # newer pylima's seed replaces it, image unchanged.
        from pylima.guestagent import guest_init_bytes

        post[f"{INIT_CACHE_DIR.lstrip('/')}/{INIT_CACHE_MODULE}"] = GuestFile(
            guest_init_bytes().decode(), 0o644)
    _write_tree(work / "pre", recipe.pre_files)
    _write_tree(work / "post", post)
    (work / "customize.sh").write_text(recipe.customize_script)
    out = work / "out"
    out.mkdir(mode=0o755)

    progress.phase("bootstrapping packages")
    rootfs = work / "rootfs"
    target = rootfs if mode == "root" else work / "rootfs.tar"
    # INITRD=No: the kernel's initramfs hook builds nothing while packages go in; the
    # customize script builds the initrd once, with everything installed.
    process.run(_mmdebstrap_argv(recipe, mirror, mode, target, work), on_line=progress.line,
                env=dict(os.environ, INITRD="No"),
                hint="check that the Debian mirror "
                     f"{mirror.mirror} is reachable ({mirror.origin}); set "
                     f"{MIRROR_ENV} to use another one")
    kernel_version = (out / "kernel-version").read_text().strip()
    (out / "kernel-version").unlink()
    _write_small_initrd(out, ids)

    progress.phase("making file systems")
    root_img = work / "root.img"
    mke2fs_conf = work / "mke2fs.conf"
    mke2fs_conf.write_text(MKE2FS_CONF)
    env = dict(os.environ, MKE2FS_CONFIG=str(mke2fs_conf))
    mkfs = find_tool("mkfs.ext4") or "mkfs.ext4"
    if mode == "root":
        used = _tree_bytes(rootfs)
    else:
        used = _tar_bytes(target)
    root_bytes = root_fs_bytes(used, tuning)
    mkfs_argv = [mkfs, "-F", "-q", "-t", "ext4", "-L", ROOT_LABEL, "-U", ids.root_fs_uuid,
                 "-d", str(rootfs), str(root_img), f"{root_bytes // 1024}k"]
    if mode == "root":
        process.run(mkfs_argv, env=env)
        shutil.rmtree(rootfs)
    else:
        # Device nodes cannot be made in a user namespace; the guest mounts devtmpfs
        # on /dev anyway.
        script = (f"set -e; mkdir {shlex.quote(str(rootfs))}; "
                  f"tar -C {shlex.quote(str(rootfs))} --numeric-owner --exclude='./dev/*' "
                  f"-xpf {shlex.quote(str(target))}; {shlex.join(mkfs_argv)}; "
                  f"rm -rf {shlex.quote(str(rootfs))}")
        _in_userns(["sh", "-c", script], env=env)
        target.unlink()

    esp_img = work / "esp.img"
    _make_esp(work, esp_img, spec, ids, cmdline, tuning.esp_mib)

    progress.phase("assembling disk")
    layout = plan_layout(root_bytes, tuning.esp_mib)
    raw = work / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(layout.total_bytes)
    sfdisk = find_tool("sfdisk") or "sfdisk"
    process.run([sfdisk, "--quiet", "--no-reread", "--no-tell-kernel", str(raw)],
                input=render_sfdisk_script(layout, ids))
    for img, start in ((esp_img, layout.esp_start), (root_img, layout.root_start)):
        process.run(["dd", f"if={img}", f"of={raw}", "bs=1M",
                     f"seek={start * SECTOR // MIB}", "conv=notrunc,sparse", "status=none"])
        img.unlink()
    qemu_img = find_tool("qemu-img") or "qemu-img"
    process.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw),
                 str(out / DISK_FILE)])
    raw.unlink()

    progress.phase("recording digests")
    (out / CMDLINE_FILE).write_text(cmdline + "\n")
    digests = {name: _sha256_file(out / name)
               for name in (DISK_FILE, KERNEL_FILE, INITRD_FILE, CMDLINE_FILE)}
    meta = {
        "recipe_hash": digest,
        "recipe": recipe.to_dict(),
        "build": {
            "mirror": mirror.mirror,
            "security_mirror": mirror.security,
            "mirror_origin": mirror.origin,
            "sources": mirror.source_lines(recipe.suite),
            "mode": mode,
            "kernel_version": kernel_version,
            "root_fs_uuid": ids.root_fs_uuid,
            "root_partuuid": ids.root_partuuid,
            "esp_partuuid": ids.esp_partuuid,
            "root_fs_bytes": root_bytes,
            "disk_virtual_bytes": layout.total_bytes,
            "build_seconds": round(time.monotonic() - started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    (out / RECIPE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    digests[RECIPE_FILE] = _sha256_file(out / RECIPE_FILE)
    # Written last: its presence marks the directory complete.
    (out / SUMS_FILE).write_text(render_sha256sums(digests))
    for p in out.iterdir():
        p.chmod(0o644)
    out.chmod(0o755)


def _write_small_initrd(out: Path, ids: DiskIds) -> None:
    """Replace the exported initrd (initramfs-tools') with pylima's small one."""
    parts = out / "small-initrd"
    load = (parts / "load").read_text().split()
    modules = {name: (parts / "modules" / name).read_bytes() for name in load}
    archive = newc_archive(small_initrd_entries(ids, (parts / "busybox").read_bytes(),
                                                modules, load))
    (out / INITRD_FILE).write_bytes(archive)
    shutil.rmtree(parts)


def _make_esp(work: Path, esp_img: Path, spec: ArchSpec, ids: DiskIds, cmdline: str,
              esp_mib: int) -> None:
    process.run([find_tool("mkfs.vfat") or "mkfs.vfat", "-F", "32", "-s", "1",
                 "-n", ESP_LABEL, "-i", ids.esp_volume_id, "-C", str(esp_img),
                 str(esp_mib * 1024)])
    grub = grub_dir(spec)
    if grub is None:
        log.warning("Image build: no GRUB for %s on this host (%s is not installable "
                    "beside the host's): the %s image boots by direct kernel boot only",
                    spec.grub_platform, spec.grub_host_package, spec.name)
        return
    grub_cfg = work / "grub.cfg"
    grub_cfg.write_text(render_grub_cfg(ids, cmdline))
    efi = work / spec.efi_boot_file
    modules = " ".join(GRUB_MODULES)
    process.run([find_tool("grub-mkstandalone") or "grub-mkstandalone",
                 "-O", spec.grub_platform,
                 f"--directory={grub}",
                 f"--modules={modules}", f"--install-modules={modules}",
                 "--locales=", "--themes=", "--fonts=",
                 "-o", str(efi), f"boot/grub/grub.cfg={grub_cfg}"])
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    process.run([find_tool("mmd") or "mmd", "-i", str(esp_img), "::/EFI", "::/EFI/BOOT"],
                env=env)
    process.run([find_tool("mcopy") or "mcopy", "-i", str(esp_img), str(efi),
                 f"::/EFI/BOOT/{spec.efi_boot_file}"], env=env)


def _tree_bytes(path: Path) -> int:
    """Space the tree needs: file sizes rounded up to 4 KiB blocks plus inodes."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            total += -(-st.st_size // 4096) * 4096 + 256
    return total


def _tar_bytes(path: Path) -> int:
    total = 0
    with tarfile.open(path) as tf:
        for m in tf:
            total += -(-m.size // 4096) * 4096 + 256
    return total


def _install_result(out: Path, final: Path) -> None:
    """Move the finished result into place atomically (replacing an old one)."""
    old: Path | None = None
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
    os.rename(out, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_image_cache(cache_root: Path | None = None) -> list[Path]:
    """Remove every built image (for `limactl prune`); returns what was removed."""
    root = images_root(cache_root)
    removed: list[Path] = []
    for p in sorted(glob.glob(str(root / "*"))) + sorted(glob.glob(str(root / ".*"))):
        path = Path(p)
        if path.is_dir():
            _remove_work_dir(path)
            removed.append(path)
    return removed
