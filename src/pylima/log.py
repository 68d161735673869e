"""Logging set-up matching Lima's logrus output.

On a terminal: `WARN[0000] message  key=value` (coloured). Otherwise logrus' text
format: `time="2026-01-02T03:04:05Z" level=warning msg="message" key=value`, values
quoted Go-style when they need it. `--log-format json` gives one JSON object a line.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import sys
import time
from typing import Any

_START = time.monotonic()

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
_COLORS = {"debug": 37, "info": 36, "warning": 33, "error": 31, "fatal": 31}
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9\-._/@^+]+$")


def go_quote(value: str) -> str:
    """Quote like Go's strconv.Quote (close enough for log output)."""
    return json.dumps(value, ensure_ascii=False)


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else (
        json.dumps(value) if isinstance(value, (dict, list)) else str(value))
    return text if _PLAIN_VALUE.match(text) else go_quote(text)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return dict(getattr(record, "fields", {}) or {})


def _timestamp(record: logging.LogRecord) -> str:
    t = _dt.datetime.fromtimestamp(record.created).astimezone()
    s = t.isoformat(timespec="seconds")
    return s.replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelno, "info")
        parts = [f"time={go_quote(_timestamp(record))}", f"level={level}",
                 f"msg={go_quote(record.getMessage())}"]
        parts += [f"{k}={_logfmt_value(v)}" for k, v in sorted(_fields(record).items())]
        return " ".join(parts)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = dict(_fields(record))
        data.update(level=_LEVELS.get(record.levelno, "info"), msg=record.getMessage(),
                    time=_timestamp(record))
        return json.dumps(data, sort_keys=True, ensure_ascii=False)


class TerminalFormatter(logging.Formatter):
    def __init__(self, color: bool) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        level = _LEVELS.get(record.levelno, "info")
        tag = level.upper()[:4]
        if self.color:
            tag = f"\x1b[{_COLORS[level]}m{tag}\x1b[0m"
        msg = record.getMessage()
        fields = _fields(record)
        line = f"{tag}[{int(time.monotonic() - _START):04d}] {msg}"
        if fields:
            line = f"{tag}[{int(time.monotonic() - _START):04d}] {msg:<44}"
            for k, v in sorted(fields.items()):
                key = f"\x1b[{_COLORS[level]}m{k}\x1b[0m" if self.color else k
                line += f" {key}={_logfmt_value(v)}"
        return line


def setup(debug: bool = False, log_format: str = "text", stream: Any = None) -> None:
    """Configure the root logger once per process (CLI entry points call this)."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    elif stream.isatty():
        handler.setFormatter(TerminalFormatter(color=True))
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def with_fields(logger: logging.Logger, level: int, msg: str, **fields: Any) -> None:
    """Log `msg` with logrus-style structured fields."""
    logger.log(level, msg, extra={"fields": fields})
