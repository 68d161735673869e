"""`limactl prune`: drop the download cache.

As Lima does, a plain prune removes the whole cache directory; with
`--keep-referred` (here: `referenced` given) only the download entries that no
instance or template refers to are removed, and leftover partial downloads
(`data.part`, `data.tmp.*`) are swept from the kept ones. An entry being filled
by another command at that moment (its directory is locked) is left alone.

Instances keep working after a prune: their `image` is a hard link, not a
reference into the cache.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylima.images.download import cache_key, lock_cache_entry
from pylima.store import dirs

__all__ = ["PruneResult", "locations_from_config", "prune_cache"]

log = logging.getLogger(__name__)


@dataclass
class PruneResult:
    removed: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    bytes_freed: int = 0


def _freed_bytes(path: Path) -> int:
    """Disk space that removing `path` gives back: a file whose inode is still
    hard-linked from outside `path` (an instance's `image`) frees nothing."""
    paths = [path] if not path.is_dir() else list(path.rglob("*"))
    inodes: dict[tuple[int, int], list[int]] = {}  # inode -> [nlink, links seen, bytes]
    for p in paths:
        try:
            st = p.lstat()
        except OSError:
            continue
        if not p.is_file() or p.is_symlink():
            continue
        rec = inodes.setdefault((st.st_dev, st.st_ino), [st.st_nlink, 0, st.st_blocks * 512])
        rec[1] += 1
    return sum(size for nlink, seen, size in inodes.values() if seen >= nlink)


def _key_set(referenced: Iterable[str]) -> set[str]:
    """Locations or ready-made cache keys -> cache keys."""
    keys = set()
    for ref in referenced:
        is_key = len(ref) == 64 and all(c in "0123456789abcdef" for c in ref)
        keys.add(ref if is_key else cache_key(ref))
    return keys


def prune_cache(referenced: Iterable[str] | None = None, *,
                cache_root: str | os.PathLike[str] | None = None) -> PruneResult:
    """Remove the download cache; keep the entries for `referenced` locations when given.

    `referenced` None is `limactl prune`: the whole cache directory goes. Otherwise
    (`limactl prune --keep-referred`) it holds the locations (URLs) still in use
    (see `locations_from_config`); cache keys are accepted too.
    """
    root = Path(cache_root) if cache_root is not None else dirs.cache_dir()
    result = PruneResult()
    if referenced is None:
        if root.exists():
            log.info("Pruning `%s`", root)
            result.bytes_freed = _freed_bytes(root)
            shutil.rmtree(root)
            result.removed.append(root)
        return result

    keep = _key_set(referenced)
    by_url = root / "download" / "by-url-sha256"
    if not by_url.is_dir():
        return result
    for entry in sorted(by_url.iterdir()):
        if not entry.is_dir():
            continue
        with lock_cache_entry(entry, blocking=False) as locked:
            if not locked:
                log.debug("Keep `%s`: a download is in progress", entry.name)
                result.kept.append(entry)
                continue
            if entry.name in keep:
                log.debug("Keep `%s` caching `%s`", entry.name,
                          (entry / "url").read_text() if (entry / "url").exists() else "")
                for stale in [entry / "data.part", *entry.glob("data.tmp.*")]:
                    if stale.exists():
                        log.debug("Removing stale partial download `%s`", stale)
                        result.bytes_freed += _freed_bytes(stale)
                        stale.unlink()
                result.kept.append(entry)
                continue
            log.debug("Deleting %s", entry.name)
            result.bytes_freed += _freed_bytes(entry)
            shutil.rmtree(entry)
            result.removed.append(entry)
    return result


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def locations_from_config(config: Any) -> set[str]:
    """The cacheable locations a lima.yaml (mapping or config object) refers to:
    images with their kernels and initrds, containerd archives, firmware images."""
    out: set[str] = set()

    def add(f: Any) -> None:
        loc = _get(f, "location") if f is not None else None
        if loc:
            out.add(str(loc))

    for img in _get(config, "images") or []:
        add(img)
        add(_get(img, "kernel"))
        add(_get(img, "initrd"))
    containerd = _get(config, "containerd")
    if containerd is not None:
        for f in _get(containerd, "archives") or []:
            add(f)
    firmware = _get(config, "firmware")
    if firmware is not None:
        for f in _get(firmware, "images") or []:
            add(f)
    return out
