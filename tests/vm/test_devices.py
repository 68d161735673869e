"""Devices of a guest that the other shared guests do not have: a VNC display, a TPM
(swtpm on the host), UEFI firmware from `firmware.images`, X11 forwarded to the host's
X server (`ssh.forwardX11`) and a swap disk.

One boot of its own, for these together: the shared guests boot their kernel
directly (no firmware) and headless, and must stay so for the tests that measure or
snapshot them (a snapshot of a guest with a TPM also saves swtpm's state, and the
firmware adds seconds to every boot under emulation). The firmware is a copy of the
host's OVMF, served gzipped by a local HTTP server with its digest. X11 is here and not
on the default guest because `forwardX11` makes every session without DISPLAY warn.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.server
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import VENV_BIN, Host, eventually, proc_cmdlines

NAME = "vmdevices"
OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
SWAP_DISK = "vmswap"
# The host's X server's screen: a size no default has, so that the guest's answer is
# known to come from this server.
X_SCREEN = (1234, 567)

# A minimal X11 client for the guest (its image has python3 and xauth, no Xlib): the
# connection setup of the X protocol to $DISPLAY with the cookie sshd stored through
# xauth; prints the server's vendor and the first screen's size.
X_CLIENT = r"""
import os, socket, struct, subprocess, sys
display = os.environ["DISPLAY"]
host, _, rest = display.rpartition(":")
number = int(rest.split(".")[0])
cookie = None
for line in subprocess.run(["xauth", "list"], capture_output=True, text=True).stdout.splitlines():
    words = line.split()
    if len(words) == 3 and words[0].endswith(f":{number}") and words[1] == "MIT-MAGIC-COOKIE-1":
        cookie = bytes.fromhex(words[2])
if cookie is None:
    sys.exit("no cookie for " + display)
s = socket.create_connection((host or "localhost", 6000 + number), timeout=30)
name = b"MIT-MAGIC-COOKIE-1"
pad = lambda b: b + b"\0" * (-len(b) % 4)
s.sendall(struct.pack("<BxHHHHxx", 0x6C, 11, 0, len(name), len(cookie)) + pad(name) + pad(cookie))
def recv(n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            sys.exit("connection closed")
        data += chunk
    return data
status, reason_len, major, minor, extra = struct.unpack("<BBHHH", recv(8))
body = recv(extra * 4)
if status != 1:
    sys.exit("refused: " + body[:reason_len].decode(errors="replace"))
vendor_len, = struct.unpack_from("<H", body, 16)
formats = body[21]
screen = 32 + vendor_len + (-vendor_len % 4) + 8 * formats
width, height = struct.unpack_from("<HH", body, screen + 20)
print(body[32:32 + vendor_len].decode(), f"{width}x{height}", sep="\n")
"""


def images_set(entry: dict) -> str:
    import json

    return f".images = [{json.dumps(entry)}] | .mounts = []"


def instance_dir(h: Host) -> Path:
    return Path(h.env.get("LIMA_HOME") or h.home / ".lima") / NAME


def lima(h: Host, *args: str):  # type: ignore[no-untyped-def]
    return h.lima(*args, env={"LIMA_INSTANCE": NAME})


def swtpm_of(d: Path) -> list[str]:
    """Command lines of the swtpm processes serving instance directory `d`."""
    return [c for c in process_lines(str(d)) if c.split()[0].endswith("/swtpm")]


def process_lines(needle: str) -> list[str]:
    return [cmd for _, cmd in proc_cmdlines() if needle in cmd]


class FirmwareServer:
    """Serves `root` on 127.0.0.1 and records the paths asked for."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                outer.requests.append(self.path)
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FirmwareServer, str]]:
    if not OVMF.is_file():
        pytest.skip(f"{OVMF} is not installed (ovmf)")
    root = tmp_path_factory.mktemp("firmware")
    data = gzip.compress(OVMF.read_bytes())
    (root / "OVMF_CODE.fd.gz").write_bytes(data)
    srv = FirmwareServer(root)
    yield srv, "sha256:" + hashlib.sha256(data).hexdigest()
    srv.close()


