"""Containers end to end: `limactl start template:docker` (one shared guest for the
docker tests), the host's docker client through the forwarded socket, a published
port, the colima round trip, and every provisioning mode with a failing probe.

No registry is reachable: images are made locally from Debian's busybox-static
(`docker import` of a one-binary root file system, `docker build` FROM scratch).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.binaries import arm64_busybox

VENV_BIN = Path(sys.executable).parent
BUSYBOX = shutil.which("busybox")

pytestmark = pytest.mark.skipif(shutil.which("docker") is None or BUSYBOX is None,
                                reason="needs the docker client and busybox-static")


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "LIMA_HOME": str(tmp / "lima"), "DOCKER_CONFIG": str(tmp / "docker"),
            "COLIMA_HOME": str(tmp / "colima"),
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


def _run(env: dict[str, str], *argv: str, timeout: float = 900,
         input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)


def _start_failure(r: subprocess.CompletedProcess[str], inst_dir: Path) -> str:
    """What a failed `limactl start` leaves to read: its stderr's end and the tails
    of the instance's logs (the instance is deleted before the report is read)."""
    from pylima.pytest_plugin import log_tail

    parts = [f"limactl start exited {r.returncode}:\n{r.stderr[-3000:]}"]
    for name in ("serial.log", "ha.stderr.log"):
        parts.append(f"--- {name} ---\n{log_tail(inst_dir / name)}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def docker_vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("containers")
    env = _env(tmp)
    t0 = time.monotonic()
    # Fast mode on (arm64 images through binfmt), as the README shows it.
    r = _run(env, "limactl", "start", "--tty=false", "--timeout=30m",
             "--set", ".param.binfmt = true", "template:docker", timeout=2400)
    env["START_SECONDS"] = f"{time.monotonic() - t0:.0f}"
    env["START_STDERR"] = r.stderr
    if r.returncode != 0:
        why = _start_failure(r, Path(env["LIMA_HOME"], "docker"))
        _run(env, "limactl", "delete", "-f", "docker", timeout=300)
        pytest.fail(why)
    env["DOCKER_HOST"] = f"unix://{env['LIMA_HOME']}/docker/sock/docker.sock"
    yield env
    _run(env, "limactl", "delete", "-f", "docker", timeout=300)


def _busybox_rootfs(path: Path, busybox: str | None = BUSYBOX) -> Path:
    assert busybox is not None
    with tarfile.open(path, "w") as tar:
        tar.add(busybox, "bin/busybox")
        for applet in ("sh", "echo", "httpd", "cat", "uname"):
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return path


def _image_archive(path: Path, layer: Path, arch: str, tag: str) -> Path:
    """A one-layer image in `docker save`'s format (manifest.json, config, layer)."""
    diff_id = "sha256:" + hashlib.sha256(layer.read_bytes()).hexdigest()
    config = json.dumps({"architecture": arch, "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag],
                            "Layers": ["layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        tar.add(layer, "layer.tar")
        for name, data in (("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_start_prints_the_message_and_creates_the_context(docker_vm: dict[str, str]) -> None:
    err = docker_vm["START_STDERR"]
    assert "Message from the instance `docker`" in err
    assert "docker context use lima-docker" in err
    r = _run({k: v for k, v in docker_vm.items() if k != "DOCKER_HOST"},
             "docker", "context", "inspect", "-f", "{{.Endpoints.docker.Host}}", "lima-docker")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == docker_vm["DOCKER_HOST"]


def test_host_docker_runs_a_local_image(docker_vm: dict[str, str], tmp_path: Path) -> None:
    env = docker_vm
    r = _run(env, "docker", "version", "--format", "{{.Server.Version}}", timeout=120)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    tar = _busybox_rootfs(tmp_path / "rootfs.tar")
    r = _run(env, "docker", "import", str(tar), "local/busybox:1", timeout=300)
    assert r.returncode == 0, r.stderr
    r = _run(env, "docker", "run", "--rm", "local/busybox:1", "echo", "ok", timeout=300)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    # docker build FROM scratch with the static binary
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    assert BUSYBOX is not None
    shutil.copy(BUSYBOX, ctx / "busybox")
    (ctx / "Dockerfile").write_text('FROM scratch\nCOPY busybox /bin/busybox\n'
                                    'ENTRYPOINT ["/bin/busybox"]\n')
    r = _run({**env, "DOCKER_BUILDKIT": "0"}, "docker", "build", "-q", "-t", "local/bb:2",
             str(ctx), timeout=300)
    assert r.returncode == 0, r.stderr
    r = _run(env, "docker", "run", "--rm", "local/bb:2", "echo", "built", timeout=300)
    assert (r.returncode, r.stdout) == (0, "built\n"), r.stderr
    # docker.lima uses the host client through the socket
    r = _run({k: v for k, v in env.items() if k != "DOCKER_HOST"}, "docker.lima", "version",
             "--format", "{{.Client.Version}}/{{.Server.Version}}", timeout=120)
    assert r.returncode == 0, r.stderr
    client = _run(env, "docker", "version", "--format", "{{.Client.Version}}").stdout.strip()
    assert r.stdout.startswith(client + "/")


def test_published_port_reaches_the_host(docker_vm: dict[str, str]) -> None:
    env = docker_vm
    _run(env, "docker", "rm", "-f", "web")
    r = _run(env, "docker", "run", "-d", "--name", "web", "-p", "0.0.0.0:18089:8080",
             "local/busybox:1", "httpd", "-f", "-p", "8080", "-h", "/bin", timeout=300)
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 120
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen("http://127.0.0.1:18089/", timeout=10) as resp:
                assert resp.status in (200, 403, 404)
                break
        except urllib.error.HTTPError as e:  # busybox httpd answering is enough
            assert e.code in (403, 404)
            break
        except OSError as e:
            last = e
            time.sleep(2)
    else:
        pytest.fail(f"127.0.0.1:18089 never answered: {last}")
    _run(env, "docker", "rm", "-f", "web", timeout=120)


def test_arm64_image_runs_through_binfmt(docker_vm: dict[str, str], tmp_path: Path) -> None:
    """Fast mode under docker: the guest registers QEMU user-mode emulation with
    binfmt_misc (the F flag, so containers need no interpreter of their own) and an
    arm64 image runs in the x86_64 guest."""
    from pylima.store.dirs import cache_dir

    env = docker_vm
    busybox = arm64_busybox(cache_dir() / "test-binaries")
    # `docker import --platform` needs a multi-platform daemon (Debian 12's docker.io
    # records the daemon's own arch): load an image archive whose config says arm64.
    layer = _busybox_rootfs(tmp_path / "rootfs-arm64.tar", str(busybox))
    archive = _image_archive(tmp_path / "image-arm64.tar", layer, "arm64",
                             "local/busybox-arm64:1")
    r = _run(env, "docker", "load", "-i", str(archive), timeout=300)
    assert r.returncode == 0, r.stderr
    r = _run(env, "docker", "image", "inspect", "-f", "{{.Os}}/{{.Architecture}}",
             "local/busybox-arm64:1")
    assert (r.returncode, r.stdout.strip()) == (0, "linux/arm64"), r.stderr
    r = _run(env, "docker", "run", "--rm", "--platform=linux/arm64", "local/busybox-arm64:1",
             "uname", "-m", timeout=300)
    assert (r.returncode, r.stdout.strip()) == (0, "aarch64"), r.stderr
    # The binary itself, outside any container: `lima ./some-arm64-binary`.
    head = busybox.read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[18:20] == b"\xb7\x00"  # EM_AARCH64
    r = _run(env, "limactl", "copy", str(busybox), "docker:/tmp/busybox")
    assert r.returncode == 0, r.stderr
    r = _run(env, "limactl", "shell", "docker", "uname", "-m")
    assert r.stdout.strip() == "x86_64", r.stderr
    r = _run(env, "limactl", "shell", "--workdir=/tmp", "docker", "./busybox", "uname", "-m")
    assert (r.returncode, r.stdout.strip()) == (0, "aarch64"), r.stderr


def test_colima_round_trip(tmp_path: Path) -> None:
    env = _env(tmp_path)
    r = _run(env, "colima", "start", "--cpu", "2", "--memory", "2", "--disk", "10",
             "--timeout", "1800", timeout=2400)
    assert r.returncode == 0, r.stderr[-3000:]
    sock = tmp_path / "colima" / "default" / "docker.sock"
    try:
        r = _run(env, "colima", "status")
        assert r.returncode == 0, r.stderr
        assert "colima is running using QEMU" in r.stderr
        assert f"socket: unix://{sock}" in r.stderr
        r = _run(env, "colima", "list")
        assert r.stdout.split("\n")[1].split()[:2] == ["default", "Running"]
        r = _run(env, "docker", "--context", "colima", "version", "--format",
                 "{{.Server.Version}}", timeout=120)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr
        r = _run(env, "colima", "stop")
        assert r.returncode == 0, r.stderr
        r = _run(env, "colima", "status")
        assert r.returncode == 1 and "colima is not running" in r.stderr
    finally:
        _run(env, "colima", "delete", "--force", timeout=300)
    assert not (tmp_path / "colima" / "_lima" / "colima").exists()


PROVISION_YAML = """\
base: template:default
user:
  passwordlessSudo: false
param:
  GREETING: hello world
env:
  FROM_ENV: env-value
provision:
- mode: boot
  script: echo "boot $PARAM_GREETING" >> /run/order
- mode: dependency
  script: |
    #!/bin/sh
    echo dependency >> /run/order
- mode: data
  path: /etc/pylima-data.conf
  content: |
    name={{.Name}}
  owner: "{{.User}}"
  permissions: "600"
- mode: data
  path: /etc/hostname
  content: not-written
  overwrite: false
- mode: yq
  path: /etc/pylima/settings.json
  expression: .greeting = "{{.Param.GREETING}}" | .n = 1
- mode: system
  script: |
    #!/bin/sh
    echo "system $(cat /etc/pylima/settings.json | tr -d ' \\n')" >> /run/order
- mode: user
  script: |
    #!/bin/sh
    echo "user $(id -un) $PARAM_GREETING $FROM_ENV" > /tmp/order-user
    echo copied > /tmp/for-host
probes:
- description: a probe that never passes
  script: |
    #!/bin/sh
    echo "not ready yet" >&2
    exit 1
  hint: this hint is shown
copyToHost:
- guest: /tmp/for-host
  host: "{{.Dir}}/copied.txt"
  deleteOnStop: true
message: |
  hello from {{.Name}}
"""


def test_provision_modes_and_a_failing_probe(tmp_path: Path) -> None:
    env = {**_env(tmp_path), "PYLIMA_PROBE_TIMEOUT": "15"}
    yaml_path = tmp_path / "prov.yaml"
    yaml_path.write_text(PROVISION_YAML)
    r = _run(env, "limactl", "start", "--tty=false", "--timeout=15m", "--name=prov",
             str(yaml_path), timeout=1200)
    inst_dir = Path(env["LIMA_HOME"], "prov")
    try:
        # a failing probe: a degraded start, exit 1, with the probe's hint
        why = _start_failure(r, inst_dir)
        assert r.returncode == 1, why
        assert "a probe that never passes" in r.stderr and "this hint is shown" in r.stderr, why
        assert "not ready yet" in r.stderr
        order = _run(env, "limactl", "shell", "prov", "cat", "/run/order",
                     "/tmp/order-user").stdout.splitlines()
        assert order == ["boot hello world", "dependency",
                         'system {"greeting":"helloworld","n":1}',
                         "user lima hello world env-value"], order
        r = _run(env, "limactl", "shell", "prov", "stat", "-c", "%U %a",
                 "/etc/pylima-data.conf", "/etc/pylima/settings.json")
        assert r.stdout.split() == ["lima", "600", "root", "644"]  # data; yq as root
        r = _run(env, "limactl", "shell", "prov", "cat", "/etc/pylima-data.conf",
                 "/etc/hostname")
        assert r.stdout.startswith("name=prov\n") and "not-written" not in r.stdout
        assert (inst_dir / "copied.txt").read_text() == "copied\n"
        # user.passwordlessSudo: false (Lima's facts): sudo wants the password that
        # boot.sh put in ~/password (mode 600), once
        assert _run(env, "limactl", "shell", "prov", "sudo", "-n", "true").returncode == 1
        r = _run(env, "limactl", "shell", "prov", "sh", "-c",
                 'stat -c %a ~/password && sudo -S -p "" true <~/password && '
                 "cat ~/password && ls /run/lima-yq 2>&1")
        lines = r.stdout.splitlines()
        assert r.returncode == 2 and lines[0] == "600" and len(lines[1]) >= 16, r.stdout
        password = lines[1]
        r = _run(env, "limactl", "stop", "prov", timeout=300)
        assert r.returncode == 0, r.stderr
        assert not (inst_dir / "copied.txt").exists()  # deleteOnStop
        # a second boot: the same password; yq reads the file it wrote (as the user,
        # no root needed) and writes the same result
        _run(env, "limactl", "start", "--tty=false", "prov", timeout=1200)
        r = _run(env, "limactl", "shell", "prov", "sh", "-c",
                 "cat ~/password /etc/pylima/settings.json | tr -d ' \\n'")
        assert r.stdout == password + '{"greeting":"helloworld","n":1}', r.stdout
    finally:
        _run(env, "limactl", "delete", "-f", "prov", timeout=300)


CONTAINERD_UNIT = """\
[Unit]
Description=containerd (test archive)
After=network.target

[Service]
ExecStart=/usr/local/bin/containerd
Type=notify
Delegate=yes
KillMode=process

[Install]
WantedBy=multi-user.target
"""


def _containerd_archive(tmp: Path) -> Path:
    """A nerdctl-full-like archive (bin/, lib/systemd/system/) of Debian's containerd."""
    deb_dir = tmp / "deb"
    deb_dir.mkdir()
    r = subprocess.run(["apt-get", "download", "containerd"], cwd=deb_dir,
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.skip(f"cannot download Debian's containerd package: {r.stderr.strip()}")
    deb = next(deb_dir.glob("containerd_*.deb"))
    root = tmp / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    archive = tmp / "nerdctl-full-test-linux-amd64.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for b in ("containerd", "ctr", "containerd-shim-runc-v2"):
            tar.add(root / "usr/bin" / b, f"bin/{b}")
        unit = tmp / "containerd.service"
        unit.write_text(CONTAINERD_UNIT)
        tar.add(unit, "lib/systemd/system/containerd.service")
    return archive


def test_containerd_system_from_a_served_archive(tmp_path: Path) -> None:
    import functools
    import hashlib
    import http.server
    import threading

    archive = _containerd_archive(tmp_path)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    env = _env(tmp_path)
    sets = [".containerd.system = true", ".containerd.user = false",
            f'.containerd.archives = [{{"location": "{url}", "arch": "x86_64", '
            f'"digest": "sha256:{digest}"}}]']
    argv = ["limactl", "start", "--tty=false", "--name=ctrd"]
    for s in sets:
        argv += ["--set", s]
    try:
        r = _run(env, *argv, "--timeout=30m", "template:default", timeout=2400)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "could not be downloaded" not in r.stderr
        r = _run(env, "limactl", "shell", "ctrd", "sudo", "sh", "-c",
                 "systemctl show -p ExecStart --value containerd; "
                 "/usr/local/bin/ctr version")
        assert r.returncode == 0, r.stderr
        assert "/usr/local/bin/containerd" in r.stdout and "Server:" in r.stdout
    finally:
        server.shutdown()
        _run(env, "limactl", "delete", "-f", "ctrd", timeout=300)
