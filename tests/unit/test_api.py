"""The Python API's plumbing (no VM): instance creation in a temporary LIMA_HOME,
the context managers' clean-up, guest command error mapping with a fake ssh, and
the pytest plugin's marker/ini parsing and VM cache (VM creation faked)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pylima
from pylima import machine
from pylima.errors import GuestCommandError, InstanceError, InstanceNotFound, LimaError
from pylima.store import dirs

pytest_plugins = ["pytester"]

IMAGE = {"location": "https://cloud.debian.org/images/x.qcow2", "arch": "x86_64"}


@pytest.fixture
def lima_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lima"
    monkeypatch.setenv("LIMA_HOME", str(home))
    return home


def test_lazy_exports() -> None:
    code = ("import sys, pylima; assert 'pylima.machine' not in sys.modules; "
            "pylima.Instance; assert 'pylima.machine' in sys.modules; "
            "assert pylima.GuestCommandError.__mro__[1] is pylima.LimaError")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        pylima.no_such_name  # noqa: B018
    for name in pylima.__all__:
        assert getattr(pylima, name) is not None


def test_create_writes_instance_dir(lima_home: Path) -> None:
    inst = pylima.Instance.create("apitest", "template:debian-12", cpus=3, memory=1.5,
                                  images=[IMAGE], mounts=["/srv/data:w"],
                                  set=['.env = {"A": "1"}'])
    assert inst.dir == lima_home / "apitest"
    assert (inst.dir / dirs.LIMA_YAML).exists()
    assert inst.status == "Stopped"
    cfg = inst.config
    assert cfg["cpus"] == 3 and cfg["memory"] == "1.5GiB"
    assert cfg["images"][0]["location"] == IMAGE["location"]
    assert [(m["location"], m["writable"]) for m in cfg["mounts"]] == [("/srv/data", True)]
    assert cfg["env"] == {"A": "1"}
    assert pylima.Instance.get("apitest") == inst
    assert [i.name for i in pylima.list_instances()] == ["apitest"]
    with pytest.raises(InstanceError, match="already exists"):
        pylima.Instance.create("apitest", "template:debian-12")
    inst.delete()
    assert not inst.dir.exists()
    with pytest.raises(InstanceNotFound):
        pylima.Instance.get("apitest")


def test_create_errors_are_lima_errors(lima_home: Path) -> None:
    with pytest.raises(LimaError, match="cpus"):
        pylima.Instance.create("bad", "template:debian-12", set=['.cpus = "many"'])
    with pytest.raises(LimaError, match="no-such"):
        pylima.Instance.create("bad", "template:no-such")
    with pytest.raises(LimaError, match="references network `nope` which is not defined"):
        pylima.Instance.create("bad", "template:debian-12", networks=["lima:nope"])
    with pytest.raises(LimaError, match="`networks\\[0\\].vzNAT` requires `vmType` `vz`"):
        pylima.Instance.create("bad", "template:debian-12", networks=["vzNAT"])
    assert not (lima_home / "bad").exists()


def test_create_on_a_user_v2_network(lima_home: Path) -> None:
    inst = pylima.Instance.create("nw", "template:debian-12", networks=["lima:user-v2"])
    nets = (inst.config or {})["networks"]
    assert [(n["lima"], n["interface"]) for n in nets] == [("user-v2", "lima0")]
    assert nets[0]["macAddress"].startswith("52:55:55:")
    inst.delete()


class FakeLifecycle:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_start: bool = False) -> None:
        self.calls: list[str] = []
        self.fail_start = fail_start
        monkeypatch.setattr(machine.api, "start_instance", self.start)
        monkeypatch.setattr(machine.api, "stop_instance", self.stop)
        real_delete = machine.api.delete_instance

        def delete(rec: object, force: bool = False) -> None:
            self.calls.append(f"delete force={force}")
            real_delete(rec, force=force)  # type: ignore[arg-type]

        monkeypatch.setattr(machine.api, "delete_instance", delete)

    def start(self, rec: object, timeout: float = 600) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise InstanceError("boot failed")

    def stop(self, rec: object, force: bool = False) -> None:
        self.calls.append(f"stop force={force}")


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_context_manager_stops_and_deletes_when_body_raises(
        lima_home: Path, monkeypatch: pytest.MonkeyPatch, exc: type[BaseException]) -> None:
    fake = FakeLifecycle(monkeypatch)
    with pytest.raises(exc), pylima.Instance.create("cm", "template:debian-12",
                                                    images=[IMAGE]) as vm:
        assert vm.name == "cm"
        raise exc()
    assert fake.calls == ["start", "stop force=True", "delete force=True"]
    assert not (lima_home / "cm").exists()


def test_vm_context_manager_cleans_up_after_failed_start(
        lima_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLifecycle(monkeypatch, fail_start=True)
    with pytest.raises(InstanceError, match="boot failed"), \
            pylima.vm("template:debian-12", images=[IMAGE]):
        pytest.fail("the body must not run")
    assert fake.calls == ["start", "stop force=True", "delete force=True"]
    assert not (lima_home / "cm").exists() and not list(lima_home.glob("pylima-*"))


def test_vm_context_manager_normal_exit(lima_home: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeLifecycle(monkeypatch)
    with pylima.vm("template:debian-12", name="cm2", images=[IMAGE]) as vm:
        assert vm.dir.exists()
    assert fake.calls == ["start", "stop force=True", "delete force=True"]
    assert not (lima_home / "cm2").exists()


def test_get_context_manager_never_deletes(lima_home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pylima.Instance.create("kept", "template:debian-12", images=[IMAGE])
    fake = FakeLifecycle(monkeypatch)
    monkeypatch.setattr(machine.Instance, "stop",
                        lambda self, force=False: fake.calls.append(f"stop force={force}"))
    with pytest.raises(RuntimeError), pylima.Instance.get("kept"):
        raise RuntimeError
    assert fake.calls == ["start", "stop force=False"]
    assert (lima_home / "kept").exists()


FAKE_SSH = """\
#!{python}
import json, os, sys
with open(os.environ["FAKE_SSH_LOG"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read()}}) + "\\n")
sys.stdout.write(os.environ.get("FAKE_SSH_OUT", ""))
sys.stderr.write(os.environ.get("FAKE_SSH_ERR", ""))
sys.exit(int(os.environ.get("FAKE_SSH_RC", "0")))
"""


@pytest.fixture
def running(lima_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> pylima.Instance:
    """An instance that looks running, with `ssh` and `scp` on PATH faked."""
    inst = pylima.Instance.create("runner", "template:debian-12", images=[IMAGE])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("ssh", "scp"):
        p = bindir / tool
        p.write_text(FAKE_SSH.format(python=sys.executable))
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SSH_LOG", str(tmp_path / "ssh.log"))
    real = machine.inspect

    def inspect(name: str):  # type: ignore[no-untyped-def]
        rec = real(name)
        rec.status = "Running"
        return rec

    monkeypatch.setattr(machine, "inspect", inspect)
    return inst


def ssh_calls(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "ssh.log").read_text().splitlines()]


def test_run_maps_exit_codes(running: pylima.Instance, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SSH_OUT", "out\n")
    r = running.run(["echo", "a b"], input="hello")
    assert (r.returncode, r.stdout, r.args) == (0, "out\n", ["echo", "a b"])
    call = ssh_calls(tmp_path)[-1]
    assert call["stdin"] == "hello"
    assert call["argv"][:2] == ["-F", str(running.ssh_config)]
    assert call["argv"][-3:-1] == ["lima-runner", "--"]
    assert "'echo '\"'\"'a b'\"'\"''" in call["argv"][-1]
    monkeypatch.setenv("FAKE_SSH_RC", "3")
    monkeypatch.setenv("FAKE_SSH_ERR", "boom\n")
    with pytest.raises(GuestCommandError) as ei:
        running.run("exit 3", workdir="/tmp")
    e = ei.value
    assert isinstance(e, LimaError)
    assert (e.returncode, e.stdout, e.stderr) == (3, "out\n", "boom\n")
    assert "exit code 3" in str(e) and "boom" in str(e)
    assert "cd /tmp || exit 1" in ssh_calls(tmp_path)[-1]["argv"][-1]
    r = running.run(["false"], check=False, text=False)
    assert (r.returncode, r.stdout) == (3, b"out\n")


def test_arun(running: pylima.Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SSH_OUT", "async\n")
    r = asyncio.run(running.arun(["true"], input=b"x"))
    assert (r.returncode, r.stdout) == (0, "async\n")
    monkeypatch.setenv("FAKE_SSH_RC", "9")
    with pytest.raises(GuestCommandError):
        asyncio.run(running.arun("false"))


def test_copy_and_forward_argv(running: pylima.Instance, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    running.copy_to(tmp_path / "f", "/tmp/f")
    running.copy_from("/etc/hosts", tmp_path / "h", recursive=True)
    host, port = running.forward(8000)
    assert host == "127.0.0.1" and port > 0
    assert running.forward(8000, 18000) == ("127.0.0.1", 18000)
    running.unforward(8000, 18000)
    calls = [c["argv"] for c in ssh_calls(tmp_path)]
    assert calls[0][-2:] == [str(tmp_path / "f"), "lima-runner:/tmp/f"]
    assert "-r" in calls[1] and calls[1][-2:] == ["lima-runner:/etc/hosts", str(tmp_path / "h")]
    assert calls[2][-3:] == ["-L", f"127.0.0.1:{port}:127.0.0.1:8000", "lima-runner"]
    assert calls[3][2:] == ["-O", "forward", "-L", "127.0.0.1:18000:127.0.0.1:8000",
                            "lima-runner"]
    assert calls[4][3] == "cancel"
    monkeypatch.setenv("FAKE_SSH_RC", "255")
    monkeypatch.setenv("FAKE_SSH_ERR", "Control socket connect: No such file\n")
    with pytest.raises(InstanceError, match="Control socket"):
        running.forward(80)


def test_run_refuses_stopped_instance(lima_home: Path) -> None:
    inst = pylima.Instance.create("stopped", "template:debian-12", images=[IMAGE])
    with pytest.raises(InstanceError, match="not running"):
        inst.run(["true"])


# ------------------------------------------------------------------ pytest plugin

PLUGIN_CONFTEST = """
import json
import pytest
from pylima import pytest_plugin

