"""CLI start-up latency: `limactl list` (20 instances) and `limactl --version`, each as a
ratio to `python -c pass` measured in the same run (the machine is shared and noisy).

Goal: <= 3x. Run: .venv/bin/python bench/cli_latency.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import median_seconds

VENV_BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--instances", type=int, default=20)
    args = ap.parse_args()
    limactl = str(VENV_BIN / "limactl")
    tmp = Path(tempfile.mkdtemp(prefix="pylima-bench-"))
    env = {**os.environ, "LIMA_HOME": str(tmp / "lima"), "XDG_CACHE_HOME": str(tmp / "cache")}
    try:
        subprocess.run([limactl, "create", "--name=i00", "template:default"], env=env,
                       check=True, stderr=subprocess.DEVNULL)
        src = tmp / "lima" / "i00"
        for i in range(1, args.instances):
            shutil.copytree(src, tmp / "lima" / f"i{i:02d}")
        # interleave so that noise hits all three alike
        base, lst, ver = [], [], []
        for _ in range(args.runs):
            base.append(median_seconds([sys.executable, "-c", "pass"], env, 1))
            lst.append(median_seconds([limactl, "list"], env, 1))
            ver.append(median_seconds([limactl, "--version"], env, 1))
        b, li, v = (statistics.median(x) for x in (base, lst, ver))
        print(f"python -c pass (baseline)        {b * 1000:7.1f} ms")
        print(f"limactl list ({args.instances} instances)     {li * 1000:7.1f} ms"
              f"   ratio {li / b:4.2f}x  (goal <= 3x)")
        print(f"limactl --version                {v * 1000:7.1f} ms"
              f"   ratio {v / b:4.2f}x  (goal <= 3x)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
