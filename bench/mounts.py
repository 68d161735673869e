"""File-sharing throughput per mount type, each as a ratio to the guest's local disk
measured in the same guest in the same run.

For each type (9p, reverse-sshfs, and virtiofs where virtiofsd can run, i.e. as
root), one instance is started with one writable mount, then inside the guest:

1. sequential write and read of a 200 MB file (dd, fsync on write, caches dropped
   before the read), in MB/s;
2. a small-file workload: create, stat and read 2,000 small files;
3. `find` + `grep -r` over that tree.

Each figure is printed next to the same workload on the guest's own disk (/var/tmp)
and as ratio = mount time / local time (for MB/s: local MB/s / mount MB/s), so 1.0 is
"as fast as local" and larger is slower.

With --inotify, each type is measured twice, in two instances, with `mountInotify`
off and on, and the cost of on is printed per workload as ratio = on / off (each
side's mount time over its own guest's local time, so that the two guests' speeds
cancel out).

Run: .venv/bin/python bench/mounts.py [--types 9p,reverse-sshfs,virtiofs] [--inotify]
(needs the local image: it is built on first use, which is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent

# Runs in the guest: prints one JSON object of timings (seconds) for directory $1.
GUEST_SCRIPT = r"""
set -eu
d=$1/bench.$$
mkdir -p "$d"
# the guest's uptime, not its wall clock: the guest agent may set the clock mid-run
t() { read -r s _ </proc/uptime; "$@" >/dev/null 2>&1; read -r e _ </proc/uptime
  awk "BEGIN{print $e - $s}"; }
drop() { sync; echo 3 | sudo -n tee /proc/sys/vm/drop_caches >/dev/null 2>&1 || true; }
w=$(t dd if=/dev/zero of="$d/big" bs=1M count=200 conv=fsync)
drop
r=$(t dd if="$d/big" of=/dev/null bs=1M)
rm -f "$d/big"
mk() { mkdir -p "$d/tree"; i=0; while [ $i -lt 2000 ]; do
  mkdir -p "$d/tree/$((i % 50))"; echo "line $i needle" > "$d/tree/$((i % 50))/f$i"
  i=$((i+1)); done; }
c=$(t mk)
drop
s=$(t sh -c "find '$d/tree' -type f -exec stat -c %s {} + >/dev/null")
drop
rd=$(t sh -c "find '$d/tree' -type f -exec cat {} + >/dev/null")
drop
fg=$(t sh -c "find '$d/tree' -name 'f1*' >/dev/null; grep -r needle '$d/tree' >/dev/null")
rm -rf "$d"
printf '{"write": %s, "read": %s, "create": %s, "stat": %s, "readsmall": %s, "findgrep": %s}\n' \
  "$w" "$r" "$c" "$s" "$rd" "$fg"
"""


def limactl(env: dict[str, str], *args: str, check: bool = True,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "limactl"), *args], env=env, text=True, input=input,
                          capture_output=True, check=check)


def measure(env: dict[str, str], name: str, directory: str) -> dict[str, float]:
    r = limactl(env, "shell", "--workdir=/", name, "sh", "-s", "--", directory,
                input=GUEST_SCRIPT)
    return {k: float(v) for k, v in json.loads(r.stdout.strip().splitlines()[-1]).items()}


def measure_type(mount_type: str, image: dict, work: Path,
                 inotify: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """(local, mount) timings of one instance with one writable mount of the type."""
    env = {**os.environ, "LIMA_HOME": str(work / "lima")}
    tag = mount_type + ("-inotify" if inotify else "")
    share = work / f"share-{tag}"
    share.mkdir()
    if os.geteuid() == 0:
        # as root the guest user is uid 1000: give it the shared directory
        os.chmod(work, 0o755)
        os.chown(share, 1000, 1000)
    name = "bench-" + mount_type.replace("reverse-", "r") + ("-i" if inotify else "")
    expr = (f".images = [{json.dumps(image)}] | .mountType = {json.dumps(mount_type)} | "
            f".mountTypesUnsupported = [] | .mountInotify = {json.dumps(inotify)} | "
            f".mounts = [{json.dumps({'location': str(share), 'writable': True})}]")
    limactl(env, "start", f"--name={name}", "--tty=false", "--cpus=2", "--memory=2",
            "--set", expr, "template:debian-12")
    try:
        return measure(env, name, "/var/tmp"), measure(env, name, str(share))
    finally:
        limactl(env, "delete", "-f", name, check=False)


SMALL = (("create", "create 2000 files"), ("stat", "stat 2000 files"),
         ("readsmall", "read 2000 files"), ("findgrep", "find + grep -r"))


def report(label: str, local: dict[str, float], mnt: dict[str, float]) -> list[str]:
    mb = 200.0
    lines = []
    for k in ("write", "read"):
        lines.append(f"{label:14s} seq {k:5s} 200MB: {mb / mnt[k]:8.1f} MB/s   local "
                     f"{mb / local[k]:8.1f} MB/s   ratio {mnt[k] / local[k]:6.2f}")
    for k, what in SMALL:
        lines.append(f"{label:14s} {what:22s} {mnt[k]:7.2f} s   local {local[k]:7.2f} s"
                     f"   ratio {mnt[k] / local[k]:6.2f}")
    return lines


def bench_type(mount_type: str, image: dict, work: Path, inotify: bool) -> list[str]:
    local, mnt = measure_type(mount_type, image, work)
    lines = report(mount_type, local, mnt)
    if not inotify:
        return lines
    local_on, mnt_on = measure_type(mount_type, image, work, inotify=True)
    lines += report(f"{mount_type}+in", local_on, mnt_on)
    for k, what in (("write", "seq write 200MB"), *SMALL):
        off, on = mnt[k] / local[k], mnt_on[k] / local_on[k]
        lines.append(f"{mount_type:14s} mountInotify on/off {what:20s} ratio {on / off:6.2f}")
    return lines


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--types", default="9p,reverse-sshfs,virtiofs")
    p.add_argument("--inotify", action="store_true",
                   help="also measure each type with mountInotify on (a second instance)")
    args = p.parse_args()
    from pylima.drivers.qemu.virtiofs import virtiofsd_problem
    from pylima.images import builder

    img = builder.find_cached_image(arch="x86_64") or builder.build_debian_image(arch="x86_64")
    image = builder.images_entry(img)
    with tempfile.TemporaryDirectory(prefix="pylima-bench-mounts-") as tmp:
        for t in args.types.split(","):
            if t == "virtiofs" and virtiofsd_problem():
                print(f"virtiofs: skipped ({virtiofsd_problem()})")
                continue
            for line in bench_type(t, image, Path(tmp), args.inotify):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
