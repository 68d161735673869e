"""The thin outer layer of the libvirt driver: the Python binding (imported lazily),
one connection per caller, and the pool and volume operations pylima needs (look-up,
upload, a copy-on-write overlay, delete). Every libvirt error becomes one LimaError
line that names the URI.

The binding is libvirt's own (`libvirt` module, the C library's wrapper): Debian's
`python3-libvirt`, which matches the host's libvirt and needs no compiler, or PyPI's
`libvirt-python` in the virtualenv. A virtualenv made from the system Python does
not see Debian's package, so when `import libvirt` fails the module is looked for in
Debian's dist-packages directory for this Python version.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

from pylima.drivers.libvirt.domain import LibvirtURI, volume_xml
from pylima.errors import LimaError

log = logging.getLogger("pylima.hostagent")

DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
_UPLOAD_CHUNK = 1 << 20

_libvirt: Any = None


def binding() -> Any:
    """The `libvirt` module; LimaError with the install hint when there is none."""
    global _libvirt
    if _libvirt is not None:
        return _libvirt
    try:
        import libvirt  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        libvirt = _debian_binding()
    _libvirt = libvirt
    # libvirt prints every error to stderr by default; pylima reports them itself.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def qemu_binding() -> Any:
    """`libvirt_qemu` (QEMU monitor commands through libvirt)."""
    binding()
    try:
        import libvirt_qemu  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        _load_debian_modules(("libvirtmod_qemu", "libvirt_qemu"))
        libvirt_qemu = sys.modules["libvirt_qemu"]
    return libvirt_qemu


def _load_debian_modules(mods: tuple[str, ...]) -> None:
    import importlib.util

    tag = f"cpython-{sys.version_info.major}{sys.version_info.minor}-"
    for mod in mods:
        if mod.startswith("libvirtmod"):
            found = [p for p in Path(DEBIAN_DIST_PACKAGES).glob(f"{mod}.cpython-*.so")
                     if tag in p.name]
        else:
            found = [p for p in [Path(DEBIAN_DIST_PACKAGES) / f"{mod}.py"] if p.is_file()]
        if not found:
            raise LimaError("vmType `libvirt` needs libvirt's Python binding",
                            hint="install `python3-libvirt` (Debian/Ubuntu) or "
                            "`pip install libvirt-python`")
        spec = importlib.util.spec_from_file_location(mod, found[0])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod] = module
        spec.loader.exec_module(module)


def _debian_binding() -> Any:
    # Only the binding's own modules come from there, not the rest of dist-packages.
    _load_debian_modules(("libvirtmod", "libvirt"))
    return sys.modules["libvirt"]


def error_line(e: BaseException) -> str:
    """libvirt's message, on one line."""
    get = getattr(e, "get_error_message", None)
    msg = (get() if get else None) or str(e)
    return " ".join(str(msg).split())


def connect(uri: LibvirtURI) -> Any:
    """A connection to `uri`'s daemon; LimaError naming the URI and the cause."""
    lv = binding()
    try:
        return lv.open(uri.uri)
    except lv.libvirtError as e:
        raise LimaError(f"cannot connect to libvirt at `{uri.uri}`: {error_line(e)}",
                        hint="check that libvirtd runs there and that you may use it "
                        "(`virsh -c URI version`)") from None


def lookup_pool(conn: Any, uri: LibvirtURI, name: str) -> Any:
    lv = binding()
    try:
        pool = conn.storagePoolLookupByName(name)
    except lv.libvirtError as e:
        raise LimaError(f"libvirt at `{uri.uri}`: storage pool `{name}` is not there: "
                        f"{error_line(e)}",
                        hint="create it (`virsh pool-define-as NAME dir --target DIR; "
                        "virsh pool-start NAME`) or set `vmOpts.libvirt.pool`") from None
    if not pool.isActive():
        raise LimaError(f"libvirt at `{uri.uri}`: storage pool `{name}` is not active",
                        hint=f"run `virsh -c {uri.uri} pool-start {name}`")
    return pool


def check_network(conn: Any, uri: LibvirtURI, name: str) -> None:
    lv = binding()
    try:
        net = conn.networkLookupByName(name)
    except lv.libvirtError as e:
        raise LimaError(f"libvirt at `{uri.uri}`: network `{name}` is not there: "
                        f"{error_line(e)}", hint="set `vmOpts.libvirt.network` to one of "
                        "`virsh net-list --all`, or remove it") from None
    if not net.isActive():
        raise LimaError(f"libvirt at `{uri.uri}`: network `{name}` is not active",
                        hint=f"run `virsh -c {uri.uri} net-start {name}`")


