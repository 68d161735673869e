"""The x86_64 guest CPU model under TCG: pylima's default against Lima's `max`, in one run.

One instance of the local Debian 12 image, restarted once per model and round (the
models interleaved, so that the host's noise falls on each alike), `vmOpts.qemu.cpuType`
set to the model. For each, in the guest:

1. `limactl start` (stopped instance) -> READY.
2. Zeroing memory: Python allocates a 256 MiB bytearray (the kernel zeroes each page).
3. Copying: `dd` 256 MiB from /dev/zero to /dev/null in 1 MiB blocks (copy_to_user).
4. Forks: a shell runs /bin/true 100 times.

Each figure is the median over the rounds, as a ratio to `max` (Lima's choice under
TCG, and pylima's default: see `drivers/qemu/argv.default_cpu_type`), the baseline,
measured in the same run. `max,erms=off` is the candidate: it measured faster, and is
not the default until a soak of many boots has cleared it (see the README's fast-boot
row).

Run: .venv/bin/python bench/cpu_model.py [--rounds N] [--models MODEL ...]
(needs the local image: it is built on first use, which is not timed).
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
BASELINE = "max"
MODELS = ("max,erms=off", "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt")
# Each line prints the milliseconds one step took, measured in the guest.
GUEST_BENCH = r"""
t() { date +%s%N; }
a=$(t); python3 -c 'bytearray(256 << 20)'; b=$(t)
dd if=/dev/zero of=/dev/null bs=1M count=256 2>/dev/null; c=$(t)
i=0; while [ $i -lt 100 ]; do /bin/true; i=$((i + 1)); done; d=$(t)
echo "$(( (b - a) / 1000000 )) $(( (c - b) / 1000000 )) $(( (d - c) / 1000000 ))"
"""
FIGURES = ("start (stopped) -> READY", "zero 256 MiB", "copy 256 MiB", "100 forks")


def run(*argv: str, env: dict[str, str]) -> str:
    r = subprocess.run(list(argv), env=env, text=True, capture_output=True)
    if r.returncode != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed:\n{r.stderr[-3000:]}")
    return r.stdout


def measure(limactl: str, name: str, model: str, env: dict[str, str]) -> list[float]:
    """Seconds of each figure with `model` as the guest's CPU."""
    run(limactl, "stop", name, env=env)
    run(limactl, "edit", name, "--set", f'.vmOpts.qemu.cpuType.x86_64 = "{model}"', env=env)
    t0 = time.perf_counter()
    run(limactl, "start", "--tty=false", name, env=env)
    start = time.perf_counter() - t0
    out = run(limactl, "shell", name, "sh", "-c", GUEST_BENCH, env=env).split()
    return [start, *(int(ms) / 1000 for ms in out)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=list(MODELS),
                    help=f"models to compare with {BASELINE} (default: %(default)s)")
    args = ap.parse_args()
    from pylima.images import builder

    img = builder.find_cached_image("x86_64") or builder.build_debian_image("x86_64")
    entry = json.dumps(builder.images_entry(img))
    tmp = Path(tempfile.mkdtemp(prefix="pylima-bench-cpu-"))
    env = {**os.environ, "LIMA_HOME": str(tmp / "lima"), "PYLIMA_QEMU_ACCEL": "tcg"}
    limactl = str(BIN / "limactl")
    models = [BASELINE, *args.models]
    results: dict[str, list[list[float]]] = {m: [] for m in models}
    try:
        run(limactl, "start", "--name=cpu", "--tty=false", "--cpus=2", "--memory=2", "--set",
            f".images = [{entry}] | .mounts = []", "template:debian-12", env=env)
        for _ in range(args.rounds):
            for m in models:
                results[m].append(measure(limactl, "cpu", m, env))
        base = [statistics.median(r[k] for r in results[BASELINE]) for k in range(4)]
        print(f"x86_64 guest under TCG, median of {args.rounds} rounds; ratios to "
              f"-cpu {BASELINE} (Lima's, the baseline)")
        for m in models:
            med = [statistics.median(r[k] for r in results[m]) for k in range(4)]
            cells = "  ".join(f"{f} {v:5.2f} s ({v / b:4.2f}x)"
                              for f, v, b in zip(FIGURES, med, base, strict=True))
            print(f"-cpu {m}: {cells}")
    finally:
        subprocess.run([limactl, "delete", "-f", "cpu"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
