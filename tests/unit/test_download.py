"""The download path against a real HTTP server on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import logging
import lzma
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from imageserver import RunningServer

from pylima.errors import LimaError
from pylima.images import download as dl
from pylima.images.download import (
    DigestMismatchError,
    DownloadError,
    ProgressLogger,
    cache_entry_dir,
    cache_key,
    detect_image_format,
    download,
    download_entry_files,
    download_first,
    ensure_instance_image,
    parse_digest,
    select_image,
)
from pylima.images.prune import locations_from_config, prune_cache

PAYLOAD = os.urandom(3 * (1 << 20) + 12345)  # a few chunks, not chunk-aligned
QCOW2_HEAD = b"QFI\xfb" + b"\x00" * 60


def sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


@pytest.fixture
def server() -> Iterator[RunningServer]:
    s = RunningServer()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(root))
    return root / "lima"


def test_good_download_cache_layout_and_reuse(server: RunningServer, cache: Path,
                                              tmp_path: Path) -> None:
    server.state.files["/img.qcow2"] = PAYLOAD
    url = server.url("/img.qcow2")
    seen: list[tuple[int, int | None]] = []
    res = download(url, tmp_path / "a", digest=sha256(PAYLOAD),
                   on_progress=lambda d, t: seen.append((d, t)))
    assert res.status == "downloaded" and res.validated_digest
    assert (tmp_path / "a").read_bytes() == PAYLOAD
    shad = cache / "download" / "by-url-sha256" / hashlib.sha256(url.encode()).hexdigest()
    assert shad == cache_entry_dir(url)
    assert sorted(p.name for p in shad.iterdir()) == ["data", "sha256.digest", "time",
                                                       "type", "url"]
    assert (shad / "url").read_text() == url
    assert (shad / "data").read_bytes() == PAYLOAD
    assert (shad / "sha256.digest").read_text() == sha256(PAYLOAD)
    assert (shad / "time").read_text() == server.state.last_modified
    assert (shad / "type").read_text() == "application/octet-stream"
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    # The destination shares the cache file's inode (hard link), no second copy.
    assert os.stat(tmp_path / "a").st_ino == os.stat(shad / "data").st_ino

    n = len(server.state.requests)
    res2 = download(url, tmp_path / "b", digest=sha256(PAYLOAD))
    assert res2.status == "used-cache"
    assert (tmp_path / "b").read_bytes() == PAYLOAD
    assert len(server.state.requests) == n, "a verified cache hit makes no request"

    # An existing destination is left alone, as Lima does.
    assert download(url, tmp_path / "b").status == "skipped"


def test_digestless_cache_hit_checks_last_modified(server: RunningServer, cache: Path,
                                                   tmp_path: Path) -> None:
    server.state.files["/x.img"] = PAYLOAD
    url = server.url("/x.img")
    download(url, tmp_path / "a")
    res = download(url, tmp_path / "b")
    assert res.status == "used-cache"
    assert [r.method for r in server.state.requests] == ["GET", "HEAD"]
    # The remote file changed: its Last-Modified differs, so it is fetched again.
    server.state.files["/x.img"] = PAYLOAD[::-1]
    server.state.last_modified = "Thu, 22 Oct 2026 07:28:00 GMT"
    res = download(url, tmp_path / "c")
    assert res.status == "downloaded"
    assert (tmp_path / "c").read_bytes() == PAYLOAD[::-1]


def test_refetch_drops_digest_recorded_for_old_bytes(server: RunningServer, cache: Path,
                                                     tmp_path: Path) -> None:
    server.state.files["/x.img"] = PAYLOAD
    url = server.url("/x.img")
    download(url, tmp_path / "a", digest=sha256(PAYLOAD))
    server.state.files["/x.img"] = PAYLOAD[::-1]
    server.state.last_modified = "Thu, 22 Oct 2026 07:28:00 GMT"
    download(url, tmp_path / "b")  # digest-less: re-fetched, new bytes
    assert not (cache_entry_dir(url) / "sha256.digest").exists()
    # The old digest no longer vouches for the new bytes.
    with pytest.raises(DigestMismatchError):
        download(url, tmp_path / "c", digest=sha256(PAYLOAD))


def test_wrong_digest_removes_entry(server: RunningServer, cache: Path,
                                    tmp_path: Path) -> None:
    server.state.files["/img"] = PAYLOAD
    url = server.url("/img")
    wrong = sha256(b"something else")
    with pytest.raises(DigestMismatchError) as ei:
        download(url, tmp_path / "a", digest=wrong)
    assert ei.value.expected == wrong and ei.value.actual == sha256(PAYLOAD)
    assert wrong in str(ei.value) and sha256(PAYLOAD) in str(ei.value)
    assert not cache_entry_dir(url).exists()
    assert not (tmp_path / "a").exists()

    # A good entry whose digest file disagrees with lima.yaml: error, entry dropped.
    download(url, tmp_path / "b", digest=sha256(PAYLOAD))
    with pytest.raises(DigestMismatchError):
        download(url, tmp_path / "c", digest=wrong)
    assert not cache_entry_dir(url).exists()


def test_sha512_digest_on_cache_hit_is_computed(server: RunningServer, cache: Path,
                                                tmp_path: Path) -> None:
    server.state.files["/img"] = PAYLOAD
    url = server.url("/img")
    download(url, tmp_path / "a")  # no digest: no digest file
    good = "sha512:" + hashlib.sha512(PAYLOAD).hexdigest()
    res = download(url, tmp_path / "b", digest=good)
    assert res.status == "used-cache" and res.validated_digest
    assert (cache_entry_dir(url) / "sha512.digest").read_text() == good
    bad = "sha512:" + "0" * 128
    with pytest.raises(DigestMismatchError):
        download(url, tmp_path / "c", digest=bad)
    assert not cache_entry_dir(url).exists()


def test_parse_digest() -> None:
    d = parse_digest("sha256:" + "a" * 64)
    assert d is not None and d.algorithm == "sha256"
    assert parse_digest("") is None
    with pytest.raises(LimaError):
        parse_digest("md5:abc")
    with pytest.raises(LimaError):
        parse_digest("sha256:abc")


def test_404_falls_through_to_good_mirror(server: RunningServer, cache: Path,
                                          tmp_path: Path) -> None:
    server.state.files["/good.img"] = PAYLOAD
    images = [
        {"location": server.url("/missing.img"), "arch": "x86_64"},
        {"location": server.url("/arm.img"), "arch": "aarch64"},
        {"location": server.url("/good.img"), "arch": "x86_64", "digest": sha256(PAYLOAD)},
    ]
    entry, res = download_first(images, "x86_64", tmp_path / "image")
    assert entry is images[2]
    assert (tmp_path / "image").read_bytes() == PAYLOAD
    assert not [r for r in server.state.requests if r.path == "/arm.img"]


def test_all_locations_fail_names_each(server: RunningServer, cache: Path,
                                       tmp_path: Path) -> None:
    # A closed port on 127.0.0.1 stands for an offline mirror: it must fail at once.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/img"
    s.close()
    server.state.files["/bad.img"] = PAYLOAD
    images = [
        {"location": server.url("/missing.img"), "arch": "x86_64"},
        {"location": dead, "arch": "x86_64"},
        {"location": server.url("/bad.img"), "arch": "x86_64",
         "digest": sha256(b"other")},
    ]
    t0 = time.monotonic()
    with pytest.raises(DownloadError) as ei:
        download_first(images, "x86_64", tmp_path / "image")
    assert time.monotonic() - t0 < 5
    msg = str(ei.value)
    assert "from all 3 locations" in msg
    assert f"`{server.url('/missing.img')}`: unexpected HTTP status 404" in msg
    assert f"`{dead}`: " in msg and "refused" in msg
    assert f"`{server.url('/bad.img')}`: expected digest" in msg
    assert ei.value.hint and "limactl image build debian-12" in ei.value.hint
    assert not (tmp_path / "image").exists()

    with pytest.raises(DownloadError, match="no image for arch `riscv64`"):
        download_first(images, "riscv64", tmp_path / "image")


def test_unreachable_host_fails_within_connect_timeout(cache: Path, tmp_path: Path) -> None:
    # TEST-NET-1 (RFC 5737) is never routed: either unreachable at once or a timeout.
    t0 = time.monotonic()
    with pytest.raises(DownloadError):
        download("http://192.0.2.1:9/img", tmp_path / "a", connect_timeout=1.0)
    assert time.monotonic() - t0 < 5


def test_select_image_arch_and_variant() -> None:
    images = [
        {"location": "a", "arch": "aarch64"},
        {"location": "b", "arch": "x86_64", "variant": "slim"},
        {"location": "c", "arch": "x86_64", "variant": "full"},
        {"location": "d", "arch": "x86_64", "variant": "slim"},
        {"location": "e"},
    ]
    assert [e["location"] for e in select_image(images, "x86_64")] == ["b", "d"]
    assert [e["location"] for e in select_image(images, "aarch64")] == ["a", "e"]


@pytest.mark.parametrize("ext,compress", [
    (".gz", gzip.compress),
    (".xz", lzma.compress),
    (".bz2", bz2.compress),
    (".zst", lambda b: zstandard.ZstdCompressor().compress(b)),
])
def test_compressed_image(server: RunningServer, cache: Path, tmp_path: Path, ext: str,
                          compress: object) -> None:
    raw = QCOW2_HEAD + PAYLOAD[:300_000]
    packed = compress(raw)  # type: ignore[operator]
    server.state.files["/img.qcow2" + ext] = packed
    url = server.url("/img.qcow2" + ext)
    unpacking: list[tuple[int, int | None]] = []
    res = download(url, tmp_path / "image", digest=sha256(packed), decompress=True,
                   on_decompress_progress=lambda d, t: unpacking.append((d, t)))
    assert (tmp_path / "image").read_bytes() == raw
    assert unpacking[0] == (0, len(packed)) and unpacking[-1] == (len(packed), len(packed))
    # The cache keeps the bytes as served; the digest is the compressed file's.
    assert (cache_entry_dir(url) / "data").read_bytes() == packed
    assert res.cache_path == cache_entry_dir(url) / "data"
    assert detect_image_format(tmp_path / "image") == "qcow2"
    # Without decompress the file is kept compressed (Lima does so for initrds).
    download(url, tmp_path / "kept", digest=sha256(packed))
    assert (tmp_path / "kept").read_bytes() == packed


def test_decompress_by_magic_without_extension(tmp_path: Path, cache: Path) -> None:
    src = tmp_path / "blob"
    src.write_bytes(gzip.compress(PAYLOAD))
    download(str(src), tmp_path / "out", decompress=True)
    assert (tmp_path / "out").read_bytes() == PAYLOAD


def test_interrupted_then_resumed_with_range(server: RunningServer, cache: Path,
                                             tmp_path: Path) -> None:
    server.state.files["/big.img"] = PAYLOAD
    url = server.url("/big.img")
    cut = 1_500_000
    server.state.cut_after["/big.img"] = cut
    # No retries: the call fails, keeps data.part, never exposes `data`.
    with pytest.raises(DownloadError, match="resumes the download"):
        download(url, tmp_path / "a", digest=sha256(PAYLOAD), retries=0)
    shad = cache_entry_dir(url)
    assert (shad / "data.part").stat().st_size == cut
    assert not (shad / "data").exists() and not (tmp_path / "a").exists()

    res = download(url, tmp_path / "a", digest=sha256(PAYLOAD))
    assert res.status == "downloaded"
    assert (tmp_path / "a").read_bytes() == PAYLOAD
    last = server.gets("/big.img")[-1]
    assert last.headers.get("Range") == f"bytes={cut}-"
    assert last.headers.get("If-Range") == server.state.last_modified
    assert not (shad / "data.part").exists()


def test_interrupted_resumes_within_one_call(server: RunningServer, cache: Path,
                                             tmp_path: Path) -> None:
    server.state.files["/big.img"] = PAYLOAD
    server.state.cut_after["/big.img"] = 777_777
    url = server.url("/big.img")
    res = download(url, tmp_path / "a")  # digest-less: If-Range guards the resume
    assert res.status == "downloaded"
    assert (tmp_path / "a").read_bytes() == PAYLOAD
    ranges = [r.headers.get("Range") for r in server.gets("/big.img")]
    assert ranges == [None, "bytes=777777-"]


def test_stalled_transfer_times_out_and_resumes(server: RunningServer, cache: Path,
                                                tmp_path: Path) -> None:
    server.state.files["/big.img"] = PAYLOAD
    server.state.stall_after["/big.img"] = (400_000, 1.5)
    url = server.url("/big.img")
    download(url, tmp_path / "a", digest=sha256(PAYLOAD), read_timeout=0.3)
    assert (tmp_path / "a").read_bytes() == PAYLOAD
    assert server.gets("/big.img")[-1].headers.get("Range") == "bytes=400000-"


def test_parallel_downloads_share_one_transfer(server: RunningServer, cache: Path,
                                               tmp_path: Path) -> None:
    import threading

    server.state.files["/img"] = PAYLOAD
    url = server.url("/img")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            download(url, tmp_path / f"out{i}", digest=sha256(PAYLOAD))
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(server.gets("/img")) == 1  # the entry lock makes the others wait
    for i in range(4):
        assert (tmp_path / f"out{i}").read_bytes() == PAYLOAD


def test_resume_when_server_ignores_range(server: RunningServer, cache: Path,
                                          tmp_path: Path) -> None:
    server.state.files["/big.img"] = PAYLOAD
    server.state.cut_after["/big.img"] = 500_000
    server.state.support_range = False
    url = server.url("/big.img")
    download(url, tmp_path / "a", digest=sha256(PAYLOAD))
    assert (tmp_path / "a").read_bytes() == PAYLOAD


def test_changed_remote_restarts_instead_of_resuming(server: RunningServer, cache: Path,
                                                     tmp_path: Path) -> None:
    server.state.files["/big.img"] = PAYLOAD
    server.state.cut_after["/big.img"] = 600_000
    url = server.url("/big.img")
    with pytest.raises(DownloadError):
        download(url, tmp_path / "a", retries=0)
    new = PAYLOAD[::-1]
    server.state.files["/big.img"] = new
    server.state.last_modified = "Fri, 23 Oct 2026 07:28:00 GMT"
    download(url, tmp_path / "a")
    assert (tmp_path / "a").read_bytes() == new  # If-Range failed: a full 200


def test_file_url_and_plain_path(tmp_path: Path, cache: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "local.img"
    src.write_bytes(QCOW2_HEAD + b"x" * 1000)
    r1 = download(f"file://{src}", tmp_path / "a", digest=sha256(src.read_bytes()))
    assert r1.status == "downloaded" and r1.cache_path is None
    assert (tmp_path / "a").read_bytes() == src.read_bytes()
    # A user's file is copied, never hard-linked (editing it must not change the VM).
    assert os.stat(tmp_path / "a").st_ino != os.stat(src).st_ino
    monkeypatch.chdir(tmp_path)
    download("local.img", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == src.read_bytes()
    assert not (cache / "download").exists(), "local files are not cached"
    with pytest.raises(DigestMismatchError):
        download(str(src), tmp_path / "c", digest=sha256(b"nope"))
    with pytest.raises(DownloadError, match="does not exist"):
        download(str(tmp_path / "nope.img"), tmp_path / "d")
    with pytest.raises(LimaError, match="non-absolute"):
        download("file://relative/x.img", tmp_path / "e")
    # A file kept in pylima's cache (a locally built image) is hard-linked.
    built = cache / "images" / "debian-12.qcow2"
    built.parent.mkdir(parents=True)
    built.write_bytes(QCOW2_HEAD)
    download(f"file://{built}", tmp_path / "f")
    assert os.stat(tmp_path / "f").st_ino == os.stat(built).st_ino


def test_detect_format(tmp_path: Path) -> None:
    q = tmp_path / "q"
    q.write_bytes(QCOW2_HEAD)
    r = tmp_path / "r"
    r.write_bytes(b"\x00" * 512)
    assert detect_image_format(q) == "qcow2"
    assert detect_image_format(r) == "raw"


def test_entry_files_kernel_initrd_cmdline(server: RunningServer, cache: Path,
                                           tmp_path: Path) -> None:
    kernel, initrd = b"K" * 5000, gzip.compress(b"I" * 5000)
    server.state.files.update({"/img": PAYLOAD, "/vmlinuz.gz": gzip.compress(kernel),
                               "/initrd.gz": initrd})
    entry = {"location": server.url("/img"), "arch": "x86_64",
             "kernel": {"location": server.url("/vmlinuz.gz"), "arch": "x86_64",
                        "cmdline": "console=ttyS0 root=/dev/vda"},
             "initrd": {"location": server.url("/initrd.gz"), "arch": "x86_64"}}
    inst = tmp_path / "inst"
    res = download_entry_files(entry, inst)
    assert set(res) == {"image", "kernel", "initrd"}
    assert (inst / "image").read_bytes() == PAYLOAD
    assert (inst / "kernel").read_bytes() == kernel  # decompressed, as Lima does
    assert (inst / "initrd").read_bytes() == initrd  # kept as served
    assert (inst / "kernel.cmdline").read_text() == "console=ttyS0 root=/dev/vda"


def test_ensure_instance_image_cleans_failed_entry(server: RunningServer, cache: Path,
                                                   tmp_path: Path) -> None:
    server.state.files.update({"/a.img": b"A" * 100, "/b.img": b"B" * 100,
                               "/b-kernel": b"K" * 10})
    images = [
        {"location": server.url("/a.img"), "arch": "x86_64",
         "kernel": {"location": server.url("/missing-kernel")}},
        {"location": server.url("/b.img"), "arch": "x86_64",
         "kernel": {"location": server.url("/b-kernel")}},
    ]
    inst = tmp_path / "inst"
    got = ensure_instance_image(images, "x86_64", inst)
    assert got is not None and got[0] is images[1]
    assert (inst / "image").read_bytes() == b"B" * 100  # not entry A's leftover
    assert ensure_instance_image(images, "x86_64", inst) is None  # already there


def test_progress_logger_lines(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    p = ProgressLogger("the image", interval=5, clock=lambda: now[0],
                       logger=logging.getLogger("t"))
    with caplog.at_level(logging.INFO, logger="t"):
        for i in range(11):
            now[0] = i * 1.0
            p(i * 100 << 20, 1000 << 20)
        p(1000 << 20, 1000 << 20)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "Downloading the image: 0B / 1000MiB (0%)",
        "Downloading the image: 500MiB / 1000MiB (50%)",
        "Downloading the image: 1000MiB / 1000MiB (100%)",
    ]


def test_prune(server: RunningServer, cache: Path, tmp_path: Path) -> None:
    server.state.files.update({"/keep.img": PAYLOAD, "/drop.img": PAYLOAD[:1000]})
    keep, drop = server.url("/keep.img"), server.url("/drop.img")
    download(keep, None)
    download(drop, tmp_path / "linked")  # hard-linked elsewhere: frees no space
    (cache_entry_dir(keep) / "data.part").write_bytes(b"x" * 4096)
    config = {"images": [{"location": keep, "arch": "x86_64"}]}
    assert locations_from_config(config) == {keep}

    small = sum((cache_entry_dir(drop) / n).stat().st_blocks * 512
                for n in ("url", "time", "type"))
    res = prune_cache(locations_from_config(config))
    assert res.removed == [cache_entry_dir(drop)]
    assert cache_entry_dir(keep) in res.kept
    assert (cache_entry_dir(keep) / "data").exists()
    assert not (cache_entry_dir(keep) / "data.part").exists()
    # The partial file and the dropped entry's small files; its `data` is still
    # hard-linked from outside the cache, so it frees nothing.
    assert res.bytes_freed == 4096 + small
    assert (tmp_path / "linked").read_bytes() == PAYLOAD[:1000]

    res = prune_cache(None)
    assert res.removed == [cache] and not cache.exists()
    assert res.bytes_freed >= len(PAYLOAD)
    # Cache keys are accepted in place of locations.
    assert prune_cache({cache_key(keep)}).removed == []


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl tool")
def test_https_verifies_the_certificate(tmp_path: Path, cache: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True,
                   capture_output=True)
    srv = RunningServer()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    srv.httpd.socket = ctx.wrap_socket(srv.httpd.socket, server_side=True)
    try:
        srv.state.files["/img"] = PAYLOAD[:5000]
        url = f"https://127.0.0.1:{srv.state.port}/img"
        with pytest.raises(DownloadError, match="CERTIFICATE_VERIFY_FAILED"):
            download(url, tmp_path / "a")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        download(url, tmp_path / "a", digest=sha256(PAYLOAD[:5000]))
        assert (tmp_path / "a").read_bytes() == PAYLOAD[:5000]
    finally:
        srv.close()


def test_connect_timeout_is_short() -> None:
    assert dl.CONNECT_TIMEOUT <= 10
