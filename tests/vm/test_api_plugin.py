"""The Python API and the pytest plugin against one real guest (one boot).

The guest is made with `pylima.Instance.create` from the locally built image and
used as a context manager, so it is stopped and deleted at the end whatever
happens. The plugin is then exercised in a pytest sub-run that shares this guest
through `PYLIMA_TEST_INSTANCE` instead of booting another.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import pylima
from pylima.errors import GuestCommandError
from tests.vm.conftest import eventually

pytest_plugins = ["pytester"]

NAME = "apitest"


@pytest.fixture(scope="module")
def lima_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    mp = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("api") / "lima"
    mp.setenv("LIMA_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def vm(lima_home: Path, built_image: dict) -> Iterator[pylima.Instance]:
    inst = pylima.Instance.create(NAME, "template:debian-12", cpus=2, memory=2,
                                  images=[built_image], mounts=[])
    with inst:
        yield inst
    assert not inst.dir.exists()


def test_start_and_run(vm: pylima.Instance) -> None:
    assert vm.status == "Running"
    assert vm.ssh_config.exists() and vm.ssh_port > 0
    assert [i.name for i in pylima.list_instances()] == [NAME]
    r = vm.run(["uname", "-s"])
    assert (r.returncode, r.stdout) == (0, "Linux\n")
    assert vm.run("echo $((6 * 7)) | tr 4 X").stdout == "X2\n"
    assert vm.run(["pwd"], workdir="/tmp").stdout == "/tmp\n"


def test_exit_codes_and_input(vm: pylima.Instance) -> None:
    with pytest.raises(GuestCommandError) as ei:
        vm.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    e = ei.value
    assert (e.returncode, e.stdout, e.stderr) == (7, "out\n", "err\n")
    assert vm.run(["false"], check=False).returncode == 1
    assert vm.run(["cat"], input="piped\n").stdout == "piped\n"
    assert vm.run(["cat"], input=b"\x00\xff", text=False).stdout == b"\x00\xff"


def test_copy_both_ways(vm: pylima.Instance, tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_text("payload\n")
    vm.copy_to(src, "/tmp/copied.txt")
    assert vm.run(["cat", "/tmp/copied.txt"]).stdout == "payload\n"
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_text("A")
    vm.copy_to(tmp_path / "tree", "/tmp/tree", recursive=True)
    vm.copy_from("/tmp/tree", tmp_path / "back", recursive=True)
    assert (tmp_path / "back" / "a").read_text() == "A"
    vm.copy_from("/tmp/copied.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "payload\n"


def test_forward_http_server(vm: pylima.Instance) -> None:
    vm.run("mkdir -p /tmp/www && echo served-from-guest > /tmp/www/index.html")
    vm.run("setsid nohup python3 -m http.server 8765 --bind 127.0.0.1 --directory /tmp/www "
           "</dev/null >/dev/null 2>&1 &")
    host, port = vm.forward(8765)

    def page() -> str:
        with urllib.request.urlopen(f"http://{host}:{port}/index.html", timeout=5) as r:
            return r.read().decode()

    assert eventually(page, timeout=30) == "served-from-guest\n"
    vm.unforward(8765, port)


def test_snapshot_and_tunnel(vm: pylima.Instance) -> None:
    """`Instance.snapshot` and friends on the running guest, then `Instance.tunnel` to
    the HTTP server of the test above, by a name the guest resolves."""
    import socket
    import subprocess

    from pylima.errors import LimaError

    vm.run("echo one > ~/api-snap && sync")
    vm.snapshot("api")
    assert [s["tag"] for s in vm.snapshots()] == ["api"]
    with pytest.raises(LimaError, match="^snapshot 'api' already exists$"):
        vm.snapshot("api")
    vm.run("echo two > ~/api-snap")
    vm.apply_snapshot("api")
    assert vm.run(["cat", "api-snap"]).stdout == "one\n"
    vm.delete_snapshot("api")
    assert vm.snapshots() == []
    with pytest.raises(LimaError, match="^unknown snapshot action `undo`"):
        vm.snapshot("api", "undo")

    port = vm.tunnel()

    def page() -> str:
        return subprocess.run(["curl", "-sS", "--max-time", "20", "--socks5-hostname",
                               f"127.0.0.1:{port}", "http://localhost:8765/index.html"],
                              capture_output=True, text=True).stdout

    assert eventually(page, timeout=60) == "served-from-guest\n"
    vm.close_tunnel(port)
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), 5):
        pass


PLUGIN_TESTS = """
def test_shared(lima_vm):
    assert lima_vm.name == "{name}"
    assert lima_vm.run(["cat", "/tmp/copied.txt"]).stdout == "payload\\n"

def test_fails_on_purpose(lima_vm):
    assert lima_vm.run(["uname", "-s"]).stdout == "Plan9\\n"
"""


def test_plugin_shares_the_running_guest(vm: pylima.Instance, pytester: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYLIMA_TEST_INSTANCE", vm.name)
    pytester.makepyfile(test_shared_vm=PLUGIN_TESTS.format(name=vm.name))
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    assert time.monotonic() - started < 60  # no second boot
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert f"lima {vm.name}: serial.log (last 40 lines)" in out
    assert f"lima {vm.name}: ha.stderr.log (last 40 lines)" in out
    assert vm.status == "Running"  # the plugin leaves an existing instance alone
