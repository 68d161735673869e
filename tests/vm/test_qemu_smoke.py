"""Smoke tests: command lines from `build_qemu_argv` run under the installed QEMU.

No guest image is needed: a hand-made boot sector (legacy BIOS), the UEFI firmware
on its own (it reaches its boot manager and prints to the serial log), and a Linux
kernel from pylima's image cache when one is there. Each test proves that QEMU
accepts the machine, devices, chardevs, pflash and virtfs options, that the serial
log and pid file appear, and that QMP answers and stops QEMU.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pylima.drivers.qemu import probe
from pylima.drivers.qemu.argv import EFI_VARS, BootFiles, QemuHost, build_qemu_argv
from pylima.drivers.qemu.qmp import QMPClient
from pylima.errors import LimaError
from pylima.store import dirs

pytestmark = pytest.mark.vm

BOOT_MESSAGE = b"pylima boot sector OK\r\n"


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed")
    return path


@pytest.fixture
def inst_dir() -> Iterator[Path]:
    # Short: the instance's unix sockets must stay under 108 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="pylima-smoke-", dir="/tmp"))
    inst = tmp / "smoke"
    inst.mkdir()
    (tmp / "share").mkdir()
    try:
        yield inst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_config(arch: str, inst: Path, **changes: Any) -> dict[str, Any]:
    share = str(inst.parent / "share")
    cfg: dict[str, Any] = {
        "arch": arch, "cpus": 1, "memory": "256MiB", "vmType": "qemu", "vmOpts": {},
        "firmware": {"legacyBIOS": False, "images": []},
        "video": {"display": "none", "vnc": {"display": "127.0.0.1:0,to=9"}},
        "audio": {"device": "", "interface": ""}, "mountType": "9p", "networks": [],
        "mounts": [{"location": share, "mountPoint": "/mnt/share", "writable": True,
                    "9p": {"securityModel": "none"}},
                   {"location": share, "mountPoint": "/mnt/ro", "writable": False,
                    "9p": {"securityModel": "mapped-xattr"}}],
    }
    cfg.update(changes)
    return cfg


def tags_of(cfg: dict[str, Any]) -> list[str]:
    """Lima's mount tags, one per mount (what the host agent passes to the driver)."""
    from pylima.config.defaults import mount_tag

    return [mount_tag(m["location"], m["mountPoint"]) for m in cfg["mounts"]]


def probed_host(arch: str, *, firmware: bool) -> QemuHost:
    need(f"qemu-system-{arch}")
    try:
        host, _ = probe.probe_qemu_host(arch, need_firmware=firmware)
    except LimaError as e:  # a host without the firmware package
        pytest.skip(str(e))
    return host


def make_disk(inst: Path, content: bytes | None = None) -> str:
    qemu_img = need("qemu-img")
    disk = inst / dirs.DISK
    if content is None:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    else:
        raw = inst / "disk.raw"
        # SeaBIOS does not boot a virtio disk of a single sector: pad it to 1 MiB.
        raw.write_bytes(content.ljust(1 << 20, b"\0"))
        subprocess.run([qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw),
                        str(disk)], check=True)
    (inst / dirs.CIDATA_ISO).write_bytes(bytes(64 << 10))
    return str(disk)


def run_until_serial(argv: list[str], inst: Path, expect: bytes, timeout: float = 60.0,
                     log_name: str = dirs.SERIAL_LOG) -> bytes:
    """Start QEMU, wait for `expect` in the serial log, check QMP, then quit."""
    log = inst / log_name
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        seen = b""
        while expect not in seen:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"QEMU exited with {proc.returncode}: {err}")
            if time.monotonic() > deadline:
                pytest.fail(f"{expect!r} not in {log_name} after {timeout} s: {seen[-500:]!r}")
            time.sleep(0.2)
            seen = log.read_bytes() if log.exists() else b""
        pid = int((inst / dirs.QEMU_PID).read_text())
        assert pid == proc.pid

        async def check_and_quit() -> dict[str, Any]:
            async with QMPClient(str(inst / dirs.QMP_SOCK)) as qmp:
                status = await qmp.query_status()
                await qmp.quit()
            return status

        status = asyncio.run(check_and_quit())
        assert status["running"] is True
        assert proc.wait(timeout=20) == 0
        return seen
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_accelerator_selftest_under_tcg() -> None:
    qemu = need("qemu-system-x86_64")
    ok, seconds, detail = probe.accel_selftest(qemu, "tcg", timeout=20)
    assert ok, detail
    assert seconds < 10


