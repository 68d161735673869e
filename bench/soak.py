"""Soak: start/stop cycles of one instance, then several instances started at once.

Per cycle it prints the time to READY (and its ratio to the first cycle: no growth
is the goal), the host agent's open file descriptors and resident memory at READY
and after a burst of `lima true`; at the end, what is left behind: processes of the
instances, files that should be gone (pid files, sockets), and TCP listening ports
that were not there before (goal: zero leftovers, no growth).

The concurrent part starts N instances at once and reports their time to READY as a
ratio to one start alone measured in the same run (on a 2-core host emulating the
guests, N guests share the CPUs: a ratio near N is the floor, not overhead).

`--load N` keeps N CPU-bound processes running beside the guests (an image build or
another guest on a CI runner), `--set EXPR` adds a yq expression to the instance's
configuration (a CPU model, a kernel option: one change at a time), and a start that
does not reach READY within `--timeout` is counted, its host agent's last lines
printed, and the soak goes on: the count of failed starts is the figure to compare.

Run: .venv/bin/python bench/soak.py [--cycles 25] [--parallel 3] [--load N]
     [--set EXPR] [--timeout 10m]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNTIME_FILES = ("ha.pid", "ha.sock", "qemu.pid", "qmp.sock", "ga.sock", "ssh.sock",
                 "serial.sock", "serialv.sock", "ha.portforwards.json")


def limactl(*args: str, env: dict[str, str], check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "limactl"), *args], env=env, text=True,
                          capture_output=True, check=check)


def listening_ports() -> set[str]:
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True).stdout
    return {ln.split()[3] for ln in out.splitlines() if len(ln.split()) > 3}


def processes_under(home: Path) -> list[str]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(home) in cmd or " lima-soak" in cmd:
            found.append(f"{entry.name} {cmd[:120]}")
    return found


def agent_stats(inst_dir: Path) -> tuple[int, float]:
    pid = int((inst_dir / "ha.pid").read_text())
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = next(int(ln.split()[1]) for ln in open(f"/proc/{pid}/status")
               if ln.startswith("VmRSS:")) / 1024
    return fds, rss


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=25)
    ap.add_argument("--parallel", type=int, default=3)
    ap.add_argument("--load", type=int, default=0, help="CPU-bound processes beside")
    ap.add_argument("--set", dest="expr", default="", help="a yq expression to add")
    ap.add_argument("--timeout", default="10m", help="limactl start --timeout")
    args = ap.parse_args()
    from pylima.images import builder

    img = builder.find_cached_image("x86_64") or builder.build_debian_image("x86_64")
    entry = builder.images_entry(img)
    tmp = Path(tempfile.mkdtemp(prefix="pylima-soak-"))
    home = tmp / "lima"
    env = {**os.environ, "LIMA_HOME": str(home)}
    expr = f".images = [{json.dumps(entry)}] | .mounts = []" + \
        (f" | {args.expr}" if args.expr else "")
    settings = ["--tty=false", "--cpus=1", "--memory=1", "--set", expr, "template:debian-12"]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    failed = 0
    ports_before = listening_ports()
    names = ["soak"] + [f"soak{i}" for i in range(args.parallel)]
    try:
        limactl("create", "--name=soak", *settings, env=env)
        first = ready = 0.0
        print(f"load: {args.load} CPU-bound processes; set: {args.expr or '-'}")
        print("cycle  READY s  ratio  agent fds  RSS MB  (after 5 x lima true: fds, RSS)")
        for c in range(1, args.cycles + 1):
            t0 = time.perf_counter()
            r = limactl("start", f"--timeout={args.timeout}", "soak", env=env, check=False)
            if r.returncode != 0:
                failed += 1
                print(f"{c:5d}  FAILED after {time.perf_counter() - t0:.0f} s (exit "
                      f"{r.returncode}): {r.stderr.strip().splitlines()[-1:]}\n"
                      f"{tail(home / 'soak' / 'ha.stderr.log')}", flush=True)
                limactl("stop", "-f", "soak", env=env, check=False)
                continue
            ready = time.perf_counter() - t0
            first = first or ready
            fds, rss = agent_stats(home / "soak")
            for _ in range(5):
                subprocess.run([str(BIN / "lima"), "true"], env={**env, "LIMA_INSTANCE": "soak"},
                               check=True, capture_output=True)
            fds2, rss2 = agent_stats(home / "soak")
            limactl("stop", "soak", env=env)
            left = [f for f in RUNTIME_FILES if (home / "soak" / f).exists()]
            print(f"{c:5d}  {ready:7.1f}  {ready / first:5.2f}  {fds:9d}  {rss:6.1f}  "
                  f"({fds2}, {rss2:.1f})" + (f"  LEFT: {left}" if left else ""), flush=True)
        print(f"failed starts: {failed} of {args.cycles}")
        if not ready:
            return
        # N at once, against one alone (the last cycle's start above is the baseline)
        for n in names[1:]:
            limactl("create", f"--name={n}", *settings, env=env)
        t0 = time.perf_counter()
        procs = [subprocess.Popen([str(BIN / "limactl"), "start", n], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for n in names[1:]]
        rcs = [p.wait() for p in procs]
        together = time.perf_counter() - t0
        print(f"{args.parallel} instances started at once -> all READY  {together:6.1f} s   "
              f"ratio {together / ready:4.2f}x to one start alone ({ready:.1f} s); "
              f"exit codes {rcs}")
        for n in names[1:]:
            limactl("stop", n, env=env)
        time.sleep(1)
        leftover_files = [f"{n}/{f}" for n in names for f in RUNTIME_FILES
                          if (home / n / f).exists()]
        new_ports = sorted(listening_ports() - ports_before)
        procs_left = processes_under(home)
        print(f"leftover processes: {len(procs_left)} {procs_left}")
        print(f"leftover runtime files: {len(leftover_files)} {leftover_files}")
        print(f"new listening TCP ports: {len(new_ports)} {new_ports}")
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        limactl("delete", "-f", *names, env=env, check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
