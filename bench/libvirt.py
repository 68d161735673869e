"""vmType libvirt vs the QEMU driver: `limactl start` -> READY and the throughput of
an automatic port forward, as ratios to the QEMU driver's figures for the same image
measured in the same run (the host is shared and noisy: the absolute figures are
context only).

For each driver -- `qemu`, `libvirt` on a local URI, and `libvirt` on a qemu+ssh://
URI when one is given -- one instance is created and started twice: the first start
(for libvirt: the image upload into the pool, unless a volume of it is there
already, and the overlay volume), then a stop and a second start (the boot alone).
Then a guest program sends FORWARD_MIB MiB on a guest port that pylima forwards to
the host's 127.0.0.1 (QEMU's hostfwd for the QEMU driver and a local libvirt host,
the SSH master for a remote one), read there; the best of FORWARD_TRIES reads
counts. The instances are deleted at the end, the shared image volume stays in the
pool.

Run as the user whose libvirt is used (qemu:///session needs no root; as root,
`--uri qemu:///system`, with libvirtd running):
  .venv/bin/python bench/libvirt.py --image-dir DIR --pool POOL
      [--uri qemu:///session] [--remote-uri 'qemu+ssh://me@host:PORT/session?keyfile=K']
      [--remote-pool POOL]
DIR holds the local image (disk.qcow2, vmlinuz, initrd.img, cmdline, sha256sums:
`limactl image build`'s result directory).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
FORWARD_MIB = 64
FORWARD_TRIES = 3
# Sends FORWARD_MIB MiB to each client; started in the guest, detached.
GUEST_SENDER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
block = bytes(1 << 20)
while True:
    c, _ = s.accept()
    for _ in range(int(sys.argv[2])):
        c.sendall(block)
    c.close()
"""


def image_entry(d: Path) -> dict:
    sums = dict(reversed(line.split()) for line in (d / "sha256sums").read_text().splitlines()
                if line.strip())
    return {"location": str(d / "disk.qcow2"), "arch": "x86_64",
            "digest": f"sha256:{sums['disk.qcow2']}",
            "kernel": {"location": str(d / "vmlinuz"), "digest": f"sha256:{sums['vmlinuz']}",
                       "cmdline": (d / "cmdline").read_text().strip()},
            "initrd": {"location": str(d / "initrd.img"),
                       "digest": f"sha256:{sums['initrd.img']}"}}


def limactl(*args: str, env: dict[str, str], stdin: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "limactl"), *args], env=env, text=True, input=stdin,
                          capture_output=True, timeout=1200)


def timed_start(name: str, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    r = limactl("start", "--tty=false", name, env=env)
    dt = time.monotonic() - t0
    if r.returncode != 0 or "READY" not in r.stderr + r.stdout:
        sys.exit(f"start of {name} failed:\n{r.stderr[-3000:]}")
    return dt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_all(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        n = 0
        while chunk := c.recv(1 << 20):
            n += len(chunk)
        return n


def forward_mib_s(name: str, env: dict[str, str]) -> float:
    """The best of FORWARD_TRIES reads of FORWARD_MIB MiB from a guest port, through
    the forward pylima sets up for it, in MiB/s."""
    port = free_port()
    r = limactl("shell", name, "sh", "-c",
                f"cat > /tmp/sender.py; nohup python3 /tmp/sender.py {port} {FORWARD_MIB} "
                ">/dev/null 2>&1 </dev/null &", env=env, stdin=GUEST_SENDER)
    if r.returncode != 0:
        sys.exit(f"guest sender in {name} failed:\n{r.stderr}")
    want = FORWARD_MIB << 20
    deadline = time.monotonic() + 120
    while True:  # until the forward is there and carries it all
        try:
            if read_all(port) == want:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"port {port} of {name} was not forwarded")
        time.sleep(1)
    best = 0.0
    for _ in range(FORWARD_TRIES):
        t0 = time.monotonic()
        n = read_all(port)
        dt = time.monotonic() - t0
        if n != want:
            sys.exit(f"{name}: read {n} of {want} bytes through the forward")
        best = max(best, FORWARD_MIB / dt)
    return best


def measure(name: str, set_expr: str, env: dict[str, str]) -> tuple[float, float, float]:
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
        return first, second, forward_mib_s(name, env)
    finally:
        limactl("stop", "-f", name, env=env)
        limactl("delete", "-f", name, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--image-dir", type=Path, required=True)
    ap.add_argument("--pool", required=True)
    ap.add_argument("--uri", default="qemu:///session")
    ap.add_argument("--remote-uri", default="")
    ap.add_argument("--remote-pool", default="", help="the remote host's pool "
                    "(default: --pool)")
    a = ap.parse_args()
    image = image_entry(a.image_dir)
    common = (f".images = [{json.dumps(image)}] | .mounts = [] | .cpus = 2 | "
              ".memory = \"1GiB\" | .containerd = {\"system\": false, \"user\": false}")
    with tempfile.TemporaryDirectory(prefix="pylima-bench-libvirt-") as home:
        env = {**os.environ, "LIMA_HOME": home}
        runs = [("qemu", "bq", common + " | .vmType = \"qemu\"")]
        for label, uri, pool in (("libvirt local", a.uri, a.pool),
                                 ("libvirt qemu+ssh", a.remote_uri, a.remote_pool or a.pool)):
            if uri:
                opts = json.dumps({"uri": uri, "pool": pool})
                runs.append((label, "bl" + str(len(runs)),
                             common + f" | .vmType = \"libvirt\" | .vmOpts.libvirt = {opts}"))
        results = {label: measure(name, expr, env) for label, name, expr in runs}
    q1, q2, qf = results["qemu"]
    print(f"{'driver':<18} {'first start':>12} {'ratio':>6} {'restart':>9} {'ratio':>6} "
          f"{'forward':>12} {'ratio':>6}")
    for label, (first, second, fwd) in results.items():
        print(f"{label:<18} {first:>11.1f}s {first / q1:>6.2f} {second:>8.1f}s "
              f"{second / q2:>6.2f} {fwd:>7.1f}MiB/s {fwd / qf:>6.2f}")
    print(f"ratios: to the QEMU driver's figures for the same image in this run "
          f"(local URI: {a.uri}; forward: {FORWARD_MIB} MiB, best of {FORWARD_TRIES})")


if __name__ == "__main__":
    main()
