"""Instance disks and Lima's additional disks (`$LIMA_HOME/_disks/NAME/datadisk`).

An instance boots from `disk`, a qcow2 overlay whose backing file is `image` named
by a RELATIVE path, so the instance directory can be moved or renamed. `image` is
hard-linked from the download cache: pruning the cache leaves the instance intact,
and creating the overlay touches no image data, so it takes milliseconds. `image`
must therefore never be written to (QEMU opens a backing file read-only).

Instances made by older Lima versions have `basedisk` + `diffdisk` instead; they are
still booted from `diffdisk`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pylima.config.units import format_size
from pylima.errors import CommandError, LimaError
from pylima.images.fileutil import (
    detect_image_format,
    is_iso9660,
    link_or_copy,
    probe_image_type,
    qcow2_has_backing_file,
    virtual_size,
)
from pylima.names import validate_identifier
from pylima.store import dirs

__all__ = [
    "DATADISK",
    "IN_USE_BY",
    "ISO",
    "DataDisk",
    "DiskError",
    "ImageInfo",
    "boot_disk_path",
    "check_instance_disks",
    "create_data_disk",
    "create_instance_disk",
    "delete_data_disk",
    "disk_entries",
    "ensure_instance_disk",
    "image_info",
    "import_data_disk",
    "inspect_data_disk",
    "install_base_image",
    "list_data_disks",
    "lock_data_disk",
    "lock_instance_disks",
    "resize_data_disk",
    "resize_disk",
    "unlock_data_disk",
    "unlock_instance_disks",
    "validate_disk_name",
]

log = logging.getLogger(__name__)

ISO = "iso"  # an ISO 9660 `image` is renamed to this; the disk then starts empty
DATADISK = "datadisk"
IN_USE_BY = "in_use_by"  # symlink to the instance directory using the disk

QEMU_IMG_HINT = "install qemu-img: `apt-get install qemu-utils` (Debian, Ubuntu)"


class DiskError(LimaError):
    """A disk cannot be created, resized, found or deleted."""


# --------------------------------------------------------------------------- qemu-img

def _qemu_img(args: list[str], *, cwd: str | os.PathLike[str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    from pylima.process import run

    exe = shutil.which("qemu-img")
    if exe is None:
        raise DiskError("`qemu-img` not found", hint=QEMU_IMG_HINT)
    return run([exe, *args], cwd=str(cwd) if cwd is not None else None)


@dataclass
class ImageInfo:
    """The fields of `qemu-img info --output=json` that pylima uses."""

    filename: str
    format: str
    virtual_size: int
    actual_size: int
    backing_filename: str = ""
    full_backing_filename: str = ""
    backing_format: str = ""


def image_info(path: str | os.PathLike[str]) -> ImageInfo:
    """`qemu-img info --output=json --force-share` (works while QEMU holds the file)."""
    out = _qemu_img(["info", "--output=json", "--force-share", str(path)]).stdout
    d = json.loads(out)
    return ImageInfo(filename=d.get("filename", str(path)), format=d.get("format", ""),
                     virtual_size=int(d.get("virtual-size", 0)),
                     actual_size=int(d.get("actual-size", 0)),
                     backing_filename=d.get("backing-filename", ""),
                     full_backing_filename=d.get("full-backing-filename", ""),
                     backing_format=d.get("backing-filename-format", ""))


def _round_sector(size: int) -> int:
    """Raw disks are whole 512-byte sectors (qemu-img rounds qcow2 sizes the same way)."""
    return (size + 511) // 512 * 512


# --------------------------------------------------------------------------- instance disk

def install_base_image(src: str | os.PathLike[str], instance_dir: str | os.PathLike[str]
                       ) -> tuple[Path, str]:
    """Put a downloaded (decompressed) base image at `instance_dir/image`: a hard link
    to the cache file when possible, else a reflink, else a copy. Returns the path
    and how it was placed ("hardlink", "reflink", "copy"). An existing `image` is kept."""
    dst = Path(instance_dir) / dirs.IMAGE
    if dst.exists():
        return dst, "existing"
    return dst, link_or_copy(src, dst)


def _first_existing(instance_dir: str | os.PathLike[str], *names: str) -> Path | None:
    for name in names:
        p = Path(instance_dir) / name
        if p.exists():
            return p
    return None


def boot_disk_path(instance_dir: str | os.PathLike[str]) -> Path | None:
    """The disk to boot: `disk`, else the legacy `diffdisk`; None before the first start."""
    return _first_existing(instance_dir, dirs.DISK, dirs.DIFFDISK_LEGACY)


def base_image_path(instance_dir: str | os.PathLike[str]) -> Path | None:
    """The base image: `image`, else the legacy `basedisk`; None when absent."""
    return _first_existing(instance_dir, dirs.IMAGE, dirs.BASEDISK_LEGACY)


def create_instance_disk(instance_dir: str | os.PathLike[str], size: int | None) -> Path:
    """Create `disk` from `image`: a qcow2 overlay backed by the relative name `image`,
    `size` bytes large (None: the image's own virtual size). A `size` below the
    image's virtual size is refused: shrinking is not supported (Lima refuses it too).
    An ISO 9660 `image` is renamed to `iso` and the disk starts empty, as Lima does.
    One qemu-img call; no image data is read."""
    inst = Path(instance_dir)
    disk = inst / dirs.DISK
    if disk.exists():
        raise DiskError(f"disk `{disk}` already exists")
    image = inst / dirs.IMAGE
    if not image.exists():
        raise DiskError(f"image `{image}` does not exist")
    if is_iso9660(image):
        if not size:
            raise DiskError("field `disk` must be set for an ISO image")
        iso = inst / ISO
        os.replace(image, iso)
        try:
            _qemu_img(["create", "-f", "qcow2", dirs.DISK, str(size)], cwd=inst)
        except LimaError:
            os.replace(iso, image)
            raise
        return disk
    fmt = detect_image_format(image)
    if fmt == "qcow2" and qcow2_has_backing_file(image):
        # A downloaded image must not pull in other files of the host (Lima refuses too).
        raise DiskError(f"file `{image}` is not acceptable as a disk image: "
                        "a base disk must not have a backing file")
    base_size = virtual_size(image)
    if size is not None and size < base_size:
        raise DiskError(
            f"field `disk`: the size {format_size(size)} is smaller than the image's "
            f"virtual size {format_size(base_size)}; disk shrinking is not supported",
            hint=f"set `disk` to at least {format_size(base_size)}")
    args = ["create", "-f", "qcow2", "-F", fmt, "-b", dirs.IMAGE, dirs.DISK]
    if size is not None and size > base_size:
        args.append(str(size))
    _qemu_img(args, cwd=inst)
    return disk


def check_growth(current: int, size: int) -> bool:
    """Whether a disk of `current` bytes must grow to `size`: False when it has that
    size already; a smaller `size` raises, as Lima's `disk shrinking is not
    supported` (for every driver's disk)."""
    if size == current:
        return False
    if size < current:
        raise DiskError(
            f"disk shrinking is not supported ({format_size(current)} --> "
            f"{format_size(size)})", hint=f"set `disk` to at least {format_size(current)}")
    return True


def resize_disk(path: str | os.PathLike[str], size: int) -> bool:
    """Grow the disk image at `path` to `size` bytes. Returns False when it already has
    that size; a smaller `size` raises (`check_growth`)."""
    p = Path(path)
    current = virtual_size(p)
    if not check_growth(current, size):
        return False
    log.info("Resize disk `%s` from %s to %s", p, format_size(current), format_size(size))
    fmt = detect_image_format(p)
    if fmt == "raw":
        # Growing a raw file is a sparse truncate: no qemu-img needed.
        with open(p, "r+b") as f:
            f.truncate(_round_sector(size))
        return True
    _qemu_img(["resize", "-f", fmt, str(p), str(size)])
    return True


def ensure_instance_disk(instance_dir: str | os.PathLike[str], size: int | None) -> Path:
    """What a start does: create the disk from `image` on the first start, otherwise
    grow the existing `disk` (or legacy `diffdisk`) to the configured size."""
    existing = boot_disk_path(instance_dir)
    if existing is None:
        return create_instance_disk(instance_dir, size)
    if size:
        resize_disk(existing, size)
    return existing


# --------------------------------------------------------------------------- additional disks



def validate_disk_name(name: str) -> None:
    """Lima's identifier rule: alphanumerics joined by single `.`, `_` or `-`."""
    reason = validate_identifier(name)
    if reason:
        raise DiskError(reason)


def _disk_dir(name: str) -> Path:
    validate_disk_name(name)
    return dirs.disks_dir() / name


@dataclass
class DataDisk:
    """One additional disk; the JSON field names of `limactl disk ls --json`."""

    name: str
    size: int
    format: str
    dir: Path
    instance: str = ""
    instance_dir: str = ""
    mount_point: str = ""

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "format": self.format,
                "dir": str(self.dir), "instance": self.instance,
                "instanceDir": self.instance_dir, "mountPoint": self.mount_point}


def inspect_data_disk(name: str) -> DataDisk:
    """Size and format from the image header; the user from the `in_use_by` link."""
    d = _disk_dir(name)
    data = d / DATADISK
    if not data.is_file():
        raise DiskError(f"disk `{name}` does not exist")
    inst_dir = ""
    try:
        inst_dir = os.readlink(d / IN_USE_BY)
    except FileNotFoundError:
        pass
    return DataDisk(name=name, size=virtual_size(data), format=detect_image_format(data),
                    dir=d, instance=os.path.basename(inst_dir) if inst_dir else "",
                    instance_dir=inst_dir, mount_point=f"/mnt/lima-{name}")


def disk_entries(cfg: dict[str, object]) -> list[dict[str, object]]:
    """`additionalDisks` of a filled config, each as a mapping (a bare name is
    `{name: NAME}`)."""
    raw = cfg.get("additionalDisks") or []
    assert isinstance(raw, list)
    return [d if isinstance(d, dict) else {"name": str(d)} for d in raw]


def list_data_disks() -> list[DataDisk]:
    """Every disk under `$LIMA_HOME/_disks`, by name; entries without `datadisk` skipped."""
    root = dirs.disks_dir()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if (entry / DATADISK).is_file() and validate_identifier(entry.name) is None:
            out.append(inspect_data_disk(entry.name))
    return out


def create_data_disk(name: str, size: int, fmt: str = "qcow2") -> DataDisk:
    """`limactl disk create NAME --size SIZE [--format qcow2|raw]`."""
    if fmt not in ("qcow2", "raw"):
        raise DiskError(f"disk format `{fmt}` not supported, use `qcow2` or `raw` instead")
    if size <= 0:
        raise DiskError(f"invalid disk size {size}")
    d = _disk_dir(name)
    if d.exists() or d.is_symlink():
        raise DiskError(f"disk `{name}` already exists (`{d}`)")
    log.info("Creating %s disk `%s` with size %s", fmt, name, format_size(size))
    d.mkdir(parents=True, mode=0o700)
    data = d / DATADISK
    try:
        if fmt == "raw":
            # A sparse file is a raw disk; this needs no qemu-img.
            with open(data, "xb") as f:
                f.truncate(_round_sector(size))
        else:
            _qemu_img(["create", "-f", "qcow2", str(data), str(size)])
    except (OSError, LimaError) as e:
        shutil.rmtree(d, ignore_errors=True)
        msg = e.message if isinstance(e, LimaError) else str(e)
        raise DiskError(f"failed to create {fmt} disk in `{d}`: {msg}",
                        hint=getattr(e, "hint", None)) from e
    return inspect_data_disk(name)


def import_data_disk(name: str, source: str) -> DataDisk:
    """`limactl disk import NAME FILE`: a copy of a qcow2 or raw image becomes disk
    NAME (a reflink where the file system has them), as Lima does; other formats are
    refused with Lima's message."""
    d = _disk_dir(name)
    if d.exists() or d.is_symlink():
        raise DiskError(f"disk `{name}` already exists (`{d}`)")
    try:
        fmt = probe_image_type(source)
    except OSError as e:
        why = (e.strerror or str(e)).lower()
        raise DiskError(f"open {source}: {why}") from e
    if fmt not in ("qcow2", "raw"):
        raise DiskError(f"disk format `{fmt}` not supported, use `qcow2` or `raw` instead")
    if fmt == "qcow2" and qcow2_has_backing_file(source):
        raise DiskError(f"disk image `{source}` has a backing file",
                        hint=f"import a standalone copy: `qemu-img convert -O qcow2 {source} "
                        "FILE`")
    d.mkdir(parents=True, mode=0o755)
    try:
        link_or_copy(source, d / DATADISK, allow_hardlink=False)
    except OSError as e:
        shutil.rmtree(d, ignore_errors=True)
        raise DiskError(f"failed to import `{source}` as disk `{name}`: {e}") from e
    disk = inspect_data_disk(name)
    log.info("Imported %s with size %s", name, format_size(disk.size))
    return disk


