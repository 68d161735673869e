"""limactl commands that need no VM: flags, output formats, messages, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml


def limactl(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pylima", *args], input=input, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, cwd=cwd,
                          timeout=60)


def fatal_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if "level=fatal" in ln]


@pytest.fixture
def one(lima_home: Path) -> Path:
    r = limactl("create", "--name=one", "--cpus=1", "--memory=1.5", "template:debian-12")
    assert r.returncode == 0, r.stderr
    return lima_home / "one"


def test_version_first_line_is_lima_compatible():
    r = limactl("--version")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == "limactl version 2.2.0"
    assert r.stdout.splitlines()[1].startswith("pylima version ")


def test_list_empty_warns_and_exits_zero():
    r = limactl("list")
    assert r.returncode == 0 and r.stdout == ""
    assert 'level=warning msg="No instance found. Run `limactl create` to create an instance."' \
        in r.stderr


def test_create_and_list_table(one: Path):
    assert (one / "lima.yaml").is_file()
    assert (one / "lima-version").read_text().strip() == "2.2.0"
    assert oct(one.stat().st_mode & 0o777) == "0o700"
    r = limactl("list")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "SSH", "VMTYPE", "ARCH", "CPUS", "MEMORY",
                                "DISK", "DIR"]
    assert lines[1].split()[:8] == ["one", "Stopped", "127.0.0.1:0", "qemu", "x86_64", "1",
                                    "1.5GiB", "100GiB"]
    assert 'Run `limactl start one` to start the instance.' not in r.stderr


def test_list_names_the_other_host_of_a_remote_libvirt_instance(one: Path):
    """pylima: a HOST column (only when an instance runs on another host) and
    `pylimaHost` in JSON (only for such an instance); Lima's columns otherwise."""
    r = limactl("create", "--name=far", "--tty=false", "--set", '.vmType = "libvirt" | '
                '.vmOpts.libvirt.uri = "qemu+ssh://me@build1:2222/system"',
                "template:debian-12")
    assert r.returncode == 0, r.stderr
    lines = limactl("list").stdout.splitlines()
    assert lines[0].split()[:5] == ["NAME", "STATUS", "SSH", "HOST", "VMTYPE"]
    assert lines[1].split()[:5] == ["far", "Stopped", "127.0.0.1:0", "me@build1", "libvirt"]
    assert lines[2].split()[:5] == ["one", "Stopped", "127.0.0.1:0", "localhost", "qemu"]
    objs = [json.loads(ln) for ln in limactl("list", "--json").stdout.splitlines()]
    assert [o.get("pylimaHost") for o in objs] == ["me@build1", None]
    assert "HOST" not in limactl("list", "one").stdout


def test_user_key_generated_once_with_0600(one: Path, lima_home: Path):
    key = lima_home / "_config" / "user"
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert (lima_home / "_config" / "user.pub").read_text().startswith("ssh-ed25519 ")
    before = key.read_bytes()
    assert limactl("create", "--name=two", "template:debian-12").returncode == 0
    assert key.read_bytes() == before


def test_list_json_is_one_object_per_line(one: Path):
    assert limactl("create", "--name=two", "template:debian-12").returncode == 0
    r = limactl("list", "--format", "json")
    objs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["name"] for o in objs] == ["one", "two"]
    o = objs[0]
    assert o["status"] == "Stopped" and o["vmType"] == "qemu" and o["arch"] == "x86_64"
    assert o["cpus"] == 1 and o["memory"] == 1610612736 and o["disk"] == 100 << 30
    assert o["dir"] == str(one) and o["hostname"] == "lima-one" and o["protected"] is False
    assert o["config"]["cpus"] == 1 and o["limaVersion"] == "2.2.0"
    assert "HostOS" in o and "LimaHome" in o
    assert limactl("list", "--json").stdout == r.stdout


def test_list_go_template_yaml_quiet_fields(one: Path):
    r = limactl("list", "--format", "{{.Name}} {{.Status}} {{.CPUs}} {{.Config.memory}}")
    assert r.stdout == "one Stopped 1 1.5GiB\n"
    assert limactl("list", "-q").stdout == "one\n"
    y = limactl("list", "--format", "yaml").stdout
    assert "name: one" in y and "status: Stopped" in y
    fields = limactl("list", "--list-fields").stdout.split()
    assert fields == sorted(fields) and "SSHLocalPort" in fields and "Name" in fields


