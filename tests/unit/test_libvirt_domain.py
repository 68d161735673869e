"""The libvirt driver's pure core: golden tests of the domain XML (the whole document
is compared with tests/unit/data/libvirt/*.xml), `vmOpts.libvirt` checks, URIs,
names, domain capabilities; and the driver in the registry and the config checks."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from pylima.config.validate import validate
from pylima.drivers import registry
from pylima.drivers.libvirt import domain as dx
from pylima.errors import ConfigError

DATA = Path(__file__).parent / "data" / "libvirt"
POOL = "/var/lib/libvirt/images/pylima-0123abcd"
TCG = dx.HostFacts(domain_type="qemu", emulator="/usr/bin/qemu-system-x86_64",
                   machine="pc-q35-7.2", arch="x86_64", efi=True,
                   cpu_modes=("maximum", "host-model", "custom"))
KVM = dx.HostFacts(domain_type="kvm", emulator="/usr/bin/qemu-system-x86_64",
                   machine="pc-q35-8.2", arch="x86_64", efi=True,
                   cpu_modes=("host-passthrough", "maximum"))


def config(**changes: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"arch": "x86_64", "cpus": 2, "memory": "2GiB", "disk": "100GiB",
                           "vmType": "libvirt"}
    cfg.update(changes)
    return cfg


def spec(facts: dx.HostFacts, *, kernel: bool = True, **kw: Any) -> dx.DomainSpec:
    files = {"kernel": f"{POOL}-kernel-85667e6c72245133",
             "initrd": f"{POOL}-initrd-a056b5276d5559f9",
             "cmdline": "root=PARTUUID=x rw console=ttyS0"} if kernel else {
                 "nvram": "/var/lib/libvirt/images/pylima-0123abcd-dev-efivars.fd"}
    boot = dx.DomainBoot(pool="default", disk_volume="pylima-0123abcd-dev-disk.qcow2",
                         cidata_volume="pylima-0123abcd-dev-cidata.iso", **files)
    return dx.DomainSpec(name="pylima-0123abcd-dev", instance="dev", lima_home="/home/u/.lima",
                         facts=facts, boot=boot, ssh_host_port=40222,
                         mac_address="52:55:55:12:34:56", **kw)


def test_tcg_direct_kernel_boot_with_guest_agent_socket() -> None:
    xml = dx.build_domain_xml(config(), spec(TCG, guest_agent_socket="/home/u/.lima/dev/ga.sock"))
    assert xml == (DATA / "tcg_kernel_boot.xml").read_text()


def test_kvm_firmware_boot_with_a_libvirt_network() -> None:
    xml = dx.build_domain_xml(config(cpus=4, memory="4GiB"),
                              spec(KVM, kernel=False, network="default"))
    assert xml == (DATA / "kvm_firmware_network.xml").read_text()


def test_the_domain_xml_is_well_formed_and_carries_pylima_metadata() -> None:
    xml = dx.build_domain_xml(config(), spec(TCG))
    root = ET.fromstring(xml)
    assert root.get("type") == "qemu"
    assert dx.domain_instance_name(xml) == ("dev", "/home/u/.lima")
    assert dx.domain_instance_name("<domain><name>other</name></domain>") is None
    ns = {"q": dx.QEMU_NS}
    args = [a.get("value") for a in root.findall("./q:commandline/q:arg", ns)]
    assert "hostfwd=tcp:127.0.0.1:40222-:22" in args[1]


def test_tcg_without_maximum_cpu_mode_leaves_the_cpu_to_libvirt() -> None:
    facts = dx.HostFacts("qemu", "", "", "x86_64", cpu_modes=("custom",))
    root = ET.fromstring(dx.build_domain_xml(config(), spec(facts)))
    assert root.find("cpu") is None
    assert root.find("devices/emulator") is None
    assert root.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]


def test_memory_is_checked() -> None:
    with pytest.raises(ConfigError, match="memory"):
        dx.build_domain_xml(config(memory="12KiB"), spec(TCG))


def test_volume_xml_of_an_overlay() -> None:
    xml = dx.volume_xml("v.qcow2", capacity=1 << 30, fmt="qcow2", backing_path="/p/base",
                        backing_format="qcow2")
    assert xml == ("<volume>\n  <name>v.qcow2</name>\n"
                   "  <capacity unit=\"bytes\">1073741824</capacity>\n"
                   "  <target>\n    <format type=\"qcow2\" />\n  </target>\n"
                   "  <backingStore>\n    <path>/p/base</path>\n"
                   "    <format type=\"qcow2\" />\n  </backingStore>\n</volume>\n")


CAPS = """<domainCapabilities>
  <path>/usr/bin/qemu-system-x86_64</path>
  <domain>qemu</domain>
  <machine>pc-q35-7.2</machine>
  <arch>x86_64</arch>
  <os supported='yes'><enum name='firmware'><value>efi</value></enum></os>
  <cpu>
    <mode name='host-passthrough' supported='no'/>
    <mode name='maximum' supported='yes'/>
    <mode name='host-model' supported='yes'/>
  </cpu>
