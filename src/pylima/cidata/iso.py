"""Write the rendered seed as the `cidata` ISO (or as a plain directory)."""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pylima.cidata.render import file_mode
from pylima.errors import LimaError

VOLUME_LABEL = "cidata"

_S_IFREG = 0o100000
_S_IFDIR = 0o040000
_ISO_NAME_MAX = 30  # ISO 9660 level 3: name + "." + extension


def write_cidata_iso(files: Mapping[str, bytes], path: str | os.PathLike[str]) -> None:
    """Write `files` (path on the ISO -> content) to an ISO 9660 image labelled cidata.

    Rock Ridge carries the real names and modes (scripts 0755, data 0644) that Linux
    guests see; Joliet carries the names for guests without Rock Ridge. The image is
    written next to `path` and renamed over it, so a reader never sees half of it.
    """
    import pycdlib

    dest = Path(path)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, sys_ident="LINUX",
            app_ident_str="pylima", joliet=3, rock_ridge="1.09")
    iso_names: dict[str, str] = {"": ""}  # seed directory -> ISO 9660 directory path
    used: dict[str, set[str]] = {}
    try:
        for name in sorted(files):
            _check_path(name)
            parts = name.split("/")
            for depth in range(1, len(parts)):
                d = "/".join(parts[:depth])
                if d in iso_names:
                    continue
                parent = "/".join(parts[:depth - 1])
                iso_d = f"{iso_names[parent]}/{_iso_name(parts[depth - 1], used, parent, True)}"
                iso_names[d] = iso_d
                iso.add_directory(iso_d, rr_name=parts[depth - 1], joliet_path="/" + d,
                                  file_mode=_S_IFDIR | 0o755)
            parent = "/".join(parts[:-1])
            iso_f = f"{iso_names[parent]}/{_iso_name(parts[-1], used, parent, False)};1"
            data = files[name]
            iso.add_fp(io.BytesIO(data), len(data), iso_f, rr_name=parts[-1],
                       joliet_path="/" + name, file_mode=_S_IFREG | file_mode(name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
        os.close(fd)
        try:
            iso.write(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (pycdlib.pycdlibexception.PyCdlibException, OSError) as e:
        raise LimaError(f"failed to write the cidata ISO `{dest}`: {e}") from e
    finally:
        iso.close()


def write_cidata_dir(files: Mapping[str, bytes], path: str | os.PathLike[str]) -> None:
    """Write the seed as a directory tree with the modes the ISO would give (for guests
    that read the seed from a shared directory, and for running boot steps in tests)."""
    root = Path(path)
    if root.exists():
        shutil.rmtree(root)
    for name, data in files.items():
        _check_path(name)
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(file_mode(name))


def _check_path(name: str) -> None:
    parts = name.split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise LimaError(f"invalid path `{name}` for the cidata seed")


def _iso_name(name: str, used: dict[str, set[str]], parent: str, is_dir: bool) -> str:
    """A unique ISO 9660 level 3 name (d-characters, one dot) for `name` in `parent`."""
    upper = re.sub(r"[^A-Z0-9_.]", "_", name.upper())
    if is_dir:
        stem, ext = upper.replace(".", "_"), ""
    else:
        stem, dot, ext = upper.rpartition(".")
        if not dot:
            stem, ext = upper, ""
        stem = stem.replace(".", "_")
        ext = ext[:8]
    taken = used.setdefault(parent, set())
    room = _ISO_NAME_MAX - (len(ext) + 1 if ext else 0)
    candidate = stem[:room] or "_"
    counter = 0
    while True:
        full = f"{candidate}.{ext}" if ext else candidate
        if full not in taken:
            taken.add(full)
            return full
        counter += 1
        suffix = f"_{counter}"
        candidate = (stem[:room - len(suffix)] or "_") + suffix
