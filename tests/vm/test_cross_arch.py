"""Other architectures on this host, with real guests under QEMU (TCG).

Slow mode: one aarch64 guest (the local Debian 12 arm64 image under
qemu-system-aarch64) serves the slow-mode tests: `uname -m`, a 9p mount, a static
port forward. Fast mode (QEMU user-mode emulation registered with binfmt_misc in
an x86_64 guest) is shown in the docker guest of test_containers, which has it on:
a real arm64 binary both directly (`limactl shell`) and as an arm64 image.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import Host, _share_image

ARM = "armvm"
FAST = "fastvm"
GUEST_SHARE = "/mnt/pylima-share"
GUEST_HTTP_PORT = 8080


def _image_entry(arch: str, variant: str = "") -> dict:
    from pylima.images import builder

    img = builder.find_cached_image(arch=arch, variant=variant)
    if img is None:
        ok, why = builder.can_build(arch)
        if not ok:
            pytest.fail(f"cannot build the {arch} image{f' ({variant})' if variant else ''}: "
                        f"{why}")
        img = builder.build_debian_image(arch=arch, variant=variant)
    entry = builder.images_entry(img)
    return _share_image(entry) if os.getuid() == 0 else entry


def _free_port() -> int:
    from pylima.sshutil import free_port

    return free_port()


def _stop_and_delete(h: Host, name: str) -> None:
    h.limactl("stop", "-f", name)
    h.limactl("delete", "-f", name)


# ------------------------------------------------------------------ slow mode


class SlowGuest:
    def __init__(self, host: Host, share: Path, host_port: int):
        self.host = host
        self.share = share
        self.host_port = host_port


@pytest.fixture(scope="class")
def arm_guest(unprivileged_host: Host) -> Iterator[SlowGuest]:
    h = unprivileged_host
    entry = _image_entry("aarch64")
    share = h.home / "pylima-arch-share"
    h.run("mkdir", "-p", str(share))
    host_port = _free_port()
    mounts = [{"location": str(share), "mountPoint": GUEST_SHARE, "writable": True}]
    forwards = [{"guestPort": GUEST_HTTP_PORT, "hostPort": host_port}]
    # 9p (virtio-9p on the virt board); the Debian template otherwise picks
    # reverse-sshfs, since Debian's cloud kernels lack 9p (the local image has it).
    expr = (f".images = [{json.dumps(entry)}] | .mounts = {json.dumps(mounts)}"
            ' | .mountType = "9p" | .mountTypesUnsupported = []'
            f" | .portForwards = {json.dumps(forwards)}")
    r = h.limactl("start", f"--name={ARM}", "--tty=false", "--arch=aarch64", "--cpus=2",
                  "--memory=2", "--set", expr, "template:debian-12", timeout=2400)
    if r.returncode != 0:
        log = h.run("sh", "-c", f"tail -n 40 $LIMA_HOME/{ARM}/ha.stderr.log "
                    f"$LIMA_HOME/{ARM}/serial*.log").stdout
        _stop_and_delete(h, ARM)
        pytest.fail(f"aarch64 guest did not start:\n{r.stderr[-4000:]}\n{log}")
    assert "READY" in r.stderr
    yield SlowGuest(h, share, host_port)
    _stop_and_delete(h, ARM)


class TestSlowMode:
    def test_guest_is_aarch64(self, arm_guest: SlowGuest) -> None:
        r = arm_guest.host.lima("uname", "-m", env={"LIMA_INSTANCE": ARM})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "aarch64"

    def test_list_shows_the_arch(self, arm_guest: SlowGuest) -> None:
        r = arm_guest.host.limactl("list", "--json", ARM)
        info = json.loads(r.stdout)
        assert info["arch"] == "aarch64" and info["status"] == "Running"
        table = arm_guest.host.limactl("list").stdout
        row = next(ln for ln in table.splitlines() if ln.startswith(ARM + " "))
        assert "aarch64" in row.split()

    def test_mount_both_ways(self, arm_guest: SlowGuest) -> None:
        h = arm_guest.host
        h.run("sh", "-c", f"echo from-host > {arm_guest.share}/in.txt")
        r = h.limactl("shell", ARM, "cat", f"{GUEST_SHARE}/in.txt")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "from-host\n"
        r = h.limactl("shell", ARM, "sh", "-c", f"echo from-guest > {GUEST_SHARE}/out.txt")
        assert r.returncode == 0, r.stderr
        assert h.run("cat", str(arm_guest.share / "out.txt")).stdout == "from-guest\n"

    def test_port_forward_reaches_guest_http_server(self, arm_guest: SlowGuest) -> None:
        h = arm_guest.host
        r = h.limactl("shell", ARM, "sh", "-c",
                      "mkdir -p /tmp/www && echo hello-from-aarch64 > /tmp/www/index.html && "
                      f"cd /tmp/www && setsid -f python3 -m http.server {GUEST_HTTP_PORT} "
                      ">/tmp/www.log 2>&1")
        assert r.returncode == 0, r.stderr
        url = f"http://127.0.0.1:{arm_guest.host_port}/index.html"
        deadline = time.monotonic() + 180
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    assert resp.read().decode() == "hello-from-aarch64\n"
                    return
            except (OSError, ValueError) as e:
                last = e
                time.sleep(2)
        pytest.fail(f"{url} not reachable from the host: {last}")
