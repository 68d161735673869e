"""Build the local Debian image (cached between runs) and boot it under QEMU/TCG,
through UEFI firmware as a downloaded cloud image would boot (GRUB, initramfs-tools'
initrd), and by direct kernel boot with the exported kernel and pylima's small initrd.
Both must reach a login prompt."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pylima.images import builder

pytestmark = pytest.mark.vm

QEMU = shutil.which("qemu-system-x86_64")
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
BOOT_DEADLINE = 240.0
GROWN_DISK = "4G"


@pytest.fixture(scope="module")
def image() -> builder.BuiltImage:
    cached = builder.find_cached_image("x86_64")
    if cached is not None:
        return cached
    ok, why = builder.can_build("x86_64")
    if not ok:
        pytest.skip(f"cannot build the image here: {why}")
    started = time.monotonic()
    img = builder.build_debian_image("x86_64")
    print(f"\nimage ready in {time.monotonic() - started:.1f} s: {img.directory}")
    return img


def _seed_iso(tmp: Path, user_data: str) -> Path:
    """A minimal NoCloud seed, written by pylima's own ISO writer, with pylima-init
    (the image boots through it: it has no cloud-init)."""
    from pylima.cidata.iso import write_cidata_iso
    from pylima.cidata.render import GUEST_INIT_DOCS, guest_init_docs
    from pylima.guestagent import guest_init_bytes

    iso = tmp / "seed.iso"
    meta = "instance-id: iid-pylima-test\nlocal-hostname: pylima-test\n"
    docs = {"meta-data": yaml.safe_load(meta), "user-data": yaml.safe_load(user_data)}
    write_cidata_iso({"meta-data": meta.encode(), "user-data": user_data.encode(),
                      "pylima-init": guest_init_bytes(),
                      GUEST_INIT_DOCS: guest_init_docs(docs)}, iso)
    return iso


def _overlay(tmp: Path, image: builder.BuiltImage) -> Path:
    """Boot a copy-on-write overlay (bigger than the image: growpart must grow root)."""
    disk = tmp / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(image.disk), str(disk), GROWN_DISK], check=True)
    return disk


def _boot(argv: list[str], log: Path, wait_for: list[bytes]) -> dict[bytes, float]:
    """Run QEMU with the serial console on stdout; return when each marker was seen
    (seconds since start), then kill QEMU. Fails at the deadline."""
    seen: dict[bytes, float] = {}
    started = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            while time.monotonic() - started < BOOT_DEADLINE:
                time.sleep(0.25)
                data = log.read_bytes()
                for marker in wait_for:
                    if marker not in seen and marker in data:
                        seen[marker] = time.monotonic() - started
                if len(seen) == len(wait_for) or proc.poll() is not None:
                    break
        finally:
            proc.kill()
            proc.wait()
    missing = [m for m in wait_for if m not in seen]
    if missing:
        tail = log.read_bytes()[-3000:].decode(errors="replace")
        pytest.fail(f"no {missing} within {BOOT_DEADLINE:.0f} s; serial tail:\n{tail}")
    return seen


def _qemu_base(disk: Path, seed: Path) -> list[str]:
    assert QEMU is not None
    return [QEMU, "-accel", "tcg", "-machine", "q35", "-cpu", "max", "-smp", "2",
            "-m", "1024", "-nographic", "-no-reboot",
            "-drive", f"file={disk},if=virtio,format=qcow2",
            "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
            "-nic", "user,model=virtio-net-pci"]


# pylima-init grows the root (growpart, resize_rootfs), then runs the per-boot scripts
# (write_files puts one there, as pylima's seed does with its launcher of boot.sh).
USER_DATA = """#cloud-config
growpart: {mode: auto, devices: ["/"]}
resize_rootfs: true
write_files:
  - path: /var/lib/cloud/scripts/per-boot/report-root.sh
    permissions: "0755"
    content: |
      #!/bin/sh
      echo "PYLIMA-ROOT-MIB=$(df -BM --output=size / | tail -n1 | tr -dc 0-9)" >/dev/ttyS0
"""


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
def test_direct_kernel_boot_reaches_login(image: builder.BuiltImage, tmp_path: Path) -> None:
    disk = _overlay(tmp_path, image)
    seed = _seed_iso(tmp_path, USER_DATA)
    # Without `quiet`, so the boot is visible in the log when it fails.
    cmdline = " ".join(w for w in image.cmdline.split() if w != "quiet")
    argv = _qemu_base(disk, seed) + ["-kernel", str(image.kernel), "-initrd",
                                     str(image.initrd), "-append", cmdline]
    seen = _boot(argv, tmp_path / "serial.log", [b"login:", b"PYLIMA-ROOT-MIB="])
    print(f"\ndirect kernel boot: login prompt after {seen[b'login:']:.1f} s")
    text = (tmp_path / "serial.log").read_bytes().decode(errors="replace")
    root_mib = int(text.split("PYLIMA-ROOT-MIB=")[1].split()[0])
    # pylima-init grew the root fs to (nearly) the 4 GiB disk.
    assert root_mib > 3500, text[-2000:]


@pytest.mark.skipif(QEMU is None, reason="qemu-system-x86_64 is not installed")
@pytest.mark.skipif(not OVMF_CODE.exists(), reason="ovmf is not installed")
def test_uefi_firmware_boot_reaches_login(image: builder.BuiltImage, tmp_path: Path) -> None:
    disk = _overlay(tmp_path, image)
    seed = _seed_iso(tmp_path, "#cloud-config\n{}\n")
    vars_copy = tmp_path / "OVMF_VARS.fd"
    shutil.copyfile(OVMF_VARS, vars_copy)
    os.chmod(vars_copy, 0o644)
    argv = _qemu_base(disk, seed) + [
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
    ]
    seen = _boot(argv, tmp_path / "serial.log", [b"login:"])
    print(f"\nUEFI firmware boot: login prompt after {seen[b'login:']:.1f} s")
