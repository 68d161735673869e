"""Boot time and shell latency, each as a ratio to a baseline measured in the same run
(the host is shared and noisy: the absolute seconds are context only).

1. Kernel floor (baseline): QEMU with pylima's own argv for the instance (machine, accel,
   cpu, memory, devices) boots the instance's kernel and initrd with
   `rdinit=/nonexistent root=/dev/pylima-none panic=-1` and `-no-reboot`: the kernel
   finds no init in the initrd, fails to mount a root file system, panics, and QEMU
   exits. Launch -> exit is the least any boot of this kernel can take here. Median of 3;
   every run's serial log must show that panic.
2. Raw QEMU boot of the same image with the same cidata.iso and the same argv -> first
   successful `ssh true` (baseline of 3; its ratio to the floor is context).
3. `limactl start` of a new instance (image cached) -> READY: ratio to the kernel floor
   (goal <= 4) and to the raw boot (pylima's own overhead, goal <= 1.2).
4. `limactl start` of the same instance once stopped (`limactl stop`) -> READY: ratio to
   the kernel floor (goal <= 3).
5. `lima true` on the running instance vs raw `ssh -S ssh.sock true` over the same
   master connection (goal <= 1.5), and vs raw ssh running what `lima` runs in the
   guest (Lima's semantics: the user's login shell), which isolates pylima's own
   host-side cost from the guest's shell start-up under emulation.
6. virtme-ng, `vng -r [KERNEL] --disable-kvm --force-9p -e true` (baseline, median of 3
   after one untimed check run), vs pylima's cold start and first command: the
   `limactl start` of 3 plus the `limactl shell NAME true` right after it (goal < 1).
   `vng` comes from --vng or PATH, the kernel from --vng-kernel or the host's
   /boot/vmlinuz-$(uname -r); vng needs `modprobe` and `depmod` (kmod) on PATH, and a
   kernel outside /boot needs its modules in ../lib/modules (an unpacked linux-image
   .deb). The figure is skipped, with a line saying why, when either is missing. Where
   the host has no udevd the guest cannot name its script ports, runs the command on
   its console and vng exits 255: the check run then must show the command's exit 0.
7. The host agent's resident memory (goal <= 40 MB).
8. With --aarch64: `limactl start` of a new aarch64 instance of the local arm64 image, and
   of the same instance once stopped, each as a ratio to x86_64's figure 3 and 4 of the
   same run (goal <= 1.5).

Run: .venv/bin/python bench/boot.py [--rounds N] [--vng PATH] [--vng-kernel PATH] [--aarch64]
(needs the local image: it is built on first use, which is not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _timing import median_seconds

BIN = Path(sys.executable).parent
FLOOR_RUNS = 3
VNG_RUNS = 3
# No init in the initrd and no root device: the kernel panics where it would mount root.
FLOOR_CMDLINE = "console=ttyS0 panic=-1 rdinit=/nonexistent root=/dev/pylima-none quiet"
FLOOR_PANIC = "Unable to mount root fs"


def run(*argv: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, text=True, capture_output=True, check=check)


def timed(*argv: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    run(*argv, env=env)
    return time.perf_counter() - t0


def qemu_argv(inst_dir: Path, cfg: dict, work: Path, cmdline: str, port: int) -> list[str]:
    """pylima's QEMU argv for the instance, on a copy of its disk and seed in `work`."""
    from pylima.drivers.qemu.argv import BootFiles, build_qemu_argv
    from pylima.drivers.qemu.probe import probe_qemu

    work.mkdir()
    shutil.copy(inst_dir / "cidata.iso", work / "cidata.iso")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(inst_dir / "image"), str(work / "disk")], check=True)
    host, _ = probe_qemu(cfg["arch"], firmware=False)
    boot = BootFiles(disk=str(work / "disk"), cidata_iso=str(work / "cidata.iso"),
                     kernel=str(inst_dir / "kernel"), initrd=str(inst_dir / "initrd"),
                     cmdline=cmdline)
    return build_qemu_argv(cfg, host, str(work), boot, ssh_local_port=port)


