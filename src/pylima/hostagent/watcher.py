"""Reading host agent events back (`limactl watch`): follow `ha.stdout.log` (and, for
`--verbose`, `ha.stderr.log`) of instances, and render each event as Lima does.

The pure part takes one log line and gives the event in Lima's shape: Lima decodes
each line into its `events.Event` struct and encodes it again, so fields it does not
know (pylima's `phase`) are dropped, empty ones omitted and the keys come in the
struct's order; times keep the offset they were written with, in RFC 3339 with the
fraction's trailing zeros removed. The outer part follows files the way Lima's tail
does: from the start, across re-creation (a start writes fresh logs) and truncation,
a line only once it is complete.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from dataclasses import dataclass
from typing import Any

_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
                      r"([Zz]|[+-]\d{2}:\d{2})$")


class EventDecodeError(ValueError):
    """A line of ha.stdout.log that is not an event."""


@dataclass(frozen=True)
class EventTime:
    """A time as written in an event: the wall clock in its own offset, plus nanoseconds
    (Python's datetime keeps only microseconds)."""

    wall: _dt.datetime  # timezone-aware, microsecond 0
    nanos: int = 0

    @classmethod
    def zero(cls) -> EventTime:
        return cls(_dt.datetime(1, 1, 1, tzinfo=_dt.UTC))

    @classmethod
    def parse(cls, text: str) -> EventTime:
        m = _RFC3339.match(text)
        if not m:
            raise EventDecodeError(f"parsing time {json.dumps(text)} as RFC 3339: bad format")
        y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
        frac, zone = m.group(7), m.group(8)
        if zone in ("Z", "z"):
            tz = _dt.UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            tz = _dt.timezone(sign * _dt.timedelta(hours=int(zone[1:3]),
                                                    minutes=int(zone[4:6])))
        try:
            wall = _dt.datetime(y, mo, d, h, mi, s, tzinfo=tz)
        except ValueError as e:
            raise EventDecodeError(f"parsing time {json.dumps(text)}: {e}") from e
        nanos = int(frac[1:10].ljust(9, "0")) if frac else 0
        return cls(wall, nanos)

    def is_zero(self) -> bool:
        return self.wall.year == 1 and self.wall.utcoffset() == _dt.timedelta(0) and \
            self.wall.replace(tzinfo=None) == _dt.datetime(1, 1, 1) and self.nanos == 0

    def timestamp(self) -> float:
        return self.wall.timestamp() + self.nanos / 1e9

    def rfc3339nano(self) -> str:
        """Go's time.RFC3339Nano: no trailing zeros in the fraction, `Z` for offset 0."""
        w = self.wall
        text = f"{w.year:04d}-{w.month:02d}-{w.day:02d}T{w.hour:02d}:{w.minute:02d}:" \
            f"{w.second:02d}"
        if self.nanos:
            text += "." + f"{self.nanos:09d}".rstrip("0")
        offset = self.wall.utcoffset() or _dt.timedelta(0)
        if not offset:
            return text + "Z"
        minutes = int(offset.total_seconds()) // 60
        sign = "-" if minutes < 0 else "+"
        minutes = abs(minutes)
        return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"

    def datetime_text(self) -> str:
        """Go's time.DateTime layout, in the event's own offset."""
        return self.rfc3339nano()[:19].replace("T", " ")


@dataclass
class Event:
    time: EventTime
    status: dict[str, Any]  # Lima's fields only, empty ones omitted, in Lima's order


def _want(value: Any, kind: type | tuple[type, ...], field: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) and kind is int:
        raise EventDecodeError(f"field {field}: a bool is not a number")
    if not isinstance(value, kind):
        raise EventDecodeError(f"field {field}: wrong type {type(value).__name__}")
    return value


def _struct(raw: Any, fields: list[tuple[str, type, bool]], where: str) -> dict[str, Any]:
    """`raw` as Lima's struct: `fields` are (name, type, omitted when empty)."""
    raw = _want(raw, dict, where) or {}
    out: dict[str, Any] = {}
    for name, kind, omitempty in fields:
        value = _want(raw.get(name), kind, f"{where}.{name}")
        if value is None:
            value = kind()
        if omitempty and not value:
            continue
        out[name] = value
    return out


_Fields = list[tuple[str, type, bool]]
_CLOUD_INIT: _Fields = [("logLine", str, True), ("completed", bool, True), ("active", bool, True)]
_PORT_FORWARD: _Fields = [("type", str, False), ("protocol", str, True), ("guestAddr", str, True),
                 ("hostAddr", str, True), ("error", str, True)]
_VSOCK: _Fields = [("type", str, False), ("hostAddr", str, True), ("vsockPort", int, True),
          ("reason", str, True)]


def decode_event(line: str) -> Event:
    """One line of ha.stdout.log as Lima decodes it; EventDecodeError when it is not."""
    try:
        raw = json.loads(line)
    except ValueError as e:
        raise EventDecodeError(str(e)) from e
    if not isinstance(raw, dict):
        raise EventDecodeError("not a JSON object")
    t = _want(raw.get("time"), str, "time")
    when = EventTime.parse(t) if t is not None else EventTime.zero()
    st = _want(raw.get("status"), dict, "status") or {}
    status: dict[str, Any] = {}
    for name in ("running", "degraded", "exiting"):
        if _want(st.get(name), bool, name):
            status[name] = True
    errors = _want(st.get("errors"), list, "errors") or []
    for item in errors:
        _want(item, str, "errors")
    if errors:
        status["errors"] = list(errors)
    port = _want(st.get("sshLocalPort"), int, "sshLocalPort")
    if port:
        status["sshLocalPort"] = port
    for name, fields in (("cloudInitProgress", _CLOUD_INIT), ("portForward", _PORT_FORWARD),
                         ("vsock", _VSOCK)):
        if st.get(name) is not None:
            status[name] = _struct(st[name], fields, name)
    return Event(when, status)


def go_json(value: Any) -> str:
    """Compact JSON as Go's encoding/json writes it (HTML characters escaped)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return text


def event_json(instance: str, ev: Event) -> str:
    """`limactl watch --json`: {"instance": NAME, "event": {"time": ..., "status": ...}}."""
    return go_json({"instance": instance,
                    "event": {"time": ev.time.rfc3339nano(), "status": ev.status}})


def event_lines(instance: str, ev: Event) -> list[str]:
    """`limactl watch`'s human-readable lines for one event (none for some events)."""
    st = ev.status
    msgs: list[str] = []
    if st.get("running"):
        msgs.append("running (degraded)" if st.get("degraded") else "running")
    if st.get("exiting"):
        msgs.append("exiting")
    if st.get("sshLocalPort"):
        msgs.append(f"ssh available on port {st['sshLocalPort']}")
    msgs += [f"error: {e}" for e in st.get("errors") or []]
    ci = st.get("cloudInitProgress")
    if ci is not None:
        if ci.get("completed"):
            msgs.append("cloud-init completed")
        elif ci.get("logLine"):
            msgs.append(f"cloud-init: {ci['logLine']}")
    pf = st.get("portForward")
    if pf is not None:
        proto, guest = pf.get("protocol", ""), pf.get("guestAddr", "")
        kind = pf.get("type")
        if kind == "forwarding":
            msgs.append(f"forwarding {proto} {guest} to {pf.get('hostAddr', '')}")
        elif kind == "not-forwarding":
            msgs.append(f"not forwarding {proto} {guest}")
        elif kind == "stopping":
            msgs.append(f"stopping forwarding {proto} {guest}")
        elif kind == "failed":
            msgs.append(f"failed to forward {proto} {guest}: {pf.get('error', '')}")
    vs = st.get("vsock")
    if vs is not None:
        kind = vs.get("type")
        if kind == "started":
            msgs.append(f"started vsock forwarder: {vs.get('hostAddr', '')} -> "
                        f"vsock:{vs.get('vsockPort', 0)}")
        elif kind == "skipped":
            msgs.append(f"skipped vsock forwarder: {vs.get('reason', '')}")
        elif kind == "failed":
            msgs.append(f"failed to start vsock forwarder: {vs.get('reason', '')}")
    stamp = ev.time.datetime_text()
    return [f"{stamp} {instance} | {m}" for m in msgs]


# ---- the host agent's log lines (ha.stderr.log), for --verbose ----

_LOGFMT = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_log_line(line: str) -> dict[str, Any] | None:
    """A log line of the host agent as fields: logrus' JSON (Lima's host agent) or its
    text format (pylima's, `time="..." level=info msg="..."`). None when it is neither."""
    text = line.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            return None
        return obj if isinstance(obj, dict) and isinstance(obj.get("level"), str) else None
    fields: dict[str, Any] = {}
    for key, value in _LOGFMT.findall(text):
        if value.startswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        fields[key] = value
    return fields if "level" in fields and "msg" in fields else None


def log_time(fields: dict[str, Any]) -> float | None:
    t = fields.get("time")
    if not isinstance(t, str):
        return None
    try:
        return EventTime.parse(t).timestamp()
    except EventDecodeError:
        return None


# ---- following files ----

class LogFollower:
    """Complete lines appended to `path`, read from its start; a file that is replaced
    (another inode) or truncated is read again from its start, as Lima's tail does."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._f: Any = None
        self._ident: tuple[int, int] | None = None
        self._buf = b""

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
        self._f, self._ident, self._buf = None, None, b""

    def _open(self) -> bool:
        try:
            self._f = open(self.path, "rb")  # noqa: SIM115 - kept open between polls
        except OSError:
            return False
        st = os.fstat(self._f.fileno())
        self._ident = (st.st_dev, st.st_ino)
        self._buf = b""
        return True

    def poll(self) -> list[str]:
        lines: list[str] = []
        if self._f is None and not self._open():
            return lines
        lines += self._drain()
        try:
            st = os.stat(self.path)
        except OSError:
            return lines  # removed: keep the old file until a new one appears
        if (st.st_dev, st.st_ino) != self._ident:
            self.close()
            if self._open():
                lines += self._drain()
        elif st.st_size < self._f.tell():  # truncated
            self._f.seek(0)
            self._buf = b""
            lines += self._drain()
        return lines

    def _drain(self) -> list[str]:
        data = self._f.read()
        if not data:
            return []
        self._buf += data
        *complete, self._buf = self._buf.split(b"\n")
        return [ln.decode("utf-8", errors="replace").rstrip("\r") for ln in complete]
