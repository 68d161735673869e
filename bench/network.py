"""Networks: TCP throughput and round-trip latency between two guests on the user-v2
network, from a user-v2 guest to the host, and from a guest of the default network to
the host, each against a raw baseline measured in the same run.

The baseline is the client guest's own loopback (client and server in the same guest,
no NIC at all): under emulation the guest's CPU, not the wire, bounds every path, so
this is the most any network can give. Each path with the same client and server
(python3, the server sending with sendfile(2)):

- "user-v2":      A -> lima-B.internal (eth0 on the network's vde_switch);
- "user-v2 host": A -> host.lima.internal = the network's .2, a server on the host's
                  127.0.0.1 (vde_switch, then the network's router: QEMU's user-mode
                  stack in a QEMU of its own);
- "default":      C -> host.lima.internal, the same server (C's own QEMU's user-mode
                  network, the NIC of an instance on no user-v2 network).

Throughput: one transfer of `--mb` MB (default 50), median of 3 after a warm-up.
Latency: 1-byte ping-pong on one connection, median of 200 round trips.

Run: .venv/bin/python bench/network.py [--instances A B C] [--mb 50]
(without --instances it starts A and B on user-v2 and C without, not timed).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BIN = Path(sys.executable).parent
PORT = 18400

# One program for both ends: `serve PORT MB` (a thread per connection: first byte
# b = send the blob, p = echo until EOF), `pull HOST PORT` (MB/s), `rtt HOST PORT N`
# (median ms).
PROGRAM = r"""
import os, socket, statistics, sys, threading, time
def serve(port, mb):
    path = "/tmp/bench-net-blob"
    if not os.path.exists(path) or os.path.getsize(path) != mb << 20:
        with open(path, "wb") as f:
            f.write(b"\0" * (mb << 20))
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    def one(c):
        try:
            if c.recv(1) == b"b":
                with open(path, "rb") as f:
                    c.sendfile(f)
            else:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while True:
                    d = c.recv(1)
                    if not d:
                        break
                    c.sendall(d)
        finally:
            c.close()
    while True:
        c, _ = s.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()
def pull(host, port):
    t0 = time.perf_counter(); n = 0
    with socket.create_connection((host, port), timeout=120) as c:
        c.sendall(b"b")
        buf = bytearray(1 << 20)
        while True:
            k = c.recv_into(buf)
            if not k:
                break
            n += k
    print(n / 1e6 / (time.perf_counter() - t0))
def rtt(host, port, runs):
    with socket.create_connection((host, port), timeout=30) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sendall(b"p")
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            c.sendall(b"x")
            c.recv(1)
            times.append((time.perf_counter() - t0) * 1000)
    print(statistics.median(times))
mode = sys.argv[1]
if mode == "serve":
    serve(int(sys.argv[2]), int(sys.argv[3]))
elif mode == "pull":
    pull(sys.argv[2], int(sys.argv[3]))
