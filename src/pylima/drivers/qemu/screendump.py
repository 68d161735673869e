"""Screenshots of a QEMU guest's display (`limactl screenshot`).

QEMU's `screendump` writes the display as a binary PPM (P6) on every QEMU version;
pylima asks for that and encodes PNG or BMP itself (pure functions below), so that
the output does not depend on how QEMU was built (PNG output needs QEMU 7.1 with
libpng).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylima.drivers import NoDisplayError
from pylima.errors import LimaError

# QEMU's words when the VM has no display device (`-display none`, no VGA)
_NO_CONSOLE = ("no console", "no qemuconsole", "no surface")


QMPCall = Callable[[str, dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Image:
    width: int
    height: int
    rgb: bytes  # width * height * 3 bytes, rows top to bottom


def parse_ppm(data: bytes) -> Image:
    """A binary PPM (P6, maxval 255), as QEMU's screendump writes it."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            while pos < len(data) and data[pos:pos + 1] != b"\n":
                pos += 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        if start == pos:
            raise LimaError("screendump: truncated PPM header")
        fields.append(data[start:pos])
    pos += 1  # the single whitespace byte before the pixels
    if fields[0] != b"P6":
        raise LimaError(f"screendump: not a binary PPM ({fields[0][:8]!r})")
    try:
        width, height, maxval = (int(f) for f in fields[1:])
    except ValueError as e:
        raise LimaError("screendump: bad PPM header") from e
    if maxval != 255:
        raise LimaError(f"screendump: unsupported PPM maxval {maxval}")
    rgb = data[pos:pos + width * height * 3]
    if len(rgb) != width * height * 3:
        raise LimaError("screendump: truncated PPM pixels")
    return Image(width, height, rgb)


def encode_png(img: Image) -> bytes:
    """8-bit RGB PNG, no filtering (the rows go to zlib as they are)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    stride = img.width * 3
    raw = b"".join(b"\x00" + img.rgb[y * stride:(y + 1) * stride] for y in range(img.height))
    header = struct.pack(">IIBBBBB", img.width, img.height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def encode_bmp(img: Image) -> bytes:
    """24-bit BMP (BITMAPINFOHEADER): rows bottom to top, BGR, padded to 4 bytes."""
    stride = img.width * 3
    pad = b"\x00" * ((4 - stride % 4) % 4)
    rows = []
    for y in range(img.height - 1, -1, -1):
        row = bytearray(img.rgb[y * stride:(y + 1) * stride])
        row[0::3], row[2::3] = row[2::3], row[0::3]  # RGB -> BGR
        rows.append(bytes(row) + pad)
    pixels = b"".join(rows)
    info = struct.pack("<IiiHHIIiiII", 40, img.width, img.height, 1, 24, 0, len(pixels),
                       2835, 2835, 0, 0)
    offset = 14 + len(info)
    return struct.pack("<2sIHHI", b"BM", offset + len(pixels), 0, 0, offset) + info + pixels


def encode(img: Image, fmt: str) -> bytes:
    if fmt == "png":
        return encode_png(img)
    if fmt == "bmp":
        return encode_bmp(img)
    raise LimaError(f'unsupported format "{fmt}": must be png or bmp')


async def capture(qmp: QMPCall, inst_dir: str | os.PathLike[str], fmt: str) -> bytes:
    """The display as `fmt` (png or bmp). `qmp` runs one QMP command (the driver's).
    QEMU writes the PPM into the instance directory (it runs as the user); the file
    is removed."""
    from pylima.drivers.qemu.qmp import QMPError

    ppm = Path(inst_dir) / f".screendump-{os.getpid()}.ppm"
    try:
        try:
            await qmp("screendump", {"filename": str(ppm)})
        except QMPError as e:
            if any(w in e.message.lower() for w in _NO_CONSOLE):
                raise NoDisplayError(e.message) from e
            raise
        data = ppm.read_bytes()
    finally:
        with contextlib.suppress(OSError):
            ppm.unlink()
    return encode(parse_ppm(data), fmt)