@pytest.fixture(scope="module")
def x_server(unprivileged_host: Host) -> Iterator[dict[str, str]]:
    """An X server of the test user's (Xvfb, on a display it picks itself) with a
    cookie in its own Xauthority file, as a desktop session has; the environment that
    points at it."""
    if shutil.which("Xvfb") is None or shutil.which("xauth") is None:
        pytest.fail("Xvfb or xauth is not installed (scripts/setup installs them)")
    h = unprivileged_host
    auth = h.home / f".pylima-xauth-{os.getpid()}"
    h.run("touch", str(auth))
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(
        h._argv(["Xvfb", "-displayfd", str(write_fd), "-auth", str(auth), "-nolisten", "tcp",
                 "-screen", "0", f"{X_SCREEN[0]}x{X_SCREEN[1]}x24"]),
        pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()
    try:
        assert number.isdigit(), "Xvfb did not report its display"
        env = {"DISPLAY": f":{number}", "XAUTHORITY": str(auth)}
        r = h.run("xauth", "add", f":{number}", "MIT-MAGIC-COOKIE-1", secrets.token_hex(16),
                  env=env)
        assert r.returncode == 0, r.stderr
        yield env
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=30)
        h.run("rm", "-f", str(auth))


@pytest.fixture(scope="module")
def guest(unprivileged_host: Host, shared_image: dict,
          firmware: tuple[FirmwareServer, str], x_server: dict[str, str]) -> Iterator[Host]:
    import json

    if shutil.which("swtpm") is None:
        pytest.fail("swtpm is not installed (scripts/setup installs it)")
    srv, digest = firmware
    h = unprivileged_host
    h.limactl("disk", "delete", "--force", SWAP_DISK)
    r = h.limactl("disk", "create", SWAP_DISK, "--size", "128MiB")
    assert r.returncode == 0, r.stderr
    images = [{"location": srv.url("/OVMF_CODE.fd.gz"), "arch": "x86_64", "digest": digest}]
    disks = [{"name": SWAP_DISK, "fsType": "swap"}]
    r = h.limactl("start", f"--name={NAME}", "--tty=false", "--cpus=2", "--memory=1",
                  "--set", images_set(shared_image) + ' | .tpm = true'
                  ' | .video.display = "vnc" | .ssh.forwardX11 = true'
                  f" | .firmware.images = {json.dumps(images)}"
                  f" | .additionalDisks = {json.dumps(disks)}",
                  "template:debian-12", timeout=1500, env=x_server)
    assert r.returncode == 0, r.stdout + r.stderr
    yield h
    h.limactl("stop", "-f", NAME)
    h.limactl("delete", "-f", NAME)
    h.limactl("disk", "delete", "--force", SWAP_DISK)


def test_firmware_images_downloaded_and_booted(guest: Host,
                                               firmware: tuple[FirmwareServer, str]) -> None:
    srv, _ = firmware
    assert "/OVMF_CODE.fd.gz" in srv.requests
    code = instance_dir(guest) / "qemu-efi-code.fd"
    assert code.read_bytes() == OVMF.read_bytes()  # decompressed, digest checked
    qemu = process_lines(f"lima-{NAME}")
    assert any(f"if=pflash,format=raw,unit=0,readonly=on,file={code}" in c for c in qemu), qemu
    # the guest came up through UEFI (its kernel loaded by the firmware)
    r = lima(guest, "test", "-d", "/sys/firmware/efi")
    assert r.returncode == 0, r.stderr


def test_tpm_in_the_guest_with_swtpm_running(guest: Host) -> None:
    swtpm = swtpm_of(instance_dir(guest))
    assert len(swtpm) == 1 and "--tpm2" in swtpm[0], swtpm
    r = lima(guest, "sh", "-c", "ls /dev/tpm0 /dev/tpmrm0; "
             "cat /sys/class/tpm/tpm0/tpm_version_major")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/dev/tpmrm0" in r.stdout and r.stdout.split()[-1] == "2"


