"""Download `images[].location` (and kernels, initrds) through Lima's shared cache.

Cache layout, shared with Lima (`<cache>/download/by-url-sha256/<sha256 of the URL>/`):

- `url`: the URL, `data`: the downloaded bytes as served (still compressed),
- `time`: the `Last-Modified` header, `type`: the `Content-Type` header,
- `<algo>.digest`: the verified digest (`sha256:HEX`), written after a check,
- `data.part`: bytes of an interrupted download, resumed with an HTTP Range request.

As in Lima, the digest applies to the bytes served (the compressed file) and
decompression happens when a file is copied out of the cache to its destination.
Local files (`file://` or plain paths) are never cached. Each entry directory is
flock(2)ed while it is read or filled, like Lima does, so parallel commands share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pylima.config.units import format_size
from pylima.errors import LimaError
from pylima.images.fileutil import detect_image_format, is_iso9660, link_or_copy
from pylima.store import dirs

if TYPE_CHECKING:
    import http.client
    import urllib.request

__all__ = [
    "CONNECT_TIMEOUT",
    "READ_TIMEOUT",
    "Digest",
    "DigestMismatchError",
    "DownloadError",
    "DownloadResult",
    "ProgressCallback",
    "ProgressLogger",
    "cache_entry_dir",
    "cache_key",
    "decompressor_for",
    "detect_image_format",
    "download",
    "download_entry_files",
    "download_first",
    "ensure_instance_image",
    "is_iso9660",
    "is_local",
    "lock_cache_entry",
    "parse_digest",
    "select_image",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int | None], None]

# An offline host must fail within seconds; a slow mirror may still pause mid-body.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
_CHUNK = 1 << 20

STATUS_DOWNLOADED = "downloaded"
STATUS_SKIPPED = "skipped"
STATUS_USED_CACHE = "used-cache"

DOWNLOAD_HINT = ("check the network, or build a local image with `limactl image build "
                 "debian-12`, or give other images with `--set '.images=[...]'`")


class DownloadError(LimaError):
    """A location could not be fetched (network, HTTP status, local file)."""


class DigestMismatchError(DownloadError):
    """The bytes do not match the digest given in lima.yaml."""

    def __init__(self, location: str, expected: str, actual: str) -> None:
        self.location = location
        self.expected = expected
        self.actual = actual
        super().__init__(f"expected digest `{expected}`, got `{actual}`")


# --------------------------------------------------------------------------- digests

_DIGEST_HEX_LEN = {"sha256": 64, "sha384": 96, "sha512": 128}


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> Any:
        return hashlib.new(self.algorithm)


def parse_digest(value: str | Digest | None) -> Digest | None:
    """`sha256:HEX` / `sha512:HEX` (also sha384, as Lima accepts) -> Digest; "" -> None."""
    if value is None or isinstance(value, Digest):
        return value
    text = value.strip()
    if not text:
        return None
    algo, sep, hexpart = text.partition(":")
    want = _DIGEST_HEX_LEN.get(algo)
    if not sep or want is None:
        raise LimaError(f"invalid digest `{text}`: unsupported algorithm",
                        hint="use `sha256:HEX` or `sha512:HEX`")
    if len(hexpart) != want or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise LimaError(f"invalid digest `{text}`: expected {want} lower-case hex digits")
    return Digest(algo, hexpart)


def file_digest(path: str | os.PathLike[str], algorithm: str) -> Digest:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return Digest(algorithm, h.hexdigest())


# --------------------------------------------------------------------------- locations

def is_local(location: str) -> bool:
    """Lima's rule: no scheme, or the `file://` scheme, is a local file."""
    return "://" not in location or location.startswith("file://")


def local_path(location: str) -> Path:
    """`file:///abs` -> /abs (must be absolute); a plain path gets `~` expanded and made
    absolute against the current directory."""
    if not location:
        raise LimaError("got empty path")
    if not is_local(location):
        raise LimaError(f"got non-local path: `{location}`")
    if location.startswith("file://"):
        rest = location[len("file://"):]
        if not os.path.isabs(rest):
            raise LimaError(f"got non-absolute path `{rest}`")
        from urllib.parse import unquote

        return Path(unquote(rest))
    return Path(os.path.expanduser(location)).absolute()


