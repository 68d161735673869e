"""Containers: time to a usable docker on the host, and `docker run` latency.

1. `limactl start template:docker` (fresh instance, the image cached) -> the first
   successful host `docker version` through the forwarded socket, as a ratio to the
   same start's own READY time (the baseline: what booting the guest costs anyway).
2. `docker run --rm IMAGE true` from the host through the forwarded socket, vs the
   same command run inside the guest over raw `ssh -S ssh.sock` (the raw baseline:
   no forwarding), median of N runs each.

Run: .venv/bin/python bench/containers.py [--runs N]   (needs the docker client and
busybox-static on the host; the "docker" image variant is built on first use, untimed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from _timing import median_seconds

BIN = Path(sys.executable).parent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    busybox = shutil.which("busybox")
    if shutil.which("docker") is None or busybox is None:
        print("needs the docker client and busybox-static", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="pylima-bench-containers-"))
    env = {**os.environ, "LIMA_HOME": str(work / "lima"), "DOCKER_CONFIG": str(work / "dc"),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    inst_dir = work / "lima" / "docker"
    env_docker = {**env, "DOCKER_HOST": f"unix://{inst_dir}/sock/docker.sock"}
    try:
        first_ok: list[float] = []
        ready_at: list[float] = []
        t0 = time.perf_counter()

        def poll() -> None:
            while not first_ok:
                r = subprocess.run(["docker", "version"], env=env_docker,
                                   capture_output=True, timeout=60)
                if r.returncode == 0:
                    first_ok.append(time.perf_counter() - t0)
                    return
                time.sleep(0.5)

        threading.Thread(target=poll, daemon=True).start()
        proc = subprocess.Popen([str(BIN / "limactl"), "start", "--tty=false", "--timeout=30m",
                                 "template:docker"], env=env, stderr=subprocess.PIPE,
                                text=True)
        assert proc.stderr is not None
        for line in proc.stderr:
            if "READY" in line and not ready_at:
                ready_at.append(time.perf_counter() - t0)
        if proc.wait() != 0:
            print("limactl start failed", file=sys.stderr)
            return 1
        deadline = time.perf_counter() + 300
        while not first_ok and time.perf_counter() < deadline:
            time.sleep(0.5)
        if not first_ok or not ready_at:
            print("no docker version / READY seen", file=sys.stderr)
            return 1
        print(f"start -> first host `docker version`: {first_ok[0]:.1f} s; "
              f"start -> READY (baseline): {ready_at[0]:.1f} s; "
              f"ratio {first_ok[0] / ready_at[0]:.2f}")

        tar = work / "rootfs.tar"
        with tarfile.open(tar, "w") as t:
            t.add(busybox, "bin/busybox")
            info = tarfile.TarInfo("bin/true")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(info)
        subprocess.run(["docker", "import", str(tar), "bench/busybox"], env=env_docker,
                       check=True, capture_output=True)
        host = median_seconds(["docker", "run", "--rm", "bench/busybox", "true"],
                              env_docker, args.runs)
        # the same image inside the guest: save on the host, load in the guest
        subprocess.run("docker save bench/busybox | limactl shell docker docker load",
                       shell=True, env=env_docker, check=True, capture_output=True)
        ssh = ["ssh", "-F", str(inst_dir / "ssh.config"), "-S", str(inst_dir / "ssh.sock"),
               "lima-docker"]
        guest = median_seconds([*ssh, "docker", "run", "--rm", "bench/busybox", "true"],
                               env, args.runs)
        print(f"`docker run --rm true` from the host through the socket: {host:.2f} s; "
              f"inside the guest over raw ssh (baseline): {guest:.2f} s; "
              f"ratio {host / guest:.2f} (median of {args.runs})")
        return 0
    finally:
        subprocess.run([str(BIN / "limactl"), "delete", "-f", "docker"], env=env,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
