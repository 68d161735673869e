"""`limactl snapshot` and `limactl tunnel` without a guest: QEMU's snapshot tables
and errors, the QEMU driver's snapshots on a real qcow2 disk (qemu-img) and in a real
QEMU process (savevm/loadvm over QMP, no guest needed), and Lima's flags and
messages."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.test_cli import limactl
from tests.unit.test_commands_more import one_fatal

from pylima.drivers import SnapshotError, check_snapshot_tag, parse_snapshot_table, snapshot_tags
from pylima.drivers.qemu import snapshot as qsnap

# What QEMU 7.2 prints (captured from `info snapshots` and `qemu-img snapshot -l`).
HMP_LIST = ("List of snapshots present on all disks:\r\n"
            "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\r\n"
            "--        s1                760 KiB 2026-12-02 14:57:08 00:00:01.089           \r\n")
HMP_NONE = "There is no snapshot available.\r\n"
IMG_LIST = ("Snapshot list:\n"
            "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT\n"
            "1         s1                    0 B 2026-12-02 14:56:59 00:00:00.000          0\n"
            "2         my snap               0 B 2026-12-02 14:56:59 00:00:00.000          0\n")
HEADER = "ID        TAG               VM SIZE                DATE     VM CLOCK     ICOUNT"

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")
needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None
                                or shutil.which("qemu-img") is None,
                                reason="needs qemu-system-x86_64 and qemu-img")


# ---- the tables (pure) ----


def test_lima_strips_qemus_headings() -> None:
    assert qsnap.clean_hmp_list(HMP_NONE) == ""
    hmp = qsnap.clean_hmp_list(HMP_LIST)
    assert hmp.startswith(HEADER + "\n") and "\r" not in hmp
    img = qsnap.clean_img_list(IMG_LIST)
    assert img.startswith(HEADER + "\n")
    assert qsnap.clean_img_list("") == ""


def test_parse_list_and_quiet_tags() -> None:
    hmp = parse_snapshot_table(qsnap.clean_hmp_list(HMP_LIST))
    assert [(e.id, e.tag, e.vm_size, e.date, e.vm_clock, e.icount) for e in hmp] == [
        ("--", "s1", "760 KiB", "2026-12-02 14:57:08", "00:00:01.089", "")]
    img = parse_snapshot_table(qsnap.clean_img_list(IMG_LIST))
    assert [e.tag for e in img] == ["s1", "my snap"]
    assert img[1].to_json()["vmSize"] == "0 B"
    assert parse_snapshot_table("") == []
    # --quiet takes the second field, as Lima does (so "my snap" is "my")
    assert snapshot_tags(qsnap.clean_img_list(IMG_LIST)) == ["s1", "my"]
    assert snapshot_tags("") == []
    with pytest.raises(SnapshotError, match="^unknown header: ID NAME$"):
        snapshot_tags("ID NAME\n1 x\n")
    # a second section (partial snapshots of one disk) ends the table
    two = qsnap.clean_hmp_list(HMP_LIST) + "List of partial (non-loadable) snapshots on 'd':\n"
    assert [e.tag for e in parse_snapshot_table(two)] == ["s1"]


def test_tags_and_monitor_errors() -> None:
    with pytest.raises(SnapshotError, match="^expected tag$"):
        check_snapshot_tag("")
    with pytest.raises(SnapshotError, match="must not contain whitespace"):
        check_snapshot_tag("a b")
    check_snapshot_tag("snap1")
    assert qsnap.monitor_error("") == ""
    assert qsnap.monitor_error("Error: Device 'virtio0' is writable but does not support "
                               "snapshots\r\n") == \
        "Device 'virtio0' is writable but does not support snapshots"
    e = qsnap.savevm_refusal("savevm", "Error: Device 'pflash1' is writable but does not "
                             "support snapshots\r\n")
    assert e.message == ("failed to create the snapshot: Device 'pflash1' is writable but "
                         "does not support snapshots")
    assert e.hint and "qcow2" in e.hint
    e = qsnap.savevm_refusal("savevm", "Error: Migration is disabled when VirtFS export path "
                             "'/home/u' is mounted in the guest using mount_tag 'm0'\r\n")
    assert "VirtFS export path '/home/u'" in e.message and "mount_tag 'm0'" in e.message
    assert e.hint and "9p or virtiofs" in e.hint
    e = qsnap.savevm_refusal("savevm", "Error: State blocked by non-migratable device "
                             "'0000:00:05.0/vhost-user-fs'\r\n")
    assert "vhost-user-fs" in e.message and e.hint and "virtiofs" in e.hint
    assert qsnap.savevm_refusal("loadvm", "Error: x").message == \
        "failed to apply the snapshot: x"


# ---- a stopped instance: qemu-img on a real qcow2 ----


@needs_qemu_img
def test_disk_snapshots_with_qemu_img(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)

    async def go() -> None:
        assert await qsnap.img_list(disk) == ""
        await qsnap.img_op(disk, "create", "s1")
        table = await qsnap.img_list(disk)
        assert table.startswith(HEADER) and snapshot_tags(table) == ["s1"]
        with pytest.raises(SnapshotError, match="^snapshot 's1' already exists$"):
            await qsnap.img_op(disk, "create", "s1")
        with pytest.raises(SnapshotError, match="^snapshot 'nope' does not exist$"):
            await qsnap.img_op(disk, "apply", "nope")
        with pytest.raises(SnapshotError, match="^snapshot 'nope' does not exist$"):
            await qsnap.img_op(disk, "delete", "nope")
        await qsnap.img_op(disk, "apply", "s1")
        await qsnap.img_op(disk, "delete", "s1")
        assert await qsnap.img_list(disk) == ""
        with pytest.raises(SnapshotError, match="No such file|Could not open"):
            await qsnap.img_list(tmp_path / "missing")

    asyncio.run(go())


@needs_qemu_img
def test_disk_snapshots_on_another_host_go_through_its_shell(tmp_path: Path) -> None:
    """A remote libvirt host's volume: qemu-img runs there through ssh, which hands
    the command line to the remote user's shell; `sh -c` plays that shell here, on a
    path that needs quoting."""
    d = tmp_path / "pool dir's"
    d.mkdir()
    disk = d / "vol $x.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)
    shell = ["sh", "-c"]

    async def go() -> None:
        await qsnap.img_op(disk, "create", "r1", shell)
        assert snapshot_tags(await qsnap.img_list(disk, shell)) == ["r1"]
        assert snapshot_tags(await qsnap.img_list(disk)) == ["r1"]  # the same file
        await qsnap.img_op(disk, "delete", "r1", shell)
        assert await qsnap.img_list(disk, shell) == ""
        with pytest.raises(SnapshotError, match="^sshx not found$"):
            await qsnap.img_list(disk, ["sshx", "host"])

    asyncio.run(go())


# ---- a running VM: savevm/loadvm over QMP in a real QEMU (no guest OS) ----


@pytest.fixture
def qemu_dir() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="pylima-snap-", dir="/tmp"))  # short socket paths
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _start_qemu(inst: Path, *extra: str) -> subprocess.Popen[bytes]:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(inst / "disk"), "8M"],
                   check=True)
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-machine", "q35",
         "-accel", "tcg", "-m", "64",
         "-drive", f"file={inst / 'disk'},if=none,format=qcow2,id=boot-disk",
         "-device", "virtio-blk-pci,drive=boot-disk", *extra,
         "-qmp", f"unix:{inst / 'qmp.sock'},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (inst / "qmp.sock").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
        time.sleep(0.05)
    return proc


@needs_qemu
def test_running_snapshots_over_qmp(qemu_dir: Path) -> None:
    from pylima.drivers.qemu import QemuDriver

    proc = _start_qemu(qemu_dir)
    try:
        drv = QemuDriver("snap", qemu_dir, {})

        async def go() -> None:
            assert await drv.list_snapshots(running=True) == ""
            await drv.create_snapshot("warm", running=True)
            table = await drv.list_snapshots(running=True)
            assert snapshot_tags(table) == ["warm"]
            with pytest.raises(SnapshotError, match="^snapshot 'warm' already exists$"):
                await drv.create_snapshot("warm", running=True)
            with pytest.raises(SnapshotError, match="^snapshot 'x' does not exist$"):
                await drv.apply_snapshot("x", running=True)
            await drv.apply_snapshot("warm", running=True)
            assert (await drv.qmp("query-status"))["status"] == "running"
            await drv.delete_snapshot("warm", running=True)
            assert await drv.list_snapshots(running=True) == ""

        asyncio.run(go())
    finally:
        proc.kill()
        proc.wait()


OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")


@needs_qemu
@pytest.mark.skipif(not (OVMF_CODE.exists() and OVMF_VARS.exists()), reason="needs OVMF")
def test_a_uefi_vm_can_be_snapshotted_with_its_qcow2_variable_store(qemu_dir: Path) -> None:
    """The QEMU driver's UEFI variable store is qcow2: savevm takes the running
    firmware (a raw store would be refused as `pflash1`)."""
    from pylima.drivers.qemu import QemuDriver, make_vars_store

    make_vars_store(OVMF_VARS, qemu_dir / "vars")
    proc = _start_qemu(
        qemu_dir, "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive", f"if=pflash,format=qcow2,unit=1,file={qemu_dir / 'vars'}")
    try:
        drv = QemuDriver("snap", qemu_dir, {})

        async def go() -> None:
            await drv.create_snapshot("uefi", running=True)
            assert snapshot_tags(await drv.list_snapshots(running=True)) == ["uefi"]
            await drv.apply_snapshot("uefi", running=True)

        asyncio.run(go())
    finally:
        proc.kill()
        proc.wait()


@needs_qemu
def test_running_snapshot_refused_names_the_device_and_leaves_nothing(
        qemu_dir: Path) -> None:
    """A raw writable drive (as an additional raw disk or UEFI variables are): QEMU's
    refusal, naming the drive, is one error; no snapshot is left on the other disk."""
    from pylima.drivers.qemu import QemuDriver

    raw = qemu_dir / "extra.raw"
    raw.write_bytes(bytes(1 << 20))
    proc = _start_qemu(qemu_dir, "-drive", f"file={raw},if=virtio,format=raw")
    try:
        drv = QemuDriver("snap", qemu_dir, {})

        async def go() -> None:
            with pytest.raises(SnapshotError) as e:
                await drv.create_snapshot("warm", running=True)
            assert e.value.message == ("failed to create the snapshot: Device 'virtio0' is "
                                       "writable but does not support snapshots")
            assert await drv.list_snapshots(running=True) == ""
            assert (await drv.qmp("query-status"))["status"] == "running"

        asyncio.run(go())
    finally:
        proc.kill()
        proc.wait()
    out = subprocess.run(["qemu-img", "snapshot", "-l", str(qemu_dir / "disk")],
                         capture_output=True, text=True, check=True).stdout
    assert out == ""


# ---- limactl snapshot: Lima's flags and messages ----


@needs_qemu_img
def test_snapshot_of_a_stopped_instance_through_limactl(lima_home: Path) -> None:
    r = limactl("create", "--name=one", "template:debian-12")
    assert r.returncode == 0, r.stderr
    r = limactl("snapshot", "create", "one", "--tag", "s1")
    assert one_fatal(r) == "instance `one` has no disk"
    assert "level=warning msg=\"`limactl snapshot` is experimental\"" in r.stderr
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    str(lima_home / "one" / "disk"), "8M"], check=True)
    assert one_fatal(limactl("snapshot", "create", "one")) == "expected tag"
    assert limactl("snapshot", "save", "one", "--tag", "s1").returncode == 0
    r = limactl("snapshot", "list", "one")
    assert r.returncode == 0 and r.stdout.startswith(HEADER + "\n"), r.stdout
    assert r.stdout.splitlines()[1].split()[1] == "s1"
    assert limactl("snapshot", "ls", "one", "-q").stdout == "s1\n"
    assert one_fatal(limactl("snapshot", "create", "one", "--tag", "s1")) == \
        "snapshot 's1' already exists (Hint: delete it first, or choose another tag)"
    assert limactl("snapshot", "load", "one", "--tag", "s1").returncode == 0
    assert one_fatal(limactl("snapshot", "apply", "one", "--tag", "s2")) == \
        "snapshot 's2' does not exist"
    assert limactl("snapshot", "del", "one", "--tag", "s1").returncode == 0
    assert limactl("snapshot", "list", "one", "--quiet").stdout == ""
    assert one_fatal(limactl("snapshot", "delete", "one", "--tag", "s1")) == \
        "snapshot 's1' does not exist"


def test_snapshot_argument_errors(lima_home: Path) -> None:
    assert one_fatal(limactl("snapshot", "create", "--tag", "x")) == \
        "requires at least 1 arg(s), only received 0"
    msg = one_fatal(limactl("snapshot", "apply", "nosuch", "--tag", "x"))
    assert msg.startswith("instance `nosuch` does not exist")


def test_snapshot_of_an_instance_in_use_is_refused(lima_home: Path) -> None:
    from pylima.store.lock import try_lock

    r = limactl("create", "--name=one", "template:debian-12")
    assert r.returncode == 0, r.stderr
    fd = try_lock("one")
    assert fd is not None
    try:
        msg = one_fatal(limactl("snapshot", "list", "one"))
        assert msg.startswith("instance `one` is busy: another process is working on it")
    finally:
        import os

        os.close(fd)


def test_unimplemented_drivers() -> None:
    from pylima.drivers.unsupported import VzDriver

    drv = VzDriver.__new__(VzDriver)
    with pytest.raises(Exception, match="^unimplemented$"):
        asyncio.run(drv.create_snapshot("x", running=False))
    with pytest.raises(Exception, match="^unimplemented$"):
        asyncio.run(drv.list_snapshots(running=True))


# ---- limactl tunnel ----


def test_tunnel_flags_and_messages(lima_home: Path) -> None:
    from pylima.cli.tunnel import instructions

    assert one_fatal(limactl("tunnel")) == ("`limactl tunnel` accepts 1 arg(s), received 0. "
                                            "See `limactl tunnel --help`. (Hint: usage: "
                                            "limactl tunnel [flags] INSTANCE)")
    # flags come before the instance, as in Lima (SetInterspersed(false))
    assert "received 3" in one_fatal(limactl("tunnel", "one", "--socks-port", "2000"))
    assert one_fatal(limactl("tunnel", "--type", "l2tp", "one")) == \
        "unknown tunnel type: `l2tp`"
    for bad in ("80", "1023", "65536", "-1"):
        assert one_fatal(limactl("tunnel", f"--socks-port={bad}", "one")) == \
            f"invalid socks port {bad}"
    assert one_fatal(limactl("tunnel", "--socks-port", "abc", "one")) == \
        ('invalid argument "abc" for "--socks-port" flag: strconv.ParseInt: parsing "abc": '
         "invalid syntax")
    r = limactl("tunnel", "nosuch")
    assert one_fatal(r) == ("instance `nosuch` does not exist, run `limactl create nosuch` "
                            "to create a new instance")
    assert "level=warning msg=\"`limactl tunnel` is experimental\"" in r.stderr
    assert limactl("create", "--name=one", "template:debian-12").returncode == 0
    assert one_fatal(limactl("tunnel", "--socks-port=1080", "one")) == \
        "instance `one` is stopped, run `limactl start one` to start the instance"
    assert instructions(1080, "lima-one") == (
        "Set `ALL_PROXY=socks5h://127.0.0.1:1080`, etc.\n"
        "The instance can be connected from the host as <http://lima-one.internal> via a "
        "web browser.\n")


def test_host_agent_client_errors(tmp_path: Path) -> None:
    """ha.sock answers: an error with its message (409 is the busy instance), a path an
    older host agent does not serve, and no host agent at all."""
    import socket
    import threading

    from pylima.errors import LimaError, LockError
    from pylima.hostagent.client import call

    sock_path = tmp_path / "ha.sock"
    replies = [b"HTTP/1.1 409 Conflict\r\nContent-Length: 32\r\n\r\n"
               b'{"message": "busy", "hint": "x"}',
               b"HTTP/1.1 404 Not Found\r\n\r\n{}",
               b'HTTP/1.1 200 OK\r\n\r\n{"output": "table"}']
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.listen()

    def serve() -> None:
        for reply in replies:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(reply)
            conn.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with pytest.raises(LockError, match="^busy$"):
            call(tmp_path, "one", "POST", "/v1/snapshot", {})
        with pytest.raises(LimaError, match="^the host agent of instance `one` does not "
                                            "serve /v1/tunnel$"):
            call(tmp_path, "one", "POST", "/v1/tunnel", {})
        assert call(tmp_path, "one", "POST", "/v1/snapshot", {}) == {"output": "table"}
    finally:
        t.join(10)
        server.close()
    sock_path.unlink()
    with pytest.raises(LimaError, match="^cannot reach the host agent of instance `one`"):
        call(tmp_path, "one", "GET", "/v1/info")