def cache_key(url: str) -> str:
    """The cache entry name: hex sha256 of the URL string exactly as written."""
    return hashlib.sha256(url.encode()).hexdigest()


def cache_entry_dir(url: str, cache_root: str | os.PathLike[str] | None = None) -> Path:
    root = Path(cache_root) if cache_root is not None else dirs.cache_dir()
    return root / "download" / "by-url-sha256" / cache_key(url)


def _extension(location: str) -> str:
    """The extension of the location's path (query and fragment ignored)."""
    path = location
    if "://" in location:
        from urllib.parse import urlsplit

        path = urlsplit(location).path
    return os.path.splitext(path)[1]


_BY_EXT = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd"}
_MAGIC = [(b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"),
          (b"\x28\xb5\x2f\xfd", "zstd")]


def decompressor_for(location: str, path: str | os.PathLike[str] | None = None) -> str | None:
    """"gzip", "bzip2", "xz" or "zstd" by the location's extension; failing that, by
    the magic bytes of `path` (as Lima does); None for an uncompressed file."""
    by_ext = _BY_EXT.get(_extension(location))
    if by_ext or path is None:
        return by_ext
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError:
        return None
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


# --------------------------------------------------------------------------- progress

class ProgressLogger:
    """An `on_progress` callback for a non-terminal: an info log line at most every
    `interval` seconds, and one at the end (the CLI draws a bar on a terminal)."""

    def __init__(self, description: str, *, interval: float = 5.0,
                 verb: str = "Downloading", logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.description = description
        self.verb = verb
        self.interval = interval
        self.logger = logger or log
        self.clock = clock
        self._last: float | None = None
        self._done_logged = False

    def __call__(self, done: int, total: int | None) -> None:
        now = self.clock()
        finished = total is not None and done >= total
        if finished and self._done_logged:
            return
        if not finished and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        self._done_logged = finished
        self.logger.info("%s", self.format(done, total))

    def format(self, done: int, total: int | None) -> str:
        if total:
            pct = min(100, done * 100 // total)
            return (f"{self.verb} {self.description}: {format_size(done)} / {format_size(total)} "
                    f"({pct}%)")
        return f"{self.verb} {self.description}: {format_size(done)}"


# --------------------------------------------------------------------------- HTTP

def _opener(read_timeout: float) -> urllib.request.OpenerDirector:
    """urllib with a connect timeout (given to open()) and a separate, longer read
    timeout set on the socket once connected; proxies and redirects as usual."""
    import functools
    import http.client
    import urllib.request

    class _ReadTimeout:
        """Mixed into both connection classes: once connected, reads get their own
        (longer) timeout than the connect attempt."""

        sock: Any

        def __init__(self, *args: Any, read_timeout: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._read_timeout = read_timeout

        def connect(self) -> None:
            super().connect()  # type: ignore[misc]
            self.sock.settimeout(self._read_timeout)

    class _HTTPConnection(_ReadTimeout, http.client.HTTPConnection):
        pass

    class _HTTPSConnection(_ReadTimeout, http.client.HTTPSConnection):
        pass

    class _HTTPHandler(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            cls = functools.partial(_HTTPConnection, read_timeout=read_timeout)
            return self.do_open(cls, req)  # type: ignore[arg-type]

    class _HTTPSHandler(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            cls = functools.partial(_HTTPSConnection, read_timeout=read_timeout)
            return self.do_open(cls, req, context=self._context)  # type: ignore[arg-type,attr-defined]

    return urllib.request.build_opener(_HTTPHandler, _HTTPSHandler)


def _http_error_text(e: BaseException) -> str:
    import http.client
    import socket
    import urllib.error

    if isinstance(e, urllib.error.HTTPError):
        return f"unexpected HTTP status {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        reason = e.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return "connection timed out"
        return str(getattr(reason, "strerror", None) or reason)
    if isinstance(e, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(e, http.client.IncompleteRead):
        return "connection closed before the end of the body"
    return str(e) or type(e).__name__


@dataclass
class _Opened:
    resp: http.client.HTTPResponse
    offset: int  # where the body starts in the file (0 unless resumed)
    total: int | None


def _open(url: str, *, method: str = "GET", offset: int = 0, if_range: str | None = None,
          connect_timeout: float, read_timeout: float) -> _Opened:
    import urllib.request

    headers = {"User-Agent": "pylima"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if if_range:
            headers["If-Range"] = if_range
    req = urllib.request.Request(url, headers=headers, method=method)
    resp = _opener(read_timeout).open(req, timeout=connect_timeout)
    length = resp.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    start = 0
    if offset and resp.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range", ""))
        if m and int(m.group(1)) == offset:
            start = offset
            total = int(m.group(3)) if m.group(3) != "*" else None
        else:
            # A range we did not ask for: start over rather than guess.
            resp.close()
            return _open(url, method=method, connect_timeout=connect_timeout,
                         read_timeout=read_timeout)
    return _Opened(resp, start, total)


def _remote_last_modified(url: str, connect_timeout: float) -> str:
    opened = _open(url, method="HEAD", connect_timeout=connect_timeout,
                   read_timeout=connect_timeout)
    with opened.resp:
        return opened.resp.headers.get("Last-Modified", "")


def _same_http_time(a: str, b: str) -> bool:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(a) == parsedate_to_datetime(b)
    except (TypeError, ValueError):
        return a == b


# --------------------------------------------------------------------------- results

@dataclass
class DownloadResult:
    status: str  # "downloaded", "used-cache" or "skipped" (Lima's names)
    path: Path  # the destination, or the cache's `data` in caching-only mode
    cache_path: Path | None = None  # the cache's `data` (None for local files)
    last_modified: str = ""
    content_type: str = ""
    validated_digest: bool = False


# --------------------------------------------------------------------------- main entry

def download(location: str, dest: str | os.PathLike[str] | None = None, *,
             digest: str | Digest | None = None, decompress: bool = False,
             cache_root: str | os.PathLike[str] | None = None,
             on_progress: ProgressCallback | None = None,
             on_decompress_progress: ProgressCallback | None = None,
             connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
             retries: int = 2) -> DownloadResult:
    """Fetch `location` (http(s)://, file:// or a path) into `dest`.

    With `dest` None the file is only brought into the cache (remote locations).
    An existing `dest` is left alone (status "skipped"), as Lima does. `decompress`
    undoes .gz/.bz2/.xz/.zst (by the location's extension, else by magic bytes) while
    copying to `dest`; `on_decompress_progress` then gets the compressed bytes read
    out of the compressed size. `retries` resumes a transfer that broke off mid-body.
    Raises DownloadError / DigestMismatchError.
    """
    expected = parse_digest(digest)
    dest_p = Path(dest).absolute() if dest is not None else None
    if dest_p is not None:
        if dest_p.exists():
            log.debug("file `%s` already exists, skipping downloading from `%s`", dest_p,
                      location)
            return DownloadResult(STATUS_SKIPPED, dest_p)
        dest_p.parent.mkdir(parents=True, exist_ok=True)

    if is_local(location):
        src = local_path(location)
        if not src.is_file():
            raise DownloadError(f"file `{src}` does not exist")
        if expected is not None:
            actual = file_digest(src, expected.algorithm)
            if actual != expected:
                raise DigestMismatchError(location, str(expected), str(actual))
        if dest_p is None:
            return DownloadResult(STATUS_DOWNLOADED, src, validated_digest=expected is not None)
        # Never hard-link a user's own file: editing it would change the instance.
        # Files inside the cache (e.g. images built locally) are never edited in place.
        root = Path(cache_root) if cache_root is not None else dirs.cache_dir()
        managed = src.resolve().is_relative_to(root.resolve())
        _copy_out(src, dest_p, location, decompress, allow_hardlink=managed,
                  on_progress=on_decompress_progress)
        return DownloadResult(STATUS_DOWNLOADED, dest_p, validated_digest=expected is not None)

    shad = cache_entry_dir(location, cache_root)
    shad.mkdir(parents=True, exist_ok=True, mode=0o700)
    with lock_cache_entry(shad):
        res = _get_cached(shad, location, expected, connect_timeout)
        if res is None:
            res = _fetch(shad, location, expected, on_progress, connect_timeout,
                         read_timeout, retries)
        if dest_p is not None:
            _copy_out(res.cache_path or res.path, dest_p, location, decompress,
                      allow_hardlink=True, on_progress=on_decompress_progress)
            res.path = dest_p
    return res


@contextlib.contextmanager
def lock_cache_entry(path: Path, *, blocking: bool = True) -> Iterator[bool]:
    """flock(2) on the entry directory itself, the lock Lima takes on a cache entry.
    Yields False (without waiting) when `blocking` is off and another holds it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _remove_entry(shad: Path) -> None:
    """Drop a cache entry's files (the directory too); the caller holds its lock."""
    shutil.rmtree(shad, ignore_errors=True)


def _get_cached(shad: Path, url: str, expected: Digest | None,
                connect_timeout: float) -> DownloadResult | None:
    data = shad / "data"
    if not data.is_file():
        return None
    if expected is not None:
        digest_file = shad / f"{expected.algorithm}.digest"
        recorded = _read_text(digest_file).strip()
        if recorded:
            # Lima trusts the digest recorded when the bytes were checked on download.
            if recorded != str(expected):
                _remove_entry(shad)
                raise DigestMismatchError(url, str(expected), recorded)
        else:
            actual = file_digest(data, expected.algorithm)
            if actual != expected:
                _remove_entry(shad)
                raise DigestMismatchError(url, str(expected), str(actual))
            digest_file.write_text(str(expected))
    else:
        # No digest: as Lima, ask the server whether the file changed since.
        cached_lm = _read_text(shad / "time")
        if not cached_lm:
            log.info("Re-downloading digest-less image: last-modified mismatch "
                     "(cached: `<not cached>`, remote: `<not checked>`)")
            return None
        try:
            remote_lm = _remote_last_modified(url, connect_timeout)
        except Exception as e:  # noqa: BLE001 - any failure means "keep the cache"
            log.info("Failed to retrieve last-modified for cached digest-less image; "
                     "using cached image. (%s)", _http_error_text(e))
        else:
            if not remote_lm or not _same_http_time(cached_lm, remote_lm):
                log.info("Re-downloading digest-less image: last-modified mismatch "
                         "(cached: `%s`, remote: `%s`)", cached_lm,
                         remote_lm or "<missing Last-Modified header>")
                return None
    return DownloadResult(STATUS_USED_CACHE, data, cache_path=data,
                          last_modified=_read_text(shad / "time"),
                          content_type=_read_text(shad / "type"),
                          validated_digest=expected is not None)


class _Interrupted(Exception):
    """The body stopped before its end; `data.part` keeps what arrived."""


def _fetch(shad: Path, url: str, expected: Digest | None,
           on_progress: ProgressCallback | None, connect_timeout: float,
           read_timeout: float, retries: int) -> DownloadResult:
    import http.client

    data, part = shad / "data", shad / "data.part"
    (shad / "url").write_text(url)
    attempt = 0
    while True:
        try:
            _transfer(shad, url, expected, on_progress, connect_timeout, read_timeout)
            break
        except DigestMismatchError:
            _remove_entry(shad)
            raise
        except _Interrupted as e:
            cause = e.__cause__ or e
            if attempt >= retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{_http_error_text(cause)} (kept {format_size(kept)} in `{part}`; "
                    "running the command again resumes the download)") from cause
            attempt += 1
            log.info("Download of `%s` interrupted (%s); resuming", url,
                     _http_error_text(cause))
        except (OSError, http.client.HTTPException) as e:
            raise DownloadError(_http_error_text(e)) from e
    # Digests recorded for the bytes being replaced no longer describe `data`.
    for stale in shad.glob("*.digest"):
        stale.unlink()
    os.replace(part, data)
    if expected is not None:
        (shad / f"{expected.algorithm}.digest").write_text(str(expected))
    return DownloadResult(STATUS_DOWNLOADED, data, cache_path=data,
                          last_modified=_read_text(shad / "time"),
                          content_type=_read_text(shad / "type"),
                          validated_digest=expected is not None)


def _transfer(shad: Path, url: str, expected: Digest | None,
              on_progress: ProgressCallback | None, connect_timeout: float,
              read_timeout: float) -> None:
    """Fill `data.part` from `url`, resuming what an earlier try left there."""
    import http.client
    import urllib.error

    part = shad / "data.part"
    offset = part.stat().st_size if part.exists() else 0
    validator = _read_text(shad / "time")
    # Resume only when a changed remote file would be noticed: If-Range with the
    # recorded Last-Modified, or the digest checked at the end.
    if offset and not validator and expected is None:
        offset = 0
    log.debug("downloading `%s` into `%s` (from byte %d)", url, part, offset)
    try:
        opened = _open(url, offset=offset, if_range=validator or None,
                       connect_timeout=connect_timeout, read_timeout=read_timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:
            raise
        part.unlink(missing_ok=True)  # the partial file is not a prefix any more
        opened = _open(url, connect_timeout=connect_timeout, read_timeout=read_timeout)
    with opened.resp as resp:
        (shad / "time").write_text(resp.headers.get("Last-Modified", ""))
        (shad / "type").write_text(resp.headers.get("Content-Type", ""))
        hasher = expected.hasher() if expected is not None else None
        with open(part, "r+b" if opened.offset else "wb") as out:
            if opened.offset:
                out.truncate(opened.offset)
                out.seek(opened.offset)
                if hasher is not None:
                    _hash_prefix(part, opened.offset, hasher)
            done, total = opened.offset, opened.total
            if on_progress:
                on_progress(done, total)
            while True:
                try:
                    # read1: whatever has arrived, so a stall loses nothing already
                    # received (read(n) would drop a partial chunk on a timeout).
                    chunk = resp.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as e:
                    out.flush()
                    raise _Interrupted() from e
                if not chunk:
                    break
                out.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
            out.flush()
            os.fsync(out.fileno())
            if total is not None and done < total:
                raise _Interrupted() from http.client.IncompleteRead(b"", total - done)
    if hasher is not None and expected is not None:
        actual = Digest(expected.algorithm, hasher.hexdigest())
        if actual != expected:
            raise DigestMismatchError(url, str(expected), str(actual))


def _hash_prefix(path: Path, length: int, hasher: Any) -> None:
    with open(path, "rb") as f:
        left = length
        while left > 0 and (chunk := f.read(min(_CHUNK, left))):
            hasher.update(chunk)
            left -= len(chunk)


# --------------------------------------------------------------------------- copy out

class _CountingReader:
    """A binary reader that reports how far the decompressor has read its input."""

    def __init__(self, f: IO[bytes], total: int, on_progress: ProgressCallback) -> None:
        self._f, self._total, self._cb, self._done = f, total, on_progress, 0

    def read(self, n: int = -1) -> bytes:
        b = self._f.read(n)
        self._done += len(b)
        self._cb(self._done, self._total)
        return b

    def readinto(self, buf: Any) -> int:
        n = self._f.readinto(buf)  # type: ignore[attr-defined]
        self._done += n or 0
        self._cb(self._done, self._total)
        return int(n or 0)

    def readable(self) -> bool:
        return True


def _copy_out(src: Path, dest: Path, location: str, decompress: bool, *,
              allow_hardlink: bool, on_progress: ProgressCallback | None = None) -> None:
    kind = decompressor_for(location, src) if decompress else None
    if kind is None:
        link_or_copy(src, dest, allow_hardlink=allow_hardlink)
        return
    log.info("decompressing %s with built-in %s", _extension(location) or "file", kind)
    tmp = dest.with_name(f"{dest.name}.tmp.{os.getpid()}")
    try:
        with open(src, "rb") as raw, open(tmp, "wb") as fout:
            fin: IO[bytes] = raw
            if on_progress is not None:
                size = os.fstat(raw.fileno()).st_size
                on_progress(0, size)
                fin = _CountingReader(raw, size, on_progress)  # type: ignore[assignment]
            _decompress_stream(kind, fin, fout, src, tmp)
        os.replace(tmp, dest)
    except (OSError, EOFError, ValueError) as e:
        raise DownloadError(f"failed to decompress `{src}` ({kind}): {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _decompress_stream(kind: str, fin: IO[bytes], fout: IO[bytes], src: Path,
                       dst: Path) -> None:
    if kind == "gzip":
        import gzip

        with gzip.GzipFile(fileobj=fin) as g:
            shutil.copyfileobj(g, fout, _CHUNK)
    elif kind == "bzip2":
        import bz2

        with bz2.BZ2File(fin) as b:
            shutil.copyfileobj(b, fout, _CHUNK)
    elif kind == "xz":
        import lzma

        with lzma.LZMAFile(fin) as x:
            shutil.copyfileobj(x, fout, _CHUNK)
    elif kind == "zstd":
        try:
            import zstandard
        except ImportError:
            # The `zstd` tool does the same job where the module is not installed.
            from pylima.process import run

            fout.close()
            run(["zstd", "-d", "-q", "-f", "-o", str(dst), str(src)],
                hint="install the `zstandard` Python package or the `zstd` tool")
            return
        reader = zstandard.ZstdDecompressor().stream_reader(fin, read_across_frames=True)
        with reader:
            shutil.copyfileobj(reader, fout, _CHUNK)
    else:  # pragma: no cover - decompressor_for only returns the names above
        raise ValueError(f"unknown compression {kind!r}")


# --------------------------------------------------------------------------- images[]

def _get(entry: Any, name: str) -> Any:
    """Read a field from a lima.yaml mapping or from a config object."""
    if isinstance(entry, Mapping):
        return entry.get(name)
    return getattr(entry, name, None)


def select_image(images: Sequence[Any], arch: str) -> list[Any]:
    """The `images` entries to try for `arch`, in order. An entry without `arch`
    matches any. Like Lima, once the first matching entry names a `variant` (or
    `archVariant`), later entries must name the same one."""
    matching = [e for e in images if (_get(e, "arch") or arch) == arch]
    if not matching:
        return []
    first = matching[0]
    variant = _get(first, "variant")
    arch_variant = _get(first, "archVariant") or _get(first, "arch_variant")
    return [e for e in matching
            if (_get(e, "variant") == variant)
            and ((_get(e, "archVariant") or _get(e, "arch_variant")) == arch_variant)]


def _download_file_entry(f: Any, dest: Path, what: str, *, decompress: bool,
                         cache_root: str | os.PathLike[str] | None,
                         on_progress: ProgressCallback | None,
                         on_decompress_progress: ProgressCallback | None = None,
                         connect_timeout: float) -> DownloadResult:
    location = _get(f, "location")
    if not location:
        raise DownloadError(f"{what} has no `location`")
    fields = {"location": location, "arch": _get(f, "arch") or "",
              "digest": str(_get(f, "digest") or "")}
    log.info("Attempting to download %s", what, extra={"fields": fields})
    try:
        res = download(location, dest, digest=_get(f, "digest"), decompress=decompress,
                       cache_root=cache_root, on_progress=on_progress,
                       on_decompress_progress=on_decompress_progress,
                       connect_timeout=connect_timeout)
    except LimaError as e:
        raise _wrap(location, e) from None
    if res.status == STATUS_DOWNLOADED:
        log.info("Downloaded %s from `%s`", what, location)
    elif res.status == STATUS_USED_CACHE:
        log.info("Using cache `%s`", res.cache_path)
    return res


def _wrap(location: str, e: LimaError) -> LimaError:
    """Prefix the location, keeping the error's class (and a mismatch's digests)."""
    e.message = f"failed to download `{location}`: {e.message}"
    e.args = (e.message,)
    return e


def download_first(images: Sequence[Any], arch: str, dest: str | os.PathLike[str], *,
                   cache_root: str | os.PathLike[str] | None = None,
                   on_progress: ProgressCallback | None = None,
                   on_decompress_progress: ProgressCallback | None = None,
                   connect_timeout: float = CONNECT_TIMEOUT) -> tuple[Any, DownloadResult]:
    """Download the first image of `arch` that works into `dest` (decompressed).

    Each failing location (offline, HTTP error, digest mismatch) falls through to the
    next; when all fail, one DownloadError names every location and its reason.
    """
    candidates = select_image(images, arch)
    if not candidates:
        raise _no_image_error(images, arch)
    failures: list[str] = []
    for entry in candidates:
        try:
            res = _download_file_entry(entry, Path(dest), "the image", decompress=True,
                                       cache_root=cache_root, on_progress=on_progress,
                                       on_decompress_progress=on_decompress_progress,
                                       connect_timeout=connect_timeout)
        except LimaError as e:
            log.warning("%s", e.message)
            failures.append(e.message)
            continue
        return entry, res
    raise _all_failed_error(failures)


def download_entry_files(entry: Any, instance_dir: str | os.PathLike[str], *,
                         cache_root: str | os.PathLike[str] | None = None,
                         on_progress: ProgressCallback | None = None,
                         on_decompress_progress: ProgressCallback | None = None,
                         connect_timeout: float = CONNECT_TIMEOUT) -> dict[str, DownloadResult]:
    """Fetch one `images[]` entry into `instance_dir`: `image` (decompressed), and when
    the entry has them `kernel` (decompressed), `kernel.cmdline` and `initrd` (kept
    as served), under Lima's file names. If any part fails, the parts written here
    are removed again so the next entry starts clean."""
    inst = Path(instance_dir)
    written: list[Path] = []
    results: dict[str, DownloadResult] = {}
    common: dict[str, Any] = {"cache_root": cache_root, "on_progress": on_progress,
                              "on_decompress_progress": on_decompress_progress,
                              "connect_timeout": connect_timeout}
    try:
        image = inst / dirs.IMAGE
        results["image"] = _download_file_entry(entry, image, "the image", decompress=True,
                                                **common)
        if results["image"].status != STATUS_SKIPPED:
            written.append(image)
        kernel = _get(entry, "kernel")
        if kernel:
            kpath = inst / dirs.KERNEL
            results["kernel"] = _download_file_entry(kernel, kpath, "the kernel",
                                                     decompress=True, **common)
            written.append(kpath)
            cmdline = _get(kernel, "cmdline")
            if cmdline:
                cpath = inst / dirs.KERNEL_CMDLINE
                cpath.write_text(cmdline)
                written.append(cpath)
        initrd = _get(entry, "initrd")
        if initrd:
            ipath = inst / dirs.INITRD
            results["initrd"] = _download_file_entry(initrd, ipath, "the initrd",
                                                     decompress=False, **common)
            written.append(ipath)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return results


def ensure_instance_image(images: Sequence[Any], arch: str,
                          instance_dir: str | os.PathLike[str], *,
                          cache_root: str | os.PathLike[str] | None = None,
                          on_progress: ProgressCallback | None = None,
                          on_decompress_progress: ProgressCallback | None = None,
                          connect_timeout: float = CONNECT_TIMEOUT,
                          ) -> tuple[Any, dict[str, DownloadResult]] | None:
    """What `limactl start` does before creating the disk: unless the instance already
    has `image` or `disk`, try each entry for `arch` (image, kernel, initrd) in order.
    Returns the entry used and its results, or None when nothing was needed."""
    inst = Path(instance_dir)
    if (inst / dirs.IMAGE).exists() or (inst / dirs.DISK).exists() \
            or (inst / dirs.DIFFDISK_LEGACY).exists():
        return None
    candidates = select_image(images, arch)
    if not candidates:
        raise _no_image_error(images, arch)
    failures: list[str] = []
    for entry in candidates:
        try:
            return entry, download_entry_files(entry, inst, cache_root=cache_root,
                                               on_progress=on_progress,
                                               on_decompress_progress=on_decompress_progress,
                                               connect_timeout=connect_timeout)
        except LimaError as e:
            log.warning("%s", e.message)
            failures.append(e.message)
    raise _all_failed_error(failures)


def _no_image_error(images: Sequence[Any], arch: str) -> DownloadError:
    if not images:
        return DownloadError("no images are configured", hint=DOWNLOAD_HINT)
    arches = sorted({str(_get(e, "arch")) for e in images if _get(e, "arch")})
    return DownloadError(f"no image for arch `{arch}` (images are for {', '.join(arches)})",
                         hint=DOWNLOAD_HINT)


def _all_failed_error(failures: list[str]) -> DownloadError:
    n = len(failures)
    head = "failed to download the image" if n == 1 else \
        f"failed to download the image from all {n} locations"
    return DownloadError(head + ": " + "; ".join(failures), hint=DOWNLOAD_HINT)
