"""Port forwarding: throughput, connection set-up latency and the delay before a new
guest port is forwarded, each against a raw baseline measured in the same run.

The baseline is QEMU's own user-mode forward (`hostfwd_add` over QMP, no pylima) to a
server in the same guest bound on 0.0.0.0. Measured through pylima:

- "direct": the automatic forward of that same server (guest 0.0.0.0);
- "relay":  the automatic forward of a server bound on the guest's 127.0.0.1 (QEMU's
  forward to a splice(2) relay of the guest agent);
- "ssh":    for reference, an SSH -L forward over the instance's master connection
  (the transport Lima uses).

Each transfer reads 200 MB (`--mb`) that the guest sends with sendfile(2). Latency is
connect -> first byte of a one-byte reply, median of 20. The appearance delay is the
time from the guest's listen() to the first successful connection on the host.

Run: .venv/bin/python bench/portfwd.py [--instance NAME] [--mb 200]
(without --instance it starts a temporary instance from the local image, not timed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent

GUEST_SERVER = r"""
import socket, sys, threading, os
mode, bind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((bind, port)); s.listen(64)
def serve(c):
    try:
        if mode == "blob":
            with open("/tmp/pf-blob", "rb") as f:
                c.sendfile(f)
        else:
            c.sendall(b"!")
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def sh(*argv: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, text=True, capture_output=True, check=check)


def guest(env: dict[str, str], name: str, script: str) -> None:
    sh(str(BIN / "limactl"), "shell", name, "sh", "-c", script, env=env)


def start_server(env: dict[str, str], name: str, mode: str, bind: str, port: int) -> None:
    guest(env, name, f"setsid -f python3 -c {shlex_quote(GUEST_SERVER)} {mode} {bind} {port} "
          ">/dev/null 2>&1")


def shlex_quote(s: str) -> str:
    import shlex

    return shlex.quote(s)


def wait_connect(port: int, timeout: float = 60.0) -> float:
    """Seconds until 127.0.0.1:port accepts and answers."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                if c.recv(1):
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"port {port} was not forwarded within {timeout} s")


def throughput(port: int) -> float:
    """MB/s of one transfer of the guest's blob."""
    t0 = time.perf_counter()
    n = 0
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        buf = bytearray(1 << 20)
        while True:
            k = c.recv_into(buf)
            if not k:
                break
            n += k
    return n / 1e6 / (time.perf_counter() - t0)


def latency_ms(port: int, runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.recv(1)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def hmp(inst_dir: Path, line: str) -> str:
    from pylima.drivers.qemu.qmp import QMPClient

    async def go() -> str:
        c = QMPClient(str(inst_dir / "qmp.sock"))
        await c.connect(timeout=30)
        try:
            return str(await c.execute("human-monitor-command", {"command-line": line}))
        finally:
            await c.close()

    return asyncio.run(go())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--instance")
    ap.add_argument("--mb", type=int, default=200)
    args = ap.parse_args()
    env = dict(os.environ)
    tmp = None
    name = args.instance
    if not name:
        from pylima.images import builder

        img = builder.find_cached_image("x86_64") or builder.build_debian_image("x86_64")
        tmp = tempfile.mkdtemp(prefix="pylima-bench-pf-")
        env["LIMA_HOME"] = tmp
        name = "benchpf"
        entry = json.dumps(builder.images_entry(img))
        print("starting a temporary instance (not timed) ...", file=sys.stderr)
        sh(str(BIN / "limactl"), "start", "--tty=false", f"--name={name}",
           "--set", f".images = [{entry}] | .mounts = []", "template:debian-12", env=env)
    try:
        info = json.loads(sh(str(BIN / "limactl"), "list", "--json", name, env=env).stdout)
        inst_dir = Path(info["dir"])
        guest(env, name, f"head -c {args.mb}M /dev/zero > /tmp/pf-blob")
        p_any, p_lo, p_raw, p_lat_any, p_lat_lo = 18201, 18202, free_port(), 18203, 18204
        # the appearance delay: from the guest's listen() (after the command that
        # starts it returns) to the first answer on the host
        delays = []
        for port, bind in ((p_lat_any, "0.0.0.0"), (p_lat_lo, "127.0.0.1")):
            start_server(env, name, "byte", bind, port)
            delays.append(wait_connect(port))
        start_server(env, name, "blob", "0.0.0.0", p_any)
        start_server(env, name, "blob", "127.0.0.1", p_lo)
        for p in (p_any, p_lo):
            wait_port(p)
        out = hmp(inst_dir, f"hostfwd_add net0 tcp:127.0.0.1:{p_raw}-:{p_any}")
        if out.strip():
            raise SystemExit(f"raw hostfwd failed: {out}")
        p_raw_lat = free_port()
        hmp(inst_dir, f"hostfwd_add net0 tcp:127.0.0.1:{p_raw_lat}-:{p_lat_any}")
        p_ssh = free_port()
        sh("ssh", "-F", str(inst_dir / "ssh.config"), "-O", "forward", "-L",
           f"127.0.0.1:{p_ssh}:127.0.0.1:{p_any}", f"lima-{name}", env=env)
        results = {}
        for label, port in (("raw", p_raw), ("direct", p_any), ("relay", p_lo),
                            ("ssh", p_ssh)):
            throughput(port)  # warm-up
            results[label] = statistics.median(throughput(port) for _ in range(3))
        lat = {"raw": latency_ms(p_raw_lat), "direct": latency_ms(p_lat_any),
               "relay": latency_ms(p_lat_lo)}
        print(f"throughput ({args.mb} MB from the guest, median of 3):")
        for label in ("raw", "direct", "relay", "ssh"):
            print(f"  {label:7s} {results[label]:7.1f} MB/s   ratio to raw "
                  f"{results[label] / results['raw']:.2f}x")
        print("connection set-up latency (connect -> first byte, median of 20):")
        for label in ("raw", "direct", "relay"):
            print(f"  {label:7s} {lat[label]:7.2f} ms     ratio to raw "
                  f"{lat[label] / lat['raw']:.2f}x")
        print(f"forward appears after the guest's listen(): {delays[0]:.2f} s (0.0.0.0), "
              f"{delays[1]:.2f} s (127.0.0.1)")
    finally:
        if tmp:
            sh(str(BIN / "limactl"), "stop", "-f", name, env=env, check=False)
            shutil.rmtree(tmp, ignore_errors=True)


def wait_port(port: int, timeout: float = 60.0) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} was not forwarded within {timeout} s")


if __name__ == "__main__":
    main()
