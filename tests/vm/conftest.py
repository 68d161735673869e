"""Shared fixtures for VM tests: the locally built Debian image (built once, cached in
the user cache directory between runs) and host users to run pylima as.

Lima's normal case is an unprivileged host user whose name and uid the guest user
matches. When the tests run as root (CI), they create such a user and run limactl
as that user; the root case is tested separately.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TEST_USER = "pylimatest"
SHARED_IMAGES = Path("/var/tmp/pylima-test-images")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)
    # Images a fresh machine has not built yet (the docker variant, and the aarch64
    # image, which takes minutes under user-mode emulation) are built in the
    # background as soon as the tests are collected, one after the other, and the
    # slow-mode tests run last: the builds overlap the x86_64 tests instead of adding
    # to the run (a test that needs an image waits on its build lock).
    cross = [it for it in items if "tests/vm/test_cross_arch" in str(it.fspath)]
    items[:] = [it for it in items if it not in cross] + cross
    wanted = []
    if any("tests/vm/test_mounts" in str(it.fspath) for it in items):
        wanted.append(("x86_64", "cloud-init"))
    if any("tests/vm/test_containers" in str(it.fspath) for it in items):
        wanted.append(("x86_64", "docker"))
    if cross:
        wanted.append(("aarch64", ""))
    _start_background_builds(wanted)


_background_builds: list[subprocess.Popen[bytes]] = []


def _start_background_builds(wanted: list[tuple[str, str]]) -> None:
    from pylima.images import builder

    commands = [
        shlex.join([str(VENV_BIN / "limactl"), "image", "build", f"--arch={arch}",
                    *([f"--variant={variant}"] if variant else [])])
        for arch, variant in wanted
        if builder.find_cached_image(arch=arch, variant=variant) is None
        and builder.can_build(arch)[0]]
    if not commands:
        return
    log = Path(tempfile.gettempdir()) / f"pylima-test-image-builds-{os.getpid()}.log"
    with open(log, "wb") as out:
        _background_builds.append(subprocess.Popen(
            ["sh", "-c", "; ".join(commands)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True))
    print(f"\nbuilding {len(commands)} image(s) in the background (log: {log})")


def pytest_sessionfinish() -> None:
    for proc in _background_builds:
        if proc.poll() is None:  # an interrupted session: mmdebstrap and all
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)


@pytest.fixture(scope="session")
def built_image() -> dict:
    """The `images:` entry of the local Debian 12 image (built on first use)."""
    from pylima.images import builder

    ok, why = builder.can_build()
    img = builder.find_cached_image(arch="x86_64")
    if img is None:
        if not ok:
            pytest.fail(f"cannot build the guest image: {why}")
        img = builder.build_debian_image(arch="x86_64")
    return builder.images_entry(img)


def _share_image(entry: dict) -> dict:
    """Hard-link the built image into a directory every user can read, and return an
    images entry pointing there (root's cache is private)."""
    out = dict(entry)
    SHARED_IMAGES.mkdir(parents=True, exist_ok=True)
    os.chmod(SHARED_IMAGES, 0o755)
    for key in ("location",):
        out[key] = _share_file(entry[key])
    for sub in ("kernel", "initrd"):
        if isinstance(entry.get(sub), dict):
            out[sub] = dict(entry[sub], location=_share_file(entry[sub]["location"]))
    return out


def _share_file(location: str) -> str:
    src = Path(location.removeprefix("file://"))
    digest_dir = SHARED_IMAGES / src.parent.name
    digest_dir.mkdir(exist_ok=True)
    os.chmod(digest_dir, 0o755)
    dst = digest_dir / src.name
    if not (dst.exists() and os.path.samefile(src, dst)):
        # A rebuilt image (another cache, another build) replaces the old file: the
        # images entry's digests are the new build's.
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}")
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    os.chmod(dst, 0o644)
    return f"file://{dst}"


