"""mountInotify, host side: which mounts are watched, how host paths become guest
paths, the coalescing/echo filter, and watchdog's real events reaching `send`; guest
side: the agent's `touch`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from pylima.guestagent.agent import touch
from pylima.hostagent.inotify import (
    MAX_EVENTS_PER_SECOND,
    Coalescer,
    WatchedMount,
    forward_host_changes,
    guest_path,
    watched_mounts,
)


def test_only_writable_existing_mounts_are_watched(tmp_path: Path) -> None:
    (tmp_path / "rw").mkdir()
    (tmp_path / "ro").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "rw")
    cfg = {"mounts": [{"location": str(tmp_path / "ro")},
                      {"location": str(tmp_path / "link"), "writable": True},
                      {"location": str(tmp_path / "missing"), "writable": True},
                      {"location": str(tmp_path / "rw"), "mountPoint": "/mnt/rw",
                       "writable": True}]}
    assert watched_mounts(cfg) == [
        WatchedMount(str(tmp_path / "link"), str(tmp_path / "rw"), str(tmp_path / "link")),
        WatchedMount(str(tmp_path / "rw"), str(tmp_path / "rw"), "/mnt/rw")]


def test_guest_paths() -> None:
    mounts = [WatchedMount("/home/u/proj", "/data/proj", "/home/u/proj"),
              WatchedMount("/srv", "/srv", "/mnt/srv"),
              WatchedMount("/srv/inner", "/srv/inner", "/inner")]
    assert guest_path("/data/proj/a/b.py", mounts) == "/home/u/proj/a/b.py"
    assert guest_path("/home/u/proj/x", mounts) == "/home/u/proj/x"
    assert guest_path("/srv/f", mounts) == "/mnt/srv/f"
    assert guest_path("/srv/inner/f", mounts) == "/inner/f"  # the longest mount wins
    assert guest_path("/srv", mounts) == "/mnt/srv"
    assert guest_path("/srvx/f", mounts) is None
    assert guest_path("/data/projx", mounts) is None


def test_coalescer_keeps_the_newest_and_drops_the_echo() -> None:
    c = Coalescer()
    c.add("/a", 1.0)
    c.add("/a", 2.0)
    c.add("/b", 1.0)
    assert c.take(1) == [("/a", 2.0)]
    assert c.take(10) == [("/b", 1.0)]
    c.add("/a", 2.0)  # the guest's touch written back: same mtime, dropped
    assert c.take(10) == []
    c.add("/a", 3.0)
    assert c.take(10) == [("/a", 3.0)]


def test_watchdog_events_reach_send_bounded(tmp_path: Path) -> None:
    rw = tmp_path / "rw"
    rw.mkdir()
    cfg = {"mounts": [{"location": str(rw), "mountPoint": "/mnt/rw", "writable": True}]}
    sent: list[dict[str, Any]] = []

    async def send(msg: dict[str, Any]) -> None:
        sent.append(msg)

    async def scenario() -> None:
        task = asyncio.create_task(forward_host_changes(cfg, send))
        await asyncio.sleep(0.5)  # the observer is up
        (rw / "one.txt").write_text("x")
        for i in range(MAX_EVENTS_PER_SECOND * 2):
            (rw / f"many-{i}").write_text("y")
        await asyncio.sleep(1.0)
        during = len({m["path"] for m in sent})
        for _ in range(40):
            if {f"/mnt/rw/many-{i}" for i in range(MAX_EVENTS_PER_SECOND * 2)} <= \
                    {m["path"] for m in sent}:
                break
            await asyncio.sleep(0.25)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # a second's worth at most within the first second (plus what was on the way)
        assert during <= MAX_EVENTS_PER_SECOND * 1.5 + 1, during

    asyncio.run(scenario())
    paths = {m["path"] for m in sent}
    assert "/mnt/rw/one.txt" in paths
    assert {f"/mnt/rw/many-{i}" for i in range(MAX_EVENTS_PER_SECOND * 2)} <= paths
    msg = next(m for m in sent if m["path"] == "/mnt/rw/one.txt")
    assert msg["op"] == "inotify" and msg["time"] == os.stat(rw / "one.txt").st_mtime


def test_guest_touch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    touch(str(f), 1_700_000_000.5)
    assert os.stat(f).st_mtime == 1_700_000_000.5
    touch(str(tmp_path / "gone"), 1.0)  # nothing, silently (removed meanwhile)
    touch("relative", 1.0)
    touch(str(f), "not a time")
    assert "inotify" in capsys.readouterr().err
