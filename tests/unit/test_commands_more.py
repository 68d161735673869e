"""limactl watch, screenshot, disk import, copy --backend, completion powershell,
sudoers, autostart, start-at-login and template url: Lima's flags, messages and exit
codes, without a guest (a paused QEMU stands in for a VM's display)."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_cli import fatal_lines, limactl

NOT_SUPPORTED = f"autostart is not supported on {sys.platform}"


@pytest.fixture
def one(lima_home: Path) -> Path:
    r = limactl("create", "--name=one", "template:debian-12")
    assert r.returncode == 0, r.stderr
    return lima_home / "one"


@pytest.fixture
def inproc(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., tuple[int, str, str]]]:
    """Run limactl in this process (to patch what it sees); (rc, stdout, stderr)."""
    from pylima.cli.main import cli, run

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def call(*argv: str) -> tuple[int, str, str]:
        rc = run(cli, list(argv))
        out = capsys.readouterr()
        return rc, out.out, out.err

    yield call
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def one_fatal(r: subprocess.CompletedProcess[str]) -> str:
    """The single fatal line of a failed command, its message decoded."""
    assert r.returncode == 1, r.stdout + r.stderr
    lines = fatal_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    return json.loads(lines[0].split("msg=", 1)[1])


# ---------------------------------------------------------------- watch: the format

def test_event_is_re_encoded_in_limas_shape() -> None:
    from pylima.hostagent.watcher import decode_event, event_json

    line = json.dumps({"time": "2026-01-02T03:04:05.120000Z", "status": {
        "phase": "booting", "sshLocalPort": 60022, "exiting": False, "errors": [],
        "portForward": {"guestAddr": "127.0.0.1:80", "type": "forwarding",
                        "protocol": "tcp", "hostAddr": "127.0.0.1:8080"},
        "running": True}})
    assert event_json("one", decode_event(line)) == (
        '{"instance":"one","event":{"time":"2026-01-02T03:04:05.12Z","status":{'
        '"running":true,"sshLocalPort":60022,"portForward":{"type":"forwarding",'
        '"protocol":"tcp","guestAddr":"127.0.0.1:80","hostAddr":"127.0.0.1:8080"}}}}')
    # Go's encoder: HTML characters escaped; nanoseconds and offsets kept
    ev = decode_event('{"time":"2026-01-02T03:04:05.000000001+09:00",'
                      '"status":{"errors":["a <b> & c"]}}')
    assert event_json("x", ev) == ('{"instance":"x","event":{"time":'
                                   '"2026-01-02T03:04:05.000000001+09:00","status":'
                                   '{"errors":["a \\u003cb\\u003e \\u0026 c"]}}}')
    # no time: Go's zero time; no status: an empty one
    assert event_json("x", decode_event("{}")) == \
        '{"instance":"x","event":{"time":"0001-01-01T00:00:00Z","status":{}}}'


@pytest.mark.parametrize("line", ["not json", "[1]", '{"time": "yesterday"}',
                                  '{"status": {"running": "yes"}}',
                                  '{"status": {"sshLocalPort": "22"}}'])
def test_lines_that_are_not_events(line: str) -> None:
    from pylima.hostagent.watcher import EventDecodeError, decode_event

    with pytest.raises(EventDecodeError):
        decode_event(line)


def test_human_readable_lines() -> None:
    from pylima.hostagent.watcher import decode_event, event_lines

    def lines(status: dict[str, Any]) -> list[str]:
        ev = decode_event(json.dumps({"time": "2026-01-02T03:04:05+02:00",
                                      "status": status}))
        return [ln.split(" | ", 1)[1] for ln in event_lines("one", ev)]

    ev = decode_event('{"time":"2026-01-02T03:04:05.5+02:00","status":{"running":true}}')
    assert event_lines("one", ev) == ["2026-01-02 03:04:05 one | running"]
    assert lines({"running": True, "degraded": True, "errors": ["e1", "e2"]}) == [
        "running (degraded)", "error: e1", "error: e2"]
    assert lines({"exiting": True, "sshLocalPort": 22}) == ["exiting",
                                                            "ssh available on port 22"]
    assert lines({"cloudInitProgress": {"logLine": "hello", "active": True}}) == \
        ["cloud-init: hello"]
    assert lines({"cloudInitProgress": {"completed": True, "logLine": "x"}}) == \
        ["cloud-init completed"]
    assert lines({"cloudInitProgress": {"active": True}}) == []
    pf = {"protocol": "tcp", "guestAddr": "0.0.0.0:80", "hostAddr": "127.0.0.1:80"}
    assert lines({"portForward": {"type": "forwarding", **pf}}) == \
        ["forwarding tcp 0.0.0.0:80 to 127.0.0.1:80"]
    assert lines({"portForward": {"type": "not-forwarding", **pf}}) == \
        ["not forwarding tcp 0.0.0.0:80"]
    assert lines({"portForward": {"type": "stopping", **pf}}) == \
        ["stopping forwarding tcp 0.0.0.0:80"]
    assert lines({"portForward": {"type": "failed", **pf, "error": "busy"}}) == \
        ["failed to forward tcp 0.0.0.0:80: busy"]
    assert lines({"vsock": {"type": "started", "hostAddr": "h", "vsockPort": 5}}) == \
        ["started vsock forwarder: h -> vsock:5"]
    assert lines({"vsock": {"type": "skipped", "reason": "r"}}) == \
        ["skipped vsock forwarder: r"]
    assert lines({"vsock": {"type": "failed", "reason": "r"}}) == \
        ["failed to start vsock forwarder: r"]
    assert lines({"phase": "booting"}) == []


def test_log_follower_reads_complete_lines_across_recreation(tmp_path: Path) -> None:
    from pylima.hostagent.watcher import LogFollower

    path = tmp_path / "ha.stdout.log"
    f = LogFollower(path)
    assert f.poll() == []  # no file yet
    path.write_text("a\nb")
    assert f.poll() == ["a"]  # `b` is not complete yet
    with open(path, "a") as out:
        out.write("c\n")
    assert f.poll() == ["bc"]
    path.unlink()
    assert f.poll() == []
    path.write_text("new\n")  # a new start writes a new file
    assert f.poll() == ["new"]
    path.write_text("x\n")  # truncated and rewritten in place
    assert f.poll() == ["x"]
    f.close()


def test_host_agent_log_lines_are_parsed() -> None:
    from pylima.hostagent.watcher import parse_log_line

    assert parse_log_line('time="2026-01-02T03:04:05Z" level=info msg="hi there" port=22') \
        == {"time": "2026-01-02T03:04:05Z", "level": "info", "msg": "hi there", "port": "22"}
    assert parse_log_line('{"level":"warning","msg":"m","k":1}') == \
        {"level": "warning", "msg": "m", "k": 1}
    assert parse_log_line("plain text") is None


# ---------------------------------------------------------------- watch: the command

class Watch:
    """`limactl watch ARGS` in the background, read line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "pylima", "watch", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ))
        self.buffers = {"stdout": b"", "stderr": b""}

    def line(self, stream: str = "stdout", timeout: float = 30) -> str:
        """The next line of `stream` (read from the pipe unbuffered: a buffered reader
        would hold lines that select() then no longer sees)."""
        fd = getattr(self.proc, stream).fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffers[stream]:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
            assert ready, f"no line on {stream}: {self.buffers[stream]!r}"
            chunk = os.read(fd, 65536)
            assert chunk, f"{stream} closed: {self.buffers[stream]!r}"
            self.buffers[stream] += chunk
        line, _, self.buffers[stream] = self.buffers[stream].partition(b"\n")
        return line.decode() + "\n"

    def stop(self) -> None:
        # SIGTERM, not SIGINT: a test run started in the background (`cmd &` in a
        # script) has SIGINT ignored, and Python then never raises KeyboardInterrupt.
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            for pipe in (self.proc.stdout, self.proc.stderr):
                assert pipe is not None
                pipe.close()