def resize_data_disk(name: str, size: int, *, running_instances: set[str] | None = None
                     ) -> DataDisk:
    """`limactl disk resize NAME --size SIZE`: grow only, and not while the instance
    that holds it (per `in_use_by`) is among `running_instances`."""
    try:
        disk = inspect_data_disk(name)
    except DiskError:
        raise DiskError(f"disk `{name}` does not exists") from None
    if size < disk.size:
        raise DiskError(f"specified size `{format_size(size)}` is less than the current disk "
                        f"size `{format_size(disk.size)}`. Disk shrinking is currently "
                        "unavailable")
    if disk.instance and running_instances and disk.instance in running_instances:
        raise DiskError(f"cannot resize disk `{name}` used by running instance "
                        f"`{disk.instance}`. Please stop the VM instance")
    try:
        resize_disk(disk.dir / DATADISK, size)
    except CommandError as e:
        raise DiskError(f"failed to resize disk `{name}`: {e.message}") from e
    return inspect_data_disk(name)


def delete_data_disk(name: str, *, force: bool = False) -> Path | None:
    """`limactl disk delete NAME`: refuses a disk in use unless `force`. Returns the
    removed directory, or None for a disk that does not exist (Lima warns and goes
    on). Whether non-running instances still refer to the disk in their lima.yaml is
    for the caller to check (it knows the instances)."""
    try:
        disk = inspect_data_disk(name)
    except DiskError:
        return None
    if disk.instance and not force:
        raise DiskError(f"cannot delete disk `{name}` in use by instance `{disk.instance}`",
                        hint=f"run `limactl disk delete --force {name}`")
    shutil.rmtree(disk.dir)
    return disk.dir