@pytest.mark.skipif(not probe.kvm_is_software(), reason="only where /dev/kvm is software")
def test_auto_picks_tcg_quickly_on_a_software_kvm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(probe.ACCEL_ENV, raising=False)
    qemu = need("qemu-system-x86_64")
    start = time.monotonic()
    accel, reason = probe.choose_accel("x86_64", qemu, probe.qemu_version(qemu))
    assert (accel, time.monotonic() - start < 1.0) == ("tcg", True)
    assert "kvm_pvm" in reason
    # And the guest self-test agrees: the loop does not finish under this KVM.
    ok, _, detail = probe.accel_selftest(qemu, "kvm")
    assert not ok, detail


def test_x86_64_legacy_bios_boots_the_disk_with_9p_mounts(inst_dir: Path) -> None:
    host = probed_host("x86_64", firmware=False)
    disk = make_disk(inst_dir, probe.make_boot_sector(BOOT_MESSAGE))
    cfg = make_config("x86_64", inst_dir, firmware={"legacyBIOS": True})
    boot = BootFiles(disk=disk, cidata_iso=str(inst_dir / dirs.CIDATA_ISO))
    argv = build_qemu_argv(cfg, host, str(inst_dir), boot, ssh_local_port=0)
    assert "-virtfs" in argv
    run_until_serial(argv, inst_dir, BOOT_MESSAGE)


def test_x86_64_uefi_firmware_reaches_its_boot_manager(inst_dir: Path) -> None:
    """(With the driver's qcow2 variable store.)"""
    from pylima.drivers.qemu import make_vars_store

    host = probed_host("x86_64", firmware=True)
    assert host.firmware_vars_template
    make_vars_store(Path(host.firmware_vars_template), inst_dir / EFI_VARS)
    disk = make_disk(inst_dir)
    boot = BootFiles(disk=disk, cidata_iso=str(inst_dir / dirs.CIDATA_ISO),
                     firmware_vars=str(inst_dir / EFI_VARS), firmware_vars_format="qcow2")
    argv = build_qemu_argv(make_config("x86_64", inst_dir), host, str(inst_dir), boot,
                           ssh_local_port=0)
    run_until_serial(argv, inst_dir, b"BdsDxe")


def test_aarch64_uefi_firmware_reaches_its_boot_manager(inst_dir: Path) -> None:
    """(With the driver's qcow2 variable store.)"""
    from pylima.drivers.qemu import make_vars_store

    host = probed_host("aarch64", firmware=True)
    assert host.firmware_vars_template
    make_vars_store(Path(host.firmware_vars_template), inst_dir / EFI_VARS)
    disk = make_disk(inst_dir)
    boot = BootFiles(disk=disk, cidata_iso=str(inst_dir / dirs.CIDATA_ISO),
                     firmware_vars=str(inst_dir / EFI_VARS), firmware_vars_format="qcow2")
    argv = build_qemu_argv(make_config("aarch64", inst_dir), host, str(inst_dir), boot,
                           ssh_local_port=0)
    assert (inst_dir / "serialp.log").exists() is False
    run_until_serial(argv, inst_dir, b"BdsDxe", timeout=90)
    assert (inst_dir / "serialp.log").exists()