else:
    rtt(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
"""


def sh(*argv: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, text=True, capture_output=True, check=check)


def in_guest(env: dict[str, str], name: str, *args: str) -> str:
    cmd = shlex.join(["python3", "-c", PROGRAM, *args])
    return sh(str(BIN / "limactl"), "shell", name, "sh", "-c", cmd, env=env).stdout


def start_guest_server(env: dict[str, str], name: str, mb: int) -> None:
    cmd = shlex.join(["python3", "-c", PROGRAM, "serve", str(PORT), str(mb)])
    sh(str(BIN / "limactl"), "shell", name, "sh", "-c",
       f"setsid -f {cmd} >/dev/null 2>&1", env=env)


def start_host_server(mb: int) -> int:
    """The same server on the host's 127.0.0.1, in a thread; its port."""
    blob = tempfile.NamedTemporaryFile(prefix="bench-net-", delete=False)  # noqa: SIM115
    blob.write(b"\0" * (mb << 20))
    blob.close()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def one(c: socket.socket) -> None:
        with c:
            if c.recv(1) == b"b":
                with open(blob.name, "rb") as f:
                    c.sendfile(f)
            else:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                while d := c.recv(1):
                    c.sendall(d)

    def loop() -> None:
        while True:
            c, _ = srv.accept()
            threading.Thread(target=one, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    atexit.register(os.unlink, blob.name)  # sendfile reads it until then
    return int(srv.getsockname()[1])


def wait_guest_port(env: dict[str, str], name: str, host: str, port: int) -> None:
    for _ in range(120):
        r = sh(str(BIN / "limactl"), "shell", name, "nc", "-z", "-w", "2", host, str(port),
               env=env, check=False)
        if r.returncode == 0:
            return
        time.sleep(0.5)
    raise SystemExit(f"{host}:{port} does not answer in {name}")


def measure(env: dict[str, str], client: str, paths: dict[str, tuple[str, int]]
            ) -> tuple[dict[str, float], dict[str, float]]:
    """(MB/s, ms) of each path, from the guest `client`."""
    for host, port in paths.values():
        wait_guest_port(env, client, host, port)
    mbps: dict[str, float] = {}
    rtt: dict[str, float] = {}
    for label, (host, port) in paths.items():
        in_guest(env, client, "pull", host, str(port))  # warm-up
        mbps[label] = statistics.median(
            float(in_guest(env, client, "pull", host, str(port))) for _ in range(3))
        rtt[label] = float(in_guest(env, client, "rtt", host, str(port), "200"))
    return mbps, rtt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", nargs=3, metavar=("A", "B", "C"),
                    help="A and B on user-v2, C on the default network only")
    ap.add_argument("--mb", type=int, default=50)
    args = ap.parse_args()
    env = dict(os.environ)
    tmp = None
    names = list(args.instances or ["bnet-a", "bnet-b", "bnet-c"])
    if not args.instances:
        from pylima.images import builder

        img = builder.find_cached_image("x86_64") or builder.build_debian_image("x86_64")
        # short: the switch's Unix sockets live under LIMA_HOME
        tmp = tempfile.mkdtemp(prefix="pylima-bnet-", dir="/tmp")
        env["LIMA_HOME"] = tmp
        entry = json.dumps(builder.images_entry(img))
        for name in names:  # one boot at a time
            network = [] if name == names[2] else ["--network=lima:user-v2"]
            print(f"starting temporary instance {name} {' '.join(network)} (not timed) ...",
                  file=sys.stderr)
            sh(str(BIN / "limactl"), "start", "--tty=false", f"--name={name}", "--cpus=1",
               "--memory=1", *network,
               "--set", f".images = [{entry}] | .mounts = []", "template:debian-12", env=env)
    a, b, c = names
    try:
        host_port = start_host_server(args.mb)
        for name in names:
            start_guest_server(env, name, args.mb)
        mbps, rtt = measure(env, a, {"loopback": ("127.0.0.1", PORT),
                                     "user-v2": (f"lima-{b}.internal", PORT),
                                     "user-v2 host": ("host.lima.internal", host_port)})
        mbps_c, rtt_c = measure(env, c, {"loopback C": ("127.0.0.1", PORT),
                                         "default": ("host.lima.internal", host_port)})
        print(f"throughput ({args.mb} MB, median of 3), from guest {a} (user-v2) and "
              f"{c} (default):")
        for label, v, base in [*((k, x, mbps["loopback"]) for k, x in mbps.items()),
                               *((k, x, mbps_c["loopback C"]) for k, x in mbps_c.items())]:
            print(f"  {label:13s} {v:7.1f} MB/s  {v * 8:7.0f} Mbit/s   ratio to its guest's "
                  f"loopback {v / base:.2f}x")
        print("round trip (1-byte ping-pong on one connection, median of 200):")
        for label, v, base in [*((k, x, rtt["loopback"]) for k, x in rtt.items()),
                               *((k, x, rtt_c["loopback C"]) for k, x in rtt_c.items())]:
            print(f"  {label:13s} {v:7.3f} ms    ratio to its guest's loopback "
                  f"{v / base:.2f}x")
        print(f"user-v2 guest-to-guest vs default guest-to-host: throughput "
              f"{mbps['user-v2'] / mbps_c['default']:.2f}x, round trip "
              f"{rtt['user-v2'] / rtt_c['default']:.2f}x")
        print(f"user-v2 guest-to-host (router) vs default guest-to-host: throughput "
              f"{mbps['user-v2 host'] / mbps_c['default']:.2f}x, round trip "
              f"{rtt['user-v2 host'] / rtt_c['default']:.2f}x")
    finally:
        if tmp:
            for name in names:
                sh(str(BIN / "limactl"), "stop", "-f", name, env=env, check=False)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