def test_list_yq_and_filter(one: Path):
    assert limactl("create", "--name=two", "--cpus=2", "template:debian-12").returncode == 0
    assert limactl("list", "--yq", ".name").stdout == "one\ntwo\n"
    assert limactl("list", "-q", "--filter", ".cpus == 2").stdout == "two\n"
    r = limactl("list", "--filter", '.status == "Stopped"', "--filter", ".cpus == 1",
                "--format", "{{.Name}}")
    assert r.stdout == "one\n"


def test_list_unmatched_instances(one: Path):
    r = limactl("list", "nosuch", "one")
    assert r.returncode == 1
    assert "one" in r.stdout
    assert "No instance matching nosuch found." in r.stderr
    assert fatal_lines(r.stderr) == [ln for ln in r.stderr.splitlines()
                                     if 'msg="unmatched instances"' in ln]


def test_list_conflicting_flags():
    for args in (["--json", "--format", "yaml"], ["-q", "--format", "json"],
                 ["--list-fields", "--format", "json"], ["--yq", ".", "--format", "table"]):
        r = limactl("list", *args)
        assert r.returncode == 1 and len(fatal_lines(r.stderr)) == 1, args


def test_directory_without_lima_yaml_is_broken(lima_home: Path):
    (lima_home / "broken").mkdir(parents=True)
    r = limactl("list", "--format", "{{.Name}} {{.Status}}")
    assert r.stdout == "broken Broken\n"
    assert "has errors" in r.stderr


def test_create_from_stdin_keeps_comments(lima_home: Path):
    text = "base: template:debian-12\n# my own comment\ncpus: 1 # one cpu\n"
    r = limactl("create", "--name=piped", "-", input=text)
    assert r.returncode == 0, r.stderr
    written = (lima_home / "piped" / "lima.yaml").read_text()
    assert "# my own comment" in written and "cpus: 1 # one cpu" in written
    assert "base:" not in written and "debian-12-genericcloud-amd64" in written


def test_create_stdin_requires_name():
    r = limactl("create", "-", input="cpus: 1\n")
    assert r.returncode == 1
    assert "must pass instance name with --name when reading template from stdin" in r.stderr


def test_set_and_param(lima_home: Path, tmp_path: Path):
    tmpl = tmp_path / "p.yaml"
    tmpl.write_text("base: template:debian-12\nparam:\n  GREETING: hi\n"
                    "provision:\n- mode: system\n  script: echo {{.Param.GREETING}}\n")
    r = limactl("create", "--name=p", "--set", '.cpus = 3 | .memory = "2GiB"',
                "--param", "GREETING=hello", str(tmpl))
    assert r.returncode == 0, r.stderr
    cfg = json.loads(limactl("list", "p", "--json").stdout)["config"]
    assert cfg["cpus"] == 3 and cfg["memory"] == "2GiB"
    assert cfg["param"] == {"GREETING": "hello"}
    assert cfg["provision"][0]["script"] == "echo hello"
    r = limactl("create", "--name=q", "--param", "NOPE=1", str(tmpl))
    assert r.returncode == 1 and ("error while processing flag `param`: template does not "
                                  "define param `NOPE`") in r.stderr
    assert not (lima_home / "q").exists()


@pytest.mark.parametrize("args,needle", [
    (["--name=x", "--set", ".cpus = "], "invalid yq expression"),
    (["--name=x", "--set", '.cpus = "many"'], "field `cpus` must be an integer, got `many`"),
    (["--name=x", "--cpus=-1"], "must be >= 0"),
    (["--name=x", "--set", ".foo = 1", "--set", '.arch = "mips"'], "field `arch` must be one of"),
    (["--name=bad name"], "is not a valid identifier"),
    (["template:nosuch"], "template `nosuch` not found"),
    (["--name=x", "--vm-type=vz"], "vmType `vz` requires macOS 13"),
    (["--name=x", "--vm-type=wsl2"], "requires Windows"),
    (["--name=x", "--rosetta"], "Rosetta requires macOS 13"),
    (["--name=x", "--port-forward", "80"], "invalid port forward format"),
    (["--name=x", "--mount", "~other/dir"],
     "error while processing flag `mount`: unexpandable path `~other/dir`"),
    (["--name=x", "--mount-only", "~nobody:w"],
     "error while processing flag `mount-only`: unexpandable path `~nobody`"),
])
def test_create_bad_input_one_line_nothing_created(args, needle, lima_home: Path):
    r = limactl("create", *args)
    assert r.returncode == 1, r.stderr
    fatals = fatal_lines(r.stderr)
    assert len(fatals) == 1 and needle in fatals[0], r.stderr
    assert "Traceback" not in r.stderr
    assert not lima_home.exists() or [p.name for p in lima_home.iterdir()
                                      if not p.name.startswith("_")] == []


