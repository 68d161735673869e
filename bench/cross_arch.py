"""Slow mode (a foreign-architecture guest) against the native guest, in one run.

1. Kernel boot time of the local Debian 12 arm64 image under qemu-system-aarch64
   (TCG) for each CPU model tried: QEMU starts the kernel and initrd directly with
   `rdinit=` naming a missing program, so the kernel boots, unpacks the initrd, finds
   no init and panics; QEMU exits on the panic (`-no-reboot`, `panic=-1`). Baseline:
   `-cpu max`, Lima's choice under TCG.
2. `limactl start` -> READY of an aarch64 guest (pylima's default CPU model) and of an
   x86_64 guest, side by side, and their ratio (goal <= 1.5x).

Run: .venv/bin/python bench/cross_arch.py [--models MODEL ...] [--runs N]
(needs both local images; they are built on first use, which is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

MODELS = ("cortex-a72", "cortex-a76", "neoverse-n1", "max,pauth-impdef=on",
          "max,pauth=off", "max")


def kernel_boot(arch: str, cpu: str, kernel: Path, initrd: Path) -> float:
    """Seconds from QEMU's start to its exit on the kernel's 'no init' panic."""
    console = "ttyAMA0" if arch == "aarch64" else "ttyS0"
    if arch == "aarch64":
        binary, machine = "qemu-system-aarch64", ["-M", "virt"]
    else:
        binary, machine = "qemu-system-x86_64", ["-M", "q35"]
    argv = [binary, *machine, "-accel", "tcg,thread=multi,tb-size=512", "-cpu", cpu,
            "-smp", "2", "-m", "2048", "-nodefaults", "-display", "none",
            "-serial", "null", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", f"console={console} quiet loglevel=3 panic=-1 rdinit=/pylima-none "
            "init=/pylima-none"]
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300,
                   check=False)
    return time.perf_counter() - t0


def start_ready(limactl: str, name: str, arch: str, entry: dict, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([limactl, "start", f"--name={name}", "--tty=false", f"--arch={arch}",
                        "--cpus=2", "--memory=2", "--set",
                        f".images = [{json.dumps(entry)}] | .mounts = []",
                        "template:debian-12"], env=env, text=True, capture_output=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"limactl start --arch={arch} failed:\n{r.stderr[-3000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="CPU models to time")
    ap.add_argument("--runs", type=int, default=3, help="kernel boots per model")
    args = ap.parse_args()
    models: list[str] = args.models
    from pylima.drivers.qemu.argv import default_cpu_type
    from pylima.drivers.qemu.probe import qemu_version
    from pylima.images import builder

    images = {arch: builder.find_cached_image(arch) or builder.build_debian_image(arch)
              for arch in ("x86_64", "aarch64")}

    print("aarch64 kernel boot (QEMU start -> 'no init' panic), median of", args.runs,
          "runs:")
    kernel, initrd = images["aarch64"].kernel, images["aarch64"].initrd
    base = statistics.median(kernel_boot("aarch64", "max", kernel, initrd)
                             for _ in range(args.runs))
    print(f"  -cpu max (Lima's choice, baseline)     {base:6.2f} s")
    for cpu in models:
        if cpu == "max":
            continue
        t = statistics.median(kernel_boot("aarch64", cpu, kernel, initrd)
                              for _ in range(args.runs))
        print(f"  -cpu {cpu:<34}{t:6.2f} s   ratio {t / base:4.2f}x")

    version = qemu_version(shutil.which("qemu-system-aarch64") or "qemu-system-aarch64")
    tmp = Path(tempfile.mkdtemp(prefix="pylima-bench-arch-"))
    env = {**os.environ, "LIMA_HOME": str(tmp / "lima")}
    limactl = str(BIN / "limactl")
    try:
        x86 = start_ready(limactl, "bx86", "x86_64", builder.images_entry(images["x86_64"]),
                          env)
        subprocess.run([limactl, "stop", "bx86"], env=env, capture_output=True)
        arm = start_ready(limactl, "barm", "aarch64", builder.images_entry(images["aarch64"]),
                          env)
        subprocess.run([limactl, "stop", "barm"], env=env, capture_output=True)
        print("limactl start -> READY (one each, one after the other):")
        print(f"  x86_64 guest (baseline)                {x86:6.1f} s")
        print(f"  aarch64 guest (-cpu {default_cpu_type('aarch64', 'tcg', version)})"
              f"{'':<{max(0, 18 - len(default_cpu_type('aarch64', 'tcg', version)))}}"
              f"{arm:6.1f} s   ratio {arm / x86:4.2f}x  (goal <= 1.5)")
    finally:
        subprocess.run([limactl, "delete", "-f", "bx86", "barm"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
