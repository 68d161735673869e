"""The libvirt driver's pure core: `vmOpts.libvirt` (its defaults and checks), the
connection URI, the names of an instance's domain and volumes, the facts read from
libvirt's domain capabilities, and the domain XML. PURE: nothing here connects,
probes or touches a file; every fact comes in as an argument.

Names: everything pylima makes on a libvirt host starts with `pylima-<8 hex>-`, the
hex being a hash of the LIMA_HOME that made it, so that users (or one user's several
LIMA_HOMEs) sharing a libvirt host never touch each other's domains and volumes. The
domain also carries pylima's metadata (instance, LIMA_HOME) in its `<metadata>`.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from pylima.config.libvirt import (  # noqa: F401 - the driver's names for them
    DEFAULT_NETWORK,
    DEFAULT_POOL,
    DEFAULT_URI_ROOT,
    DEFAULT_URI_USER,
    LibvirtURI,
    libvirt_opts,
    opts_errors,
    parse_uri,
)
from pylima.config.units import parse_size
from pylima.errors import ConfigError

METADATA_NS = "https://github.com/pylima/pylima/libvirt/1"
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
NETDEV = "net0"
# Lima's user-mode network (the QEMU driver's; the guest's cidata expects it).
SLIRP_NETWORK = "192.168.5.0/24"
SLIRP_GATEWAY = "192.168.5.2"
SLIRP_DNS = "192.168.5.3"
SLIRP_IP_ADDRESS = "192.168.5.15"
# The guest agent's virtio-serial port name (as the QEMU driver's).
GUEST_AGENT_PORT = "io.lima-vm.guest_agent.0"
_LIBVIRT_ARCH = {"x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64",
                 "armv7l": "armv7l"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


# ---- names ----


def home_prefix(lima_home: str) -> str:
    """`pylima-<8 hex>`: this LIMA_HOME's mark on a libvirt host."""
    return "pylima-" + hashlib.sha256(lima_home.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Names:
    """The libvirt names of one instance's domain and volumes."""

    prefix: str
    instance: str

    @property
    def domain(self) -> str:
        return f"{self.prefix}-{self.instance}"

    @property
    def disk_volume(self) -> str:
        return f"{self.prefix}-{self.instance}-disk.qcow2"

    @property
    def cidata_volume(self) -> str:
        return f"{self.prefix}-{self.instance}-cidata.iso"

    @property
    def nvram_volume(self) -> str:
        """A firmware boot's UEFI variable store (libvirt makes it from the
        firmware's template)."""
        return f"{self.prefix}-{self.instance}-efivars.fd"

    def instance_volumes(self) -> tuple[str, ...]:
        return (self.disk_volume, self.cidata_volume, self.nvram_volume)

    def base_volume(self, digest: str, kind: str = "image") -> str:
        """A base file shared by this LIMA_HOME's instances, keyed by its content's
        sha256 (`kind`: image, kernel, initrd)."""
        return f"{self.prefix}-{kind}-{digest[:16]}"


# ---- facts from the libvirt host ----


@dataclass(frozen=True)
class HostFacts:
    """What the libvirt host offers for the instance's arch (domain capabilities)."""

    domain_type: str  # "kvm" | "qemu" (TCG)
    emulator: str
    machine: str
    arch: str
    efi: bool = True  # firmware autoselection offers `efi`
    cpu_modes: tuple[str, ...] = ()


def parse_domain_caps(xml: str, domain_type: str) -> HostFacts:
    """HostFacts from `virConnectGetDomainCapabilities` output for `domain_type`."""
    root = ET.fromstring(xml)
    firmware = [v.text for v in root.findall("./os/enum[@name='firmware']/value")]
    modes = tuple(m.get("name", "") for m in root.findall("./cpu/mode")
                  if m.get("supported") == "yes")
    return HostFacts(domain_type=domain_type, emulator=root.findtext("path") or "",
                     machine=root.findtext("machine") or "", arch=root.findtext("arch") or "",
                     efi="efi" in firmware, cpu_modes=modes)


def pick_domain_type(kvm_caps_ok: bool) -> str:
    """KVM when the host offers it for the arch, else TCG (`type='qemu'`)."""
    return "kvm" if kvm_caps_ok else "qemu"


def libvirt_arch(arch: str) -> str:
    try:
        return _LIBVIRT_ARCH[arch]
    except KeyError:
        raise ConfigError(f"field `arch` `{arch}` is not supported by vmType `libvirt`") \
            from None


def default_machine(arch: str) -> str:
    return {"x86_64": "q35", "aarch64": "virt", "riscv64": "virt", "armv7l": "virt"}[arch]


# ---- the domain ----


@dataclass(frozen=True)
class DomainBoot:
    """Where the domain boots from, as paths and volumes on the libvirt host."""

    pool: str
    disk_volume: str
    cidata_volume: str
    kernel: str = ""  # a path on the libvirt host: direct kernel boot when set
    initrd: str = ""
    cmdline: str = ""
    # firmware boot: where the UEFI variable store is on the libvirt host (a file of
    # the pool, so that `delete` removes it; libvirt keeps a transient domain's
    # store of its own choosing when the domain goes)
    nvram: str = ""


@dataclass(frozen=True)
class DomainSpec:
    """Everything the domain XML needs besides the config."""

    name: str
    instance: str
    lima_home: str
    facts: HostFacts
    boot: DomainBoot
    ssh_host_port: int  # guest 22 appears on this port of the libvirt host's 127.0.0.1
    mac_address: str
    network: str = ""  # a libvirt network for a second NIC ("" = none)
    # local host only: the guest agent's virtio-serial port as a unix socket
    guest_agent_socket: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _memory_mib(cfg: dict[str, Any]) -> int:
    value = cfg.get("memory")
    try:
        mib = parse_size(value) >> 20 if value is not None else 0
    except ValueError as e:
        raise ConfigError(f"field `memory` has an invalid value: {e}") from None
    if mib < 1:
        raise ConfigError(f"field `memory` must be at least 1MiB (got `{value}`)")
    return mib


def build_domain_xml(cfg: dict[str, Any], spec: DomainSpec) -> str:
    """The domain XML of the instance (a transient domain: pylima creates it at each
    start and libvirt forgets it when it stops). PURE."""
    facts = spec.facts
    arch = libvirt_arch(str(cfg.get("arch") or "x86_64"))
    dom = ET.Element("domain", type=facts.domain_type)
    ET.SubElement(dom, "name").text = spec.name
    ET.SubElement(dom, "title").text = f"pylima instance {spec.instance}"
    ET.SubElement(dom, "description").text = (f"pylima instance `{spec.instance}` of "
                                              f"LIMA_HOME {spec.lima_home}")
    meta = ET.SubElement(dom, "metadata")
    inst = ET.SubElement(meta, "pylima:instance", {"xmlns:pylima": METADATA_NS})
    ET.SubElement(inst, "pylima:name").text = spec.instance
    ET.SubElement(inst, "pylima:limaHome").text = spec.lima_home
    ET.SubElement(dom, "memory", unit="MiB").text = str(_memory_mib(cfg))
    ET.SubElement(dom, "vcpu").text = str(int(cfg.get("cpus") or 1))
    os_attrs = {"firmware": "efi"} if not spec.boot.kernel else {}
    os_el = ET.SubElement(dom, "os", os_attrs)
    ET.SubElement(os_el, "type", arch=arch,
                  machine=facts.machine or default_machine(arch)).text = "hvm"
    if spec.boot.kernel:
        ET.SubElement(os_el, "kernel").text = spec.boot.kernel
        if spec.boot.initrd:
            ET.SubElement(os_el, "initrd").text = spec.boot.initrd
        ET.SubElement(os_el, "cmdline").text = spec.boot.cmdline
    else:
        fw = ET.SubElement(os_el, "firmware")
        # Secure boot needs SMM and enrolled keys: slower under TCG, and Lima's
        # images do not need it.
        ET.SubElement(fw, "feature", enabled="no", name="secure-boot")
        ET.SubElement(fw, "feature", enabled="no", name="enrolled-keys")
        if spec.boot.nvram:
            ET.SubElement(os_el, "nvram").text = spec.boot.nvram
    ET.SubElement(os_el, "boot", dev="hd")
    features = ET.SubElement(dom, "features")
    ET.SubElement(features, "acpi")
    if arch == "x86_64":
        ET.SubElement(features, "apic")
    if facts.domain_type == "kvm":
        ET.SubElement(dom, "cpu", mode="host-passthrough")
    elif "maximum" in facts.cpu_modes:
        ET.SubElement(dom, "cpu", mode="maximum")
    ET.SubElement(dom, "clock", offset="utc")
    ET.SubElement(dom, "on_poweroff").text = "destroy"
    ET.SubElement(dom, "on_reboot").text = "restart"
    ET.SubElement(dom, "on_crash").text = "destroy"
    dev = ET.SubElement(dom, "devices")
    if facts.emulator:
        ET.SubElement(dev, "emulator").text = facts.emulator
    disk = ET.SubElement(dev, "disk", type="volume", device="disk")
    ET.SubElement(disk, "driver", name="qemu", type="qcow2", discard="unmap")
    ET.SubElement(disk, "source", pool=spec.boot.pool, volume=spec.boot.disk_volume)
    ET.SubElement(disk, "target", dev="vda", bus="virtio")
    # The seed as a read-only virtio disk (label `cidata`), as the QEMU driver's: the
    # guest needs no AHCI, SCSI or CD-ROM driver to find it early.
    cd = ET.SubElement(dev, "disk", type="volume", device="disk")
    ET.SubElement(cd, "driver", name="qemu", type="raw")
    ET.SubElement(cd, "source", pool=spec.boot.pool, volume=spec.boot.cidata_volume)
    ET.SubElement(cd, "target", dev="vdb", bus="virtio")
    ET.SubElement(cd, "readonly")
    if spec.network:
        net = ET.SubElement(dev, "interface", type="network")
        ET.SubElement(net, "source", network=spec.network)
        ET.SubElement(net, "model", type="virtio")
    serial = ET.SubElement(dev, "serial", type="pty")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(dev, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    if spec.guest_agent_socket:
        ch = ET.SubElement(dev, "channel", type="unix")
        ET.SubElement(ch, "source", mode="bind", path=spec.guest_agent_socket)
        ET.SubElement(ch, "target", type="virtio", name=GUEST_AGENT_PORT)
    ET.SubElement(dev, "rng", model="virtio").append(_backend_random())
    ET.SubElement(dev, "memballoon", model="none")
    # The user-mode network, as the QEMU driver's: Lima's 192.168.5.0/24 with guest
    # port 22 on the libvirt host's 127.0.0.1. libvirt 9.0 (Debian 12) has no way to
    # say this in domain XML: its `<interface type='user'>` takes no port forwards,
    # and it refuses `<backend type='passt'/>` (which carries `<portForward>`); so
    # the NIC is given to QEMU directly, through libvirt's QEMU namespace.
    cmd = ET.SubElement(dom, "qemu:commandline", {"xmlns:qemu": QEMU_NS})
    for arg in user_network_args(spec.ssh_host_port, spec.mac_address):
        ET.SubElement(cmd, "qemu:arg", value=arg)
    ET.indent(dom, "  ")
    return ET.tostring(dom, encoding="unicode") + "\n"


def user_network_args(ssh_port: int, mac: str) -> list[str]:
    """QEMU's user-mode NIC (`net0`, whose host forwards the driver manages)."""
    return ["-netdev",
            f"user,id={NETDEV},net={SLIRP_NETWORK},host={SLIRP_GATEWAY},dns={SLIRP_DNS},"
            f"dhcpstart={SLIRP_IP_ADDRESS},hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            # on the root bus, in a slot libvirt's own device placement leaves free
            "-device", f"virtio-net-pci,netdev={NETDEV},mac={mac},bus=pcie.0,addr=0x10"]


def _backend_random() -> ET.Element:
    b = ET.Element("backend", model="random")
    b.text = "/dev/urandom"
    return b


def volume_xml(name: str, *, capacity: int, fmt: str, backing_path: str = "",
               backing_format: str = "") -> str:
    """A storage volume: a raw file or qcow2, optionally over a backing volume."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    if backing_path:
        bs = ET.SubElement(vol, "backingStore")
        ET.SubElement(bs, "path").text = backing_path
        ET.SubElement(bs, "format", type=backing_format or "qcow2")
    ET.indent(vol, "  ")
    return ET.tostring(vol, encoding="unicode") + "\n"


def domain_instance_name(xml: str) -> tuple[str, str] | None:
    """(instance, LIMA_HOME) from a domain's pylima metadata; None for another's."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    ns = {"p": METADATA_NS}
    el = root.find("./metadata/p:instance", ns)
    if el is None:
        return None
    return el.findtext("p:name", "", ns), el.findtext("p:limaHome", "", ns)