CREATED = []

class FakeVM:
    def __init__(self, spec):
        self.spec = spec
        self.name = "fake%d" % len(CREATED)
        self.dir = pytest_plugin.Path({logdir!r})
    def _cleanup(self):
        CREATED.append("cleanup " + self.name)

def fake_create(spec, timeout):
    vm = FakeVM(dict(spec))
    CREATED.append("create " + json.dumps(vm.spec, sort_keys=True))
    return vm

REAL_CREATE = pytest_plugin.create_vm
pytest_plugin.create_vm = fake_create

def pytest_unconfigure(config):
    pytest_plugin.create_vm = REAL_CREATE
    with open({out!r}, "w") as f:
        json.dump(CREATED, f)
"""


def run_plugin(pytester: pytest.Pytester, tmp_path: Path, tests: str, ini: str = "",
               *args: str) -> tuple[pytest.RunResult, list[str]]:
    logdir = tmp_path / "vmdir"
    logdir.mkdir(exist_ok=True)
    (logdir / "serial.log").write_text("".join(f"serial line {i}\n" for i in range(100)))
    (logdir / "ha.stderr.log").write_text('level=info msg="hostagent says hi"\n')
    out = tmp_path / "created.json"
    pytester.makeconftest(PLUGIN_CONFTEST.format(logdir=str(logdir), out=str(out)))
    pytester.makeini("[pytest]\n" + ini)
    pytester.makepyfile(test_vms=textwrap.dedent(tests))
    result = pytester.runpytest(*args)
    return result, json.loads(out.read_text())


def test_plugin_shares_vms_per_config(pytester: pytest.Pytester, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYLIMA_TEST_INSTANCE", raising=False)
    result, created = run_plugin(pytester, tmp_path, """
        import pytest

        def test_a(lima_vm):
            assert lima_vm.spec == {"template": "template:debian-12", "cpus": 2,
                                    "memory": 1.5, "set": [".a = 1", ".b = 2"]}

        def test_b(lima_vm):
            assert lima_vm.name == "fake0"

        @pytest.mark.lima(template="template:alpine", cpus=1, set=[".c = 3"])
        def test_c(lima_vm):
            assert lima_vm.spec == {"template": "template:alpine", "cpus": 1,
                                    "memory": 1.5, "set": [".c = 3"]}

        @pytest.mark.lima("template:alpine", set=(".c = 3",), cpus=1)
        def test_d(lima_vm):
            assert lima_vm.name == "fake1"

        def test_no_vm():
            pass
    """, "lima_template = template:debian-12\nlima_cpus = 2\nlima_memory = 1.5\n"
         "lima_set =\n    .a = 1\n    .b = 2\n")
    result.assert_outcomes(passed=5)
    assert [c.split(" ")[0] for c in created] == ["create", "create", "cleanup", "cleanup"]


def test_plugin_existing_instance_and_failure_logs(
        pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        lima_home: Path) -> None:
    pylima.Instance.create("shared", "template:debian-12", images=[IMAGE])
    (lima_home / "shared" / "serial.log").write_text("guest kernel says hello\n")
    monkeypatch.setattr(machine.Instance, "start", lambda self, timeout=600: self)
    monkeypatch.setenv("PYLIMA_TEST_INSTANCE", "shared")
    result, created = run_plugin(pytester, tmp_path, """
        def test_ok(lima_vm):
            assert lima_vm.name == "shared"

        def test_fails(lima_vm):
            assert lima_vm.name == "other"
    """)
    result.assert_outcomes(passed=1, failed=1)
    assert created == []  # the existing instance is used, never created nor deleted
    out = result.stdout.str()
    assert "lima shared: serial.log (last 40 lines)" in out
    assert "guest kernel says hello" in out
    assert (lima_home / "shared").exists()


def test_plugin_failure_log_tail(pytester: pytest.Pytester, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYLIMA_TEST_INSTANCE", raising=False)
    result, _ = run_plugin(pytester, tmp_path, """
        def test_fails(lima_vm):
            assert False
    """)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "serial line 99" in out and "serial line 59" not in out
    assert "lima fake0: ha.stderr.log" in out and "hostagent says hi" in out


def test_plugin_rejects_bad_marker_and_ini(pytester: pytest.Pytester, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYLIMA_TEST_INSTANCE", raising=False)
    result, _ = run_plugin(pytester, tmp_path, """
        import pytest

        @pytest.mark.lima(cpu=2)
        def test_typo(lima_vm):
            pass
    """)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown keyword(s) of the lima marker: cpu*"])
    result, _ = run_plugin(pytester, tmp_path, "def test_x(lima_vm): pass\n",
                           "lima_cpus = many\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*`lima_cpus` must be a number*"])


def test_plugin_registers_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.lima(*"])


def test_api_reference_is_up_to_date() -> None:
    """docs/api.md is generated from the docstrings (each public name must have one)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "gen_api_docs.py"
    r = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_async_lifecycle(lima_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = pylima.Instance.create("asy", "template:debian-12", images=[IMAGE])
    fake = FakeLifecycle(monkeypatch)

    async def main() -> None:
        assert await inst.astart(timeout=5) is inst
        await inst.astop(force=True)

    asyncio.run(main())
    assert fake.calls == ["start", "stop force=True"]


def test_plugin_create_vm_keeps_logs_of_a_failed_boot(
        lima_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pylima import pytest_plugin

    def start(self: pylima.Instance, timeout: float = 600) -> None:
        (self.dir / "serial.log").write_text("kernel panic\n")
        raise InstanceError("did not boot")

    monkeypatch.setattr(machine.Instance, "start", start)
    monkeypatch.setattr(machine.Instance, "stop", lambda self, force=False: None)
    with pytest.raises(InstanceError) as ei:
        pytest_plugin.create_vm({"template": "template:debian-12", "images": [IMAGE]}, 5)
    assert any("serial.log" in n and "kernel panic" in n for n in ei.value.__notes__)
    assert not list(lima_home.glob("pytest-*"))


def test_processes_of_an_instance_are_found_killed_and_never_deleted_under(
        lima_home: Path) -> None:
    """A process holding a file of the instance directory (as QEMU holds its disk)
    is one of the instance's: `delete` refuses while it runs, `stop -f` kills it and
    checks, and the lock and runtime files are clean afterwards."""
    from pylima import api
    from pylima.store.instance import inspect

    inst = pylima.Instance.create("procs", "template:debian-12", images=[IMAGE]).record
    (inst.dir / dirs.DISK).write_bytes(b"")
    (inst.dir / dirs.QMP_SOCK).write_bytes(b"")  # a stale socket of a crash
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; "
                               "f = open(sys.argv[1], 'rb'); time.sleep(60)",
                               str(inst.dir / dirs.DISK)])
    try:
        deadline = time.monotonic() + 10
        while holder.pid not in api.instance_processes(inst):
            assert time.monotonic() < deadline
        with pytest.raises(InstanceError, match=f"in use by process {holder.pid}"):
            api.delete_instance(inspect("procs"))
        assert inst.dir.exists()
        api.stop_instance(inspect("procs"), force=True)
        assert holder.wait(timeout=10) == -9
        assert api.instance_processes(inst) == []
        assert not (inst.dir / dirs.QMP_SOCK).exists()
        api.delete_instance(inspect("procs"))
        assert not inst.dir.exists()
    finally:
        holder.kill()
        holder.wait()
