"""Benchmark the local Debian image build against raw baselines measured in the same run.

    PYTHONPATH=src python bench/image.py [--no-raw] [--keep]

1. pylima's full build with the cache forced cold (a temporary cache directory),
   next to a raw `mmdebstrap` of the same package set into a tarball: the ratio is
   what pylima's tuning, file systems, disk assembly and digests cost on top.
2. The warm path: the same call again, answered from the cache.
3. A second instance disk from the cache, the way `limactl start` makes it (hard-link
   the image into the instance directory, qcow2 overlay with a relative backing path,
   resize to 100 GiB), next to a raw `qemu-img create -b` of the same overlay.

Goal: a cold build in at most 120 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pylima.images import builder  # noqa: E402

GOAL_S = 120.0


def _row(name: str, seconds: float, base: float | None = None, note: str = "") -> None:
    ratio = f"  ratio {seconds / base:5.2f}" if base else ""
    print(f"{name:<44} {seconds:9.3f} s{ratio}{('  ' + note) if note else ''}", flush=True)


def raw_mmdebstrap(dest: Path) -> float:
    recipe = builder.make_recipe()
    mirror = builder.choose_mirror(builder.read_host_sources(), recipe.suite, None, os.environ)
    mode = builder.build_mode(os.geteuid())
    argv = ["mmdebstrap", f"--mode={mode}", "--variant=minbase", "--quiet",
            "--include=" + ",".join(recipe.packages), recipe.suite, str(dest),
            *mirror.source_lines(recipe.suite)]
    t = time.monotonic()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-raw", action="store_true", help="skip the raw mmdebstrap baseline")
    ap.add_argument("--keep", action="store_true", help="keep the temporary cache")
    args = ap.parse_args()

    ok, why = builder.can_build()
    if not ok:
        print(f"cannot build here: {why}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="pylima-bench-image-", dir="/var/tmp"))
    try:
        cache = tmp / "cache"
        phases: list[tuple[str, float]] = []
        t0 = time.monotonic()
        img = builder.build_debian_image(
            cache_root=cache, force=True,
            on_phase=lambda p: phases.append((p, time.monotonic() - t0)))
        cold = time.monotonic() - t0
        raw = None
        if not args.no_raw:
            raw = raw_mmdebstrap(tmp / "raw.tar")
            (tmp / "raw.tar").unlink()
        print(f"# image {img.recipe_hash[:16]} kernel {img.kernel_version} "
              f"disk {img.disk.stat().st_size / 1e6:.0f} MB (qcow2)")
        _row("build, cold cache (pylima)", cold, raw,
             "goal <= 120 s: " + ("met" if cold <= GOAL_S else "NOT met"))
        if raw is not None:
            _row("raw mmdebstrap, same packages, to tar", raw)
        for (name, start), nxt in zip(phases, [*phases[1:], ("end", cold)], strict=True):
            _row(f"  phase: {name}", nxt[1] - start)

        t = time.monotonic()
        again = builder.build_debian_image(cache_root=cache)
        warm = time.monotonic() - t
        assert again.directory == img.directory
        t = time.monotonic()
        builder.find_cached_image(cache_root=cache)
        lookup = time.monotonic() - t
        _row("build, warm cache (pylima)", warm)
        _row("find_cached_image", lookup)

        qemu_img = shutil.which("qemu-img")
        if qemu_img:
            argv = [qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2",
                    "-b", str(img.disk), "", "100G"]
            from pylima.images.disk import create_instance_disk, install_base_image

            times: dict[str, float] = {}
            for label in ("raw", "pylima"):
                best = float("inf")
                for i in range(5):
                    inst = tmp / f"inst-{label}-{i}"
                    inst.mkdir()
                    argv[-2] = str(inst / "disk")
                    t = time.monotonic()
                    if label == "raw":
                        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
                    else:
                        install_base_image(img.disk, inst)
                        create_instance_disk(inst, 100 << 30)
                    best = min(best, time.monotonic() - t)
                times[label] = best
            _row("qemu-img create -b overlay (raw, best of 5)", times["raw"])
            _row("second instance disk: link + overlay + resize (pylima, best of 5)",
                 times["pylima"], times["raw"])
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
