"""The client side of ha.sock (see `hostagent.agent`): one HTTP/1.1 request over the
instance's unix socket, answered with JSON. Blocking and small, for `limactl`."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from pylima.errors import LimaError, LockError
from pylima.store import dirs


def call(inst_dir: Path, name: str, method: str, path: str,
         body: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """The JSON reply of `method path`; LimaError (LockError for 409) with the host
    agent's message when it answers with an error, or when it cannot be reached."""
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: lima-hostagent\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n").encode()
    sock_path = inst_dir / dirs.HA_SOCK
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock_path))
            s.sendall(head + payload)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise LimaError(f"cannot reach the host agent of instance `{name}` at "
                        f"{sock_path}: {why.lower()}") from e
    raw = b"".join(chunks)
    header, _, content = raw.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].decode(errors="replace").split()
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else 0
    try:
        reply = json.loads(content or b"{}")
    except ValueError:
        reply = {}
    if not isinstance(reply, dict):
        reply = {}
    if status == 404:
        raise LimaError(f"the host agent of instance `{name}` does not serve {path}",
                        hint=f"it predates this pylima: restart it with `limactl restart "
                        f"{name}`")
    if status != 200:
        message = str(reply.get("message") or f"host agent answered {status}")
        hint = reply.get("hint") or None
        raise (LockError if status == 409 else LimaError)(message, hint)
    return reply
