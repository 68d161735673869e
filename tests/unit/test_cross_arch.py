"""Other architectures without a VM: the fast-mode template and its image variant,
refusing an architecture the host has no QEMU for, `limactl info`'s architectures,
and a macOS (vz + Rosetta) template kept editable here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pylima.api import local_image_variant
from pylima.cli.template import filled_config
from pylima.images import builder


def limactl(*args: str, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylima", *args], input=input, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=60)


def test_fast_mode_template_gets_the_qemu_user_variant() -> None:
    assert local_image_variant(filled_config("template:binfmt")) == "qemu-user"
    assert local_image_variant(filled_config("template:debian-12")) == ""


def test_qemu_user_variant_bakes_in_qemu_user_static() -> None:
    base = builder.make_recipe("x86_64")
    fast = builder.make_recipe("x86_64", variant="qemu-user")
    assert "qemu-user-static" in fast.packages and "qemu-user-static" not in base.packages
    assert fast.digest() != base.digest()
    # Debian's package registers through systemd-binfmt: no binfmt-support needed.
    assert "binfmt-support" not in fast.packages


def test_arm64_recipe_uses_the_arm64_kernel() -> None:
    recipe = builder.make_recipe("aarch64")
    assert "linux-image-arm64" in recipe.packages
    spec = builder.arch_spec("aarch64")
    assert spec.deb_arch == "arm64" and spec.serial_console == "ttyAMA0"


def test_create_refuses_an_arch_without_qemu(lima_home: Path) -> None:
    r = limactl("create", "--name=rv", "--arch=riscv64", "template:debian-12",
                env={"QEMU_SYSTEM_RISCV64": "/nonexistent/qemu-system-riscv64"})
    assert r.returncode == 1
    fatal = [ln for ln in r.stderr.splitlines() if "level=fatal" in ln]
    assert len(fatal) == 1, r.stderr
    assert "this host cannot run `riscv64` guests" in fatal[0]
    assert "it can run: " in fatal[0] and "(native)" in fatal[0]
    assert "Traceback" not in r.stderr
    assert not (lima_home / "rv").exists()


def test_info_lists_the_architectures_this_host_runs() -> None:
    from pylima.hostinfo import host_arch

    r = limactl("info")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    archs = info["pylimaArchitectures"]
    for fld in ("version", "vmTypes", "hostArch", "defaultTemplate"):
        assert fld in info  # Lima's own fields stay
    if host_arch() in archs:
        assert archs[host_arch()]["mode"] == "native"
    assert all(a["mode"] in ("native", "emulated") for a in archs.values())
    assert all(Path(a["qemu"]).name.startswith("qemu-system-") for a in archs.values())


MAC_TEMPLATE = """\
# A macOS user's template: Apple Virtualization.framework with Rosetta.
vmType: vz
vmOpts:
  vz:
    rosetta:
      enabled: true
      binfmt: true
images:
- location: https://cloud-images.ubuntu.com/releases/24.04/release/ubuntu-24.04-server-cloudimg-arm64.img
  arch: aarch64
mountType: virtiofs
mounts:
- location: "~"
"""


def test_vz_rosetta_template_validates_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "mac.yaml"
    path.write_text(MAC_TEMPLATE)
    r = limactl("template", "validate", str(path))
    assert r.returncode == 0, r.stderr
    # editing keeps the macOS settings (and the comment)
    r = limactl("template", "copy", str(path), "-")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("# A macOS user's template")
    copied = tmp_path / "copy.yaml"
    copied.write_text(r.stdout)
    r = limactl("template", "yq", str(copied), ".vmOpts.vz.rosetta")
    assert r.returncode == 0, r.stderr
    assert "enabled: true" in r.stdout and "binfmt: true" in r.stdout
    r = limactl("template", "copy", "--fill", str(path), "-")
    assert r.returncode == 0, r.stderr
    assert "vmType: vz" in r.stdout
    # ...while starting it here is refused with the requirement spelled out
    r = limactl("create", "--name=mac", str(path))
    assert r.returncode == 1
    assert "requires macOS 13" in r.stderr and "Traceback" not in r.stderr
