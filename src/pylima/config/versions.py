"""Semantic version comparison for `minimumLimaVersion` and friends."""

from __future__ import annotations

import re

_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


def parse_version(text: str) -> tuple[int, int, int, tuple[tuple[int, int | str], ...] | None]:
    """Parse "2.0.3", "v2.1.0-beta.1"; raises ValueError when not semver."""
    m = _SEMVER.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a semantic version")
    pre = None
    if m.group(4):
        pre = tuple((0, int(p)) if p.isdigit() else (1, p) for p in m.group(4).split("."))
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), pre


def _key(text: str) -> tuple[int, int, int, int, tuple[tuple[int, int | str], ...]]:
    major, minor, patch, pre = parse_version(text)
    # a pre-release sorts before its release
    return major, minor, patch, (0 if pre else 1), pre or ()


def version_greater(a: str, b: str) -> bool:
    """a > b; an unparsable version counts as the very latest (as Lima treats them)."""
    try:
        ka = _key(a)
    except ValueError:
        return True
    try:
        kb = _key(b)
    except ValueError:
        return False
    return ka > kb