def pool_path(pool: Any) -> str:
    """The directory of a pool whose volumes are files (dir, fs, netfs) on the libvirt
    host; "" for another kind (LVM, iSCSI, ...)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(pool.XMLDesc(0))
    if root.get("type") not in ("dir", "fs", "netfs"):
        return ""
    return (root.findtext("./target/path") or "").rstrip("/")


def find_volume(pool: Any, name: str) -> Any | None:
    lv = binding()
    try:
        return pool.storageVolLookupByName(name)
    except lv.libvirtError:
        return None


def file_sha256(path: Path) -> str:
    """The file's sha256, cached beside it in `<name>.sha256` (keyed by size and
    mtime) so that a second start does not read the image again."""
    st = path.stat()
    cache = path.with_name(f".{path.name}.sha256")
    key = f"{st.st_size}:{st.st_mtime_ns}"
    try:
        k, _, digest = cache.read_text().partition(" ")
        if k == key and len(digest.strip()) == 64:
            return digest.strip()
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_UPLOAD_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    try:
        cache.write_text(f"{key} {digest}\n")
    except OSError:
        pass
    return digest


def upload_volume(conn: Any, pool: Any, uri: LibvirtURI, name: str, src: Path, fmt: str
                  ) -> Any:
    """A new volume `name` with `src`'s bytes (libvirt's volume upload, so the same for
    a local and a remote host). A partly uploaded volume is deleted."""
    lv = binding()
    size = src.stat().st_size
    try:
        vol = pool.createXML(volume_xml(name, capacity=size, fmt=fmt), 0)
    except lv.libvirtError as e:
        raise LimaError(f"libvirt at `{uri.uri}`: cannot create volume `{name}`: "
                        f"{error_line(e)}") from None
    try:
        stream = conn.newStream(0)
        vol.upload(stream, 0, size, 0)
        with open(src, "rb") as f:
            while chunk := f.read(_UPLOAD_CHUNK):
                view = memoryview(chunk)
                while view:
                    n = stream.send(view.tobytes())
                    if n < 0:
                        raise LimaError("stream send failed")
                    view = view[n:]
        stream.finish()
    except BaseException as e:
        try:
            stream.abort()
        except Exception:  # noqa: BLE001 - best effort, the volume goes anyway
            pass
        try:
            vol.delete(0)
        except lv.libvirtError:
            pass
        if isinstance(e, lv.libvirtError):
            raise LimaError(f"libvirt at `{uri.uri}`: uploading `{src}` to volume "
                            f"`{name}` failed: {error_line(e)}") from None
        raise
    return vol


def ensure_base_volume(conn: Any, pool: Any, uri: LibvirtURI, name_for: Any, src: Path,
                       fmt: str) -> Any:
    """The volume holding `src` (named by its digest: `name_for(digest)`), uploaded
    once and then shared by the instances of this LIMA_HOME."""
    name = name_for(file_sha256(src))
    vol = find_volume(pool, name)
    if vol is not None:
        log.info("Using volume `%s` (already on the libvirt host)", name)
        return vol
    log.info("Uploading `%s` to volume `%s` (%d MiB)", src, name, src.stat().st_size >> 20)
    try:
        return upload_volume(conn, pool, uri, name, src, fmt)
    except LimaError:
        # another instance of this LIMA_HOME uploaded it meanwhile
        vol = find_volume(pool, name)
        if vol is None:
            raise
        return vol


def create_overlay(pool: Any, uri: LibvirtURI, name: str, base: Any, base_format: str,
                   capacity: int) -> Any:
    """A qcow2 volume of `capacity` bytes backed by `base` (copy-on-write: no image
    data is copied)."""
    lv = binding()
    try:
        return pool.createXML(volume_xml(name, capacity=capacity,
                                         fmt="qcow2", backing_path=base.path(),
                                         backing_format=base_format), 0)
    except lv.libvirtError as e:
        raise LimaError(f"libvirt at `{uri.uri}`: cannot create volume `{name}`: "
                        f"{error_line(e)}") from None


def delete_volume(pool: Any, name: str) -> bool:
    vol = find_volume(pool, name)
    if vol is None:
        return False
    vol.delete(0)
    return True


def grow_volume(vol: Any, uri: LibvirtURI, size: int) -> None:
    """Grow the instance's disk volume to `size` bytes (field `disk` raised since the
    first start), as the QEMU driver grows its disk file; shrinking is refused."""
    from pylima.config.units import format_size
    from pylima.images.disk import check_growth

    lv = binding()
    try:
        current = int(vol.info()[1])  # (type, capacity, allocation)
    except lv.libvirtError as e:
        raise LimaError(f"libvirt at `{uri.uri}`: cannot read volume `{vol.name()}`: "
                        f"{error_line(e)}") from None
    if not check_growth(current, size):
        return
    log.info("Resize volume `%s` from %s to %s", vol.name(), format_size(current),
             format_size(size))
    try:
        vol.resize(size, 0)
    except lv.libvirtError as e:
        raise LimaError(f"libvirt at `{uri.uri}`: cannot resize volume `{vol.name()}`: "
                        f"{error_line(e)}") from None