def kernel_floor(inst_dir: Path, cfg: dict, work: Path) -> float:
    """QEMU launch -> exit, the kernel panicking where it would mount its root."""
    from pylima.filenames import SERIAL_LOG
    from pylima.sshutil import free_port

    argv = [*qemu_argv(inst_dir, cfg, work, FLOOR_CMDLINE, free_port()), "-no-reboot"]
    t0 = time.perf_counter()
    qemu = subprocess.Popen(argv, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        qemu.wait(timeout=300)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
    elapsed = time.perf_counter() - t0
    log = (work / SERIAL_LOG).read_text(errors="replace")
    if FLOOR_PANIC not in log:
        tail = "\n".join(log.splitlines()[-15:])
        raise SystemExit(f"kernel floor run did not end in the root mount panic "
                         f"(QEMU exit {qemu.returncode}); serial log ends:\n{tail}")
    return elapsed


def raw_boot(inst_dir: Path, cfg: dict, work: Path) -> float:
    """Boot the instance's image the way pylima does, without pylima, until ssh works."""
    from pylima.sshutil import free_port

    port = free_port()
    cmdline = (inst_dir / "kernel.cmdline").read_text().strip()
    argv = qemu_argv(inst_dir, cfg, work, cmdline, port)
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


class Vng:
    """virtme-ng running `true` in a guest booted from the host's root file system."""

    def __init__(self, vng: str, kernel: str | None, work: Path) -> None:
        self.argv = [vng, "-r", *([kernel] if kernel else []), "--disable-kvm", "--force-9p"]
        # vng runs its helpers (virtme-run) from PATH, and modprobe/depmod from kmod.
        path = [os.path.dirname(vng), os.environ.get("PATH", os.defpath),
                "/usr/local/sbin", "/usr/sbin", "/sbin"]
        self.env = {**os.environ, "PATH": os.pathsep.join(path)}
        self.work = work
        self.console_only = False  # exits 255: see check()

    def _run(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.argv, *extra, "-e", "true"], env=self.env, cwd=self.work,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=600)

    def check(self) -> None:
        """One untimed run with the guest's console shown: the command must exit 0."""
        r = self._run("-v")
        if r.returncode == 0:
            return
        if r.returncode == 255 and "script exited with code 0" in r.stdout + r.stderr:
            self.console_only = True
            return
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-15:])
        raise SystemExit(f"vng check run failed (exit {r.returncode}):\n{tail}")

    def seconds(self) -> float:
        t0 = time.perf_counter()
        r = self._run()
        elapsed = time.perf_counter() - t0
        if r.returncode not in ((0, 255) if self.console_only else (0,)):
            raise SystemExit(f"vng failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        return elapsed


def find_vng(args: argparse.Namespace, work: Path) -> Vng | str:
    """The vng runner, or why the figure is skipped."""
    vng = args.vng or shutil.which("vng")
    if not vng or not os.access(vng, os.X_OK):
        return (f"no `vng` ({args.vng or 'not on PATH'}); install virtme-ng (e.g. "
                "python3 -m venv /tmp/vng-venv && /tmp/vng-venv/bin/pip install virtme-ng) "
                "and pass --vng /tmp/vng-venv/bin/vng")
    kernel = args.vng_kernel
    if kernel is None and not os.path.exists(f"/boot/vmlinuz-{platform.release()}"):
        return (f"no host kernel /boot/vmlinuz-{platform.release()}; pass --vng-kernel "
                "(e.g. a linux-image .deb unpacked with dpkg -x, modules beside it)")
    if kernel is not None and not os.path.isfile(kernel):
        return f"--vng-kernel {kernel} is not a file"
    return Vng(os.path.abspath(vng), kernel and os.path.abspath(kernel), work)


def start_new(limactl: str, name: str, entry: dict, env: dict[str, str], *flags: str
              ) -> float:
    """`limactl start` -> READY of a new instance `name` of the image `entry`."""
    return timed(limactl, "start", f"--name={name}", *flags, "--tty=false", "--cpus=2",
                 "--memory=2", "--set", f".images = [{json.dumps(entry)}] | .mounts = []",
                 "template:debian-12", env=env)


def aarch64_starts(limactl: str, env: dict[str, str]) -> tuple[float, float]:
    """`limactl start` -> READY of a new aarch64 instance of the local arm64 image (built
    first if it is not cached, untimed), then of the same instance once stopped."""
    from pylima.images import builder

    img = builder.find_cached_image("aarch64") or builder.build_debian_image("aarch64")
    entry = builder.images_entry(img)
    new = start_new(limactl, "b-aarch64", entry, env, "--arch=aarch64")
    run(limactl, "stop", "b-aarch64", env=env)
    restart = timed(limactl, "start", "--tty=false", "b-aarch64", env=env)
    run(limactl, "stop", "b-aarch64", env=env)
    return new, restart


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--vng", help="the virtme-ng `vng` to compare with (default: PATH)")
    ap.add_argument("--vng-kernel", help="kernel for vng -r (default: the host's own)")
    ap.add_argument("--aarch64", action="store_true",
                    help="also start an aarch64 instance of the local arm64 image (new and "
                    "stopped), as a ratio to x86_64's (goal <= 1.5)")
    args = ap.parse_args()
    from pylima.images import builder

    img = builder.find_cached_image("x86_64") or builder.build_debian_image("x86_64")
    entry = builder.images_entry(img)
    tmp = Path(tempfile.mkdtemp(prefix="pylima-bench-boot-"))
    env = {**os.environ, "LIMA_HOME": str(tmp / "lima")}
    limactl = str(BIN / "limactl")
    vng = find_vng(args, tmp)
    starts, firsts, restarts, raws, floors, vngs = [], [], [], [], [], []
    try:
        for i in range(args.rounds):
            name = f"b{i}"
            starts.append(start_new(limactl, name, entry, env))
            # pylima's first command, right after READY (figure 6)
            firsts.append(timed(limactl, "shell", name, "true", env=env))
            inst_dir = tmp / "lima" / name
            cfg = json.loads(run(limactl, "list", "--json", name, env=env).stdout)["config"]
            if i == args.rounds - 1:
                # shell latency on the running instance, against ssh over the same master
                lima_t = median_seconds([str(BIN / "lima"), "true"],
                                        {**env, "LIMA_INSTANCE": name}, 15)
                ssh = ["ssh", "-F", str(inst_dir / "ssh.config"), "-S",
                       str(inst_dir / "ssh.sock"), f"lima-{name}"]
                ssh_t = median_seconds([*ssh, "true"], env, 15)
                login_t = median_seconds([*ssh, "cd ~ ; exec /bin/bash -l -c true"], env, 15)
                ha_pid = int((inst_dir / "ha.pid").read_text())
                rss_kb = next(int(ln.split()[1]) for ln in open(f"/proc/{ha_pid}/status")
                              if ln.startswith("VmRSS:"))
            run(limactl, "stop", name, env=env)
            floors += [kernel_floor(inst_dir, cfg, tmp / f"floor{i}-{k}")
                       for k in range(FLOOR_RUNS)]
            restarts.append(timed(limactl, "start", "--tty=false", name, env=env))
            run(limactl, "stop", name, env=env)
            raws.append(raw_boot(inst_dir, cfg, tmp / f"raw{i}"))
            if isinstance(vng, Vng):
                if i == 0:
                    vng.check()
                vngs += [vng.seconds() for _ in range(VNG_RUNS)]
        f, r = statistics.median(floors), statistics.median(raws)
        s, rs = statistics.median(starts), statistics.median(restarts)
        cold = statistics.median(a + b for a, b in zip(starts, firsts, strict=True))
        print(f"kernel floor: QEMU -> root mount panic (baseline) {f:6.1f} s")
        print(f"raw QEMU boot -> ssh true (baseline)   {r:6.1f} s   ratio {r / f:5.2f}x "
              "to the kernel floor")
        print(f"limactl start (new) -> READY           {s:6.1f} s   ratio {s / f:5.2f}x "
              f"to the kernel floor (goal <= 4), {s / r:4.2f}x to the raw boot (goal <= 1.2)")
        print(f"limactl start (stopped) -> READY       {rs:6.1f} s   ratio {rs / f:5.2f}x "
              f"to the kernel floor (goal <= 3), {rs / r:4.2f}x to the raw boot")
        print(f"raw ssh -S ssh.sock true (baseline)    {ssh_t * 1000:6.0f} ms")
        print(f"raw ssh -S ssh.sock 'bash -l -c true'   {login_t * 1000:6.0f} ms")
        print(f"lima true                              {lima_t * 1000:6.0f} ms   ratio "
              f"{lima_t / ssh_t:4.2f}x to ssh true (goal <= 1.5), "
              f"{lima_t / login_t:4.2f}x to the same login shell over ssh")
        if isinstance(vng, Vng):
            v = statistics.median(vngs)
            print(f"vng --disable-kvm --force-9p -e true (baseline) {v:6.1f} s"
                  + ("   (exit 255: no udevd on this host, the command ran on the guest "
                     "console; the check run saw it exit 0)" if vng.console_only else ""))
            print(f"limactl start (new) + shell true       {cold:6.1f} s   ratio "
                  f"{cold / v:5.2f}x to vng (goal < 1)")
        else:
            print(f"virtme-ng comparison skipped: {vng}")
            print(f"limactl start (new) + shell true       {cold:6.1f} s   (no vng baseline)")
        print(f"host agent RSS                         {rss_kb / 1024:6.1f} MB  (goal <= 40 MB)")
        if args.aarch64:
            a_new, a_restart = aarch64_starts(limactl, env)
            print(f"aarch64 limactl start (new) -> READY   {a_new:6.1f} s   ratio "
                  f"{a_new / s:4.2f}x to x86_64's (goal <= 1.5)")
            print(f"aarch64 limactl start (stopped) -> READY {a_restart:4.1f} s   ratio "
                  f"{a_restart / rs:4.2f}x to x86_64's (goal <= 1.5)")
    finally:
        subprocess.run([limactl, "delete", "-f", *[f"b{i}" for i in range(args.rounds)],
                        "b-aarch64"], env=env, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