def lock_data_disk(name: str, instance_dir: str | os.PathLike[str]) -> None:
    """Mark the disk as used by an instance (`in_use_by` -> the instance directory).
    Re-locking by the same instance is allowed; another instance is refused."""
    disk = inspect_data_disk(name)
    target = str(Path(instance_dir))
    link = disk.dir / IN_USE_BY
    if disk.instance:
        if disk.instance_dir != target:
            raise DiskError(f"in use by instance `{disk.instance}`")
        link.unlink()
    os.symlink(target, link)


def unlock_data_disk(name: str) -> bool:
    """Remove `in_use_by`; False when the disk was not locked."""
    link = _disk_dir(name) / IN_USE_BY
    try:
        link.unlink()
    except FileNotFoundError:
        return False
    return True


def _load_for_instance(name: str) -> DataDisk:
    """Lima's `could not load disk` error for a disk an instance names but that
    cannot be read."""
    try:
        return inspect_data_disk(name)
    except DiskError:
        path = dirs.disks_dir() / name / DATADISK
        raise DiskError(f"could not load disk `{name}`: `stat {path}: no such file or "
                        "directory`", hint=f"create it with `limactl disk create {name} "
                        "--size SIZE`") from None
    except (OSError, LimaError) as e:
        why = e.message if isinstance(e, LimaError) else str(e)
        raise DiskError(f"could not load disk `{name}`: `{why}`") from e