def append(path: Path, *events: dict[str, Any]) -> None:
    with open(path, "a") as f:
        for ev in events:
            f.write(json.dumps(ev) + "\n")


def now_z(offset: float = 0) -> str:
    import datetime as dt

    t = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def test_watch_json_follows_new_events_only(one: Path) -> None:
    log = one / "ha.stdout.log"
    append(log, {"time": "2020-01-01T00:00:00Z", "status": {"running": True}})
    w = Watch("--json", "one")
    try:
        assert w.line("stderr").endswith(" Watching for events...\n")
        append(log, {"time": now_z(1), "status": {"sshLocalPort": 60022, "phase": "ssh"}})
        got = json.loads(w.line())
        assert got["instance"] == "one" and got["event"]["status"] == {"sshLocalPort": 60022}
        # a new start replaces the log file: it is read again from its start
        log.unlink()
        append(log, {"time": now_z(2), "status": {"running": True}})
        assert json.loads(w.line())["event"]["status"] == {"running": True}
    finally:
        w.stop()


def test_watch_history_and_human_readable(one: Path) -> None:
    append(one / "ha.stdout.log", {"time": "2020-01-01T00:00:00Z",
                                   "status": {"running": True, "degraded": True}})
    w = Watch("--history", "one")
    try:
        assert w.line() == "2020-01-01 00:00:00 one | running (degraded)\n"
    finally:
        w.stop()