def find_built_image() -> Path | None:
    """The x86_64 Debian image from pylima's local image builder, if one is cached
    (disk.qcow2, vmlinuz, initrd.img and cmdline side by side)."""
    from pylima.images import builder

    img = builder.find_cached_image("x86_64")
    return img.directory if img is not None else None


def find_kernel() -> str | None:
    """An x86_64 kernel: the local image's (the cache also holds other arches'), or
    the host's."""
    image = find_built_image()
    for path in ([str(image / "vmlinuz")] if image else []) + sorted(
            glob.glob("/boot/vmlinuz-*")):
        if os.access(path, os.R_OK):
            return path
    return None


def test_x86_64_direct_kernel_boot_prints_to_serial(inst_dir: Path) -> None:
    kernel = find_kernel()
    if kernel is None:
        pytest.skip("no x86_64 Linux kernel on this host or in the image cache")
    host = probed_host("x86_64", firmware=False)
    disk = make_disk(inst_dir)
    boot = BootFiles(disk=disk, cidata_iso=str(inst_dir / dirs.CIDATA_ISO), kernel=kernel,
                     cmdline="console=ttyS0 panic=-1")
    argv = build_qemu_argv(make_config("x86_64", inst_dir), host, str(inst_dir), boot,
                           ssh_local_port=0)
    assert "if=pflash" not in " ".join(argv)
    run_until_serial(argv, inst_dir, b"Linux version")


