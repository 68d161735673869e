"""Boot time and shell latency, each as a ratio to a raw baseline from the same run.

1. `limactl start` of a fresh instance (image cached) -> READY, vs a raw QEMU boot of
   the same image with the same cidata.iso and the same QEMU argv -> first successful
   `ssh true`. The ratio is pylima's own overhead (goal <= 1.2).
2. `lima true` on the running instance vs raw `ssh -S ssh.sock true` over the same
   master connection (goal <= 1.5), and vs raw ssh running what `lima` runs in the
   guest (Lima's semantics: the user's login shell), which isolates pylima's own
   host-side cost from the guest's shell start-up under emulation.
3. The host agent's resident memory (goal <= 40 MB).

Run: .venv/bin/python bench/boot.py [--rounds N]   (needs the local image: it is built
on first use, which is not timed).
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

from _timing import median_seconds

BIN = Path(sys.executable).parent


def run(*argv: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, text=True, capture_output=True, check=check)


def raw_boot(inst_dir: Path, cfg: dict, work: Path) -> float:
    """Boot the instance's image the way pylima does, without pylima, until ssh works."""
    from pylima.drivers.qemu.argv import BootFiles, build_qemu_argv
    from pylima.drivers.qemu.probe import probe_qemu
    from pylima.sshutil import free_port

    work.mkdir()
    shutil.copy(inst_dir / "cidata.iso", work / "cidata.iso")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(inst_dir / "image"), str(work / "disk")], check=True)
    host, _ = probe_qemu(cfg["arch"], firmware=False)
    port = free_port()
    boot = BootFiles(disk=str(work / "disk"), cidata_iso=str(work / "cidata.iso"),
                     kernel=str(inst_dir / "kernel"), initrd=str(inst_dir / "initrd"),
                     cmdline=(inst_dir / "kernel.cmdline").read_text().strip())
    argv = build_qemu_argv(cfg, host, str(work), boot, ssh_local_port=port)
    ssh_cfg = (inst_dir / "ssh.config").read_text()
    ssh_cfg = "\n".join(f"  Port {port}" if ln.strip().startswith("Port ") else ln
                        for ln in ssh_cfg.splitlines()) + "\n"
    (work / "ssh.config").write_text(ssh_cfg.replace("ControlMaster auto", "ControlMaster no"))
    t0 = time.perf_counter()
    qemu = subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            r = subprocess.run(["ssh", "-F", str(work / "ssh.config"), "-o", "ConnectTimeout=5",
                                f"lima-{inst_dir.name}", "true"], capture_output=True)
            if r.returncode == 0:
                return time.perf_counter() - t0
            if qemu.poll() is not None:
                raise SystemExit("raw QEMU exited early")
            time.sleep(0.5)
    finally:
        qemu.kill()
        qemu.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    from pylima.images import builder

    img = builder.find_cached_image("x86_64") or builder.build_debian_image("x86_64")
    entry = builder.images_entry(img)
    tmp = Path(tempfile.mkdtemp(prefix="pylima-bench-boot-"))
    env = {**os.environ, "LIMA_HOME": str(tmp / "lima")}
    limactl = str(BIN / "limactl")
    starts, raws = [], []
    try:
        for i in range(args.rounds):
            name = f"b{i}"
            t0 = time.perf_counter()
            run(limactl, "start", f"--name={name}", "--tty=false", "--cpus=2", "--memory=2",
                "--set", f".images = [{json.dumps(entry)}] | .mounts = []",
                "template:debian-12", env=env)
            starts.append(time.perf_counter() - t0)
            inst_dir = tmp / "lima" / name
            cfg = json.loads(run(limactl, "list", "--json", name, env=env).stdout)["config"]
            if i == args.rounds - 1:
                break
            run(limactl, "stop", name, env=env)
            raws.append(raw_boot(inst_dir, cfg, tmp / f"raw{i}"))
        # shell latency on the running instance, against ssh over the same master
        lima_t = median_seconds([str(BIN / "lima"), "true"], {**env, "LIMA_INSTANCE": name}, 15)
        ssh = ["ssh", "-F", str(inst_dir / "ssh.config"), "-S", str(inst_dir / "ssh.sock"),
               f"lima-{name}"]
        ssh_t = median_seconds([*ssh, "true"], env, 15)
        login_t = median_seconds([*ssh, "cd ~ ; exec /bin/bash -l -c true"], env, 15)
        ha_pid = int((inst_dir / "ha.pid").read_text())
        rss_kb = next(int(ln.split()[1]) for ln in open(f"/proc/{ha_pid}/status")
                      if ln.startswith("VmRSS:"))
        run(limactl, "stop", name, env=env)
        raws.append(raw_boot(inst_dir, cfg, tmp / "raw-last"))
        s, r = statistics.median(starts), statistics.median(raws)
        print(f"raw QEMU boot -> ssh true (baseline)   {r:6.1f} s")
        print(f"limactl start -> READY                 {s:6.1f} s   ratio {s / r:4.2f}x"
              "  (goal <= 1.2)")
        print(f"raw ssh -S ssh.sock true (baseline)    {ssh_t * 1000:6.0f} ms")
        print(f"raw ssh -S ssh.sock 'bash -l -c true'   {login_t * 1000:6.0f} ms")
        print(f"lima true                              {lima_t * 1000:6.0f} ms   ratio "
              f"{lima_t / ssh_t:4.2f}x to ssh true (goal <= 1.5), "
              f"{lima_t / login_t:4.2f}x to the same login shell over ssh")
        print(f"host agent RSS                         {rss_kb / 1024:6.1f} MB  (goal <= 40 MB)")
    finally:
        subprocess.run([limactl, "delete", "-f", *[f"b{i}" for i in range(args.rounds)]],
                       env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