</domainCapabilities>"""


def test_domain_capabilities() -> None:
    facts = dx.parse_domain_caps(CAPS, dx.pick_domain_type(False))
    assert facts == dx.HostFacts("qemu", "/usr/bin/qemu-system-x86_64", "pc-q35-7.2",
                                 "x86_64", True, ("maximum", "host-model"))
    assert dx.pick_domain_type(True) == "kvm"


# ---- URIs, options, names ----


def test_uris() -> None:
    u = dx.parse_uri("qemu+ssh://me@server:2222/system?keyfile=/k&no_verify=1")
    assert (u.remote, u.user, u.host, u.port, u.path, u.keyfile, u.no_verify) == \
        (True, "me", "server", 2222, "/system", "/k", True)
    assert u.ssh_destination == "me@server"
    assert u.ssh_args() == ["-o", "BatchMode=yes", "-p", "2222", "-i", "/k", "-o",
                            "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no"]
    assert not dx.parse_uri("qemu:///session").remote
    assert dx.parse_uri("qemu:///system").path == "/system"


@pytest.mark.parametrize("uri, message", [
    ("xen:///system", "scheme `xen` is not supported"),
    ("qemu+tcp://h/system", "scheme `qemu+tcp` is not supported"),
    ("qemu:///", "path must be `/system` or `/session`, not `/`"),
    ("qemu+ssh:///system", "qemu+ssh needs a host"),
    ("qemu://host/system", "takes no host"),
    ("qemu:///system?foo=1", "parameter `foo` is not supported"),
])
def test_bad_uris_are_one_line(uri: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        dx.parse_uri(uri)
    assert message in e.value.message and uri in e.value.message
    assert "\n" not in e.value.message


def test_opts_defaults_and_errors() -> None:
    assert dx.libvirt_opts({}, is_root=False) == {"uri": "qemu:///session", "pool": "default",
                                                  "network": ""}
    assert dx.libvirt_opts({}, is_root=True)["uri"] == "qemu:///system"
    assert dx.libvirt_opts({"vmOpts": {"libvirt": {"pool": "p", "network": "n"}}},
                           is_root=True) == {"uri": "qemu:///system", "pool": "p",
                                             "network": "n"}
    assert dx.opts_errors({}) == []
    assert dx.opts_errors({"vmOpts": {"libvirt": {"uri": "qemu:///session"}}}) == []
    assert dx.opts_errors({"vmOpts": {"libvirt": {"pol": "x"}}}) == [
        "field `vmOpts.libvirt.pol` is not known (known: uri, pool, network)"]
    assert dx.opts_errors({"vmOpts": {"libvirt": {"pool": 3}}}) == [
        "field `vmOpts.libvirt.pool` must be a string"]
    assert dx.opts_errors({"vmOpts": {"libvirt": {"pool": "a b"}}}) == [
        "field `vmOpts.libvirt.pool` must be a libvirt object name, not `a b`"]
    assert dx.opts_errors({"vmOpts": {"libvirt": "x"}}) == ["field `vmOpts.libvirt` must be a map"]


def test_names_carry_the_lima_home_prefix() -> None:
    a, b = dx.home_prefix("/home/a/.lima"), dx.home_prefix("/home/b/.lima")
    assert a != b and a.startswith("pylima-") and len(a) == len("pylima-") + 8
    n = dx.Names(a, "dev")
    assert n.domain == f"{a}-dev"
    assert n.instance_volumes() == (f"{a}-dev-disk.qcow2", f"{a}-dev-cidata.iso",
                                    f"{a}-dev-efivars.fd")
    assert n.base_volume("0c125ddb7ef3ede751dce3633369f885", "image") == \
        f"{a}-image-0c125ddb7ef3ede7"
    # another instance's volumes are never this one's
    assert not set(dx.Names(a, "dev2").instance_volumes()) & set(n.instance_volumes())


# ---- the driver in pylima ----


def test_libvirt_is_a_registered_driver() -> None:
    assert registry.list_drivers()["libvirt"] == registry.INTERNAL
    out = subprocess.run([sys.executable, "-m", "pylima", "create", "--list-drivers"],
                         capture_output=True, text=True, check=True).stdout
    assert "libvirt" in out.split()


def filled(**changes: Any) -> dict[str, Any]:
    from pylima.config.defaults import HostFacts, fill_defaults

    host = HostFacts(cpus=2, memory=8 << 30, arch="x86_64", user="alice", uid=1001,
                     home="/home/alice", lima_home="/l")
    y = {"images": [{"location": "/x.qcow2", "arch": "x86_64"}], "vmType": "libvirt",
         **changes}
    return fill_defaults(y, {}, {}, host, "/l/dev/lima.yaml").config


def test_config_defaults_and_validation() -> None:
    y = filled()
    assert y["mountType"] == "reverse-sshfs"
    errs, _ = validate(y, "2.2.0")
    assert errs == []
    errs, _ = validate(filled(vmOpts={"libvirt": {"uri": "xen:///system"}}), "2.2.0")
    assert errs == ["field `vmOpts.libvirt.uri` `xen:///system`: scheme `xen` is not "
                    "supported (use one of qemu://, qemu+unix://, qemu+ssh://)"]


def test_driver_refuses_9p_mounts_and_networks() -> None:
    from pylima.drivers.libvirt import LibvirtDriver

    mounts = [{"location": "/home/u", "mountPoint": "/home/u"}]
    with pytest.raises(ConfigError, match="is remote: it cannot see this host's files"):
        LibvirtDriver.validate(config(mounts=mounts, mountType="9p", vmOpts={
            "libvirt": {"uri": "qemu+ssh://u@h/system"}}))
    with pytest.raises(ConfigError, match="`virtiofs` is not supported by vmType `libvirt`"):
        LibvirtDriver.validate(config(mounts=mounts, mountType="virtiofs"))
    with pytest.raises(ConfigError, match="network `shared` is not supported"):
        LibvirtDriver.validate(config(networks=[{"lima": "shared"}]))
    with pytest.raises(ConfigError, match="scheme `xen`"):
        LibvirtDriver.validate(config(vmOpts={"libvirt": {"uri": "xen:///system"}}))
    assert LibvirtDriver.validate(config(mounts=mounts, mountType="reverse-sshfs")) == []
    with pytest.raises(ConfigError, match="^field `video.display` `vnc` is not supported by "
                       "vmType `libvirt`: the domain has a serial console only$"):
        LibvirtDriver.validate(config(video={"display": "vnc"}))
    assert LibvirtDriver.validate(config(video={"display": "none"})) == []


def test_a_local_libvirt_host_gets_the_qemu_drivers_kvm_verdict(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """KVM that libvirt offers on this host is used only if the QEMU driver would use
    it; $PYLIMA_QEMU_ACCEL decides for both."""
    import shutil

    from pylima.drivers.libvirt import local_kvm_problem

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("needs qemu-system-x86_64")
    monkeypatch.setenv("PYLIMA_QEMU_ACCEL", "tcg")
    assert local_kvm_problem("x86_64", qemu) == "$PYLIMA_QEMU_ACCEL is set to `tcg`"
    monkeypatch.setenv("PYLIMA_QEMU_ACCEL", "kvm")
    assert local_kvm_problem("x86_64", qemu) == ""
    assert local_kvm_problem("x86_64", "/nonexistent/qemu") == ""  # libvirt decides


def test_a_libvirt_call_that_never_returns_times_out_without_holding_the_process() -> None:
    """The host agent's calls on its libvirt connection: a result or the call's own
    error comes back; a call stuck on a dead connection gives TimeoutError, and its
    thread is a daemon, so it cannot keep the host agent from exiting."""
    import asyncio
    import threading

    from pylima.drivers.libvirt import _libvirt_call

    stuck = threading.Event()

    def never() -> None:
        stuck.wait()

    def fails() -> None:
        raise ValueError("no such domain")

    async def go() -> None:
        assert await _libvirt_call(lambda a, b: a + b, 2, 3, timeout=5) == 5
        with pytest.raises(ValueError, match="no such domain"):
            await _libvirt_call(fails, timeout=5)
        with pytest.raises(TimeoutError):
            await _libvirt_call(never, timeout=0.2)

    asyncio.run(go())
    blocked = [t for t in threading.enumerate() if t.name == "libvirt-call"]
    assert blocked and all(t.daemon for t in blocked)
    stuck.set()