def test_x86_64_virtiofs_devices_attach_to_virtiofsd(inst_dir: Path) -> None:
    virtiofsd = next((p for p in ("/usr/lib/qemu/virtiofsd", "/usr/libexec/virtiofsd")
                      if os.access(p, os.X_OK)), None)
    if virtiofsd is None or os.geteuid() != 0:
        pytest.skip("QEMU's virtiofsd (needs root) is not available")
    host = probed_host("x86_64", firmware=False)
    disk = make_disk(inst_dir, probe.make_boot_sector(BOOT_MESSAGE))
    share = str(inst_dir.parent / "share")
    sock = str(inst_dir / "virtiofsd-0.sock")
    daemon = subprocess.Popen([virtiofsd, f"--socket-path={sock}", "-o", f"source={share}"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        cfg = make_config("x86_64", inst_dir, mountType="virtiofs",
                          firmware={"legacyBIOS": True},
                          mounts=[{"location": share, "mountPoint": "/mnt/share",
                                   "writable": True, "virtiofs": {"queueSize": 1024}}])
        boot = BootFiles(disk=disk, cidata_iso=str(inst_dir / dirs.CIDATA_ISO))
        argv = build_qemu_argv(cfg, host, str(inst_dir), boot, ssh_local_port=0,
                               virtiofs_sockets=[sock])
        run_until_serial(argv, inst_dir, BOOT_MESSAGE)
    finally:
        daemon.kill()
        daemon.wait()


def test_qemu_driver_start_and_stop(inst_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pylima.drivers.qemu import QemuDriver

    need("qemu-system-x86_64")
    monkeypatch.setenv(probe.ACCEL_ENV, "tcg")
    make_disk(inst_dir, probe.make_boot_sector(BOOT_MESSAGE))
    cfg = make_config("x86_64", inst_dir, firmware={"legacyBIOS": True})
    assert QemuDriver.validate(cfg) == []
    driver = QemuDriver(inst_dir.name, inst_dir, cfg)

    async def lifecycle() -> int | None:
        await driver.start(cfg, ssh_local_port=0, mount_tags=tags_of(cfg))
        try:
            assert driver.launch is not None and driver.launch.host.accel == "tcg"
            assert driver.pid > 0
            deadline = time.monotonic() + 30
            log = inst_dir / dirs.SERIAL_LOG
            while BOOT_MESSAGE not in (log.read_bytes() if log.exists() else b""):
                assert time.monotonic() < deadline, "no boot message"
                await asyncio.sleep(0.1)
            # The boot-sector guest ignores the ACPI power button: stop falls back to quit.
            await driver.stop(timeout=1)
            assert driver.pid == 0
        finally:
            await driver.close()
        assert driver.process is not None
        assert not (inst_dir / dirs.QMP_SOCK).exists()
        return driver.process.returncode

    assert asyncio.run(lifecycle()) == 0


def test_qemu_driver_start_reports_an_early_exit(inst_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from pylima.drivers.qemu import QemuDriver

    need("qemu-system-x86_64")
    monkeypatch.setenv(probe.ACCEL_ENV, "tcg")
    make_disk(inst_dir)
    cfg = make_config("x86_64", inst_dir, firmware={"legacyBIOS": True},
                      vmOpts={"qemu": {"cpuType": {"x86_64": "no-such-cpu"}}})
    driver = QemuDriver(inst_dir.name, inst_dir, cfg)
    with pytest.raises(LimaError, match="QEMU exited with status 1 at start"):
        asyncio.run(driver.start(cfg, ssh_local_port=0, mount_tags=tags_of(cfg)))


def test_guest_finds_cidata_and_writes_both_consoles(inst_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A real guest: the NoCloud seed on a virtio disk is found by pylima-init (its
    bootcmd runs) and the guest writes to ttyS0 (serial.log) and hvc0 (serialv.log)."""
    from pylima.cidata.iso import write_cidata_iso
    from pylima.cidata.render import GUEST_INIT_DOCS, guest_init_docs
    from pylima.drivers.qemu import QemuDriver
    from pylima.guestagent import guest_init_bytes

    image = find_built_image()
    if image is None:
        pytest.skip("no locally built guest image in the cache")
    qemu_img = need("qemu-img")
    monkeypatch.setenv(probe.ACCEL_ENV, "tcg")
    user_data = (b"#cloud-config\nbootcmd:\n  - [sh, -c, \"echo PYLIMA-CIDATA > "
                 b"/dev/ttyS0; echo PYLIMA-HVC0 > /dev/hvc0\"]\n")
    meta_data = b"instance-id: smoke\nlocal-hostname: smoke\n"
    write_cidata_iso({
        "user-data": user_data,
        "meta-data": meta_data,
        "pylima-init": guest_init_bytes(),
        GUEST_INIT_DOCS: guest_init_docs({"meta-data": yaml.safe_load(meta_data),
                                          "user-data": yaml.safe_load(user_data)}),
    }, inst_dir / dirs.CIDATA_ISO)
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(image / "disk.qcow2"), str(inst_dir / dirs.DISK)], check=True)
    os.symlink(image / "vmlinuz", inst_dir / dirs.KERNEL)
    os.symlink(image / "initrd.img", inst_dir / dirs.INITRD)
    shutil.copyfile(image / "cmdline", inst_dir / dirs.KERNEL_CMDLINE)
    cfg = make_config("x86_64", inst_dir, cpus=2, memory="1GiB", mounts=[])
    driver = QemuDriver(inst_dir.name, inst_dir, cfg)

    async def boot() -> tuple[bytes, bytes]:
        await driver.start(cfg, ssh_local_port=0, mount_tags=tags_of(cfg))
        serial = inst_dir / dirs.SERIAL_LOG
        serialv = inst_dir / dirs.SERIALV_LOG
        s = v = b""
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                s = serial.read_bytes() if serial.exists() else b""
                v = serialv.read_bytes() if serialv.exists() else b""
                if b"PYLIMA-CIDATA" in s and b"PYLIMA-HVC0" in v:
                    break
                await asyncio.sleep(0.5)
        finally:
            await driver.stop(timeout=1)
            await driver.close()
        return s, v

    s, v = asyncio.run(boot())
    assert b"PYLIMA-CIDATA" in s, s[-2000:]
    assert b"PYLIMA-HVC0" in v, v[-500:]
