"""The pure parts of the QEMU driver's devices: VNC display and password, swtpm's
command line, `firmware.images` download into the instance directory."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import string
from pathlib import Path

import pytest
from imageserver import RunningServer

from pylima.drivers.qemu import ensure_firmware, needs_firmware
from pylima.drivers.qemu.swtpm import find_swtpm, swtpm_argv
from pylima.drivers.qemu.vnc import (
    generate_password,
    parse_vnc_display,
    remove_vnc_files,
    vnc_display_text,
    write_vnc_files,
)
from pylima.errors import ConfigError, LimaError


def test_vnc_password_shape() -> None:
    """Lima's shape: 8 characters, 2 digits, letters otherwise, none twice."""
    for _ in range(50):
        pw = generate_password(8)
        assert len(pw) == 8 and len(set(pw)) == 8
        assert sum(c in string.digits for c in pw) == 2
        assert all(c in string.ascii_letters + string.digits for c in pw)
    assert len({generate_password(8) for _ in range(20)}) == 20


def test_vnc_display_parsing_and_text() -> None:
    assert parse_vnc_display("127.0.0.1:0,to=9") == ("127.0.0.1", 0, True)
    assert parse_vnc_display("0.0.0.0:3") == ("0.0.0.0", 3, False)
    assert parse_vnc_display("[::1]:1,to=4") == ("::1", 1, True)
    assert vnc_display_text("127.0.0.1", 2) == "127.0.0.1:2"
    assert vnc_display_text("::1", 1) == "[::1]:1"
    for bad in ("127.0.0.1", "host:x", ""):
        with pytest.raises(ConfigError, match="video.vnc.display"):
            parse_vnc_display(bad)


def test_vnc_files_are_private_and_removed(tmp_path: Path) -> None:
    write_vnc_files(tmp_path, "127.0.0.1:0", "ab12CdEf")
    assert (tmp_path / "vncdisplay").read_text() == "127.0.0.1:0"
    assert (tmp_path / "vncpassword").read_text() == "ab12CdEf"
    assert (tmp_path / "vncpassword").stat().st_mode & 0o777 == 0o600
    remove_vnc_files(tmp_path)
    remove_vnc_files(tmp_path)
    assert not (tmp_path / "vncdisplay").exists()


def test_swtpm_command_line_as_lima(tmp_path: Path) -> None:
    assert swtpm_argv("/usr/bin/swtpm", tmp_path) == [
        "/usr/bin/swtpm", "socket", "--tpmstate", f"dir={tmp_path}/swtpm",
        "--ctrl", f"type=unixio,path={tmp_path}/swtpm.sock", "--tpm2", "--terminate",
        "--log", "level=1"]


def test_missing_swtpm_is_one_error_naming_the_package(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(LimaError, match='swtpm not found in PATH') as e:
        find_swtpm()
    assert e.value.hint and "swtpm-tools" in e.value.hint


def _cfg(images: list[dict]) -> dict:
    return {"arch": "x86_64", "firmware": {"legacyBIOS": False, "images": images}}


def test_firmware_images_downloaded_with_digest(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The first entry that downloads (digest checked, gzip undone) becomes the
    instance's qemu-efi-code.fd; a bad digest falls through to the next entry."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    code = b"UEFI code " * 1000
    inst = tmp_path / "inst"
    inst.mkdir()
    srv = RunningServer()
    srv.state.files["/fw.fd.gz"] = gzip.compress(code)
    try:
        digest = "sha256:" + hashlib.sha256(gzip.compress(code)).hexdigest()
        wrong = "sha256:" + "0" * 64
        cfg = _cfg([{"location": srv.url("/fw.fd.gz"), "arch": "aarch64"},
                    {"location": srv.url("/fw.fd.gz"), "arch": "x86_64", "digest": wrong},
                    {"location": srv.url("/missing.fd"), "arch": "x86_64"},
                    {"location": srv.url("/fw.fd.gz"), "arch": "x86_64", "digest": digest}])
        assert ensure_firmware(inst, cfg) == str(inst / "qemu-efi-code.fd")
    finally:
        srv.close()
    assert (inst / "qemu-efi-code.fd").read_bytes() == code
    # the next start uses the instance's copy without asking the server
    assert ensure_firmware(inst, cfg) == str(inst / "qemu-efi-code.fd")


def test_no_firmware_image_for_the_arch_uses_the_hosts(tmp_path: Path) -> None:
    assert ensure_firmware(tmp_path, _cfg([{"location": "/x", "arch": "aarch64"}])) is None
    assert ensure_firmware(tmp_path, _cfg([])) is None
    assert needs_firmware(_cfg([]), tmp_path)


@pytest.mark.skipif(shutil.which("swtpm") is None, reason="swtpm is not installed")
def test_swtpm_starts_and_stops_with_its_owner(tmp_path: Path) -> None:
    import asyncio

    from pylima.drivers.qemu.swtpm import Swtpm

    async def run() -> None:
        s = Swtpm(tmp_path)
        await s.start()
        assert (tmp_path / "swtpm.sock").exists()
        assert s.process is not None and s.process.returncode is None
        proc = s.process
        await s.stop()
        assert proc.returncode is not None
        assert not (tmp_path / "swtpm.sock").exists()

    asyncio.run(run())
