"""pylima's confined SFTP server (reverse-sshfs), run as a real process and spoken to
in raw SFTP: what sshfs needs works, and nothing reaches outside the directory."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.sftpclient import Client, SFTPError, escape_attempts

from pylima.hostagent.sftpserver import openat2_supported

pytestmark = pytest.mark.skipif(not openat2_supported(), reason="needs openat2(2)")


@contextlib.contextmanager
def _serve(root: Path, *extra: str) -> Iterator[Client]:
    to_server_r, to_server_w = os.pipe()
    from_server_r, from_server_w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "pylima.hostagent.sftpserver", str(root),
                             *extra], stdin=to_server_r, stdout=from_server_w)
    os.close(to_server_r)
    os.close(from_server_w)
    c = Client(from_server_r, to_server_w)
    assert c.init() == 3
    try:
        yield c
    finally:
        os.close(to_server_w)
        assert proc.wait(10) == 0
        os.close(from_server_r)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "secret.txt").write_text("TOPSECRET\n")
    share = tmp_path / "share"
    share.mkdir()
    (share / "hello.txt").write_text("hello\n")
    (share / "sub").mkdir()
    (share / "abs-link").symlink_to(tmp_path / "secret.txt")
    (share / "rel-link").symlink_to("../secret.txt")
    (share / "dir-link").symlink_to(tmp_path)
    (share / "rel-link-dir").symlink_to("..")
    (share / "inner-link").symlink_to("hello.txt")
    return share


@pytest.fixture
def rw(tree: Path) -> Iterator[Client]:
    with _serve(tree) as c:
        yield c


def test_reads_writes_and_lists(rw: Client, tree: Path) -> None:
    assert rw.read_file("/hello.txt") == b"hello\n"
    assert rw.read_file("hello.txt") == b"hello\n"
    assert rw.read_file("/inner-link") == b"hello\n"  # links inside the mount work
    rw.write_file("/sub/new.txt", b"from the guest\n")
    assert (tree / "sub" / "new.txt").read_text() == "from the guest\n"
    assert {"hello.txt", "sub", "abs-link"} <= set(rw.listdir("/"))
    rw.rename("/sub/new.txt", "/sub/renamed.txt")
    rw.mkdir("/made")
    rw.setstat_mode("/sub/renamed.txt", 0o600)
    assert (tree / "sub" / "renamed.txt").stat().st_mode & 0o777 == 0o600
    rw.symlink("renamed.txt", "/sub/l")
    assert os.readlink(tree / "sub" / "l") == "renamed.txt"
    rw.remove("/sub/l")
    assert rw.stat_size("/hello.txt") == 6
    with pytest.raises(SFTPError) as e:
        rw.read_file("/missing")
    assert e.value.code == 2


def test_no_escape(rw: Client, tree: Path) -> None:
    secret = str(tree.parent / "secret.txt")
    assert escape_attempts(rw, secret, "secret.txt") == []
    assert not (tree.parent / "written-outside").exists()
    # Links are resolved as if the directory were the root: an absolute link names a
    # path inside it, never the host's.
    with pytest.raises(SFTPError):
        rw.read_file("/abs-link")
    assert (tree.parent / "secret.txt").read_text() == "TOPSECRET\n"


def test_read_only_refuses_changes(tree: Path) -> None:
    with _serve(tree, "--read-only") as c:
        assert c.read_file("/hello.txt") == b"hello\n"
        for change in (lambda: c.write_file("/hello.txt", b"x"),
                       lambda: c.write_file("/new", b"x"), lambda: c.remove("/hello.txt"),
                       lambda: c.mkdir("/d"), lambda: c.rename("/hello.txt", "/h2"),
                       lambda: c.symlink("x", "/l"), lambda: c.setstat_mode("/hello.txt", 0)):
            with pytest.raises(SFTPError) as e:
                change()
            assert e.value.code == 3
        assert (tree / "hello.txt").read_text() == "hello\n"
        assert sorted(os.listdir(tree)) == ["abs-link", "dir-link", "hello.txt",
                                            "inner-link", "rel-link", "rel-link-dir", "sub"]


def test_owner_mapping(tree: Path) -> None:
    with _serve(tree, "--owner", "4242:4343") as c:
        _, body = c.request(17, b"\0\0\0\x0a/hello.txt")
        uid, gid = int.from_bytes(body[12:16], "big"), int.from_bytes(body[16:20], "big")
        assert (uid, gid) == (4242, 4343)