@dataclass
class Host:
    """Runs pylima's commands as one host user, with its own HOME and LIMA_HOME."""

    user: str
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def _argv(self, argv: list[str]) -> list[str]:
        if self.user == pwd.getpwuid(os.getuid()).pw_name:
            return argv
        return ["runuser", "-u", self.user, "--", "env", *[f"{k}={v}" for k, v in
                                                            self.env.items()], *argv]

    def run(self, *argv: str, input: str | None = None, timeout: float = 900,
            env: dict[str, str] | None = None, cwd: str | None = None
            ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **self.env, **(env or {})}
        cmd = list(argv)
        if cmd[0] in ("limactl", "lima"):
            cmd[0] = str(VENV_BIN / cmd[0])
        if env and self.user != pwd.getpwuid(os.getuid()).pw_name:
            cmd = ["env", *[f"{k}={v}" for k, v in env.items()], *cmd]
        return subprocess.run(self._argv(cmd), input=input, text=True, capture_output=True,
                              timeout=timeout, env=full_env, cwd=cwd or str(self.home))

    def limactl(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("limactl", *args, **kw)  # type: ignore[arg-type]

    def lima(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.run("lima", *args, **kw)  # type: ignore[arg-type]


def proc_cmdlines() -> Iterator[tuple[str, str]]:
    """(pid, command line) of every process this user can see, the tests' own
    pytest processes left out."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmd = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "pytest" not in cmd:
            yield entry.name, cmd


def eventually(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll `check` until it returns a true value (generous deadline: TCG is slow); an
    OSError (a connection not accepted yet) counts as not yet."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def _ensure_test_user() -> Path:
    try:
        pw = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", TEST_USER],
                       check=True)
        pw = pwd.getpwnam(TEST_USER)
    return Path(pw.pw_dir)


@pytest.fixture(scope="session")
def unprivileged_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    """An unprivileged host user (created when the tests run as root)."""
    if os.getuid() != 0:
        home = Path.home()
        lima_home = tmp_path_factory.mktemp("vm") / "lima"
        yield Host(pwd.getpwuid(os.getuid()).pw_name, home,
                   {"LIMA_HOME": str(lima_home)})
        return
    home = _ensure_test_user()
    # the venv and the source tree must be readable by that user
    for p in [*reversed(REPO.parents), REPO]:
        if p != Path("/"):
            os.chmod(p, os.stat(p).st_mode | 0o005)
    subprocess.run(["chmod", "-R", "o+rX", str(REPO)], check=True)
    # One LIMA_HOME per test session: sessions may run side by side (two checkouts).
    lima_home = home / f".lima-test-{os.getpid()}"
    shutil.rmtree(lima_home, ignore_errors=True)
    env = {"HOME": str(home), "USER": TEST_USER, "LOGNAME": TEST_USER,
           "LIMA_HOME": str(lima_home), "XDG_CACHE_HOME": str(home / ".cache"),
           "PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}
    yield Host(TEST_USER, home, env)
    # Only this session's processes (their command lines name its LIMA_HOME).
    subprocess.run(["pkill", "-9", "-u", TEST_USER, "-f", str(lima_home)], check=False)
    shutil.rmtree(lima_home, ignore_errors=True)


@pytest.fixture(scope="session")
def shared_image(built_image: dict) -> dict:
    return _share_image(built_image) if os.getuid() == 0 else built_image


@pytest.fixture(scope="session")
def cloud_init_image() -> dict:
    """The local image's cloud-init variant (the boot path of cloud images), readable
    by the unprivileged test user. pylima's default image boots with pylima-init: one
    shared guest boots this variant instead, so that the cloud-init path stays tested."""
    from pylima.images import builder

    img = builder.find_cached_image(arch="x86_64", variant="cloud-init")
    if img is None:
        ok, why = builder.can_build()
        if not ok:
            pytest.fail(f"cannot build the guest image: {why}")
        img = builder.build_debian_image(arch="x86_64", variant="cloud-init")
    entry = builder.images_entry(img)
    return _share_image(entry) if os.getuid() == 0 else entry