def test_relative_mounts_are_taken_from_the_working_directory(lima_home: Path,
                                                               tmp_path: Path) -> None:
    """Lima's documented way to give a coding agent one directory: `--mount-only .:w`."""
    work = tmp_path / "proj"
    (work / "sub").mkdir(parents=True)
    r = limactl("create", "--name=rel", "--mount-only", ".:w", "--mount", "sub/../sub",
                "template:debian-12", cwd=str(work))
    assert r.returncode == 1, r.stderr  # --mount conflicts with --mount-only, as in Lima
    r = limactl("create", "--name=rel", "--mount-only", ".:w", "template:debian-12",
                cwd=str(work))
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((lima_home / "rel" / "lima.yaml").read_text())
    assert cfg["mounts"] == [{"location": str(work), "mountPoint": str(work), "writable": True}]
    r = limactl("edit", "rel", "--mount", "./sub/", cwd=str(work))
    assert r.returncode == 0, r.stderr
    cfg = yaml.safe_load((lima_home / "rel" / "lima.yaml").read_text())
    assert [m["location"] for m in cfg["mounts"]] == [str(work / "sub"), str(work)]


def test_create_existing_instance_refused(one: Path):
    r = limactl("create", "--name=one", "template:debian-12")
    assert r.returncode == 1 and "instance `one` already exists" in r.stderr


def test_unknown_field_warns_but_loads(tmp_path: Path, lima_home: Path):
    f = tmp_path / "w.yaml"
    f.write_text("base: template:debian-12\nfutureField: 1\nssh:\n  newKnob: true\n")
    r = limactl("create", "--name=w", str(f))
    assert r.returncode == 0, r.stderr
    assert "unknown field `futureField`" in r.stderr and "unknown field `ssh.newKnob`" in r.stderr


def test_template_old_form_warns(lima_home: Path):
    r = limactl("create", "--name=old", "template://debian-12")
    assert r.returncode == 0
    assert "should be written `template:debian-12` since Lima v2.0" in r.stderr


def test_default_and_override_config(lima_home: Path):
    cfg = lima_home / "_config"
    cfg.mkdir(parents=True)
    (cfg / "default.yaml").write_text("cpus: 3\nmemory: 3GiB\nenv:\n  A: d\n")
    (cfg / "override.yaml").write_text("memory: 2GiB\nenv:\n  B: o\n")
    assert limactl("create", "--name=c", "--set", ".env.A = \"y\"",
                   "template:debian-12").returncode == 0
    c = json.loads(limactl("list", "c", "--json").stdout)["config"]
    assert c["cpus"] == 3 and c["memory"] == "2GiB" and c["env"] == {"A": "y", "B": "o"}


def test_delete_protect_unprotect(one: Path):
    r = limactl("protect", "one")
    assert r.returncode == 0 and "Protected `one`" in r.stderr
    assert "already protected" in limactl("protect", "one").stderr
    assert json.loads(limactl("list", "--json").stdout)["protected"] is True
    r = limactl("delete", "one")
    assert r.returncode == 1
    assert "instance is protected to prohibit accidental removal" in r.stderr
    assert one.exists()
    assert limactl("unprotect", "one").returncode == 0
    r = limactl("rm", "one")
    assert r.returncode == 0 and "Deleted `one`" in r.stderr
    assert not one.exists()
    r = limactl("delete", "one")
    assert r.returncode == 0 and "Ignoring non-existent instance `one`" in r.stderr


