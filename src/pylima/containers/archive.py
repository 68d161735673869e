"""The nerdctl-full archive behind `containerd.system` / `containerd.user`.

`limactl start` brings the first archive of the instance's architecture that it can
download (digest checked) into the download cache, before the host agent starts;
the host agent then finds it there without touching the network and puts it on the
seed. When none can be downloaded (an offline host) the start goes on: one warning,
and the guest uses the distribution's containerd for `containerd.system` where the
image has one, else none.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pylima.errors import LimaError

log = logging.getLogger("pylima")


def wanted(cfg: dict[str, Any]) -> bool:
    containerd = cfg.get("containerd") or {}
    return bool(containerd.get("system") or containerd.get("user"))


def _entries(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    archives = (cfg.get("containerd") or {}).get("archives") or []
    return [a for a in archives if isinstance(a, dict) and a.get("location")
            and (a.get("arch") or cfg.get("arch")) == cfg.get("arch")]


def ensure_archive(cfg: dict[str, Any], on_progress: Any = None) -> Path | None:
    """Download the archive into the cache; None (after one warning) when none can be."""
    from pylima.images.download import download

    if not wanted(cfg):
        return None
    entries = _entries(cfg)
    failures = []
    for a in entries:
        try:
            res = download(str(a["location"]), digest=a.get("digest"),
                           on_progress=on_progress)
        except LimaError as e:
            failures.append(e.message)
            continue
        return res.cache_path or res.path
    which = "containerd.system" if (cfg.get("containerd") or {}).get("system") \
        else "containerd.user"
    reason = "; ".join(failures) if failures else f"no archive for {cfg.get('arch')}"
    log.warning("%s is enabled, but the containerd archive (nerdctl-full) could not be "
                "downloaded: %s. Starting without it (the guest's own containerd is used "
                "for containerd.system where the image has one); set `containerd.archives` "
                "to an archive you can reach, or `containerd: {system: false, user: false}`",
                which, reason)
    return None


def cached_archive(cfg: dict[str, Any]) -> Path | None:
    """The archive `ensure_archive` brought in, found without the network."""
    from pylima.images.download import cache_entry_dir, is_local, local_path

    if not wanted(cfg):
        return None
    for a in _entries(cfg):
        loc = str(a["location"])
        path = local_path(loc) if is_local(loc) else cache_entry_dir(loc) / "data"
        if path.is_file():
            return path
    return None
