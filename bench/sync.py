"""`limactl shell --sync`'s copy mechanism: one tar stream each way (pylima's) against
rsync over SSH both ways (Lima's), for the pylima source tree, on a running instance
without mounts whose guest has rsync (pylima's local image has it). Each figure is
also printed as a ratio to the raw baseline measured in the same run: a bare
`tar c | ssh tar x` of the same tree into the guest.

Run: .venv/bin/python bench/sync.py INSTANCE [--runs N]
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pylima.sshutil import ssh_argv
from pylima.store.instance import inspect
from pylima.sync import Syncer

REPO = Path(__file__).resolve().parents[1]


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("instance")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    inst = inspect(args.instance)
    ssh = ssh_argv(inst.dir, args.instance, "-q")
    work = Path(tempfile.mkdtemp(prefix="pylima-bench-sync-")) / "proj"
    shutil.copytree(REPO / "src", work / "src")
    shutil.copytree(REPO / "tests", work / "tests")
    files = sum(1 for p in work.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in work.rglob("*") if p.is_file())
    print(f"tree: {files} files, {size / 1e6:.1f} MB")
    guest = "/tmp/pylima-bench-sync/proj"
    rsh = " ".join(shlex.quote(a) for a in ssh[:-1])
    host_name = ssh[-1]
    tar_in, tar_back, rs_in, rs_back, raw = [], [], [], [], []
    for _ in range(args.runs):
        subprocess.run([*ssh, "--", f"mkdir -p {guest}"], check=True)
        raw.append(timed(lambda: subprocess.run(
            ["sh", "-c", f"tar -C {shlex.quote(str(work))} -cf - . | "
             f"{shlex.join([*ssh, '--', f'tar -C {guest} -xf -'])}"], check=True)))
        subprocess.run([*ssh, "--", f"rm -rf {guest}"], check=True)
        s = Syncer(ssh, str(work), guest)
        tar_in.append(timed(s.copy_in))
        tar_back.append(timed(s.changes))  # the guest copy fetched and compared
        s.remove_guest_copy()
        s.close()
        subprocess.run([*ssh, "--", f"mkdir -p {guest}"], check=True)
        rs_in.append(timed(lambda: subprocess.run(
            ["rsync", "-a", "--delete", "-e", rsh, f"{work}/", f"{host_name}:{guest}/"],
            check=True)))
        rs_back.append(timed(lambda: subprocess.run(
            ["rsync", "-a", "--delete", "--dry-run", "--itemize-changes", "-e", rsh,
             f"{host_name}:{guest}/", f"{work}/"], check=True, capture_output=True)))
        subprocess.run([*ssh, "--", f"rm -rf {guest}"], check=True)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    base = med(raw)

    def fig(xs: list[float]) -> str:
        return f"{med(xs):.2f}s ({med(xs) / base:.2f}x)"

    print(f"raw tar | ssh tar (baseline) {base:.2f}s")
    print(f"tar   in {fig(tar_in)}  back+compare {fig(tar_back)}")
    print(f"rsync in {fig(rs_in)}  back (dry run) {fig(rs_back)}")
    shutil.rmtree(work.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
