"""The QEMU host probe: accelerator choice (with its cache), firmware and binary search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pylima.drivers.qemu import probe
from pylima.errors import LimaError


def test_env_forces_the_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(probe.ACCEL_ENV, "kvm")
    assert probe.choose_accel("x86_64", "qemu", (7, 2, 0)) == (
        "kvm", "$PYLIMA_QEMU_ACCEL is set to `kvm`")
    monkeypatch.setenv(probe.ACCEL_ENV, "TCG")
    assert probe.choose_accel("x86_64", "qemu", (7, 2, 0))[0] == "tcg"


def test_env_rejects_other_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(probe.ACCEL_ENV, "hvf")
    with pytest.raises(LimaError, match="must be `auto`, `kvm` or `tcg`, not `hvf`"):
        probe.choose_accel("x86_64", "qemu", (7, 2, 0))


def test_foreign_guest_uses_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(probe.ACCEL_ENV, raising=False)
    accel, reason = probe.choose_accel("aarch64", "qemu", (7, 2, 0), host_arch="x86_64")
    assert accel == "tcg" and "`aarch64` guest cannot use KVM" in reason


def test_software_kvm_uses_tcg_without_a_test_guest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(probe.ACCEL_ENV, raising=False)
    monkeypatch.setattr(probe, "kvm_cheap_check", lambda g, h: "/dev/kvm is a software KVM")

    def no_selftest(*args: object, **kwargs: object) -> tuple[bool, float, str]:
        raise AssertionError("the self-test must not run")

    monkeypatch.setattr(probe, "accel_selftest", no_selftest)
    assert probe.choose_accel("x86_64", "q", (7, 2, 0), host_arch="x86_64") == (
        "tcg", "/dev/kvm is a software KVM")


def test_selftest_verdict_is_cached(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(probe.ACCEL_ENV, raising=False)
    monkeypatch.setattr(probe, "kvm_cheap_check", lambda g, h: None)
    calls: list[str] = []

    def selftest(binary: str, accel: str, **kwargs: object) -> tuple[bool, float, str]:
        calls.append(accel)
        return False, 3.0, "did not finish within 3 s"

    monkeypatch.setattr(probe, "accel_selftest", selftest)
    cache = tmp_path / "accel.json"
    first = probe.choose_accel("x86_64", "q", (7, 2, 0), host_arch="x86_64", cache_file=cache)
    assert first == ("tcg", "KVM is too slow or broken here: a test guest did not finish "
                            "within 3 s")
    second = probe.choose_accel("x86_64", "q", (7, 2, 0), host_arch="x86_64", cache_file=cache)
    assert second == ("tcg", first[1] + " (cached)")
    assert calls == ["kvm"]
    # Another QEMU version is another key: probed again.
    probe.choose_accel("x86_64", "q", (8, 0, 0), host_arch="x86_64", cache_file=cache)
    assert calls == ["kvm", "kvm"]
    assert len(json.loads(cache.read_text())) == 2


def test_default_cache_file_is_under_the_user_cache_dir(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert probe.accel_cache_file() == tmp_path / "pylima" / "accel.json"


def test_boot_sector_layout() -> None:
    sector = probe.make_boot_sector(b"hi\r\n", loops=5)
    assert len(sector) == 512 and sector[-2:] == b"\x55\xaa"
    assert b"hi\r\n\x00" in sector
    # mov si, <message> points at the message inside the sector loaded at 0x7c00
    si = int.from_bytes(sector[6:8], "little")
    assert sector[si - 0x7C00:si - 0x7C00 + 4] == b"hi\r\n"
    with pytest.raises(ValueError):
        probe.make_boot_sector(b"x" * 600)


def test_parse_qemu_version() -> None:
    text = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright ..."
    assert probe.parse_qemu_version(text) == (7, 2, 22)
    assert probe.parse_qemu_version("QEMU emulator version 9.0") == (9, 0, 0)
    with pytest.raises(LimaError):
        probe.parse_qemu_version("something else")


def test_missing_qemu_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.process, "which", lambda name: None)
    with pytest.raises(LimaError, match="qemu-system-aarch64") as e:
        probe.find_qemu_binary("aarch64")
    assert e.value.hint == "install the Debian package `qemu-system-arm`"
    with pytest.raises(LimaError) as e:
        probe.find_qemu_binary("x86_64")
    assert e.value.hint == "install the Debian package `qemu-system-x86`"
    with pytest.raises(LimaError) as e:
        probe.find_qemu_img()
    assert e.value.hint == "install the Debian package `qemu-utils`"


def test_firmware_search_prefers_user_files(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    share = tmp_path / ".local" / "share" / "qemu"
    share.mkdir(parents=True)
    (share / "edk2-x86_64-code.fd").write_bytes(b"code")
    (share / "edk2-i386-vars.fd").write_bytes(b"vars")
    found = probe.find_firmware("x86_64")
    assert found == probe.FirmwarePair(str(share / "edk2-x86_64-code.fd"),
                                       str(share / "edk2-i386-vars.fd"))


def test_firmware_candidates_name_the_debian_files() -> None:
    x86 = [p.code for p in probe.firmware_candidates("x86_64")]
    assert x86.index("/usr/share/OVMF/OVMF_CODE_4M.fd") < x86.index("/usr/share/OVMF/OVMF_CODE.fd")
    arm = probe.firmware_candidates("aarch64")
    assert probe.FirmwarePair("/usr/share/AAVMF/AAVMF_CODE.fd",
                              "/usr/share/AAVMF/AAVMF_VARS.fd") in arm


def test_missing_firmware_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "find_qemu_binary", lambda arch: "/usr/bin/qemu-system-x86_64")
    monkeypatch.setattr(probe, "qemu_version", lambda binary: (7, 2, 0))
    monkeypatch.setattr(probe, "find_firmware", lambda arch, binary=None: None)
    with pytest.raises(LimaError, match="UEFI firmware for `x86_64`") as e:
        probe.probe_qemu_host("x86_64")
    assert e.value.hint == ("install the Debian package `ovmf`, or set "
                            "`firmware.legacyBIOS: true`")
    with pytest.raises(LimaError) as e:
        probe.probe_qemu_host("aarch64")
    assert e.value.hint == "install the Debian package `qemu-efi-aarch64`"


def test_probe_qemu_is_the_host_agents_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, bool]] = []

    def fake(arch: str, *, need_firmware: bool = True,
             cache_file: Path | None = None) -> tuple[object, str]:
        seen.append((arch, need_firmware))
        return object(), "why"

    monkeypatch.setattr(probe, "probe_qemu_host", fake)
    probe.probe_qemu("x86_64", firmware=False)
    assert seen == [("x86_64", False)]


def test_host_architectures_native_and_emulated(monkeypatch: pytest.MonkeyPatch) -> None:
    have = {"qemu-system-x86_64", "qemu-system-aarch64"}
    monkeypatch.setattr(probe.process, "which",
                        lambda name: f"/usr/bin/{name}" if name in have else None)
    support = probe.host_architectures("x86_64")
    assert list(support) == ["x86_64", "aarch64"]
    assert support["x86_64"].mode == "native" and support["x86_64"].user_mode
    assert support["aarch64"].mode == "emulated"
    assert support["aarch64"].qemu == "/usr/bin/qemu-system-aarch64"
    assert probe.describe_architectures(support) == "x86_64 (native), aarch64 (emulated)"
    # the same code on an aarch64 host
    support = probe.host_architectures("aarch64")
    assert support["aarch64"].mode == "native" and support["x86_64"].mode == "emulated"


def test_an_arch_without_qemu_is_refused_with_the_runnable_list(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.process, "which",
                        lambda name: f"/usr/bin/{name}" if name == "qemu-system-x86_64" else None)
    probe.check_arch_runnable("x86_64", "x86_64")
    with pytest.raises(LimaError) as e:
        probe.check_arch_runnable("riscv64", "x86_64")
    assert e.value.message == ("this host cannot run `riscv64` guests: `qemu-system-riscv64` "
                               "not found; it can run: x86_64 (native)")
    assert e.value.hint == "install the Debian package `qemu-system-misc`"
    with pytest.raises(LimaError, match="it can run: x86_64 \\(native\\)"):
        probe.check_arch_runnable("s390x", "x86_64")