def test_x11_clients_in_the_guest_reach_the_hosts_x_server(
        guest: Host, x_server: dict[str, str]) -> None:
    """`ssh.forwardX11`: with DISPLAY (and its cookie) in the environment of the shell,
    an X client in the guest talks to the host's X server through ssh's forwarding,
    authenticated with the cookie sshd stored in the guest. Through the host agent's
    master connection the display is the one `limactl start` had (OpenSSH's
    multiplexing forwards to the master's DISPLAY): a shell without DISPLAY still
    reaches it, and is not told that forwarding is off."""
    r = guest.limactl("shell", NAME, "python3", "-c", X_CLIENT, env=x_server)
    assert r.returncode == 0, r.stdout + r.stderr
    vendor, size = r.stdout.splitlines()
    assert vendor and size == f"{X_SCREEN[0]}x{X_SCREEN[1]}", r.stdout
    r = guest.limactl("shell", NAME, "sh", "-c", 'echo "${DISPLAY:-none}"',
                      env={"DISPLAY": ""})
    assert r.stdout.strip().startswith("localhost:"), r.stdout
    assert "DISPLAY is not" not in r.stderr, r.stderr


def test_swap_disk_is_formatted_and_enabled(guest: Host) -> None:
    """An additional disk of fsType `swap`: partitioned, labelled and swapped on."""
    r = lima(guest, "sh", "-c", "swapon --show=NAME,TYPE --noheadings; "
             "sudo blkid -s LABEL -o value /dev/vdb1")
    assert r.stdout.split() == ["/dev/vdb1", "partition", f"lima-{SWAP_DISK}"], \
        r.stdout + r.stderr


def test_vnc_screen_with_the_written_password(guest: Host, tmp_path: Path) -> None:
    from vncdotool import api

    d = instance_dir(guest)
    display = (d / "vncdisplay").read_text()
    password = (d / "vncpassword").read_text()
    assert len(password) == 8
    assert (d / "vncpassword").stat().st_mode & 0o777 == 0o600
    host, _, number = display.rpartition(":")
    assert host == "127.0.0.1" and number.isdigit()
    client = api.connect(display, password=password, timeout=60)
    try:
        shot = tmp_path / "screen.png"
        client.captureScreen(str(shot))
    finally:
        client.disconnect()
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size[0] >= 640 and img.size[1] >= 400
    # a wrong password is refused
    from vncdotool.client import AuthenticationError

    bad = api.connect(display, password="wrong123", timeout=30)
    try:
        with pytest.raises(AuthenticationError):
            bad.captureScreen(str(tmp_path / "refused.png"))
    finally:
        with contextlib.suppress(Exception):  # the refused connection is gone
            bad.disconnect()
    assert not (tmp_path / "refused.png").exists()
    api.shutdown()


def test_stop_ends_swtpm_and_removes_the_vnc_files(guest: Host) -> None:
    r = guest.limactl("stop", NAME, timeout=600)
    assert r.returncode == 0, r.stderr
    d = instance_dir(guest)
    assert not (d / "vncdisplay").exists() and not (d / "vncpassword").exists()
    assert eventually(lambda: not swtpm_of(d), 10)
    assert (d / "swtpm").is_dir()  # the TPM's state stays with the instance


def test_tpm_without_swtpm_is_one_line(guest: Host) -> None:
    """With swtpm off PATH, `limactl start` says so in one line and starts nothing."""
    bin_dir = Path(tempfile.mkdtemp(prefix="pylima-noswtpm-", dir="/var/tmp"))
    os.chmod(bin_dir, 0o755)
    try:
        _start_without_swtpm(guest, bin_dir)
    finally:
        shutil.rmtree(bin_dir)


def _start_without_swtpm(guest: Host, bin_dir: Path) -> None:
    for entry in os.scandir("/usr/bin"):
        if not entry.name.startswith("swtpm"):
            os.symlink(entry.path, bin_dir / entry.name)
    path = f"{VENV_BIN}:/usr/sbin:{bin_dir}"  # /bin is /usr/bin here
    r = guest.limactl("start", "--tty=false", NAME, env={"PATH": path}, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    fatal = [ln for ln in r.stderr.splitlines() if "level=fatal" in ln]
    assert len(fatal) == 1 and "swtpm not found in PATH" in fatal[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not (instance_dir(guest) / "ha.pid").exists()
    assert not process_lines(f"lima-{NAME}")