def test_a_stranger_holding_the_lock_makes_the_instance_broken(one: Path,
                                                               lima_home: Path) -> None:
    """`limactl list` says Broken, with the holder, when a process that is not
    pylima's holds the instance lock; commands that change the instance wait, then
    refuse with one line and change nothing."""
    lock = lima_home / "_locks" / "one.lock"
    lock.parent.mkdir(exist_ok=True)
    holder = subprocess.Popen(["flock", str(lock), "sleep", "60"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while "Broken" not in limactl("list", "--format", "{{.Status}}").stdout:
            assert time.monotonic() < deadline
        info = json.loads(limactl("list", "--json", "one").stdout)
        assert info["status"] == "Broken"
        assert any(f"held by process {holder.pid} (flock " in e for e in info["errors"])
        before = (one / "lima.yaml").read_text()
        r = limactl("edit", "--cpus=2", "one", "--tty=false")
        assert r.returncode == 1 and "instance `one` is busy" in r.stderr
        assert (one / "lima.yaml").read_text() == before
    finally:
        os.killpg(holder.pid, 9)  # flock and the sleep that inherited the lock
        holder.wait()
    assert limactl("list", "--format", "{{.Status}}", "one").stdout == "Stopped\n"


def test_delete_refuses_running_without_force(one: Path):
    # a live process standing in for the host agent and QEMU (pid files only count for
    # a process whose command line is theirs: `hostagent`, `-name lima-NAME`)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                "hostagent", "-name", "lima-one"])
    try:
        (one / "ha.pid").write_text(str(sleeper.pid))
        (one / "qemu.pid").write_text(str(sleeper.pid))
        assert limactl("list", "--format", "{{.Status}}").stdout == "Running\n"
        r = limactl("delete", "one")
        assert r.returncode == 1 and "expected status `Stopped`, got `Running`" in r.stderr
        assert one.exists()
        r = limactl("delete", "-f", "one")
        assert r.returncode == 0 and not one.exists()
        assert sleeper.wait(timeout=5) != 0
    finally:
        sleeper.kill()


def test_stale_pid_files_do_not_count(one: Path):
    (one / "ha.pid").write_text("999999")
    (one / "qemu.pid").write_text("999999")
    assert limactl("list", "--format", "{{.Status}}").stdout == "Stopped\n"


def test_clone_and_rename(one: Path, lima_home: Path):
    (one / "disk").write_bytes(b"\0" * 4096)
    (one / "ha.stderr.log").write_text("old log")
    r = limactl("clone", "one", "two", "--cpus=2")
    assert r.returncode == 0, r.stderr
    two = lima_home / "two"
    assert (two / "disk").read_bytes() == b"\0" * 4096 and not (two / "ha.stderr.log").exists()
    assert json.loads(limactl("list", "two", "--json").stdout)["cpus"] == 2
    r = limactl("rename", "two", "three")
    assert r.returncode == 0 and (lima_home / "three").is_dir() and not two.exists()
    r = limactl("clone", "one", "three")
    assert r.returncode == 1 and "instance `three` already exists" in r.stderr
    r = limactl("rename", "nosuch", "x")
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_edit_with_flags_keeps_comments(one: Path):
    y = one / "lima.yaml"
    y.write_text("# top comment\n" + y.read_text())
    r = limactl("edit", "one", "--cpus=2", "--set", ".env.FOO = \"bar\"")
    assert r.returncode == 0, r.stderr
    text = y.read_text()
    assert text.startswith("# top comment") and "FOO: bar" in text
    assert json.loads(limactl("list", "--json").stdout)["cpus"] == 2
    r = limactl("edit", "one", "--set", '.cpus = "x"')
    assert r.returncode == 1 and "field `cpus` must be an integer" in r.stderr
    assert json.loads(limactl("list", "--json").stdout)["cpus"] == 2


def test_edit_file_mount_tilde_is_the_host_home(tmp_path: Path):
    y = tmp_path / "t.yaml"
    y.write_text("images:\n- location: /tmp/x.img\n")
    home = tmp_path / "home"
    r = limactl("edit", str(y), "--mount", "~/proj:w", env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert f"location: {home}/proj" in y.read_text()


def test_validate(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("images:\n- location: /tmp/x.img\ncpus: 2\n")
    r = limactl("validate", str(good))
    assert r.returncode == 0 and f"`{good}`: OK" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("images:\n- location: /tmp/x.img\ncpus: four\n")
    r = limactl("validate", str(bad))
    assert r.returncode == 1
    assert len(fatal_lines(r.stderr)) == 1 and "field `cpus` must be an integer" in r.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("images: [\n")
    r = limactl("validate", str(broken))
    assert r.returncode == 1 and "failed to unmarshal YAML" in r.stderr
    assert "Traceback" not in r.stderr
    r = limactl("validate", "--fill", str(good))
    assert "memory: " in r.stdout and "mountType: 9p" in r.stdout


def test_template_copy_validate_yq(tmp_path: Path):
    r = limactl("template", "copy", "template:debian-12")
    assert r.returncode == 0 and "base:" in r.stdout
    r = limactl("template", "copy", "--embed", "template:debian-12")
    assert "base:" not in r.stdout and "genericcloud" in r.stdout
    r = limactl("template", "copy", "--fill", "template:default", str(tmp_path / "f.yaml"))
    assert r.returncode == 0 and "mountType: 9p" in (tmp_path / "f.yaml").read_text()
    r = limactl("template", "validate", "template:default", "template:debian-12")
    assert r.returncode == 0 and r.stderr.count(": OK") == 2
    r = limactl("template", "yq", "template:debian-12", ".mounts[0].mountPoint")
    assert r.stdout.strip() == os.path.expanduser("~")


def test_base_loop_detected(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    r = limactl("template", "validate", str(tmp_path / "a.yaml"))
    assert r.returncode == 1 and "base template loop detected" in r.stderr


def test_templates_search_path(tmp_path: Path, lima_home: Path):
    d = tmp_path / "tpl"
    d.mkdir()
    (d / "mine.yaml").write_text("base: template:debian-12\ncpus: 1\n")
    env = {"LIMA_TEMPLATES_PATH": str(d)}
    assert "mine" in limactl("create", "--list-templates", env=env).stdout.split()
    r = limactl("create", "template:mine", env=env)
    assert r.returncode == 0 and (lima_home / "mine").is_dir()
    user = lima_home / "_templates"
    user.mkdir()
    (user / "ours.yaml").write_text("base: template:debian-12\n")
    assert limactl("create", "template:ours").returncode == 0


def test_info_json():
    r = limactl("info")
    info = json.loads(r.stdout)
    assert info["version"] == "2.2.0" and "qemu" in info["vmTypes"]
    assert info["defaultTemplate"]["mountType"] == "9p"
    assert {"name": "default", "location": "template:default"} in info["templates"]
    assert limactl("info", "--yq", ".version").stdout.strip() == "2.2.0"


def test_yq_command(tmp_path: Path):
    r = limactl("yq", ".a.b", input="a:\n  b: 3\n")
    assert r.stdout == "3\n"
    f = tmp_path / "x.yaml"
    f.write_text("# keep me\na: 1\n")
    assert limactl("yq", "-i", ".a = 2", str(f)).returncode == 0
    assert f.read_text() == "# keep me\na: 2\n"


def test_show_ssh_and_completion(one: Path):
    r = limactl("show-ssh", "--format=config", "one")
    assert r.returncode == 0 and "Host lima-one" in r.stdout and "deprecated" in r.stderr
    r = limactl("completion", "bash")
    assert r.returncode == 0 and "_LIMACTL_COMPLETE" in r.stdout


def test_show_ssh_has_the_forwarding_options(lima_home: Path):
    r = limactl("create", "--name=fwd", "--set",
                ".ssh.forwardAgent = true | .ssh.forwardX11 = true", "template:debian-12")
    assert r.returncode == 0, r.stderr
    opts = limactl("show-ssh", "--format=options", "fwd").stdout.splitlines()
    assert "ForwardAgent=yes" in opts and "ForwardX11=yes" in opts
    assert not any(o.startswith("ForwardX11Trusted") for o in opts)


def test_start_refuses_a_missing_or_taken_additional_disk(lima_home: Path):
    """One line, exit 1, before any image is fetched or any process started."""
    r = limactl("create", "--name=d1", "--set", '.additionalDisks = ["data"]',
                "template:debian-12")
    assert r.returncode == 0, r.stderr
    r = limactl("start", "--tty=false", "d1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    [line] = fatal_lines(r.stderr)
    assert "could not load disk `data`: `stat " in line and "no such file or directory" in line
    assert limactl("disk", "create", "data", "--size=1MiB", "--format=raw").returncode == 0
    other = lima_home / "d2"
    (lima_home / "_disks" / "data" / "in_use_by").symlink_to(other)
    r = limactl("start", "--tty=false", "d1")
    assert r.returncode == 1
    [line] = fatal_lines(r.stderr)
    assert "could not attach disk `data`: in use by instance `d2`" in line
    assert not (lima_home / "d1" / "ha.pid").exists()
    assert not (lima_home / "d1" / "disk").exists()  # nothing prepared
    # d2 does not exist: its lock can go
    r = limactl("disk", "unlock", "data", "nope")
    assert r.returncode == 0
    assert "Unlocked disk `data`" in r.stderr and "Ignoring non-existent disk `nope`" in r.stderr
    assert "Ignoring unlocked disk `data`" in limactl("disk", "unlock", "data").stderr


def test_unknown_command_and_flag_are_one_line():
    for args in (["frobnicate"], ["list", "--nope"]):
        r = limactl(*args)
        assert r.returncode == 1 and len(fatal_lines(r.stderr)) == 1, r.stderr
        assert "Traceback" not in r.stderr


def test_help_of_every_command():
    from pylima.cli.main import COMMANDS

    for name in COMMANDS:
        r = limactl(name, "--help")
        assert r.returncode == 0 and "Usage:" in r.stdout, name


def test_log_format_json(one: Path):
    r = limactl("--log-format=json", "list", "nosuch")
    line = json.loads(r.stderr.splitlines()[0])
    assert line["level"] == "warning" and line["msg"] == "No instance matching nosuch found."


def test_lima_command_on_stopped_instance(one: Path):
    r = subprocess.run([sys.executable, "-c", "from pylima.cli.lima_cmd import main; main()",
                        "uname"], env={**os.environ, "LIMA_INSTANCE": "one"},
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "instance `one` is stopped, run `limactl start one` to start the instance" in r.stderr


def test_docker_lima_without_instance():
    r = subprocess.run([sys.executable, "-c", "from pylima.cli.wrappers import docker_main; "
                        "docker_main()"], capture_output=True, text=True)
    assert r.returncode == 1
    assert 'instance "docker" does not exist, run `limactl create --name=docker ' \
        'template:docker`' in r.stderr


def test_disk_commands(lima_home: Path):
    r = limactl("disk", "create", "data", "--size", "1GiB")
    assert r.returncode == 0, r.stderr
    assert (lima_home / "_disks" / "data" / "datadisk").is_file()
    rows = limactl("disk", "ls").stdout.splitlines()
    assert rows[0].split() == ["NAME", "SIZE", "FORMAT", "DIR", "IN-USE-BY"]
    assert rows[1].split()[:3] == ["data", "1GiB", "qcow2"]
    d = json.loads(limactl("disk", "list", "--json").stdout)
    assert d["name"] == "data" and d["size"] == 1 << 30
    r = limactl("disk", "resize", "data", "--size", "512MiB")
    assert r.returncode == 1 and "Disk shrinking is currently unavailable" in r.stderr
    assert limactl("disk", "resize", "data", "--size", "2GiB").returncode == 0
    assert json.loads(limactl("disk", "ls", "--json").stdout)["size"] == 2 << 30
    r = limactl("disk", "create", "data", "--size", "1GiB")
    assert r.returncode == 1 and "already exists" in r.stderr
    r = limactl("disk", "create", "x", "--size", "1GiB", "--format", "vmdk")
    assert r.returncode == 1 and "not supported" in r.stderr
    assert not (lima_home / "_disks" / "x").exists()
    assert limactl("disk", "rm", "data").returncode == 0
    assert not (lima_home / "_disks" / "data").exists()
    assert "Ignoring non-existent disk" in limactl("disk", "delete", "data").stderr


def test_prune_removes_download_cache(tmp_path: Path):
    cache = Path(os.environ["XDG_CACHE_HOME"]) / "lima" / "download" / "by-url-sha256" / "ab"
    cache.mkdir(parents=True)
    (cache / "data").write_bytes(b"x" * 1000)
    r = limactl("prune")
    assert r.returncode == 0, r.stderr
    assert not cache.exists()
    cache.mkdir(parents=True)
    (cache / "url").write_text("https://example.invalid/unreferenced.img")
    (cache / "data").write_bytes(b"x")
    assert limactl("prune", "--keep-referred").returncode == 0
    assert not cache.exists()


def test_cpus_and_memory_beyond_the_host_warn_but_create(lima_home: Path):
    r = limactl("create", "--name=big", "--cpus=512", "--memory=100000", "template:debian-12")
    assert r.returncode == 0, r.stderr
    assert "field `cpus` is 512, more than the host's" in r.stderr
    assert "field `memory` is" in r.stderr and "more than the host's" in r.stderr


def test_a_vm_type_that_is_not_built_in(lima_home: Path, tmp_path: Path) -> None:
    """An external driver (lima-driver-NAME) is named with its path; an unknown vmType
    gets Lima's "not a registered driver"; nothing is created either way."""
    drivers = tmp_path / "drivers"
    drivers.mkdir()
    ext = drivers / "lima-driver-krunkit"
    ext.write_text("#!/bin/sh\nexit 1\n")
    ext.chmod(0o755)
    env = {"LIMA_DRIVERS_PATH": str(drivers)}
    r = limactl("create", "--list-drivers", env=env)
    assert r.returncode == 0 and r.stdout == "krunkit\nlibvirt\nqemu\n"
    r = limactl("create", "--name=x", "--vm-type=krunkit", "--tty=false", "template:debian-12",
                env=env)
    assert r.returncode == 1
    assert fatal_lines(r.stderr) and f"vmType `krunkit` is the external driver `{ext}`" \
        in fatal_lines(r.stderr)[0]
    r = limactl("create", "--name=x", "--vm-type=nope", "--tty=false", "template:debian-12")
    assert r.returncode == 1 and "vmType `nope` is not a registered driver" in r.stderr
    assert not (lima_home / "x").exists()
    info = json.loads(limactl("info", env=env).stdout)
    assert info["vmTypes"] == ["krunkit", "libvirt", "qemu"]
    assert info["vmTypesEx"] == {"krunkit": {"location": str(ext)},
                                 "libvirt": {"location": "internal"},
                                 "qemu": {"location": "internal"}}


def test_shell_drops_a_double_dash_after_the_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """`limactl shell NAME -- CMD...` runs CMD, as Lima's (it drops that `--`); a later
    `--` and flags after the instance name belong to the command."""
    from click.testing import CliRunner

    from pylima.cli import shell as shell_mod

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(shell_mod, "run_shell",
                        lambda name, argv, **kw: calls.append((name, argv)) or 0)
    for args in (["dev", "--", "sh", "-c", "echo --"], ["dev", "ls", "--", "-l"]):
        r = CliRunner().invoke(shell_mod.shell, args)
        assert r.exit_code == 0, r.output
    assert calls == [("dev", ["sh", "-c", "echo --"]), ("dev", ["ls", "--", "-l"])]


def test_lima_drops_a_leading_double_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    from pylima.cli import lima_cmd, shellrun

    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(shellrun, "run_shell",
                        lambda name, argv, **kw: calls.append((name, argv)) or 0)
    monkeypatch.setenv("LIMA_INSTANCE", "dev")
    with pytest.raises(SystemExit) as e:
        lima_cmd.main(["--", "uname", "--", "-a"])
    assert e.value.code == 0
    assert calls == [("dev", ["uname", "--", "-a"])]


def test_global_flags_move_before_the_subcommand() -> None:
    """Lima's persistent flags are taken after the subcommand's name too; shell stops
    at its instance name (the rest is the guest's command); `--` ends the flags."""
    from pylima.cli.main import normalize_global_flags

    def own(sub: str) -> tuple[dict[str, bool], bool]:
        if sub == "start":
            return {"--tty": True, "-y": False, "--yes": False}, True
        if sub == "shell":
            return {"--workdir": True, "--shell": True, "--instance": True}, False
        return {}, True

    n = normalize_global_flags
    assert n(["list", "--tty=false", "--log-level", "debug"], own) == [
        "--tty=false", "--log-level", "debug", "list"]
    assert n(["--debug", "info", "-y", "--log-format=json"], own) == [
        "--debug", "-y", "--log-format=json", "info"]
    # start declares --tty and -y itself: they stay its own
    assert n(["start", "--tty=false", "--debug", "x"], own) == ["--debug", "start",
                                                                "--tty=false", "x"]
    assert n(["shell", "--tty=false", "--workdir", "/w", "dev", "ls", "--debug"], own) == [
        "--tty=false", "shell", "--workdir", "/w", "dev", "ls", "--debug"]
    assert n(["copy", "--", "--tty", "x"], own) == ["copy", "--", "--tty", "x"]
    assert n(["--version"], own) == ["--version"]


def test_global_flags_anywhere_and_shell_flag_errors(tmp_path: Path) -> None:
    env = {"LIMA_HOME": str(tmp_path)}
    for args in (("list", "--tty=false"), ("--tty=false", "list"), ("info", "--yes"),
                 ("info", "--log-level", "debug")):
        assert limactl(*args, env=env).returncode == 0, args
    r = limactl("info", "--tty=false", "-y", env=env)
    assert r.returncode == 1
    assert "cannot use both --tty and --yes flags at the same time" in r.stderr
    r = limactl("shell", "--x", "dev", env=env)
    assert r.returncode == 1 and 'msg="unknown flag: --x"' in r.stderr
    r = limactl("shell", "-q", "dev", env=env)
    assert r.returncode == 1 and "unknown shorthand flag: 'q' in -q" in r.stderr
    # --tty before the instance name is limactl's; the instance is looked up
    r = limactl("shell", "--tty=false", "nosuch", "uname", env=env)
    assert r.returncode == 1 and "instance `nosuch` does not exist" in r.stderr
    # with --instance the command comes first: an unknown flag is refused, unless `--`
    r = limactl("shell", "--instance", "nosuch", "--x", env=env)
    assert r.returncode == 1 and "unknown flag: --x" in r.stderr
    r = limactl("shell", "--tty=false", "--instance", "nosuch", "--", "--x", env=env)
    assert r.returncode == 1 and "instance `nosuch` does not exist" in r.stderr


def test_lima_takes_shell_flags_before_the_command(tmp_path: Path) -> None:
    """`lima --workdir=/tmp pwd`, `lima --tty=false ls`: flags before the command are
    `limactl shell`'s, as with Lima's wrapper; one it does not know is refused."""
    def lima(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", "import sys; from pylima.cli.lima_cmd import main; "
             "sys.argv[0] = 'lima'; main()", *args], text=True, capture_output=True,
            env={**os.environ, "LIMA_HOME": str(tmp_path), "LIMA_INSTANCE": "nosuch"},
            timeout=60)

    r = lima("--x", "uname")
    assert r.returncode == 1 and 'msg="unknown flag: --x"' in r.stderr
    for args in (("--workdir=/tmp", "pwd"), ("--tty=false", "ls"), ("--", "ls")):
        r = lima(*args)
        assert r.returncode == 1 and "instance `nosuch` does not exist" in r.stderr, args


def test_delete_never_removes_a_directory_without_lima_yaml(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    (probe).mkdir()
    (probe / "disk").write_bytes(b"data")
    for args in (("delete", "probe"), ("delete", "--force", "probe")):
        r = limactl(*args, env={"LIMA_HOME": str(tmp_path)})
        assert r.returncode == 1, r.stderr
        assert fatal_lines(r.stderr) and "instance `probe` directory" in r.stderr
        assert "NOT deleted" in r.stderr
        assert (probe / "disk").read_bytes() == b"data"
    r = limactl("delete", "--force", "does-not-exist", env={"LIMA_HOME": str(tmp_path)})
    assert r.returncode == 0 and "Ignoring non-existent instance `does-not-exist`" in r.stderr


def test_rename_clone_edit_take_edit_flags_and_start(one: Path, lima_home: Path) -> None:
    """rename takes Lima's edit flags, checked before anything moves; --start exists on
    edit, clone and rename (without it and without a terminal nothing starts)."""
    r = limactl("rename", "one", "two", "--set", ".cpus = ")
    assert r.returncode == 1 and (lima_home / "one").is_dir() and not (lima_home / "two").exists()
    r = limactl("rename", "one", "two", "--cpus", "3")
    assert r.returncode == 0, r.stderr
    assert "cpus: 3" in (lima_home / "two" / "lima.yaml").read_text()
    assert limactl("list", "-q").stdout == "two\n"
    r = limactl("edit", "two", "--vm-type", "qemu", "--video=false", "--start=false")
    assert r.returncode == 0, r.stderr  # cobra's --FLAG=BOOL
    assert "display: none" in (lima_home / "two" / "lima.yaml").read_text()
    r = limactl("edit", "two", "--start=maybe")
    assert r.returncode == 1 and 'invalid argument "maybe" for "--start" flag' in r.stderr
    r = limactl("edit", "two", "--memory", "2")
    assert r.returncode == 0 and limactl("list", "--format", "{{.Status}}", "two").stdout == \
        "Stopped\n"
    r = limactl("clone", "two", "three", "--cpus", "1")
    assert r.returncode == 0 and "cpus: 1" in (lima_home / "three" / "lima.yaml").read_text()
    for cmd in ("edit", "clone", "rename"):
        r = limactl(cmd, "--help")
        assert "--start" in r.stdout, cmd


def test_create_only_flags_image_variant_and_audio(lima_home: Path) -> None:
    r = limactl("create", "--name=a", "--audio-device", "none", "--audio-interface", "virtio",
                "template:debian-12")
    assert r.returncode == 0, r.stderr
    assert "`--audio-device` is experimental" in r.stderr
    cfg = json.loads(limactl("list", "--json", "a").stdout)["config"]
    assert cfg["audio"] == {"device": "none", "interface": "virtio"}
    r = limactl("create", "--name=b", "--image-variant", "", "template:debian-12")
    assert r.returncode == 1 and "`--image-variant` must not be empty" in r.stderr
    assert not (lima_home / "b").exists()
    r = limactl("edit", "a", "--image-variant", "x")  # create and start only, as Lima's
    assert r.returncode == 1 and 'msg="unknown flag: --image-variant"' in r.stderr
    r = limactl("edit", "a", "--vm-type", "qemu")  # Lima's edit takes --vm-type
    assert r.returncode == 0, r.stderr


def test_restart_checks_its_edit_flags_first(one: Path) -> None:
    r = limactl("restart", "one", "--cpus", "-1")
    assert r.returncode == 1
    assert "error while processing flag `cpus`" in r.stderr
    r = limactl("restart", "--help")
    assert "--progress" in r.stdout and "--set" in r.stdout
