"""Foreign-architecture test binaries, taken from the host's Debian mirror once and
cached next to the images (no other registry is reachable here)."""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path


def arm64_busybox(cache: Path) -> Path:
    """busybox from Debian's arm64 busybox-static package (fetched from the host's
    mirror once, cached)."""
    from pylima.images import builder

    out = cache / "busybox-arm64"
    if out.is_file():
        return out
    mirror = builder.choose_mirror(builder.read_host_sources(), "bookworm", None,
                                   os.environ).mirror
    with urllib.request.urlopen(f"{mirror}/dists/bookworm/main/binary-arm64/Packages.xz",
                                timeout=120) as resp:
        packages = lzma.decompress(resp.read()).decode()
    filename = next(
        line.split(":", 1)[1].strip()
        for stanza in packages.split("\n\n") if stanza.startswith("Package: busybox-static\n")
        for line in stanza.splitlines() if line.startswith("Filename:"))
    cache.mkdir(parents=True, exist_ok=True)
    deb = cache / "busybox-static_arm64.deb"
    with urllib.request.urlopen(f"{mirror}/{filename}", timeout=120) as resp:
        deb.write_bytes(resp.read())
    tree = cache / "busybox-static"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    shutil.copyfile(tree / "bin" / "busybox", out)
    out.chmod(0o755)
    return out
