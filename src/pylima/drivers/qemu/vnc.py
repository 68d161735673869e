"""`video.display: vnc` as Lima: QEMU's VNC server asks for a password that the host
agent generates and sets over QMP, and the instance directory says where the server
listens (`vncdisplay`) and with which password (`vncpassword`). PURE but for
`write_vnc_files`/`remove_vnc_files`."""

from __future__ import annotations

import contextlib
import os
import secrets
import string
from pathlib import Path

from pylima.drivers.qemu.argv import VNC_DISPLAY_FILE, VNC_PASSWORD_FILE
from pylima.errors import ConfigError

VNC_BASE_PORT = 5900


def generate_password(length: int = 8) -> str:
    """Lima's shape of password: letters and a quarter of digits, no symbols and no
    character twice (easy to copy by hand). VNC uses the first 8 characters only."""
    digits = length // 4
    chars = (secrets.SystemRandom().sample(string.digits, digits)
             + secrets.SystemRandom().sample(string.ascii_letters, length - digits))
    secrets.SystemRandom().shuffle(chars)
    return "".join(chars)


def parse_vnc_display(value: str) -> tuple[str, int, bool]:
    """`video.vnc.display` ("127.0.0.1:0,to=9") as (host, display number, whether
    QEMU may pick a higher number: `to=`)."""
    display, _, options = value.partition(",")
    host, sep, num = display.rpartition(":")
    if not sep or not num.isdigit():
        raise ConfigError(f"field `video.vnc.display` must be HOST:DISPLAY[,OPTIONS], "
                          f"not `{value}`")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(num), "to=" in options


def join_host_port(host: str, port: int | str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def vnc_display_text(host: str, number: int) -> str:
    """What `vncdisplay` holds: `127.0.0.1:0` (the display number, not the port)."""
    return join_host_port(host, number)


def write_vnc_files(inst_dir: Path, display: str, password: str) -> None:
    for name, text in ((VNC_PASSWORD_FILE, password), (VNC_DISPLAY_FILE, display)):
        path = inst_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)


def remove_vnc_files(inst_dir: Path) -> None:
    for name in (VNC_DISPLAY_FILE, VNC_PASSWORD_FILE):
        with contextlib.suppress(FileNotFoundError):
            (inst_dir / name).unlink()