def test_watch_all_sees_new_instances(lima_home: Path) -> None:
    lima_home.mkdir(parents=True)
    w = Watch()
    try:
        assert w.line("stderr").endswith(" No instances found\n")
        assert w.line("stderr").endswith(" Watching for events...\n")
        assert limactl("create", "--name=late", "template:debian-12").returncode == 0
        assert w.line("stderr").endswith(" New instance detected: late\n")
        append(lima_home / "late" / "ha.stdout.log",
               {"time": now_z(1), "status": {"exiting": True}})
        assert w.line().endswith(" late | exiting\n")
    finally:
        w.stop()


def test_watch_verbose_relays_the_host_agent_log(one: Path) -> None:
    w = Watch("--verbose", "one")
    try:
        w.line("stderr")
        with open(one / "ha.stderr.log", "a") as f:
            f.write(f'time="{now_z(5)[:19]}Z" level=warning msg="disk is slow" dev=vda\n')
        line = w.line("stderr")
        assert 'level=warning msg="[hostagent] disk is slow" dev=vda' in line
    finally:
        w.stop()


def test_watch_stops_on_a_line_that_is_not_an_event(one: Path) -> None:
    w = Watch("one")
    try:
        w.line("stderr")
        (one / "ha.stdout.log").write_text("garbage\n")
        line = w.line("stderr")
        assert 'level=warning msg="Watcher for instance `one` stopped"' in line
        assert "failed to unmarshal `garbage` as events.Event" in line
    finally:
        w.stop()


def test_watch_refusals(lima_home: Path) -> None:
    r = limactl("watch", "nope")
    assert one_fatal(r) == (f"Failed to inspect instance `nope`: open "
                            f"{lima_home / 'nope' / 'lima.yaml'}: no such file or directory")
    assert one_fatal(limactl("watch", "--jsonx")) == "unknown flag: --jsonx"


# ---------------------------------------------------------------- screenshot

def test_output_format_from_the_extension() -> None:
    from pylima.cli.screenshot import output_format
    from pylima.errors import LimaError

    assert output_format("a.png") == "png" and output_format("A.PNG") == "png"
    assert output_format("x/b.BMP") == "bmp"
    with pytest.raises(LimaError, match=r'^unsupported output extension "\.jpg": must be '
                                        r"\.png or \.bmp$"):
        output_format("c.jpg")
    with pytest.raises(LimaError, match='^unsupported output extension "":'):
        output_format("noext")


