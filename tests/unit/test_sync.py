"""`limactl shell --sync`: Lima's refusals, the change counts, and the copies with the
guest replaced by the local shell (`bash -c` instead of ssh). The VM tests run it
against a booted guest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pylima.errors import LimaError
from pylima.sync import Syncer, check_sync_dir, guest_dir, parse_itemized

VENV_BIN = Path(sys.executable).parent


def test_parse_itemized_counts_as_lima() -> None:
    out = "\n".join([
        ">f+++++++++ new.txt", "cd+++++++++ newdir/", ">f.st...... changed.txt",
        "*deleting   gone.txt", ".f...p..... chmod.sh", "cL+++++++++ link -> b",
        ".d..t...... ./", "short"])
    ch = parse_itemized(out)
    assert (ch.added, ch.deleted, ch.modified, ch.metadata) == (3, 1, 1, 2)
    assert str(ch) == "added: 3, deleted: 1, modified: 1, metadata: 2"
    assert parse_itemized("").empty and str(parse_itemized("")) == ""


def test_refusals_in_limas_order_and_words(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "proj"
    deep.mkdir(parents=True)
    with pytest.raises(LimaError, match=r"^cannot use `--sync` when the instance has host "
                                        r"mounts configured, start the instance with "
                                        r"`--mount-none` to disable mounts$"):
        check_sync_dir(str(deep), mounts=[{"location": "~"}], workdir=None)
    with pytest.raises(LimaError, match=r"^expected the depth of the host working directory "
                                        r"\(`/tmp`\) to be more than 4, only got 2 \(Hint: cd "
                                        r"to a deeper directory\)$"):
        check_sync_dir("/tmp", mounts=[], workdir=None)
    with pytest.raises(LimaError, match=r"^cannot use `--workdir` and `--sync` at the same "
                                        r"time$"):
        check_sync_dir(str(deep), mounts=[], workdir="/tmp")
    with pytest.raises(LimaError, match="no such directory"):
        check_sync_dir(str(deep / "none"), mounts=[], workdir=None)
    with pytest.raises(LimaError, match="it is the home directory or contains it"):
        check_sync_dir(str(deep), mounts=[], workdir=None, home=str(deep))
    with pytest.raises(LimaError, match="it is the home directory or contains it"):
        check_sync_dir(str(tmp_path / "a"), mounts=[], workdir=None, home=str(deep / "x"))
    assert check_sync_dir(str(deep), mounts=[], workdir=None, home="/nonexistent") == str(deep)


def test_refused_without_rsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LimaError, match=r'^rsync is required for `--sync` but not found'):
        check_sync_dir(str(tmp_path / "a" / "b"), mounts=[], workdir=None)


def test_guest_dir_is_under_the_guest_home() -> None:
    cfg = {"user": {"home": "/home/me.linux"}}
    assert guest_dir(cfg, "/home/me/src/p q") == "/home/me.linux/home/me/src/p q"


def _tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", p.stat().st_mode & 0o7777)
            else:
                out[rel] = ("file", p.read_bytes(), p.stat().st_mode & 0o7777)
    return out


def test_round_trip_changes_listed_then_applied(tmp_path: Path) -> None:
    host = tmp_path / "host dir 'q'" / "proj"
    host.mkdir(parents=True)
    (host / "keep.txt").write_text("same\n")
    (host / "edit.txt").write_text("old\n")
    (host / "gone.txt").write_text("bye\n")
    (host / "run.sh").write_text("#!/bin/sh\n")
    (host / "run.sh").chmod(0o644)
    (host / "a").write_text("a")
    (host / "b").write_text("b")
    os.symlink("a", host / "cur")
    guest = tmp_path / "guest-home" / str(host).lstrip("/")
    s = Syncer(["bash", "-c"], str(host), str(guest))
    s.copy_in()
    assert _tree(guest) == _tree(host)
    # the "agent" at work in the guest's copy
    subprocess.run(["bash", "-c", "echo new > edit.txt; rm gone.txt; mkdir -p nd; "
                    "echo x > nd/f; chmod 755 run.sh; ln -snf b cur"], cwd=guest, check=True)
    before = _tree(host)
    ch = s.changes()
    assert _tree(host) == before  # nothing touched before acceptance
    assert (ch.added, ch.deleted, ch.modified) == (2, 1, 2), ch.itemized
    assert ch.metadata >= 1
    s.apply()
    assert _tree(host) == _tree(guest)
    assert s.remove_guest_copy() and not guest.exists()
    s.close()


def test_cli_refuses_sync_with_workdir_on_a_missing_instance(tmp_path: Path) -> None:
    r = subprocess.run([str(VENV_BIN / "limactl"), "shell", "--sync", ".", "nosuch", "true"],
                       capture_output=True, text=True, env={**os.environ,
                                                            "LIMA_HOME": str(tmp_path)})
    assert r.returncode == 1 and "instance `nosuch` does not exist" in r.stderr
    assert "Traceback" not in r.stderr


def _on_pty(code: str, keys: bytes) -> tuple[int, str]:
    """Run `code` in a child Python whose terminal is a pty, type `keys` once the menu is
    drawn; its exit status and what it showed."""
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", code])
    seen, sent = b"", False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if not sent and b"type to filter" in seen:
            os.write(fd, keys)
            sent = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), seen.decode(errors="replace")


MENU = ("import sys; from pylima.cli.prompt import select, PromptError\n"
        "try:\n"
        "    sys.exit(10 + select('Accept?', ['Yes', 'No', 'View the changed contents']))\n"
        "except PromptError as e:\n"
        "    print('error:', e); sys.exit(1)\n")


@pytest.mark.parametrize(("keys", "code"), [
    (b"\r", 10),                # Enter: the first choice
    (b"\x1b[B\r", 11),          # down, Enter
    (b"\x1b[B\x1b[B\x1b[B\r", 10),  # wraps around
    (b"\x1b[A\r", 12),          # up from the first: the last
    (b"vie\r", 12),             # typing filters
])
def test_select_menu_on_a_terminal(keys: bytes, code: int) -> None:
    rc, shown = _on_pty(MENU, keys)
    assert rc == code, shown
    assert "Accept?" in shown and "[Use arrows to move, type to filter]" in shown


def test_select_menu_interrupted() -> None:
    rc, shown = _on_pty(MENU, b"\x03")
    assert rc == 1 and "error: interrupt" in shown


def test_select_without_a_terminal_reads_a_line() -> None:
    for answer, code in (("2\n", 11), ("no\n", 11), ("y\n", 10), ("", 1)):
        r = subprocess.run([sys.executable, "-c", MENU], input=answer, text=True,
                           capture_output=True)
        assert r.returncode == code, r.stdout


def test_view_shows_the_itemized_list_and_the_diff(tmp_path: Path,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    from pylima.cli.shellrun import _view_changes

    host = tmp_path / "x" / "proj"
    host.mkdir(parents=True)
    (host / "f.txt").write_text("old\n")
    guest = tmp_path / "g" / "proj"
    s = Syncer(["bash", "-c"], str(host), str(guest))
    s.copy_in()
    (guest / "f.txt").write_text("new line\n")
    ch = s.changes()
    os.environ["PAGER"] = "cat"
    try:
        _view_changes(s, ch)
    finally:
        del os.environ["PAGER"]
        s.close()
    out = capfd.readouterr().out
    assert "--- rsync dry-run statistics ---" in out and "modified: 1" in out
    assert "f.txt" in out and "new line" in out and "--- detailed diff ---" in out
