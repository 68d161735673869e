"""`mountInotify`: changes made on the host under a writable mount wake the guest's
inotify watchers.

No mount type carries the host's file events into the guest (9p, virtiofs and sshfs
all see the new contents, but nobody tells the guest kernel), so file watchers in the
guest (webpack, pytest-watch, an editor's reload) never fire. As Lima does, the host
agent watches the host directories of the writable mounts and sends each changed
path, with its modification time, to the guest agent, which sets the guest file's
times to it: that change is the inotify event (IN_ATTRIB) the guest's watchers see.

Setting the times in the guest writes them back through the mount to the same
value, which comes back here as one more event; an event whose path and mtime were
sent last is dropped, so nothing loops. Events are coalesced per path and sent at
most MAX_EVENTS_PER_SECOND a second: a `git checkout` of thousands of files reaches
the guest as a bounded stream, the newest mtime of each path winning.

The host side is the watchdog library (inotify on Linux, FSEvents on macOS), imported
only when an instance asks for this.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("pylima")

MAX_EVENTS_PER_SECOND = 200
# Lima's cache bound: forget what was sent once this many paths are remembered.
SENT_CACHE_SIZE = 10000


@dataclass(frozen=True)
class WatchedMount:
    location: str  # the host directory as the user wrote it (after ~ expansion)
    real: str  # the same, symbolic links resolved: what the watcher reports
    mount_point: str  # where the guest sees it


def watched_mounts(cfg: dict[str, Any]) -> list[WatchedMount]:
    """The writable mounts of a config whose host directory exists (Lima watches only
    writable ones: a read-only mount cannot be changed from the guest, but the host
    can change it; Lima's choice is kept)."""
    out = []
    for m in cfg.get("mounts") or []:
        if not m.get("writable"):
            continue
        location = os.path.expanduser(str(m["location"]))
        if not os.path.isdir(location):
            continue
        out.append(WatchedMount(location, os.path.realpath(location),
                                str(m.get("mountPoint") or location)))
    return out


def guest_path(host_path: str, mounts: list[WatchedMount]) -> str | None:
    """The guest's name for a host path the watcher reported, or None when it lies
    outside every mount (the longest mount wins where mounts nest)."""
    best: tuple[str, WatchedMount] | None = None
    for m in mounts:
        for root in (m.real, m.location):
            root = root.rstrip("/") or "/"
            inside = host_path == root or host_path.startswith(root.rstrip("/") + "/")
            if inside and (best is None or len(root) > len(best[0])):
                best = (root, m)
    if best is None:
        return None
    root, m = best
    suffix = host_path[len(root.rstrip("/")):]
    return (m.mount_point.rstrip("/") + suffix) or "/"


class Coalescer:
    """Pending events, one per guest path (the newest mtime wins), and what was sent
    last per path (so the echo of the guest's own change is dropped)."""

    def __init__(self) -> None:
        self.pending: dict[str, float] = {}
        self.sent: dict[str, float] = {}

    def add(self, path: str, mtime: float) -> None:
        if self.sent.get(path) == mtime and path not in self.pending:
            return
        self.pending[path] = mtime

    def take(self, limit: int) -> list[tuple[str, float]]:
        out = []
        for path in list(self.pending)[:limit]:
            mtime = self.pending.pop(path)
            if self.sent.get(path) == mtime:
                continue
            out.append((path, mtime))
            if len(self.sent) >= SENT_CACHE_SIZE:
                self.sent.clear()
            self.sent[path] = mtime
        return out


async def forward_host_changes(cfg: dict[str, Any],
                               send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
    """Watch the writable mounts and send `inotify` messages until cancelled."""
    mounts = watched_mounts(cfg)
    if not mounts:
        log.info("mountInotify: no writable mount to watch")
        return
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    loop = asyncio.get_running_loop()
    coalescer = Coalescer()
    wake = asyncio.Event()

    def on_path(host_path: str) -> None:  # in the event loop
        try:
            mtime = os.stat(host_path).st_mtime
        except OSError:
            return  # gone again (Lima sends nothing for a removed path either)
        target = guest_path(host_path, mounts)
        if target is not None:
            coalescer.add(target, mtime)
            wake.set()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:  # watchdog's thread
            if event.event_type in ("opened", "closed_no_write"):
                return  # reads change nothing
            for p in (event.src_path, getattr(event, "dest_path", "")):
                if p:
                    loop.call_soon_threadsafe(on_path, os.fsdecode(p))

    observer = Observer()
    for m in mounts:
        log.info("enable inotify for writable mount: %s", m.location)
        observer.schedule(Handler(), m.real, recursive=True)
    observer.daemon = True
    observer.start()
    try:
        while True:
            await wake.wait()
            wake.clear()
            batch = coalescer.take(MAX_EVENTS_PER_SECOND // 10)
            for path, mtime in batch:
                await send({"op": "inotify", "path": path, "time": mtime})
            if coalescer.pending:
                wake.set()
            await asyncio.sleep(0.1)  # at most MAX_EVENTS_PER_SECOND a second
    finally:
        observer.stop()
        await asyncio.to_thread(observer.join, 5)
