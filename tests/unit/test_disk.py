"""Instance disks and additional disks, with the real qemu-img (package qemu-utils)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from imageserver import RunningServer

from pylima.images.disk import (
    DiskError,
    base_image_path,
    boot_disk_path,
    create_data_disk,
    create_instance_disk,
    delete_data_disk,
    ensure_instance_disk,
    image_info,
    inspect_data_disk,
    install_base_image,
    list_data_disks,
    lock_data_disk,
    lock_instance_disks,
    resize_data_disk,
    unlock_data_disk,
    unlock_instance_disks,
)
from pylima.images.download import cache_entry_dir, download, download_first
from pylima.images.fileutil import link_or_copy, virtual_size
from pylima.images.prune import prune_cache

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None,
                                reason="qemu-img (Debian package qemu-utils) is not installed")

MiB = 1 << 20


def qemu_info(path: Path) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "--force-share", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def make_qcow2(path: Path, size: int) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), str(size)],
                   check=True)
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "lima"


@pytest.fixture
def lima_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lima-home"
    monkeypatch.setenv("LIMA_HOME", str(home))
    return home


@pytest.fixture
def server() -> Iterator[RunningServer]:
    s = RunningServer()
    yield s
    s.close()


def test_cached_image_to_overlay_disk(server: RunningServer, cache: Path,
                                      tmp_path: Path) -> None:
    base = make_qcow2(tmp_path / "base.qcow2", 64 * MiB)
    server.state.files["/debian.qcow2"] = base.read_bytes()
    url = server.url("/debian.qcow2")
    inst = tmp_path / "instances" / "default"
    download_first([{"location": url, "arch": "x86_64"}], "x86_64", inst / "image")
    data = cache_entry_dir(url) / "data"
    assert os.stat(inst / "image").st_ino == os.stat(data).st_ino  # hard link

    t0 = time.monotonic()
    disk = create_instance_disk(inst, 1 << 30)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"creating the disk took {elapsed:.2f}s"
    info = qemu_info(disk)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == "image"  # relative: the directory can move
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 1 << 30
    assert image_info(disk).backing_filename == "image"

    # Pruning the cache leaves the instance's image (same bytes) in place.
    prune_cache(None)
    assert not data.exists()
    assert (inst / "image").read_bytes() == base.read_bytes()
    moved = tmp_path / "renamed"
    inst.rename(moved)
    assert qemu_info(moved / "disk")["full-backing-filename"] == str(moved / "image")
    subprocess.run(["qemu-img", "check", "-q", str(moved / "disk")], check=True)


def test_overlay_without_size_keeps_image_size_and_raw_base(tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    inst.mkdir()
    with open(inst / "image", "wb") as f:
        f.truncate(32 * MiB)  # a raw image is any file
    disk = create_instance_disk(inst, None)
    info = qemu_info(disk)
    assert info["backing-filename"] == "image"
    assert info["backing-filename-format"] == "raw"
    assert info["virtual-size"] == 32 * MiB


def test_smaller_size_is_refused_and_resize_only_grows(tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    inst.mkdir()
    make_qcow2(inst / "image", 64 * MiB)
    with pytest.raises(DiskError, match="shrinking is not supported") as ei:
        create_instance_disk(inst, 16 * MiB)
    assert "64MiB" in str(ei.value)
    assert not (inst / "disk").exists()

    disk = ensure_instance_disk(inst, 64 * MiB)
    assert virtual_size(disk) == 64 * MiB
    assert ensure_instance_disk(inst, 128 * MiB) == disk
    assert qemu_info(disk)["virtual-size"] == 128 * MiB
    with pytest.raises(DiskError, match="shrinking"):
        ensure_instance_disk(inst, 100 * MiB)
    assert qemu_info(disk)["virtual-size"] == 128 * MiB


def test_image_with_backing_file_is_refused(tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    inst.mkdir()
    make_qcow2(tmp_path / "host-file", MiB)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(tmp_path / "host-file"), str(inst / "image")], check=True)
    with pytest.raises(DiskError, match="must not have a backing file"):
        create_instance_disk(inst, None)
    assert not (inst / "disk").exists()


def test_iso_image_becomes_iso_and_empty_disk(tmp_path: Path) -> None:
    inst = tmp_path / "inst"
    inst.mkdir()
    iso = bytearray(0x9000)
    iso[0x8001:0x8006] = b"CD001"
    (inst / "image").write_bytes(bytes(iso))
    disk = create_instance_disk(inst, 256 * MiB)
    assert (inst / "iso").read_bytes() == bytes(iso)
    assert not (inst / "image").exists()
    info = qemu_info(disk)
    assert info["virtual-size"] == 256 * MiB and "backing-filename" not in info


def test_legacy_basedisk_diffdisk(tmp_path: Path) -> None:
    inst = tmp_path / "old"
    inst.mkdir()
    make_qcow2(inst / "basedisk", 32 * MiB)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(inst / "basedisk"), str(inst / "diffdisk"), str(64 * MiB)],
                   check=True)
    assert boot_disk_path(inst) == inst / "diffdisk"
    assert base_image_path(inst) == inst / "basedisk"
    # A start of an old instance grows its diffdisk, never makes a new disk.
    assert ensure_instance_disk(inst, 96 * MiB) == inst / "diffdisk"
    assert qemu_info(inst / "diffdisk")["virtual-size"] == 96 * MiB
    assert not (inst / "disk").exists()
    make_qcow2(inst / "disk", 32 * MiB)
    assert boot_disk_path(inst) == inst / "disk"
    assert boot_disk_path(tmp_path / "fresh") is None


def test_install_base_image_link_then_copy(tmp_path: Path) -> None:
    src = tmp_path / "data"
    src.write_bytes(b"x" * 4096)
    inst = tmp_path / "inst"
    path, how = install_base_image(src, inst)
    assert how == "hardlink" and os.stat(path).st_ino == os.stat(src).st_ino
    assert install_base_image(src, inst)[1] == "existing"
    other = tmp_path / "copy"
    assert link_or_copy(src, other, allow_hardlink=False) in ("reflink", "copy")
    assert other.read_bytes() == src.read_bytes()
    assert os.stat(other).st_ino != os.stat(src).st_ino


def test_qemu_img_missing_names_the_package(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    inst = tmp_path / "inst"
    inst.mkdir()
    make_qcow2(inst / "image", MiB)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DiskError) as ei:
        create_instance_disk(inst, 2 * MiB)
    assert "qemu-img" in str(ei.value)
    assert ei.value.hint is not None and "qemu-utils" in ei.value.hint


def test_data_disks(lima_home: Path) -> None:
    d = create_data_disk("data", 10 * MiB)
    assert d.format == "qcow2" and d.size == 10 * MiB
    assert d.dir == lima_home / "_disks" / "data"
    assert qemu_info(d.dir / "datadisk")["format"] == "qcow2"
    odd = create_data_disk("odd", 1000, "raw")
    assert odd.size == 1024  # whole sectors
    delete_data_disk("odd")
    r = create_data_disk("scratch.1", 20 * MiB, "raw")
    assert r.format == "raw" and (r.dir / "datadisk").stat().st_size == 20 * MiB
    assert [x.name for x in list_data_disks()] == ["data", "scratch.1"]

    with pytest.raises(DiskError, match="already exists"):
        create_data_disk("data", MiB)
    with pytest.raises(DiskError, match="disk format `vmdk` not supported"):
        create_data_disk("other", MiB, "vmdk")
    with pytest.raises(DiskError, match="identifier"):
        create_data_disk("../escape", MiB)

    assert resize_data_disk("data", 30 * MiB).size == 30 * MiB
    assert qemu_info(d.dir / "datadisk")["virtual-size"] == 30 * MiB
    assert resize_data_disk("scratch.1", 40 * MiB).size == 40 * MiB
    with pytest.raises(DiskError, match="Disk shrinking is currently unavailable"):
        resize_data_disk("data", 10 * MiB)
    with pytest.raises(DiskError, match="does not exists"):
        resize_data_disk("nope", 10 * MiB)

    inst_dir = lima_home / "vm1"
    lock_data_disk("data", inst_dir)
    assert os.readlink(d.dir / "in_use_by") == str(inst_dir)
    used = inspect_data_disk("data")
    assert used.instance == "vm1" and used.to_json()["instanceDir"] == str(inst_dir)
    lock_data_disk("data", inst_dir)  # the same instance may lock again
    with pytest.raises(DiskError, match="in use by instance `vm1`"):
        lock_data_disk("data", lima_home / "vm2")
    with pytest.raises(DiskError, match="used by running instance `vm1`"):
        resize_data_disk("data", 50 * MiB, running_instances={"vm1"})
    with pytest.raises(DiskError, match="cannot delete disk `data` in use by instance `vm1`"):
        delete_data_disk("data")
    assert unlock_data_disk("data") and not unlock_data_disk("data")
    lock_data_disk("data", inst_dir)
    assert delete_data_disk("data", force=True) == d.dir
    assert not d.dir.exists()
    assert delete_data_disk("data") is None
    assert [x.name for x in list_data_disks()] == ["scratch.1"]


def test_instance_disks_are_locked_all_or_none(lima_home: Path) -> None:
    """What a start does with `additionalDisks`: lock every disk to the instance
    (Lima's messages for a missing disk and one in use), unlock them at the end."""
    a = create_data_disk("a", MiB)
    b = create_data_disk("b", MiB, "raw")
    vm1, vm2 = lima_home / "vm1", lima_home / "vm2"
    cfg = {"additionalDisks": ["a", {"name": "b", "format": False}]}
    assert lock_instance_disks(cfg, vm1) == [(str(a.dir / "datadisk"), "qcow2"),
                                             (str(b.dir / "datadisk"), "raw")]
    assert {d.name: d.instance for d in list_data_disks()} == {"a": "vm1", "b": "vm1"}
    # a crashed owner left the locks: the same instance takes them over
    assert len(lock_instance_disks(cfg, vm1)) == 2
    with pytest.raises(DiskError, match="could not attach disk `a`: in use by instance `vm1`"):
        lock_instance_disks({"additionalDisks": ["a"]}, vm2)
    # vm2's own disk is not left locked when a later one is refused
    c = create_data_disk("c", MiB)
    with pytest.raises(DiskError, match="could not attach disk `b`"):
        lock_instance_disks({"additionalDisks": ["c", "b"]}, vm2)
    assert inspect_data_disk("c").instance == ""
    with pytest.raises(DiskError, match=r"could not load disk `nope`: `stat .*nope/datadisk: "
                       "no such file or directory`"):
        lock_instance_disks({"additionalDisks": ["c", "nope"]}, vm2)
    assert inspect_data_disk("c").instance == ""
    # vm2 unlocking vm1's disks leaves them alone
    assert unlock_instance_disks(cfg, vm2) == []
    assert unlock_instance_disks(cfg, vm1) == ["a", "b"]
    assert all(not d.instance for d in list_data_disks())
    # an image QEMU must not be handed: another format, or one with a backing file
    (c.dir / "datadisk").write_bytes(b"KDMV" + bytes(508))
    with pytest.raises(DiskError, match="disk format `vmdk` not supported"):
        lock_instance_disks({"additionalDisks": ["c"]}, vm1)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(a.dir / "datadisk"), str(c.dir / "datadisk")], check=True)
    with pytest.raises(DiskError, match="backing file"):
        lock_instance_disks({"additionalDisks": ["c"]}, vm1)
    assert inspect_data_disk("c").instance == ""


def test_downloaded_compressed_image_boots_as_overlay(server: RunningServer, cache: Path,
                                                      tmp_path: Path) -> None:
    import lzma

    base = make_qcow2(tmp_path / "base.qcow2", 48 * MiB)
    server.state.files["/img.qcow2.xz"] = lzma.compress(base.read_bytes())
    inst = tmp_path / "inst"
    download(server.url("/img.qcow2.xz"), inst / "image", decompress=True)
    disk = create_instance_disk(inst, 64 * MiB)
    info = qemu_info(disk)
    assert info["backing-filename"] == "image" and info["virtual-size"] == 64 * MiB
    assert info["backing-filename-format"] == "qcow2"
