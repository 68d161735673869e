"""Small file helpers shared by the download cache and the instance disks.

Detecting an image's format reads a few header bytes (no qemu-img), so listing
disks or preparing an overlay costs no subprocess.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from pathlib import Path

log = logging.getLogger(__name__)

QCOW2_MAGIC = b"QFI\xfb"
_ISO9660_OFFSET = 0x8001
_ISO9660_MAGIC = b"CD001"


def detect_image_format(path: str | os.PathLike[str]) -> str:
    """"qcow2" when the file starts with the qcow2 magic (`QFI\\xfb`), else "raw"."""
    with open(path, "rb") as f:
        head = f.read(4)
    return "qcow2" if head == QCOW2_MAGIC else "raw"


def probe_image_type(path: str | os.PathLike[str]) -> str:
    """The disk image format by its signature, with the names and the order in which
    Lima's image reader tries them: qcow2, vmdk, vhdx, vdi, parallels, vpc, else raw."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] == QCOW2_MAGIC:
        return "qcow2"
    if head[:4] == b"KDMV" or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[0x40:0x44] == struct.pack("<I", 0xBEDA107F):
        return "vdi"
    if head[:16] in (b"WithoutFreeSpace", b"WithouFreSpacExt"):
        return "parallels"
    if head[:8] == b"conectix":
        return "vpc"
    return "raw"


def is_iso9660(path: str | os.PathLike[str]) -> bool:
    """True for an ISO 9660 image (installer/live CD): `CD001` at byte 0x8001."""
    with open(path, "rb") as f:
        f.seek(_ISO9660_OFFSET)
        return f.read(5) == _ISO9660_MAGIC


def virtual_size(path: str | os.PathLike[str]) -> int:
    """The size the guest sees: the qcow2 header's size field, or a raw file's length."""
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:4] == QCOW2_MAGIC and len(head) >= 32:
        # qcow2 header: magic(4) version(4) backing_offset(8) backing_size(4)
        # cluster_bits(4) size(8), all big-endian.
        return int(struct.unpack(">Q", head[24:32])[0])
    return os.stat(path).st_size


def qcow2_has_backing_file(path: str | os.PathLike[str]) -> bool:
    """True when a qcow2 header names a backing file (its offset at byte 8 is set)."""
    with open(path, "rb") as f:
        head = f.read(16)
    return head[:4] == QCOW2_MAGIC and len(head) == 16 and \
        int(struct.unpack(">Q", head[8:16])[0]) != 0


def _tmp_sibling(dst: Path) -> Path:
    return dst.with_name(f"{dst.name}.tmp.{os.getpid()}")


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                 allow_hardlink: bool = True) -> str:
    """Put `src` at `dst` without a second full copy when the file system allows.

    Tries a hard link (the cache entry and the instance share one inode, so pruning
    the cache keeps the instance's file), then a reflink (`cp --reflink=always`),
    then a plain copy. The copy goes through a temporary sibling and a rename so a
    partial file is never visible at `dst`. Returns "hardlink", "reflink" or "copy".
    """
    src_p, dst_p = Path(src), Path(dst)
    dst_p.parent.mkdir(parents=True, exist_ok=True)
    if allow_hardlink:
        try:
            os.link(src_p, dst_p)
            return "hardlink"
        except OSError as e:
            log.debug("hard link %s -> %s failed: %s", src_p, dst_p, e)
    tmp = _tmp_sibling(dst_p)
    try:
        if shutil.which("cp"):
            from pylima.errors import LimaError
            from pylima.process import run

            # reflink shares extents (btrfs, xfs); --sparse=always keeps a raw image's
            # holes when a real copy is needed.
            for how, flag in (("reflink", "--reflink=always"), ("copy", "--sparse=always")):
                try:
                    run(["cp", flag, str(src_p), str(tmp)])
                    os.replace(tmp, dst_p)
                    return how
                except LimaError as e:
                    log.debug("cp %s %s -> %s failed: %s", flag, src_p, dst_p, e)
                    tmp.unlink(missing_ok=True)
        shutil.copyfile(src_p, tmp)
        os.replace(tmp, dst_p)
        return "copy"
    finally:
        tmp.unlink(missing_ok=True)
