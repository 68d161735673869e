"""A minimal asyncio client for the QEMU Machine Protocol on a unix socket.

Enough for the host agent: the capabilities handshake, commands with replies, and
asynchronous events kept in a queue (SHUTDOWN, POWERDOWN, ...). Written here rather
than taken from the `qemu.qmp` package to keep pylima's dependencies to what it
already has; the protocol is a few JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from types import TracebackType
from typing import Any

from pylima.errors import LimaError

# Replies such as query-qmp-schema are one long line.
_LINE_LIMIT = 64 << 20


class QMPError(LimaError):
    """QEMU answered a command with an error, or the QMP connection failed."""

    def __init__(self, message: str, error_class: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.error_class = error_class


class QMPClient:
    """One QMP session. Use `async with QMPClient(path) as qmp:` or connect()/close()."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.greeting: dict[str, Any] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._next_id = 0

    async def connect(self, timeout: float = 5.0) -> None:
        """Connect, read the greeting and leave capabilities-negotiation mode. Retries
        until `timeout` while the socket is not there yet (QEMU still starting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    self.path, limit=_LINE_LIMIT)
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() >= deadline:
                    raise QMPError(f"cannot connect to QMP socket {self.path}: {e.strerror}",
                                   hint="is the QEMU process running?") from e
                await asyncio.sleep(0.05)
        try:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                greeting = await asyncio.wait_for(self._read_greeting(), remaining)
            except TimeoutError as e:
                raise QMPError(f"no QMP greeting on {self.path} in {timeout:g} s",
                               hint="another QMP client may hold the monitor") from e
            self.greeting = greeting["QMP"]
            await self.execute("qmp_capabilities")
        except BaseException:
            await self.close()
            raise

    async def _read_greeting(self) -> dict[str, Any]:
        """The greeting, after what QEMU had left to write to an earlier client.

        QEMU (7.2 at least) keeps a monitor's unsent output when its client goes, and
        writes it to the next client before that client's greeting: an event (a
        `RESUME`, a `STOP`) or the reply to a command whose sender closed first."""
        while True:
            msg = await self._read_message()
            if "QMP" in msg:
                return msg
            if "event" not in msg and "return" not in msg and "error" not in msg:
                raise QMPError(f"unexpected QMP greeting: {msg!r}")

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, ConnectionError):
                await writer.wait_closed()

    async def __aenter__(self) -> QMPClient:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _read_message(self) -> dict[str, Any]:
        if self._reader is None:
            raise QMPError("QMP connection is not open")
        try:
            line = await self._reader.readline()
        except (OSError, ValueError) as e:  # ValueError: a line over the limit
            raise QMPError(f"QMP connection failed: {e}") from e
        if not line:
            raise QMPError("QMP connection closed by QEMU")
        try:
            msg = json.loads(line)
        except ValueError as e:
            raise QMPError(f"malformed QMP message: {line[:200]!r}") from e
        if not isinstance(msg, dict):
            raise QMPError(f"malformed QMP message: {line[:200]!r}")
        return msg

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run `command` and return its "return" value; an "error" reply raises QMPError.
        Events that arrive meanwhile are queued in `self.events`."""
        async with self._lock:
            if self._writer is None:
                raise QMPError("QMP connection is not open")
            self._next_id += 1
            req_id = f"pylima-{self._next_id}"
            request: dict[str, Any] = {"execute": command, "id": req_id}
            if arguments:
                request["arguments"] = arguments
            try:
                self._writer.write(json.dumps(request).encode() + b"\n")
                await self._writer.drain()
            except OSError as e:
                raise QMPError(f"QMP connection failed: {e}") from e
            while True:
                msg = await self._read_message()
                if "event" in msg:
                    self.events.put_nowait(msg)
                    continue
                if msg.get("id") not in (req_id, None):
                    continue  # a late reply to a command whose caller went away
                if "error" in msg:
                    err = msg["error"] or {}
                    raise QMPError(f"QMP command `{command}` failed: {err.get('desc', err)}",
                                   error_class=str(err.get("class", "")))
                return msg.get("return")

    async def query_status(self) -> dict[str, Any]:
        """{"running": bool, "status": "running" | "paused" | "shutdown" | ...}."""
        result = await self.execute("query-status")
        return dict(result or {})

    async def system_powerdown(self) -> None:
        """Press the ACPI power button: the guest shuts down cleanly, if it listens."""
        await self.execute("system_powerdown")

    async def quit(self) -> None:
        """Stop QEMU at once. QEMU may close the socket before or right after its reply."""
        try:
            await self.execute("quit")
        except QMPError as e:
            if "closed" not in e.message:
                raise
        await self.close()
