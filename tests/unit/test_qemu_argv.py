"""Golden tests of the pure QEMU argv builder: the whole command line is compared."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import pytest

from pylima.drivers.qemu.argv import (
    BootFiles,
    QemuHost,
    build_qemu_argv,
    default_cpu_type,
    mount_tag,
    parse_memory_mib,
)
from pylima.errors import ConfigError, LimaError

INST = "/home/u/.lima/dev"
MACHINE_ID = "0123456789abcdef"

X86_TCG = QemuHost(binary="/usr/bin/qemu-system-x86_64", version=(7, 2, 22), accel="tcg",
                   firmware_code="/usr/share/OVMF/OVMF_CODE_4M.fd",
                   firmware_vars_template="/usr/share/OVMF/OVMF_VARS_4M.fd",
                   host_arch="x86_64", machine_id=MACHINE_ID)
X86_KVM = QemuHost(binary="/usr/bin/qemu-system-x86_64", version=(8, 2, 2), accel="kvm",
                   firmware_code="/usr/share/OVMF/OVMF_CODE_4M.fd",
                   firmware_vars_template="/usr/share/OVMF/OVMF_VARS_4M.fd",
                   host_arch="x86_64", machine_id=MACHINE_ID)
ARM_TCG = QemuHost(binary="/usr/bin/qemu-system-aarch64", version=(7, 2, 22), accel="tcg",
                   firmware_code="/usr/share/AAVMF/AAVMF_CODE.fd",
                   firmware_vars_template="/usr/share/AAVMF/AAVMF_VARS.fd",
                   host_arch="x86_64", machine_id=MACHINE_ID)


def config(**changes: Any) -> dict[str, Any]:
    """The parts of a filled lima.yaml the builder reads."""
    cfg: dict[str, Any] = {
        "arch": "x86_64", "cpus": 2, "memory": "2GiB", "disk": "100GiB", "vmType": "qemu",
        "vmOpts": {"qemu": {}}, "firmware": {"legacyBIOS": False, "images": []},
        "video": {"display": "none", "vnc": {"display": "127.0.0.1:0,to=9"}},
        "audio": {"device": "", "interface": ""}, "mounts": [], "mountType": "9p",
        "networks": [], "nestedVirtualization": False,
    }
    cfg.update(copy.deepcopy(changes))
    return cfg


def firmware_boot() -> BootFiles:
    return BootFiles(disk=f"{INST}/disk", cidata_iso=f"{INST}/cidata.iso",
                     firmware_vars=f"{INST}/qemu-efi-vars.fd")


def test_x86_64_tcg_direct_kernel_boot_with_9p_mount() -> None:
    cfg = config(mounts=[{"location": "/home/u", "mountPoint": "/home/u", "writable": False,
                          "9p": {"securityModel": "none"}}])
    boot = BootFiles(disk=f"{INST}/disk", cidata_iso=f"{INST}/cidata.iso",
                     kernel=f"{INST}/kernel", initrd=f"{INST}/initrd",
                     cmdline="root=/dev/vda rw console=ttyS0", firmware_vars=None)
    assert build_qemu_argv(cfg, X86_TCG, INST, boot, ssh_local_port=60022) == [
        "/usr/bin/qemu-system-x86_64",
        "-name", "lima-dev",
        "-nodefaults",
        "-m", "2048",
        "-cpu", "max",
        "-machine", "q35,vmport=off",
        "-accel", "tcg,thread=multi,tb-size=512",
        "-global", "ICH9-LPC.disable_s3=1",
        "-global", "ICH9-LPC.disable_s4=1",
        "-smp", "2,sockets=1,cores=2,threads=1",
        "-drive", "file=/home/u/.lima/dev/disk,if=none,format=qcow2,discard=on,id=boot-disk",
        "-device", "virtio-blk-pci,drive=boot-disk,bootindex=1",
        "-drive", "file=/home/u/.lima/dev/cidata.iso,if=none,format=raw,readonly=on,id=cidata",
        "-device", "virtio-blk-pci,drive=cidata",
        "-kernel", "/home/u/.lima/dev/kernel",
        "-append", "root=/dev/vda rw console=ttyS0",
        "-initrd", "/home/u/.lima/dev/initrd",
        "-netdev", "user,id=net0,net=192.168.5.0/24,host=192.168.5.2,dns=192.168.5.3,"
                   "dhcpstart=192.168.5.15,hostfwd=tcp:127.0.0.1:60022-:22",
        "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:31:92:f8",
        "-device", "virtio-rng-pci",
        "-display", "none",
        "-chardev", "socket,id=char-serial,path=/home/u/.lima/dev/serial.sock,server=on,"
                    "wait=off,logfile=/home/u/.lima/dev/serial.log",
        "-serial", "chardev:char-serial",
        "-chardev", "socket,id=char-serial-virtio,path=/home/u/.lima/dev/serialv.sock,"
                    "server=on,wait=off,logfile=/home/u/.lima/dev/serialv.log",
        "-device", "virtio-serial-pci,id=virtio-serial0,max_ports=1",
        "-device", "virtconsole,chardev=char-serial-virtio,id=console0",
        "-virtfs", "local,path=/home/u,mount_tag=lima-f872001c91a4f2cf,security_model=none,"
                   "id=lima-f872001c91a4f2cf,readonly=on",
        "-chardev", "socket,id=char-qmp,path=/home/u/.lima/dev/qmp.sock,server=on,wait=off",
        "-qmp", "chardev:char-qmp",
        "-chardev", "socket,id=char-ga,path=/home/u/.lima/dev/ga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=virtio-serial1",
        "-device",
        "virtserialport,bus=virtio-serial1.0,chardev=char-ga,name=io.lima-vm.guest_agent.0",
        "-pidfile", "/home/u/.lima/dev/qemu.pid",
    ]


def test_x86_64_kvm_firmware_boot() -> None:
    cfg = config(cpus=4, memory="4GiB")
    assert build_qemu_argv(cfg, X86_KVM, INST, firmware_boot(), ssh_local_port=41234) == [
        "/usr/bin/qemu-system-x86_64",
        "-name", "lima-dev",
        "-nodefaults",
        "-m", "4096",
        "-cpu", "host",
        "-machine", "q35,vmport=off",
        "-accel", "kvm",
        "-global", "ICH9-LPC.disable_s3=1",
        "-global", "ICH9-LPC.disable_s4=1",
        "-smp", "4,sockets=1,cores=4,threads=1",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/home/u/.lima/dev/qemu-efi-vars.fd",
        "-drive", "file=/home/u/.lima/dev/disk,if=none,format=qcow2,discard=on,id=boot-disk",
        "-device", "virtio-blk-pci,drive=boot-disk,bootindex=1",
        "-drive", "file=/home/u/.lima/dev/cidata.iso,if=none,format=raw,readonly=on,id=cidata",
        "-device", "virtio-blk-pci,drive=cidata",
        "-netdev", "user,id=net0,net=192.168.5.0/24,host=192.168.5.2,dns=192.168.5.3,"
                   "dhcpstart=192.168.5.15,hostfwd=tcp:127.0.0.1:41234-:22",
        "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:31:92:f8",
        "-device", "virtio-rng-pci",
        "-display", "none",
        "-chardev", "socket,id=char-serial,path=/home/u/.lima/dev/serial.sock,server=on,"
                    "wait=off,logfile=/home/u/.lima/dev/serial.log",
        "-serial", "chardev:char-serial",
        "-chardev", "socket,id=char-serial-virtio,path=/home/u/.lima/dev/serialv.sock,"
                    "server=on,wait=off,logfile=/home/u/.lima/dev/serialv.log",
        "-device", "virtio-serial-pci,id=virtio-serial0,max_ports=1",
        "-device", "virtconsole,chardev=char-serial-virtio,id=console0",
        "-chardev", "socket,id=char-qmp,path=/home/u/.lima/dev/qmp.sock,server=on,wait=off",
        "-qmp", "chardev:char-qmp",
        "-chardev", "socket,id=char-ga,path=/home/u/.lima/dev/ga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=virtio-serial1",
        "-device",
        "virtserialport,bus=virtio-serial1.0,chardev=char-ga,name=io.lima-vm.guest_agent.0",
        "-pidfile", "/home/u/.lima/dev/qemu.pid",
    ]


def test_aarch64_tcg_firmware_boot() -> None:
    # Memory in MiB (1.5GiB), the PCI serial beside the PL011, neoverse-n1 for TCG speed.
    cfg = config(arch="aarch64", memory="1.5GiB")
    assert build_qemu_argv(cfg, ARM_TCG, INST, firmware_boot(), ssh_local_port=60022) == [
        "/usr/bin/qemu-system-aarch64",
        "-name", "lima-dev",
        "-nodefaults",
        "-m", "1536",
        "-cpu", "neoverse-n1",
        "-machine", "virt",
        "-accel", "tcg,thread=multi,tb-size=512",
        "-smp", "2,sockets=1,cores=2,threads=1",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/home/u/.lima/dev/qemu-efi-vars.fd",
        "-drive", "file=/home/u/.lima/dev/disk,if=none,format=qcow2,discard=on,id=boot-disk",
        "-device", "virtio-blk-pci,drive=boot-disk,bootindex=1",
        "-drive", "file=/home/u/.lima/dev/cidata.iso,if=none,format=raw,readonly=on,id=cidata",
        "-device", "virtio-blk-pci,drive=cidata",
        "-netdev", "user,id=net0,net=192.168.5.0/24,host=192.168.5.2,dns=192.168.5.3,"
                   "dhcpstart=192.168.5.15,hostfwd=tcp:127.0.0.1:60022-:22",
        "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:31:92:f8",
        "-device", "virtio-rng-pci",
        "-display", "none",
        "-chardev", "socket,id=char-serial,path=/home/u/.lima/dev/serial.sock,server=on,"
                    "wait=off,logfile=/home/u/.lima/dev/serial.log",
        "-serial", "chardev:char-serial",
        "-chardev", "socket,id=char-serial-pci,path=/home/u/.lima/dev/serialp.sock,"
                    "server=on,wait=off,logfile=/home/u/.lima/dev/serialp.log",
        "-device", "pci-serial,chardev=char-serial-pci",
        "-chardev", "socket,id=char-serial-virtio,path=/home/u/.lima/dev/serialv.sock,"
                    "server=on,wait=off,logfile=/home/u/.lima/dev/serialv.log",
        "-device", "virtio-serial-pci,id=virtio-serial0,max_ports=1",
        "-device", "virtconsole,chardev=char-serial-virtio,id=console0",
        "-chardev", "socket,id=char-qmp,path=/home/u/.lima/dev/qmp.sock,server=on,wait=off",
        "-qmp", "chardev:char-qmp",
        "-chardev", "socket,id=char-ga,path=/home/u/.lima/dev/ga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=virtio-serial1",
        "-device",
        "virtserialport,bus=virtio-serial1.0,chardev=char-ga,name=io.lima-vm.guest_agent.0",
        "-pidfile", "/home/u/.lima/dev/qemu.pid",
    ]


def test_cpu_type_override() -> None:
    cfg = config(vmOpts={"qemu": {"cpuType": {"x86_64": "Haswell-v4", "aarch64": "cortex-a57"}}})
    assert build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=60022) == [
        "/usr/bin/qemu-system-x86_64",
        "-name", "lima-dev",
        "-nodefaults",
        "-m", "2048",
        "-cpu", "Haswell-v4",
        "-machine", "q35,vmport=off",
        "-accel", "tcg,thread=multi,tb-size=512",
        "-global", "ICH9-LPC.disable_s3=1",
        "-global", "ICH9-LPC.disable_s4=1",
        "-smp", "2,sockets=1,cores=2,threads=1",
        "-drive", "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
        "-drive", "if=pflash,format=raw,unit=1,file=/home/u/.lima/dev/qemu-efi-vars.fd",
        "-drive", "file=/home/u/.lima/dev/disk,if=none,format=qcow2,discard=on,id=boot-disk",
        "-device", "virtio-blk-pci,drive=boot-disk,bootindex=1",
        "-drive", "file=/home/u/.lima/dev/cidata.iso,if=none,format=raw,readonly=on,id=cidata",
        "-device", "virtio-blk-pci,drive=cidata",
        "-netdev", "user,id=net0,net=192.168.5.0/24,host=192.168.5.2,dns=192.168.5.3,"
                   "dhcpstart=192.168.5.15,hostfwd=tcp:127.0.0.1:60022-:22",
        "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:31:92:f8",
        "-device", "virtio-rng-pci",
        "-display", "none",
        "-chardev", "socket,id=char-serial,path=/home/u/.lima/dev/serial.sock,server=on,"
                    "wait=off,logfile=/home/u/.lima/dev/serial.log",
        "-serial", "chardev:char-serial",
        "-chardev", "socket,id=char-serial-virtio,path=/home/u/.lima/dev/serialv.sock,"
                    "server=on,wait=off,logfile=/home/u/.lima/dev/serialv.log",
        "-device", "virtio-serial-pci,id=virtio-serial0,max_ports=1",
        "-device", "virtconsole,chardev=char-serial-virtio,id=console0",
        "-chardev", "socket,id=char-qmp,path=/home/u/.lima/dev/qmp.sock,server=on,wait=off",
        "-qmp", "chardev:char-qmp",
        "-chardev", "socket,id=char-ga,path=/home/u/.lima/dev/ga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=virtio-serial1",
        "-device",
        "virtserialport,bus=virtio-serial1.0,chardev=char-ga,name=io.lima-vm.guest_agent.0",
        "-pidfile", "/home/u/.lima/dev/qemu.pid",
    ]


def test_legacy_bios() -> None:
    # No pflash: QEMU's own SeaBIOS boots the disk.
    cfg = config(firmware={"legacyBIOS": True})
    boot = BootFiles(disk=f"{INST}/disk", cidata_iso=f"{INST}/cidata.iso")
    assert build_qemu_argv(cfg, X86_TCG, INST, boot, ssh_local_port=60022) == [
        "/usr/bin/qemu-system-x86_64",
        "-name", "lima-dev",
        "-nodefaults",
        "-m", "2048",
        "-cpu", "max",
        "-machine", "q35,vmport=off",
        "-accel", "tcg,thread=multi,tb-size=512",
        "-global", "ICH9-LPC.disable_s3=1",
        "-global", "ICH9-LPC.disable_s4=1",
        "-smp", "2,sockets=1,cores=2,threads=1",
        "-drive", "file=/home/u/.lima/dev/disk,if=none,format=qcow2,discard=on,id=boot-disk",
        "-device", "virtio-blk-pci,drive=boot-disk,bootindex=1",
        "-drive", "file=/home/u/.lima/dev/cidata.iso,if=none,format=raw,readonly=on,id=cidata",
        "-device", "virtio-blk-pci,drive=cidata",
        "-netdev", "user,id=net0,net=192.168.5.0/24,host=192.168.5.2,dns=192.168.5.3,"
                   "dhcpstart=192.168.5.15,hostfwd=tcp:127.0.0.1:60022-:22",
        "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:31:92:f8",
        "-device", "virtio-rng-pci",
        "-display", "none",
        "-chardev", "socket,id=char-serial,path=/home/u/.lima/dev/serial.sock,server=on,"
                    "wait=off,logfile=/home/u/.lima/dev/serial.log",
        "-serial", "chardev:char-serial",
        "-chardev", "socket,id=char-serial-virtio,path=/home/u/.lima/dev/serialv.sock,"
                    "server=on,wait=off,logfile=/home/u/.lima/dev/serialv.log",
        "-device", "virtio-serial-pci,id=virtio-serial0,max_ports=1",
        "-device", "virtconsole,chardev=char-serial-virtio,id=console0",
        "-chardev", "socket,id=char-qmp,path=/home/u/.lima/dev/qmp.sock,server=on,wait=off",
        "-qmp", "chardev:char-qmp",
        "-chardev", "socket,id=char-ga,path=/home/u/.lima/dev/ga.sock,server=on,wait=off",
        "-device", "virtio-serial-pci,id=virtio-serial1",
        "-device",
        "virtserialport,bus=virtio-serial1.0,chardev=char-ga,name=io.lima-vm.guest_agent.0",
        "-pidfile", "/home/u/.lima/dev/qemu.pid",

    ]


def test_mac_address_and_mount_tag_follow_lima() -> None:
    # Lima: MAC 52:55:55 + sha256(machine-id + instance dir)[0:3];
    # tag "lima-" + hex of sha256(location + ":" + mountPoint)[0:8].
    mac = hashlib.sha256((MACHINE_ID + INST).encode()).digest()[:3]
    assert mac.hex(":") == "31:92:f8"
    tag = hashlib.sha256(b"/home/u:/home/u").digest()[:8].hex()
    assert mount_tag("/home/u", "/home/u") == f"lima-{tag}" == "lima-f872001c91a4f2cf"


def test_writable_9p_mount_with_given_tag() -> None:
    cfg = config(mounts=[{"location": "/tmp/lima", "mountPoint": "/tmp/lima", "writable": True,
                          "9p": {"securityModel": "mapped-xattr"}}])
    argv = build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1,
                           mount_tags=["tag0"])
    assert argv[argv.index("-virtfs") + 1] == (
        "local,path=/tmp/lima,mount_tag=tag0,security_model=mapped-xattr,id=tag0")


def test_virtiofs_mounts_share_guest_memory() -> None:
    cfg = config(mountType="virtiofs", memory="1GiB",
                 mounts=[{"location": "/home/u", "mountPoint": "/home/u", "writable": True,
                          "virtiofs": {"queueSize": 1024}}])
    argv = build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1,
                           virtiofs_sockets=[f"{INST}/virtiofsd-0.sock"])
    i = argv.index("-object")
    assert argv[i:i + 4] == ["-object", "memory-backend-memfd,id=mem,size=1024M,share=on",
                             "-numa", "node,memdev=mem"]
    assert "-virtfs" not in argv
    i = argv.index(f"socket,id=char-virtiofs-0,path={INST}/virtiofsd-0.sock")
    assert argv[i + 1:i + 3] == [
        "-device", "vhost-user-fs-pci,queue-size=1024,chardev=char-virtiofs-0,"
                   "tag=lima-f872001c91a4f2cf"]
    with pytest.raises(LimaError, match="virtiofsd socket"):
        build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)


def test_reverse_sshfs_adds_no_devices() -> None:
    cfg = config(mountType="reverse-sshfs",
                 mounts=[{"location": "/home/u", "mountPoint": "/home/u", "writable": False}])
    argv = build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)
    assert "-virtfs" not in argv and "vhost-user-fs-pci" not in " ".join(argv)


def test_vnc_display() -> None:
    cfg = config(video={"display": "vnc", "vnc": {"display": "127.0.0.1:0,to=9"}})
    argv = build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)
    i = argv.index("-display")
    assert argv[i:i + 8] == ["-display", "vnc=127.0.0.1:0,to=9,password=on",
                             "-device", "virtio-vga", "-device", "virtio-keyboard-pci",
                             "-device", "virtio-tablet-pci"]


def test_audio_device() -> None:
    cfg = config(audio={"device": "none", "interface": ""})
    assert "-audiodev" not in build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(),
                                              ssh_local_port=1)
    cfg = config(audio={"device": "default", "interface": ""})
    argv = build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)
    i = argv.index("-audiodev")
    assert argv[i:i + 6] == ["-audiodev", "pa,id=snd0", "-device", "ich9-intel-hda",
                             "-device", "hda-output,audiodev=snd0"]


def test_missing_firmware_is_an_error_unless_legacy_bios_or_kernel() -> None:
    host = QemuHost("/usr/bin/qemu-system-x86_64", (7, 2, 0), "tcg", None, None, "x86_64")
    with pytest.raises(LimaError, match="UEFI firmware for `x86_64`") as e:
        build_qemu_argv(config(), host, INST, firmware_boot(), ssh_local_port=1)
    assert e.value.hint and "ovmf" in e.value.hint and "legacyBIOS" in e.value.hint
    boot = BootFiles(disk="d", cidata_iso="c", kernel="k", initrd=None, cmdline="quiet")
    argv = build_qemu_argv(config(), host, INST, boot, ssh_local_port=1)
    assert "if=pflash" not in " ".join(argv)
    assert argv[argv.index("-kernel"):argv.index("-kernel") + 4] == [
        "-kernel", "k", "-append", "quiet"]


def test_kvm_needs_the_host_arch() -> None:
    host = QemuHost("/usr/bin/qemu-system-aarch64", (7, 2, 0), "kvm", "c", "v", "x86_64")
    with pytest.raises(LimaError, match="KVM cannot run an `aarch64` guest"):
        build_qemu_argv(config(arch="aarch64"), host, INST, firmware_boot(), ssh_local_port=1)


def test_extra_networks_are_refused() -> None:
    cfg = config(networks=[{"lima": "shared", "interface": "lima0"}])
    with pytest.raises(LimaError, match="network `shared` is not supported"):
        build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)
    cfg = config(networks=[{"socket": "/var/run/x.sock", "interface": "lima0"}])
    with pytest.raises(LimaError, match="network `/var/run/x.sock` is not supported"):
        build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1,
                        user_switches={"user-v2": "/sw"})


def test_the_first_user_v2_network_replaces_the_slirp_nic() -> None:
    # as Lima: no user-mode netdev (the network's router forwards SSH); the first
    # user-v2 NIC is net0, the next ones net<place in networks + 1>
    cfg = config(networks=[
        {"lima": "user-v2", "interface": "lima0", "macAddress": "52:55:55:00:00:01"},
        {"lima": "other", "interface": "lima1", "macAddress": "52:55:55:00:00:02"}])
    argv = build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=60022,
                           user_switches={"user-v2": "/h/_networks/user-v2/user-v2_qemu.vde",
                                          "other": "/h/_networks/other/other_qemu.vde"})
    assert not any(a.startswith("user,") for a in argv)
    assert not any("hostfwd" in a for a in argv)
    i = argv.index("vde,id=net0,sock=/h/_networks/user-v2/user-v2_qemu.vde")
    assert argv[i - 1:i + 7] == [
        "-netdev", "vde,id=net0,sock=/h/_networks/user-v2/user-v2_qemu.vde",
        "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:00:00:01",
        "-netdev", "vde,id=net2,sock=/h/_networks/other/other_qemu.vde",
        "-device", "virtio-net-pci,netdev=net2,mac=52:55:55:00:00:02",
    ]
    with pytest.raises(LimaError, match="contains a comma"):
        build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1,
                        user_switches={"user-v2": "/a,b", "other": "/c"})


def test_without_user_v2_the_slirp_nic_forwards_ssh() -> None:
    argv = build_qemu_argv(config(), X86_TCG, INST, firmware_boot(), ssh_local_port=60022)
    i = argv.index("virtio-net-pci,netdev=net0,mac=52:55:55:31:92:f8")
    assert argv[i - 3:i + 1] == [
        "-netdev", "user,id=net0,net=192.168.5.0/24,host=192.168.5.2,dns=192.168.5.3,"
                   "dhcpstart=192.168.5.15,hostfwd=tcp:127.0.0.1:60022-:22",
        "-device", "virtio-net-pci,netdev=net0,mac=52:55:55:31:92:f8"]
    assert not any(a.startswith("vde,") for a in argv)


def test_default_cpu_types() -> None:
    assert default_cpu_type("x86_64", "tcg", (7, 2, 0)) == "max"
    assert default_cpu_type("x86_64", "kvm", (7, 2, 0)) == "host"
    assert default_cpu_type("aarch64", "tcg", (7, 2, 0)) == "neoverse-n1"
    assert default_cpu_type("aarch64", "tcg", (7, 0, 0)) == "cortex-a72"
    assert default_cpu_type("aarch64", "tcg", (5, 2, 0)) == "cortex-a72"


@pytest.mark.parametrize(("memory", "mib"), [("4GiB", 4096), ("512MiB", 512), ("1.5GiB", 1536),
                                             (3 << 30, 3072), ("2G", 2048)])
def test_parse_memory_mib(memory: Any, mib: int) -> None:
    assert parse_memory_mib({"memory": memory}) == mib


@pytest.mark.parametrize("memory", ["lots", "100KiB", None])
def test_parse_memory_mib_errors(memory: Any) -> None:
    with pytest.raises(ConfigError, match="memory"):
        parse_memory_mib({"memory": memory})


def test_additional_disks_follow_the_boot_disk() -> None:
    # vda the boot disk, vdb and vdc the additional disks in order, the seed after them
    argv = build_qemu_argv(config(), X86_TCG, INST, firmware_boot(), ssh_local_port=1,
                           additional_disks=[("/home/u/.lima/_disks/data/datadisk", "raw"),
                                             ("/home/u/.lima/_disks/swap/datadisk", "qcow2")])
    i = argv.index("virtio-blk-pci,drive=boot-disk,bootindex=1")
    assert argv[i + 1:i + 10] == [
        "-drive", "file=/home/u/.lima/_disks/data/datadisk,if=none,format=raw,discard=on,"
        "id=disk0",
        "-device", "virtio-blk-pci,drive=disk0",
        "-drive", "file=/home/u/.lima/_disks/swap/datadisk,if=none,format=qcow2,discard=on,"
        "id=disk1",
        "-device", "virtio-blk-pci,drive=disk1",
        "-drive"]
    assert argv[i + 10].endswith("cidata.iso,if=none,format=raw,readonly=on,id=cidata")


def test_qemu_version_checks() -> None:
    old = QemuHost("/usr/bin/qemu-system-x86_64", (3, 1, 0), "tcg", "c", "v", "x86_64")
    with pytest.raises(LimaError, match=r"QEMU 3\.1\.0 is too old, 4\.0\.0 or later required"):
        build_qemu_argv(config(), old, INST, firmware_boot(), ssh_local_port=1)
    cfg = config(vmOpts={"qemu": {"minimumVersion": "8.2.1"}})
    with pytest.raises(LimaError, match=r"QEMU 7\.2\.22 is too old, template requires `8\.2\.1`"):
        build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)
    cfg = config(vmOpts={"qemu": {"minimumVersion": "7.2"}})
    build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)
    with pytest.raises(ConfigError, match="minimumVersion"):
        build_qemu_argv(config(vmOpts={"qemu": {"minimumVersion": "new"}}), X86_TCG, INST,
                        firmware_boot(), ssh_local_port=1)


def test_qcow2_uefi_variable_store() -> None:
    """New instances get a qcow2 variable store (QEMU snapshots a running VM only when
    every writable drive is qcow2)."""
    from dataclasses import replace

    argv = build_qemu_argv(config(), X86_KVM, INST,
                           replace(firmware_boot(), firmware_vars_format="qcow2"),
                           ssh_local_port=41234)
    assert f"if=pflash,format=qcow2,unit=1,file={INST}/qemu-efi-vars.fd" in argv


def test_tpm_devices_as_lima() -> None:
    """`tpm: true`: an emulator backend on swtpm's socket in the instance directory;
    tpm-crb on x86_64, tpm-tis-device on the virt boards."""
    argv = build_qemu_argv(config(tpm=True), X86_TCG, INST, firmware_boot(), ssh_local_port=1)
    i = argv.index("-tpmdev")
    assert argv[i - 2:i + 4] == [
        "-chardev", "socket,id=chrtpm,path=/home/u/.lima/dev/swtpm.sock",
        "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
        "-device", "tpm-crb,tpmdev=tpm0"]
    # before the network, as Lima places them
    assert i < argv.index("-netdev")
    argv = build_qemu_argv(config(arch="aarch64", tpm=True), ARM_TCG, INST,
                           firmware_boot(), ssh_local_port=1)
    assert argv[argv.index("-tpmdev") + 2:argv.index("-tpmdev") + 4] == [
        "-device", "tpm-tis-device,tpmdev=tpm0"]
    for cfg in (config(), config(tpm=False)):
        argv = build_qemu_argv(cfg, X86_TCG, INST, firmware_boot(), ssh_local_port=1)
        assert "-tpmdev" not in argv and "chrtpm" not in " ".join(argv)


def test_firmware_images_code_is_used_without_a_variable_store() -> None:
    """UEFI code from `firmware.images` replaces the host's, as Lima passes it (no
    variable store), and is used with a direct kernel boot too."""
    from dataclasses import replace

    boot = replace(firmware_boot(), firmware_code=f"{INST}/qemu-efi-code.fd",
                   firmware_vars=None)
    argv = build_qemu_argv(config(), X86_TCG, INST, boot, ssh_local_port=1)
    assert [a for a in argv if a.startswith("if=pflash")] == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/home/u/.lima/dev/qemu-efi-code.fd"]
    kernel_boot = BootFiles(disk="d", cidata_iso="c", kernel="k", cmdline="quiet",
                            firmware_code=f"{INST}/qemu-efi-code.fd")
    no_fw = QemuHost("/usr/bin/qemu-system-x86_64", (7, 2, 0), "tcg", None, None, "x86_64")
    argv = build_qemu_argv(config(), no_fw, INST, kernel_boot, ssh_local_port=1)
    i = argv.index("if=pflash,format=raw,unit=0,readonly=on,"
                   "file=/home/u/.lima/dev/qemu-efi-code.fd")
    assert argv[i - 1] == "-drive" and "-kernel" in argv


def test_firmware_images_for_the_instance() -> None:
    from pylima.drivers.qemu.argv import firmware_images_for

    images = [{"location": "a", "arch": "aarch64"},
              {"location": "b", "arch": "x86_64", "vmType": "vz"},
              {"location": "c", "arch": "x86_64", "vmType": "qemu"},
              {"location": "d", "arch": "x86_64"},
              {"location": "e"}]
    cfg = config(firmware={"legacyBIOS": False, "images": images})
    assert [f["location"] for f in firmware_images_for(cfg)] == ["c", "d", "e"]
    assert firmware_images_for(config()) == []
    legacy = config(firmware={"legacyBIOS": True, "images": images})
    assert firmware_images_for(legacy) == []
