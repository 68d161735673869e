"""Sizes as Lima writes and reads them (go-units RAMInBytes / BytesSize)."""

from __future__ import annotations

import re

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_ABBRS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"]


def parse_size(value: str | int) -> int:
    """"4GiB", "4G", "4gb", "512MiB", "100G" or a byte count -> bytes.

    Like Lima (go-units RAMInBytes), every suffix is binary: "4GB" is 4 GiB.
    Raises ValueError with a Lima-like message.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size: '{value}'")
        return value
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise ValueError(f"invalid size: '{value}'")
    try:
        number = float(m.group(1))
    except ValueError:
        raise ValueError(f"invalid size: '{value}'") from None
    unit = (m.group(2) or "").lower()
    return int(number * _MULT[unit])


def format_size(size: float) -> str:
    """Bytes -> "4GiB", "1.5GiB", "100GiB" (go-units BytesSize: %.4g and binary units)."""
    i = 0
    while size >= 1024 and i < len(_ABBRS) - 1:
        size /= 1024.0
        i += 1
    text = f"{size:.4g}"
    if "e" in text:  # %.4g of a very large number; Go prints the same exponent form
        text = text.replace("e+0", "e+")
    return f"{text}{_ABBRS[i]}"