def _ppm(width: int, height: int) -> tuple[bytes, bytes]:
    rgb = bytes((x * 7 + y * 3 + c) % 256 for y in range(height) for x in range(width)
                for c in range(3))
    return b"P6\n# made by a test\n%d %d\n255\n" % (width, height) + rgb, rgb


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert (depth, color) == (8, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * 3 + 1
    assert all(raw[y * stride] == 0 for y in range(height))  # no filter
    return width, height, b"".join(raw[y * stride + 1:(y + 1) * stride]
                                   for y in range(height))


def test_png_and_bmp_encoding_of_a_ppm() -> None:
    from pylima.drivers.qemu.screendump import encode_bmp, encode_png, parse_ppm

    data, rgb = _ppm(5, 3)
    img = parse_ppm(data)
    assert (img.width, img.height, img.rgb) == (5, 3, rgb)
    assert decode_png(encode_png(img)) == (5, 3, rgb)
    bmp = encode_bmp(img)
    assert bmp[:2] == b"BM" and struct.unpack("<I", bmp[2:6])[0] == len(bmp)
    assert struct.unpack("<iiHH", bmp[18:30]) == (5, 3, 1, 24)
    row = 5 * 3 + 1  # padded to 16 bytes
    bottom = bmp[54:54 + 15]  # the last row of the image comes first
    assert bottom[0:3] == rgb[2 * 15:2 * 15 + 3][::-1]
    assert len(bmp) == 54 + 3 * row


class PausedQemu:
    """A QEMU that never runs a CPU (-S), standing in for an instance's VM: QMP on the
    instance's qmp.sock, pid files that make the instance Running."""

    def __init__(self, inst_dir: Path, display: bool) -> None:
        self.dir = inst_dir
        argv = ["qemu-system-x86_64", "-name", f"lima-{inst_dir.name}", "-S", "-nodefaults",
                "-display", "none", "-machine", "q35",
                *(["-device", "virtio-vga"] if display else []),
                "-qmp", f"unix:{inst_dir / 'qmp.sock'},server=on,wait=off",
                "-daemonize", "-pidfile", str(inst_dir / "qemu.pid")]
        subprocess.run(argv, check=True, timeout=60)
        self.agent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                                       "hostagent"])
        (inst_dir / "ha.pid").write_text(str(self.agent.pid))

    def close(self) -> None:
        self.agent.kill()
        self.agent.wait()
        try:
            os.kill(int((self.dir / "qemu.pid").read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="needs qemu-system-x86_64")


@needs_qemu
def test_screenshot_of_a_display(one: Path, tmp_path: Path) -> None:
    vm = PausedQemu(one, display=True)
    try:
        r = limactl("screenshot", "one", cwd=str(tmp_path))
        assert r.returncode == 0, r.stderr
        out = tmp_path / "one-screenshot.png"
        width, height, _ = decode_png(out.read_bytes())
        assert (width, height) == (640, 480)
        assert oct(out.stat().st_mode & 0o777) in ("0o644", "0o640", "0o600")
        assert (f'level=info msg="Screenshot saved to \\"one-screenshot.png\\" '
                f'({out.stat().st_size} bytes)"') in r.stderr
        r = limactl("screenshot", "one", "-o", str(tmp_path / "shot.BMP"))
        assert r.returncode == 0, r.stderr
        assert (tmp_path / "shot.BMP").read_bytes()[:2] == b"BM"
        assert one_fatal(limactl("screenshot", "one", "-o", "x.jpg", cwd=str(tmp_path))) == \
            'unsupported output extension ".jpg": must be .png or .bmp'
        assert one_fatal(limactl("screenshot", "one", "-o", "/nonexistent/x.png")) == \
            'failed to write "/nonexistent/x.png": open /nonexistent/x.png: no such file or ' \
            "directory"
        assert not [p for p in one.iterdir() if "screendump" in p.name]
    finally:
        vm.close()


@needs_qemu
def test_screenshot_without_a_display(one: Path, tmp_path: Path) -> None:
    vm = PausedQemu(one, display=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    try:
        r = limactl("screenshot", "one", cwd=str(cwd))
        assert one_fatal(r) == ('screenshot failed: VM has no display configured \u2014 set '
                                'video.display (e.g., "default") in the instance config')
        assert list(cwd.iterdir()) == []
    finally:
        vm.close()


def test_screenshot_refusals(one: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert one_fatal(limactl("screenshot", "one", cwd=str(cwd))) == \
        'instance "one" is not running (status: Stopped)'
    assert "does not exist" in one_fatal(limactl("screenshot", "nope"))
    assert one_fatal(limactl("screenshot", "one", "--format=png")) == "unknown flag: --format"
    r = limactl("screenshot")
    assert r.returncode == 1 and len(fatal_lines(r.stderr)) == 1
    assert list(cwd.iterdir()) == []


def test_screenshot_of_a_driver_without_screenshots(inproc: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver that is not a `drivers.Screenshotter` (vz on a Mac, say)."""
    import pylima.cli.common as common
    from pylima.drivers import registry

    fake = SimpleNamespace(name="one", status="Running", vm_type="vz",
                           dir=Path("/nonexistent"), config={"vmType": "vz"})
    monkeypatch.setattr(common, "get_instance_or_fail", lambda name: fake)
    monkeypatch.setattr(registry, "new_driver", lambda name, d, cfg: object())
    rc, _, err = inproc("screenshot", "one")
    assert rc == 1
    assert 'msg="screenshot failed: driver \\"vz\\": driver does not support screenshots"' \
        in err


# ---------------------------------------------------------------- disk import

def test_disk_import_raw_and_qcow2(lima_home: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw.img"
    with open(raw, "wb") as f:
        f.truncate(3 << 20)
    r = limactl("disk", "import", "d1", str(raw))
    assert r.returncode == 0, r.stderr
    assert 'level=info msg="Imported d1 with size 3MiB"' in r.stderr
    data = lima_home / "_disks" / "d1" / "datadisk"
    assert data.stat().st_size == 3 << 20 and raw.exists()
    listed = json.loads(limactl("disk", "ls", "--json").stdout)
    assert (listed["name"], listed["format"], listed["size"]) == ("d1", "raw", 3 << 20)
    if shutil.which("qemu-img"):
        q = tmp_path / "q.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(q), "1G"], check=True)
        r = limactl("disk", "import", "d2", str(q))
        assert r.returncode == 0 and "Imported d2 with size 1GiB" in r.stderr
        assert (lima_home / "_disks" / "d2" / "datadisk").read_bytes()[:4] == b"QFI\xfb"


def test_disk_import_refusals(lima_home: Path, tmp_path: Path) -> None:
    vmdk = tmp_path / "a.vmdk"
    vmdk.write_bytes(b"KDMV" + b"\0" * 508)
    assert one_fatal(limactl("disk", "import", "d", str(vmdk))) == \
        "disk format `vmdk` not supported, use `qcow2` or `raw` instead"
    vdi = tmp_path / "a.vdi"
    vdi.write_bytes(b"\0" * 0x40 + struct.pack("<I", 0xBEDA107F) + b"\0" * 400)
    assert "disk format `vdi` not supported" in one_fatal(limactl("disk", "import", "d",
                                                                  str(vdi)))
    assert one_fatal(limactl("disk", "import", "d", str(tmp_path / "none"))) == \
        f"open {tmp_path / 'none'}: no such file or directory"
    assert not (lima_home / "_disks" / "d").exists()
    r = limactl("disk", "import", "bad/name", str(vmdk))
    assert "identifier" in one_fatal(r)
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\0" * 512)
    assert limactl("disk", "import", "d", str(raw)).returncode == 0
    assert one_fatal(limactl("disk", "import", "d", str(raw))) == \
        f"disk `d` already exists (`{lima_home / '_disks' / 'd'}`)"
    r = limactl("disk", "import", "d")
    assert r.returncode == 1 and len(fatal_lines(r.stderr)) == 1


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
def test_disk_import_refuses_an_overlay(lima_home: Path, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F",
                    "qcow2", str(top)], check=True)
    assert f"disk image `{top}` has a backing file" in \
        one_fatal(limactl("disk", "import", "d", str(top)))
    assert not (lima_home / "_disks" / "d").exists()


# ---------------------------------------------------------------- copy --backend

def _plan(paths: list[tuple[str, str]], recursive: bool = False,
          verbose: bool = False) -> Any:
    """A copy of `paths` ((instance or "", path)) with instance `vm` at /i/vm."""
    from pylima.cli.copy import CopyPath, CopyPlan

    inst = SimpleNamespace(dir=Path("/i/vm"))
    return CopyPlan([CopyPath(p, inst if n else None, n) for n, p in paths], recursive,
                    verbose)


SSH = "ssh -F /i/vm/ssh.config -o ControlMaster=no"


def test_rsync_command_lines() -> None:
    from pylima.cli.copy import rsync_argv, scp_argv

    plan = _plan([("", "a.txt"), ("vm", "/tmp/")])
    assert rsync_argv(plan, "/usr/bin/rsync") == [
        "/usr/bin/rsync", "-a", "-q", "-e", SSH, "a.txt", "lima-vm:/tmp/"]
    plan = _plan([("vm", "/etc/os-release"), ("", ".")], verbose=True)
    assert rsync_argv(plan) == ["rsync", "-a", "-v", "--progress", "-e", SSH,
                                "lima-vm:/etc/os-release", "."]
    assert scp_argv(plan) == ["scp", "-F", "/i/vm/ssh.config", "-o", "ControlMaster=no",
                              "-v", "--", "lima-vm:/etc/os-release", "."]
    assert scp_argv(_plan([("", "d"), ("vm", "/t")], recursive=True))[5:7] == ["-q", "-r"]


@pytest.mark.parametrize("src,dst,want", [
    # Lima's trailing-slash rule under -r: rsync puts directories where scp -r does
    ("./mydir", "/tmp/", ["./mydir", "lima-vm:/tmp/"]),
    ("./mydir", "/tmp/dest", ["./mydir/", "lima-vm:/tmp/dest/"]),
    ("./mydir/", "/tmp/dest", ["./mydir", "lima-vm:/tmp/dest/"]),
])
def test_rsync_recursive_slashes(src: str, dst: str, want: list[str]) -> None:
    from pylima.cli.copy import rsync_argv

    argv = rsync_argv(_plan([("", src), ("vm", dst)], recursive=True))
    assert argv[:4] == ["rsync", "-a", "-q", "-r"] and argv[-2:] == want


def test_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import pylima.cli.copy as cp
    from pylima.errors import LimaError

    monkeypatch.setattr(cp, "parse_copy_paths", lambda paths: _plan(
        [("", "a"), ("vm", "/b")]).paths)
    which = {"rsync": "/usr/bin/rsync", "scp": "/usr/bin/scp"}
    monkeypatch.setattr(cp.shutil, "which", lambda name: which.get(name))
    in_guest = [True]
    monkeypatch.setattr(cp, "rsync_in_guests", lambda plan: in_guest[0])
    args = (("a", "vm:/b"), False, False)
    assert cp.copy_command("auto", *args)[0] == "/usr/bin/rsync"
    assert cp.copy_command("rsync", *args)[0] == "/usr/bin/rsync"
    assert cp.copy_command("scp", *args)[0] == "scp"
    in_guest[0] = False
    assert cp.copy_command("auto", *args)[0] == "scp"  # falls back
    with pytest.raises(LimaError, match=r"^rsync not available on guest\(s\)$"):
        cp.copy_command("rsync", *args)
    del which["rsync"]
    assert cp.copy_command("auto", *args)[0] == "scp"
    with pytest.raises(LimaError, match='^rsync not found on host: exec: "rsync": '
                                        "executable file not found in \\$PATH$"):
        cp.copy_command("rsync", *args)
    with pytest.raises(LimaError, match="^invalid backend `tar`, must be one of: scp, "
                                        "rsync, auto$"):
        cp.copy_command("tar", *args)


def test_auto_takes_scp_between_two_instances(monkeypatch: pytest.MonkeyPatch) -> None:
    """rsync cannot have both ends remote: auto does not try it there (Lima's rule);
    an explicit rsync is left to say so itself."""
    import pylima.cli.copy as cp

    monkeypatch.setattr(cp, "parse_copy_paths", lambda paths: _plan(
        [("vm", "/a"), ("vm", "/b")]).paths)
    monkeypatch.setattr(cp.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(cp, "rsync_in_guests", lambda plan: True)
    args = (("vm:/a", "vm:/b"), False, False)
    assert cp.copy_command("auto", *args)[0] == "scp"
    assert cp.copy_command("rsync", *args)[0] == "/usr/bin/rsync"


def test_copy_refusals(one: Path) -> None:
    assert one_fatal(limactl("copy", "--backend=tar", "a", "one:/b")) == \
        "invalid backend `tar`, must be one of: scp, rsync, auto"
    assert one_fatal(limactl("copy", "a", "one:/b")) == \
        "instance `one` is stopped, run `limactl start one` to start the instance"
    assert one_fatal(limactl("copy", "--backend=rsync", "a", "nope:/b")) == \
        "instance `nope` does not exist, run `limactl create nope` to create a new instance"
    assert one_fatal(limactl("copy", "a", "b")) == \
        "at least one of the paths must be an instance path (INSTANCE:PATH)"
    assert one_fatal(limactl("copy", "--backend")) == "Option '--backend' requires an argument."


# ---------------------------------------------------------------- completion powershell

def test_completion_powershell_script_and_backend() -> None:
    r = limactl("completion", "powershell")
    assert r.returncode == 0
    assert "Register-ArgumentCompleter -Native -CommandName 'limactl'" in r.stdout
    assert "$env:_LIMACTL_COMPLETE = 'powershell_complete'" in r.stdout

    def complete(line: str) -> list[str]:
        r = limactl(env={"_LIMACTL_COMPLETE": "powershell_complete", "COMP_LINE": line})
        assert r.returncode == 0, r.stderr
        return [ln for ln in r.stdout.splitlines() if ln]

    assert [ln.split("\t")[0] for ln in complete("limactl scr")] == ["screenshot"]
    got = complete("limactl completion ")
    assert [ln.split("\t")[0] for ln in got] == ["bash", "fish", "powershell", "zsh"]
    assert got[0] == "bash\tGenerate the autocompletion script for bash."
    assert [ln.split("\t")[0] for ln in complete("limactl copy --b")] == ["--backend"]
    assert complete("limactl start-at") == []  # deprecated: hidden, as in Lima


# ---------------------------------------------------------------- sudoers

@pytest.mark.parametrize("args", [[], ["--check"], ["--check", "/etc/sudoers.d/lima"]])
def test_sudoers_is_macos_only(args: list[str]) -> None:
    assert one_fatal(limactl("sudoers", *args)) == \
        "sudoers command is only supported on macOS right now"


def test_sudoers_takes_one_file_at_most() -> None:
    r = limactl("sudoers", "a", "b")
    assert r.returncode == 1 and len(fatal_lines(r.stderr)) == 1 and r.stdout == ""


# ---------------------------------------------------------------- autostart

UNIT = """\
[Unit]
Description=Lima instance %i (pylima), started at login

[Service]
ExecStart=/opt/pylima/bin/limactl start %i --foreground
WorkingDirectory=%h
Type=simple
TimeoutSec=10
Restart=on-failure

[Install]
WantedBy=default.target
"""


def test_systemd_unit_text_and_place() -> None:
    from pylima.autostart import render_unit, unit_name, unit_path

    assert render_unit(["/opt/pylima/bin/limactl"]) == UNIT
    assert "ExecStart=/usr/bin/python3 -m pylima start %i --foreground\n" in \
        render_unit(["/usr/bin/python3", "-m", "pylima"])
    assert 'ExecStart="/my dir/limactl" start %i' in render_unit(["/my dir/limactl"])
    assert unit_name("docker") == "lima-vm@docker.service"
    assert unit_path("docker", {"HOME": "/home/u"}) == \
        Path("/home/u/.config/systemd/user/lima-vm@docker.service")
    assert unit_path("docker", {"HOME": "/home/u", "XDG_CONFIG_HOME": "/x"}) == \
        Path("/x/systemd/user/lima-vm@docker.service")


no_systemd = pytest.mark.skipif(os.path.isdir("/run/systemd/system"),
                                reason="systemd runs here")


@no_systemd
def test_autostart_without_systemd(one: Path, tmp_path: Path) -> None:
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    assert one_fatal(limactl("autostart", "enable", "one", env=env)) == \
        f"failed to register instance `one` to start at login: {NOT_SUPPORTED}"
    assert one_fatal(limactl("autostart", "disable", "one", env=env)) == NOT_SUPPORTED
    r = limactl("start-at-login", "one", env=env)
    assert r.stderr.startswith('Command "start-at-login" is deprecated, use "limactl '
                               'autostart" instead\n')
    assert one_fatal(r) == ("failed to check if the autostart entry for instance `one` is "
                            f"registered: {NOT_SUPPORTED}")
    assert not (tmp_path / "config").exists()


def test_autostart_refusals(lima_home: Path) -> None:
    assert one_fatal(limactl("autostart", "enable", "--condition=boot", "one")) == \
        "--condition=boot is only supported on macOS"
    assert one_fatal(limactl("autostart", "enable", "--condition=logon", "one")) == \
        'unknown condition "logon": must be "login" or "boot"'
    assert one_fatal(limactl("autostart", "enable", "nope")) == 'instance "nope" not found'
    assert one_fatal(limactl("autostart", "disable", "nope")) == 'instance "nope" not found'
    assert one_fatal(limactl("autostart", "enable", "--when=login", "x")) == \
        "unknown flag: --when"
    r = limactl("autostart", "enable")
    assert r.returncode == 1 and len(fatal_lines(r.stderr)) == 1
    r = limactl("start-at-login")  # `default` does not exist: Lima says so, and exits 0
    assert r.returncode == 0 and 'level=info msg="Instance `default` not found"' in r.stderr


def test_autostart_with_systemd(one: Path, tmp_path: Path, inproc: Any,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd stood in for: its run directory, and a `systemctl` that records."""
    import pylima.autostart as auto

    run_dir = tmp_path / "run-systemd"
    run_dir.mkdir()
    monkeypatch.setattr(auto, "SYSTEMD_RUN_DIR", str(run_dir))
    monkeypatch.setattr(auto, "limactl_command", lambda: ["/opt/pylima/bin/limactl"])
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    unit = tmp_path / "config" / "systemd" / "user" / "lima-vm@one.service"

    rc, _, err = inproc("autostart", "enable", "one")
    assert rc == 0 and 'msg="Instance `one` registered to start at login"' in err
    assert unit.read_text() == UNIT
    assert calls.read_text() == "--user enable lima-vm@one.service\n"
    rc, _, err = inproc("start-at-login", "one")
    assert rc == 0 and "The autostart entry for instance `one` has been updated" in err
    rc, _, err = inproc("autostart", "disable", "one")
    assert rc == 0 and 'msg="Instance `one` unregistered from start at login"' in err
    assert not unit.exists()
    assert calls.read_text().splitlines()[-1] == "--user disable lima-vm@one.service"
    rc, _, err = inproc("autostart", "disable", "one")
    assert rc == 0 and "Instance `one` is not registered for automatic startup" in err
    rc, _, err = inproc("start-at-login", "--enabled=false", "one")
    assert rc == 0 and "The autostart entry for instance `one` is not registered" in err
    rc, _, err = inproc("start-at-login", "one")
    assert rc == 0 and "The autostart entry for instance `one` has been created" in err
    rc, _, err = inproc("start-at-login", "--enabled=false", "one")
    assert rc == 0 and "The autostart entry for instance `one` has been unregistered" in err
    (bin_dir / "systemctl").write_text("#!/bin/sh\nexit 3\n")
    rc, _, err = inproc("autostart", "enable", "one")
    assert rc == 1 and ("failed to register instance `one` to start at login: exit status 3"
                        in err)


# ---------------------------------------------------------------- template url

def test_template_url() -> None:
    r = limactl("template", "url", "template://docker")
    assert r.returncode == 0 and r.stdout == "template:docker\n"
    assert "Template locator `template://docker` should be written `template:docker` " \
        "since Lima v2.0" in r.stderr
    for loc in ("template:docker", "./a.yaml", "C:/a.yaml"):
        r = limactl("template", "url", loc)
        assert r.returncode == 0 and r.stdout == loc + "\n", r.stderr
    r = limactl("template", "url")
    assert r.returncode == 1 and len(fatal_lines(r.stderr)) == 1


def test_help_lists_the_new_commands() -> None:
    out = limactl("--help").stdout
    for verb in ("watch", "screenshot", "sudoers", "autostart"):
        assert f"\n  {verb} " in out
    assert "start-at-login" not in out
