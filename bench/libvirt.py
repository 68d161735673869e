"""vmType libvirt vs the QEMU driver: `limactl start` -> READY, as ratios to the QEMU
driver's start of the same image measured in the same run (the host is shared and
noisy: the absolute seconds are context only).

For each driver -- `qemu`, `libvirt` on a local URI, and `libvirt` on a qemu+ssh://
URI when one is given -- one instance is created and started twice: the first start
(for libvirt: the image upload into the pool, unless a volume of it is there
already, and the overlay volume), then a stop and a second start (the boot alone).
The instances are deleted at the end, the shared image volume stays in the pool.

Run as the user whose libvirt is used (qemu:///session needs no root):
  .venv/bin/python bench/libvirt.py --image-dir DIR --pool POOL
      [--uri qemu:///session] [--remote-uri 'qemu+ssh://me@host:PORT/session?keyfile=K']
DIR holds the local image (disk.qcow2, vmlinuz, initrd.img, cmdline, sha256sums:
`limactl image build`'s result directory).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def image_entry(d: Path) -> dict:
    sums = dict(reversed(line.split()) for line in (d / "sha256sums").read_text().splitlines()
                if line.strip())
    return {"location": str(d / "disk.qcow2"), "arch": "x86_64",
            "digest": f"sha256:{sums['disk.qcow2']}",
            "kernel": {"location": str(d / "vmlinuz"), "digest": f"sha256:{sums['vmlinuz']}",
                       "cmdline": (d / "cmdline").read_text().strip()},
            "initrd": {"location": str(d / "initrd.img"),
                       "digest": f"sha256:{sums['initrd.img']}"}}


def limactl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "limactl"), *args], env=env, text=True,
                          capture_output=True, timeout=1200)


def timed_start(name: str, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = limactl("start", "--tty=false", name, env=env)
    dt = time.monotonic() - t0
    if r.returncode != 0 or "READY" not in r.stderr + r.stdout:
        sys.exit(f"start of {name} failed:\n{r.stderr[-3000:]}")
    return dt


def measure(name: str, set_expr: str, env: dict[str, str]) -> tuple[float, float]:
    r = limactl("create", f"--name={name}", "--tty=false", "--set", set_expr,
                "template:debian-12", env=env)
    if r.returncode != 0:
        sys.exit(f"create of {name} failed:\n{r.stderr}")
    try:
        first = timed_start(name, env)
        r = limactl("stop", name, env=env)
        if r.returncode != 0:
            sys.exit(f"stop of {name} failed:\n{r.stderr}")
        second = timed_start(name, env)
        return first, second
    finally:
        limactl("stop", "-f", name, env=env)
        limactl("delete", "-f", name, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-dir", type=Path, required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--uri", default="qemu:///session")
    ap.add_argument("--remote-uri", default="")
    a = ap.parse_args()
    image = image_entry(a.image_dir)
    common = (f".images = [{json.dumps(image)}] | .mounts = [] | .cpus = 2 | "
              ".memory = \"1GiB\" | .containerd = {\"system\": false, \"user\": false}")
    with tempfile.TemporaryDirectory(prefix="pylima-bench-libvirt-") as home:
        env = {**os.environ, "LIMA_HOME": home}
        runs = [("qemu", "bq", common + " | .vmType = \"qemu\"")]
        for label, uri in (("libvirt local", a.uri), ("libvirt qemu+ssh", a.remote_uri)):
            if uri:
                opts = json.dumps({"uri": uri, "pool": a.pool})
                runs.append((label, "bl" + str(len(runs)),
                             common + f" | .vmType = \"libvirt\" | .vmOpts.libvirt = {opts}"))
        results = {label: measure(name, expr, env) for label, name, expr in runs}
    q1, q2 = results["qemu"]
    print(f"{'driver':<18} {'first start':>12} {'ratio':>6} {'restart':>9} {'ratio':>6}")
    for label, (first, second) in results.items():
        print(f"{label:<18} {first:>11.1f}s {first / q1:>6.2f} {second:>8.1f}s "
              f"{second / q2:>6.2f}")
    print("ratios: to the QEMU driver's start of the same image in this run")


if __name__ == "__main__":
    main()