def check_instance_disks(cfg: dict[str, object], instance_dir: str | os.PathLike[str]
                         ) -> list[DataDisk]:
    """The additional disks of an instance, each existing, readable and free for it
    (unlocked, or locked by this very instance, which is how a crashed host agent
    leaves them). Raises Lima's error for the first that is not. Changes nothing."""
    target = str(Path(instance_dir))
    out = []
    for entry in disk_entries(cfg):
        name = str(entry.get("name") or "")
        disk = _load_for_instance(name)
        if disk.instance and disk.instance_dir != target:
            raise DiskError(f"could not attach disk `{name}`: in use by instance "
                            f"`{disk.instance}`",
                            hint=f"stop instance `{disk.instance}`, or run `limactl disk "
                            f"unlock {name}` if it is not running")
        fmt = probe_image_type(disk.dir / DATADISK)
        if fmt not in ("qcow2", "raw"):
            raise DiskError(f"could not attach disk `{name}`: disk format `{fmt}` not "
                            "supported, use `qcow2` or `raw` instead")
        if fmt == "qcow2" and qcow2_has_backing_file(disk.dir / DATADISK):
            raise DiskError(f"could not attach disk `{name}`: its image has a backing file",
                            hint="make a standalone copy with `qemu-img convert -O qcow2`")
        out.append(disk)
    return out


