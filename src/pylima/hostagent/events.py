"""Host agent events, in Lima's JSON shape (one object a line in ha.stdout.log):
{"time": "...", "status": {"running": true, "degraded": false, "exiting": false,
"errors": [...], "sshLocalPort": 60022}}. pylima adds "phase" inside status while
booting (Lima's readers ignore fields they don't know)."""

from __future__ import annotations

import datetime as _dt
import json
import sys
from typing import IO, Any


def now_rfc3339() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds") \
        .replace("+00:00", "Z")


def make_event(**status: Any) -> dict[str, Any]:
    clean = {k: v for k, v in status.items() if v not in (None, False, [], "", 0)}
    return {"time": now_rfc3339(), "status": clean}


def emit(stream: IO[str] | None = None, **status: Any) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps(make_event(**status)) + "\n")
    stream.flush()


def parse_event(line: str) -> dict[str, Any] | None:
    try:
        ev = json.loads(line)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) and isinstance(ev.get("status"), dict) else None