def lock_instance_disks(cfg: dict[str, object], instance_dir: str | os.PathLike[str]
                        ) -> list[tuple[str, str]]:
    """Lock every additional disk of the instance to it (`in_use_by`), all or none,
    and return their (path, format) for the VM. A disk another instance holds is
    refused with Lima's message; those locked so far are unlocked again."""
    disks = check_instance_disks(cfg, instance_dir)
    done: list[str] = []
    try:
        for disk in disks:
            try:
                lock_data_disk(disk.name, instance_dir)
            except DiskError as e:
                raise DiskError(f"could not attach disk `{disk.name}`: {e.message}") from e
            except OSError as e:
                raise DiskError(f"could not attach disk `{disk.name}`: {e}") from e
            done.append(disk.name)
            log.info("Mounting disk `%s` on `%s`", disk.name, _mount_point_of(cfg, disk))
    except BaseException:
        for name in done:
            unlock_data_disk(name)
        raise
    return [(str(d.dir / DATADISK), d.format) for d in disks]


def _mount_point_of(cfg: dict[str, object], disk: DataDisk) -> str:
    for entry in disk_entries(cfg):
        if entry.get("name") == disk.name and entry.get("fsType") == "swap":
            return "[SWAP]"
    return disk.mount_point


def unlock_instance_disks(cfg: dict[str, object], instance_dir: str | os.PathLike[str]
                          ) -> list[str]:
    """Unlock the additional disks the instance holds (a lock that names another
    instance is left alone). Returns the names unlocked."""
    target = str(Path(instance_dir))
    out = []
    for entry in disk_entries(cfg):
        name = str(entry.get("name") or "")
        if validate_identifier(name) is not None:
            continue
        link = dirs.disks_dir() / name / IN_USE_BY
        try:
            if os.readlink(link) != target:
                continue
            link.unlink()
        except OSError:
            continue
        out.append(name)
    return out
