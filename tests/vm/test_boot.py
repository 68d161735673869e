"""Boot a real guest under QEMU (TCG here) and use it like a Lima user would.

One guest, started once, serves the tests in this module in order; a second one
checks that pylima also works as root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import Host, eventually, proc_cmdlines

NAME = "vmtest"


# Port-forwarding rules for the shared guest (its tests are below, before the stops).
ECHO_SOCK = "/tmp/pylima-echo.sock"
PORT_RULES = [
    {"guestSocket": ECHO_SOCK, "hostSocket": "echo.sock"},
    {"guestPort": 8082, "ignore": True},
    {"guestPort": 8090, "hostSocket": "web.sock"},  # a guest TCP port on a host socket
    {"guestPort": 8091, "hostIP": "::1"},  # an IPv6 host address
]
# The shared guest's additional disk (1 GiB, formatted ext4 on its first boot).
DATA_DISK = "vmdata"
# Its ssh config: the agent forwarded (a host ssh-agent started for the tests).
SSH_SET = ".ssh.forwardAgent = true"
AGENT_KEY_COMMENT = "pylima-agent-test"


def images_set(entry: dict) -> str:
    return f".images = [{json.dumps(entry)}] | .mounts = []"


@pytest.fixture(scope="module")
def ssh_agent(unprivileged_host: Host) -> Iterator[dict[str, str]]:
    """A host ssh-agent of the test user holding one key; its environment."""
    h = unprivileged_host
    key_dir = h.home / f".pylima-agent-{os.getpid()}"
    h.run("mkdir", "-m", "700", "-p", str(key_dir))
    sock = key_dir / "agent.sock"
    r = h.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", AGENT_KEY_COMMENT,
              "-f", str(key_dir / "key"))
    assert r.returncode == 0, r.stderr
    r = h.run("ssh-agent", "-a", str(sock))
    assert r.returncode == 0, r.stderr
    pid = r.stdout.split("SSH_AGENT_PID=")[1].split(";")[0]
    env = {"SSH_AUTH_SOCK": str(sock)}
    assert h.run("ssh-add", str(key_dir / "key"), env=env).returncode == 0
    yield env
    h.run("kill", pid)
    h.run("rm", "-rf", str(key_dir))


@pytest.fixture(scope="module")
def guest(unprivileged_host: Host, shared_image: dict, ssh_agent: dict[str, str]
          ) -> Iterator[Host]:
    h = unprivileged_host
    h.limactl("disk", "delete", "--force", DATA_DISK)
    r = h.limactl("disk", "create", DATA_DISK, "--size", "1GiB")
    assert r.returncode == 0, r.stderr
    r = h.limactl("start", f"--name={NAME}", "--tty=false", "--cpus=2", "--memory=2",
                  "--set",
                  images_set(shared_image) + f" | .portForwards = {json.dumps(PORT_RULES)}"
                  f' | .additionalDisks = ["{DATA_DISK}"] | {SSH_SET}',
                  "template:debian-12", timeout=1500, env=ssh_agent)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "READY" in r.stderr
    yield h
    h.limactl("stop", "-f", NAME)
    h.limactl("delete", "-f", NAME)
    h.limactl("disk", "delete", "--force", DATA_DISK)


def lima_env() -> dict[str, str]:
    return {"LIMA_INSTANCE": NAME}


def test_lima_runs_a_command(guest: Host) -> None:
    r = guest.lima("uname", "-a", env=lima_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Linux lima-vmtest ")


def test_booted_by_pylima_init_not_cloud_init(guest: Host) -> None:
    """pylima's own image has no cloud-init: pylima-init's two stages set it up."""
    r = guest.lima("sh", "-c", "command -v cloud-init; ls /run/cloud-init 2>&1; "
                   "cat /run/pylima-init/early.done /run/pylima-init/final.done; "
                   "systemctl is-active pylima-init.service pylima-final.service",
                   env=lima_env())
    lines = r.stdout.splitlines()
    assert lines[0] == "ls: cannot access '/run/cloud-init': No such file or directory", r.stdout
    assert lines[1] == lines[2] and lines[1].startswith("iid-")
    assert lines[3:] == ["active", "active"]


def test_ssh_probes_waited_for_the_guests_network(guest: Host) -> None:
    """The host agent's SSH probes start once the guest's NIC is up: a probe sent
    before then stays queued in QEMU's user-mode network after the probe gives up, and
    reaches sshd later as a connection for nothing (there were a dozen per boot). The
    probe that hears sshd's greeting is the SSH master's own connection, so a boot
    costs sshd no connection for nothing; one may remain when sshd, busy at boot, is
    slow enough to greet that a second probe was opened alongside the first."""
    r = guest.lima("sudo", "journalctl", "-b", "-o", "cat", "-u", "ssh.service",
                   env=lima_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("kex_exchange_identification") <= 1, r.stdout


def test_boot_trimmings_took_effect(guest: Host) -> None:
    """What the image leaves out for boot speed is really out of the booted guest:
    pylima-init ran from its cached copy (its bytecode compiled once), the q35 and
    SIMD-crypto modules were not loaded, and sshd's PAM stack has no pam_motd."""
    r = guest.lima("sh", "-c", "sudo ls /var/lib/pylima/init/__pycache__; "
                   "echo --; cut -d' ' -f1 /proc/modules; "
                   "echo --; grep -c '^[^#].*pam_motd' /etc/pam.d/sshd", env=lima_env())
    pyc, modules, motd = (part.split() for part in r.stdout.split("--\n"))
    assert len(pyc) == 1 and pyc[0].startswith("pylima_init.cpython-"), r.stdout
    assert "virtio_net" in modules and "evdev" in modules  # the ones pylima needs stay
    assert not {"ahci", "i2c_i801", "lpc_ich", "pcspkr", "aesni_intel"} & set(modules)
    assert motd == ["0"]


def test_rootless_base_as_lima(guest: Host) -> None:
    """Lima's rootless base on every systemd guest: the user's manager lingers, gets
    cgroup delegation, the user may bind ports below 1024, has subordinate ids and
    /usr/sbin on PATH; the home answers to Lima's old name (.linux) too."""
    r = guest.lima("sh", "-c", 'loginctl show-user "$(id -un)" -p Linger; '
                   "systemctl show user@$(id -u).service -p Delegate; "
                   "sysctl -n net.ipv4.ip_unprivileged_port_start; "
                   'grep -c "^$(id -un):" /etc/subuid /etc/subgid; '
                   'case ":$PATH:" in *:/usr/sbin:*) echo sbin;; esac; '
                   "python3 -c 'import socket; socket.socket().bind((\"127.0.0.1\", 81)); "
                   "print(\"bound 81\")'; "
                   'readlink "/home/$(id -un).linux"', env=lima_env())
    assert r.stdout.splitlines() == [
        "Linger=yes", "Delegate=yes", "0", "/etc/subuid:1", "/etc/subgid:1", "sbin",
        "bound 81", f"{guest.user}.guest"], r.stdout + r.stderr



def test_guest_setup_as_lima(guest: Host) -> None:
    """Lima's small boot guarantees: the kernel modules containers and VPNs expect are
    loaded (in the background: soon after READY at the latest), /run/host-services
    belongs to the user, and COLORTERM set on the host reaches the guest through
    `lima`, over the host agent's first connection too."""
    modules = ["overlay", "fuse", "tun", "bridge", "nf_tables"]

    def loaded() -> bool:
        r = guest.lima("sh", "-c", " && ".join(f"[ -d /sys/module/{m} ]" for m in modules),
                       env=lima_env())
        return r.returncode == 0

    eventually(loaded, timeout=120)
    r = guest.lima("sh", "-c", 'stat -c "%U %a" /run/host-services; printenv COLORTERM',
                   env={**lima_env(), "COLORTERM": "truecolor"})
    assert r.stdout.splitlines() == [f"{guest.user} 700", "truecolor"], r.stdout + r.stderr

def test_guest_user_matches_host_user(guest: Host) -> None:
    r = guest.limactl("shell", NAME, "id", "-un")
    assert r.stdout.strip() == guest.user
    uid = guest.run("id", "-u").stdout.strip()
    assert guest.limactl("shell", NAME, "id", "-u").stdout.strip() == uid
    assert guest.limactl("shell", NAME, "sudo", "-n", "true").returncode == 0


def test_exit_code_and_pipes(guest: Host) -> None:
    assert guest.lima("sh", "-c", "exit 7", env=lima_env()).returncode == 7
    r = guest.lima("cat", input="hi\n", env=lima_env())
    assert r.stdout == "hi\n"
    r = guest.limactl("shell", NAME, "sh", "-c", "echo out; echo err >&2")
    assert r.stdout == "out\n" and "err" in r.stderr


def test_preserve_env_and_leading_assignments(guest: Host) -> None:
    """--preserve-env passes what the block list lets through, before the login shell
    (so the guest's profile wins); leading NAME=VALUE words stay assignments."""
    env = {"FOO": "foo bar", "SSH_FOO": "ssh", "BARFOO": "x"}
    r = guest.limactl("shell", NAME, "printenv", env=env)
    assert "FOO=foo bar" not in r.stdout.splitlines()
    lines = guest.limactl("shell", "--preserve-env", NAME, "printenv", env=env).stdout
    assert "FOO=foo bar" in lines.splitlines() and "SSH_FOO=ssh" not in lines.splitlines()
    lines = guest.limactl("shell", "--preserve-env", NAME, "printenv",
                          env={**env, "LIMA_SHELLENV_BLOCK": "*FOO"}).stdout.splitlines()
    assert not {"FOO=foo bar", "BARFOO=x"} & set(lines) and "SSH_FOO=ssh" not in lines
    guest.limactl("shell", NAME, "sh", "-c", "echo 'export FOO=guest' >> ~/.bash_profile")
    try:
        r = guest.limactl("shell", "--preserve-env", NAME, "printenv", "FOO", env=env)
        assert r.stdout == "guest\n"
    finally:
        guest.limactl("shell", NAME, "sed", "-i", "/^export FOO=guest$/d", ".bash_profile")
    r = guest.limactl("shell", NAME, "FOO=a b", "printenv", "FOO")
    assert r.stdout == "a b\n", r.stderr


def test_copy_both_ways(guest: Host, tmp_path: Path) -> None:
    src = guest.home / "pylima-copy-src.txt"
    guest.run("sh", "-c", f"echo payload > {src}")
    assert guest.limactl("copy", str(src), f"{NAME}:/tmp/copied.txt").returncode == 0
    assert guest.limactl("shell", NAME, "cat", "/tmp/copied.txt").stdout == "payload\n"
    back = guest.home / "pylima-copy-back.txt"
    r = guest.limactl("cp", f"{NAME}:/tmp/copied.txt", str(back))
    assert r.returncode == 0, r.stderr
    assert guest.run("cat", str(back)).stdout == "payload\n"


# ---- limactl screenshot and copy --backend=rsync, on the shared guest ----


def test_screenshot_of_a_guest_without_a_display(guest: Host, tmp_path: Path) -> None:
    """The shared guest has `video.display: none`: QEMU answers the screendump (over
    QMP, while the host agent uses QMP too) that it has no console; Lima's message."""
    out = guest.home / "pylima-shot.png"
    r = guest.limactl("screenshot", NAME, "-o", str(out))
    assert r.returncode == 1, r.stderr
    assert ('screenshot failed: VM has no display configured \u2014 set video.display '
            '(e.g., \\"default\\") in the instance config') in r.stderr, r.stderr
    assert guest.run("test", "-e", str(out)).returncode == 1
    assert not [p for p in instance_dir(guest).iterdir() if "screendump" in p.name]
    assert status(guest) == "Running"


def _install_rsync_in_guest(h: Host) -> None:
    """rsync and the two libraries the guest image lacks, from the host's Debian
    mirror (the guest is the same Debian release as the image builder's)."""
    import tempfile

    debs = Path(tempfile.mkdtemp(prefix="pylima-rsync-debs-"))
    debs.chmod(0o755)
    r = subprocess.run(["apt-get", "download", "rsync", "libpopt0", "libxxhash0"],
                       cwd=debs, capture_output=True, text=True)
    files = sorted(debs.glob("*.deb"))
    if r.returncode != 0 or len(files) != 3:
        pytest.skip(f"cannot download rsync's packages: {r.stderr.strip()[-200:]}")
    for f in files:
        f.chmod(0o644)
    r = h.limactl("copy", "--backend=scp", *map(str, files), f"{NAME}:/tmp/")
    assert r.returncode == 0, r.stderr
    r = h.limactl("shell", NAME, "sh", "-c", "sudo dpkg -i /tmp/*.deb")
    assert r.returncode == 0, r.stdout + r.stderr


def test_copy_backend_rsync(guest: Host) -> None:
    import shutil

    if shutil.which("rsync") is None:
        pytest.skip("the host has no rsync")
    src = guest.home / "pylima-rsync-src"
    guest.run("sh", "-c", f"rm -rf {src} && mkdir -p {src}/sub && echo one > {src}/a && "
              f"echo two > {src}/sub/b")
    if guest.limactl("shell", NAME, "sh", "-c", "command -v rsync").returncode != 0:
        # without rsync in the guest: refused for rsync, scp for auto
        r = guest.limactl("copy", "--backend=rsync", f"{src}/a", f"{NAME}:/tmp/")
        assert r.returncode == 1 and 'msg="rsync not available on guest(s)"' in r.stderr
        r = guest.limactl("--debug", "copy", f"{src}/a", f"{NAME}:/tmp/auto-a")
        assert r.returncode == 0 and "using copy tool `/usr/bin/scp`" in r.stderr, r.stderr
        _install_rsync_in_guest(guest)
    r = guest.limactl("copy", "--backend=rsync", "-r", str(src), f"{NAME}:/tmp/")
    assert r.returncode == 0, r.stderr
    r = guest.limactl("shell", NAME, "cat", "/tmp/pylima-rsync-src/a",
                      "/tmp/pylima-rsync-src/sub/b")
    assert r.stdout == "one\ntwo\n", r.stderr
    back = guest.home / "pylima-rsync-back"
    r = guest.limactl("--debug", "copy", f"{NAME}:/tmp/pylima-rsync-src/sub/b", str(back))
    assert r.returncode == 0, r.stderr
    assert "using copy tool `" in r.stderr and "rsync`" in r.stderr, r.stderr
    assert guest.run("cat", str(back)).stdout == "two\n"


def test_list_shows_running_instance(guest: Host) -> None:
    r = guest.limactl("list", "--json", NAME)
    info = json.loads(r.stdout)
    assert info["status"] == "Running"
    assert info["sshLocalPort"] > 0 and info["hostAgentPID"] > 0 and info["driverPID"] > 0
    ssh_cfg = Path(info["sshConfigFile"])
    text = guest.run("cat", str(ssh_cfg)).stdout
    assert "StrictHostKeyChecking yes" in text and f"Port {info['sshLocalPort']}" in text
    # plain `ssh -F` works, with the pinned host key
    r = guest.run("ssh", "-F", str(ssh_cfg), f"lima-{NAME}", "echo", "via-ssh")
    assert r.stdout.strip() == "via-ssh", r.stderr


def test_host_agent_api(guest: Host) -> None:
    info = json.loads(guest.limactl("list", "--json", NAME).stdout)
    sock = Path(info["dir"]) / "ha.sock"
    r = guest.run("python3", "-c", (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
        "s.sendall(b'GET /v1/info HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'); "
        "print(s.recv(4096).decode())"), str(sock))
    body = r.stdout.split("\n\n", 1)[1]  # text mode has turned \r\n into \n
    assert json.loads(body)["sshLocalPort"] == info["sshLocalPort"]
    assert isinstance(json.loads(body)["portForwards"], list)


# ---- coding agents: limactl mcp and shell --sync (this guest has no mounts) ----


def test_mcp_sdk_client_runs_each_tool(guest: Host) -> None:
    """`limactl mcp serve` spoken to by the MCP SDK's own stdio client: the tools are
    listed and each runs once, in the guest (nothing it writes appears on the host)."""
    import anyio
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    from tests.vm.conftest import VENV_BIN

    d = f"/tmp/pylima-mcp-{os.getpid()}"
    argv = guest._argv([str(VENV_BIN / "limactl"), "mcp", "serve", NAME])
    params = StdioServerParameters(command=argv[0], args=argv[1:],
                                   env={**os.environ, **guest.env}, cwd=str(guest.home))
    os_release = guest.limactl("shell", NAME, "cat", "/etc/os-release").stdout

    async def session() -> dict[str, object]:
        out: dict[str, object] = {}
        async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
            init = await s.initialize()
            out["server"] = init.server_info.name
            out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
            calls = [
                ("write", "write_file", {"path": f"{d}/sub/a.txt", "content": "needle\n"}),
                ("read", "read_file", {"path": f"{d}/sub/a.txt"}),
                ("missing", "read_file", {"path": f"{d}/none"}),
                ("list", "list_directory", {"path": f"{d}/sub"}),
                ("glob", "glob", {"pattern": "*/*.txt", "path": d}),
                ("search", "search_file_content", {"pattern": "need", "path": d}),
                ("cat", "run_shell_command", {"directory": "/etc",
                                              "command": ["cat", "os-release"]}),
                ("fail", "run_shell_command", {"directory": "/", "command":
                                               ["bash", "-c", "echo NO >&2; exit 13"]}),
                ("nodir", "run_shell_command", {"directory": "/etcetera",
                                                "command": ["true"]}),
            ]
            for key, name, args in calls:
                out[key] = await s.call_tool(name, args)
        return out

    r = anyio.run(session)
    assert r["server"] == "lima"
    assert r["tools"] == ["glob", "list_directory", "read_file", "run_shell_command",
                          "search_file_content", "write_file"]
    res = {k: v for k, v in r.items() if k not in ("server", "tools")}
    assert not res["write"].is_error and res["write"].content[0].text == "{}"
    assert res["read"].structured_content == {"content": "needle\n"}
    assert res["missing"].is_error and res["missing"].content[0].text == "file does not exist"
    entries = res["list"].structured_content["entries"]
    assert [(e["name"], e["size"], e["is_dir"]) for e in entries] == [("a.txt", 7, False)]
    assert res["glob"].structured_content == {"matches": [f"{d}/sub/a.txt"]}
    assert res["search"].structured_content == {"git_grep_output": "sub/a.txt:1:needle\n"}
    assert res["cat"].structured_content == {"stdout": os_release, "stderr": "",
                                             "exit_code": 0}
    assert res["fail"].structured_content == {"stdout": "", "stderr": "NO\n",
                                              "error": "exit status 13", "exit_code": 13}
    nodir = res["nodir"].structured_content
    assert nodir["exit_code"] == 1 and "No such file or directory" in nodir["stderr"]
    assert not Path(d).exists()  # written in the guest, not on the host
    assert guest.limactl("shell", NAME, "cat", f"{d}/sub/a.txt").stdout == "needle\n"


def _sync_project(guest: Host, name: str) -> Path:
    """A project directory owned by the test user, deep enough for --sync."""
    proj = guest.home / f"pylima-sync-{os.getpid()}" / name
    q = shlex.quote(str(proj))
    guest.run("sh", "-c", f"rm -rf {q} && mkdir -p {q} && cd {q} && "
              "echo old > foo.txt && echo bar > bar.txt && echo a > a && echo b > b && "
              "ln -s a cur && printf '#!/bin/sh\\n' > run.sh && chmod 644 run.sh")
    return proj


def test_shell_sync_accepted_without_a_master_socket(guest: Host) -> None:
    """--yes copies back at once: new, modified and deleted files, chmod, a symlink's
    new target, the host's owner kept; with the master socket out of the way (ssh
    logs in on its own) and the guest copy removed afterwards."""
    proj = _sync_project(guest, "with spaces 'q'")
    sock = Path(json.loads(guest.limactl("list", "--json", NAME).stdout)["dir"]) / "ssh.sock"
    moved = sock.with_name("ssh.sock.moved")
    os.rename(sock, moved)
    try:
        r = guest.limactl("shell", "--sync", ".", "--yes", NAME, "sh", "-c",
                          "echo modified > foo.txt; rm bar.txt; mkdir -p nd; echo x > nd/f; "
                          "chmod 755 run.sh; ln -snf b cur; sudo chown root a; pwd",
                          cwd=str(proj))
    finally:
        os.rename(moved, sock)
    assert r.returncode == 0, r.stderr
    home = guest.limactl("shell", NAME, "sh", "-c", "echo $HOME").stdout.strip()
    assert r.stdout.strip() == home + str(proj)
    assert "Successfully synced back the changes to host." in r.stderr
    assert (proj / "foo.txt").read_text() == "modified\n"
    assert not (proj / "bar.txt").exists()
    assert (proj / "nd" / "f").read_text() == "x\n"
    assert (proj / "run.sh").stat().st_mode & 0o777 == 0o755
    assert os.readlink(proj / "cur") == "b"
    assert (proj / "a").stat().st_uid == proj.stat().st_uid
    r = guest.limactl("shell", NAME, "sh", "-c",
                      f"test -e {shlex.quote(home + str(proj))} || echo removed; "
                      f"test -d {shlex.quote(home + str(proj.parent))} && echo parent-kept")
    assert r.stdout.split() == ["removed", "parent-kept"]


def test_shell_sync_rejected_through_a_pty(guest: Host) -> None:
    """On a terminal the changes are counted and asked about; "No" (arrow down, Enter)
    leaves the host directory as it was."""
    import pty
    import select as select_mod

    proj = _sync_project(guest, "rejected")
    before = sorted((p.name, p.read_bytes() if p.is_file() else b"")
                    for p in proj.iterdir())
    from tests.vm.conftest import VENV_BIN

    argv = guest._argv([str(VENV_BIN / "limactl"), "shell", "--sync", str(proj), NAME, "sh",
                        "-c", "echo changed > foo.txt; echo new > new.txt"])
    pid, fd = pty.fork()
    if pid == 0:  # the child: limactl on the pty
        os.chdir(str(proj))
        os.execvpe(argv[0], argv, {**os.environ, **guest.env, "TERM": "xterm"})
    seen, answered = b"", False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        ready, _, _ = select_mod.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[Use arrows to move, type to filter]" in seen:
            os.write(fd, b"\x1b[B\r")
            answered = True
    _, status = os.waitpid(pid, 0)
    text = seen.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert re.search(r"Accept the changes\? \(added: 1, deleted: 0, modified: 1, metadata: \d\)",
                     text), text
    assert "Skipping syncing back the changes to host." in text
    assert sorted((p.name, p.read_bytes() if p.is_file() else b"")
                  for p in proj.iterdir()) == before


def test_instance_sync_from_python(guest: Host) -> None:
    """Instance.sync: the changes are handed to `accept` before anything is copied;
    refused, the project stays as it was; accepted, it gets them."""
    proj = _sync_project(guest, "api")
    code = ("import json, sys, pylima\n"
            "seen = []\n"
            "def accept(r):\n"
            "    seen.append(str(r.changes))\n"
            "    return sys.argv[2] == 'yes'\n"
            f"r = pylima.Instance.get({NAME!r}).sync(sys.argv[1], 'echo new > n.txt; pwd', "
            "accept=accept)\n"
            "print(json.dumps([r.returncode, r.applied, seen, r.stdout]))\n")
    from tests.vm.conftest import VENV_BIN

    out = []
    for answer in ("no", "yes"):
        r = guest.run(str(VENV_BIN / "python"), "-c", code, str(proj), answer)
        assert r.returncode == 0, r.stderr
        out.append(json.loads(r.stdout))
        assert (proj / "n.txt").exists() == (answer == "yes")
    assert out[0][:2] == [0, False] and out[1][:2] == [0, True]
    assert out[0][2][0].startswith("added: 1, deleted: 0, modified: 0")
    assert out[1][3].strip().endswith(str(proj))


def test_shell_sync_refusals(guest: Host) -> None:
    proj = _sync_project(guest, "refused")
    r = guest.limactl("shell", "--sync", str(proj), "--workdir", "/tmp", NAME, "true")
    assert r.returncode == 1
    assert "cannot use `--workdir` and `--sync` at the same time" in r.stderr
    r = guest.limactl("shell", "--sync", "/tmp", NAME, "true")
    assert r.returncode == 1 and "expected the depth of the host working directory" in r.stderr
    r = guest.limactl("shell", "--sync", str(proj / "none"), NAME, "true")
    assert r.returncode == 1 and "no such directory" in r.stderr
    assert "Traceback" not in r.stderr


# ---- port forwarding (the guest agent reports listening sockets; the host forwards) ----

SERVE = ("import http.server,sys,functools,socket;"
         "d=sys.argv[3];H=functools.partial(http.server.SimpleHTTPRequestHandler,directory=d);"
         "S=http.server.ThreadingHTTPServer;"
         "S.address_family=socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET;"
         "S((sys.argv[1],int(sys.argv[2])),H).serve_forever()")
UDP_ECHO = ("import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
            "s.bind((sys.argv[1],int(sys.argv[2])))\n"
            "while True:\n d,a=s.recvfrom(2048);s.sendto(b'echo:'+d,a)")
UNIX_ECHO = ("import socket,sys,os;p=sys.argv[1];os.path.exists(p) and os.unlink(p);"
             "s=socket.socket(socket.AF_UNIX);s.bind(p);os.chmod(p,0o777);s.listen()\n"
             "while True:\n c,_=s.accept();c.sendall(b'unix:'+c.recv(100));c.close()")


def in_guest_background(h: Host, *argv: str, name: str = NAME) -> None:
    """Start a long-running guest process that outlives the SSH session."""
    import shlex

    cmd = "setsid -f " + " ".join(shlex.quote(a) for a in argv) + " >/dev/null 2>&1"
    r = h.limactl("shell", name, "sh", "-c", cmd)
    assert r.returncode == 0, r.stderr


def http_get(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=10) as r:
        return r.read().decode()


def udp_echo_answers(family: int, host: str, port: int, payload: bytes) -> bool:
    """Whether UDP_ECHO (through its forward) answers `payload` sent to host:port."""
    import socket

    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(payload, (host, port))
        return s.recvfrom(100)[0] == b"echo:" + payload


def forwards(h: Host) -> list[dict]:
    return json.loads(h.limactl("list", "--json", NAME).stdout).get("portForwards") or []


def test_tcp_ports_on_loopback_and_any_address_are_forwarded(guest: Host) -> None:
    r = guest.limactl("shell", NAME, "sh", "-c",
                      "mkdir -p /tmp/www && echo page > /tmp/www/hello.txt")
    assert r.returncode == 0, r.stderr
    in_guest_background(guest, "python3", "-c", SERVE, "127.0.0.1", "8080", "/tmp/www")
    in_guest_background(guest, "python3", "-c", SERVE, "0.0.0.0", "8081", "/tmp/www")
    in_guest_background(guest, "python3", "-c", SERVE, "::", "8083", "/tmp/www")
    for port in (8080, 8081, 8083):
        assert eventually(lambda p=port: http_get(p) == "page\n"), f"port {port}"
    fw = {f["hostAddr"]: f for f in forwards(guest)}
    assert fw["127.0.0.1:8080"]["guestAddr"] == "127.0.0.1:8080"
    assert fw["127.0.0.1:8080"]["via"] == "relay"
    assert fw["127.0.0.1:8081"]["via"] == "direct"
    assert "127.0.0.1:8083" in fw
    log = (Path(json.loads(guest.limactl("list", "--json", NAME).stdout)["dir"])
           / "ha.stderr.log").read_text()
    assert "Forwarding TCP from 127.0.0.1:8080 to 127.0.0.1:8080" in log


def test_closing_the_guest_socket_removes_the_forward(guest: Host) -> None:
    r = guest.limactl("shell", NAME, "pkill", "-f", "8081 /tmp/www")
    assert r.returncode == 0, r.stderr
    assert eventually(lambda: "127.0.0.1:8081" not in
                      {f["hostAddr"] for f in forwards(guest)})
    import socket

    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", 8081), timeout=5).close()


def test_udp_is_forwarded(guest: Host) -> None:
    import socket

    in_guest_background(guest, "python3", "-c", UDP_ECHO, "127.0.0.1", "9053")
    assert eventually(lambda: "127.0.0.1:9053" in
                      {f["hostAddr"] for f in forwards(guest) if f["protocol"] == "udp"})

    assert eventually(lambda: udp_echo_answers(socket.AF_INET, "127.0.0.1", 9053, b"ping"))


def test_udp_to_an_ipv6_host_address(guest: Host) -> None:
    """The `hostIP: ::1` rule takes UDP too: QEMU forwards an IPv4 loopback port and the
    host agent relays the host's [::1] to it (SSH carries no UDP)."""
    import socket

    in_guest_background(guest, "python3", "-c", UDP_ECHO, "0.0.0.0", "8091")
    assert eventually(lambda: "[::1]:8091" in
                      {f["hostAddr"] for f in forwards(guest) if f["protocol"] == "udp"})

    assert eventually(lambda: udp_echo_answers(socket.AF_INET6, "::1", 8091, b"ping6"))
    guest.limactl("shell", NAME, "pkill", "-f", "SOCK_DGRAM.*8091")


def test_guest_socket_rule_exposes_a_unix_socket(guest: Host) -> None:
    import socket

    in_guest_background(guest, "python3", "-c", UNIX_ECHO, ECHO_SOCK)
    host_sock = Path(json.loads(guest.limactl("list", "--json", NAME).stdout)["dir"]) \
        / "sock" / "echo.sock"

    def ask() -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(host_sock))
            s.sendall(b"hi")
            return s.recv(100) == b"unix:hi"

    assert eventually(ask)


def test_guest_tcp_port_on_a_host_socket_and_an_ipv6_host_address(guest: Host) -> None:
    """`guestPort` + `hostSocket` serves the guest's TCP port on a unix socket in the
    instance directory; `hostIP: ::1` listens on the host's IPv6 loopback (both over
    the SSH master: QEMU's user network can do neither)."""
    import http.client
    import socket

    r = guest.limactl("shell", NAME, "sh", "-c",
                      "mkdir -p /tmp/www && echo page > /tmp/www/hello.txt")
    assert r.returncode == 0, r.stderr
    in_guest_background(guest, "python3", "-c", SERVE, "127.0.0.1", "8090", "/tmp/www")
    in_guest_background(guest, "python3", "-c", SERVE, "0.0.0.0", "8091", "/tmp/www")
    host_sock = instance_dir(guest) / "sock" / "web.sock"

    class UnixHTTP(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(10)
            self.sock.connect(str(host_sock))

    def over_socket() -> str:
        c = UnixHTTP("localhost")
        c.request("GET", "/hello.txt")
        return c.getresponse().read().decode()

    def over_ipv6() -> str:
        c = http.client.HTTPConnection("::1", 8091, timeout=10)
        c.request("GET", "/hello.txt")
        return c.getresponse().read().decode()

    assert eventually(lambda: over_socket() == "page\n")
    assert eventually(lambda: over_ipv6() == "page\n")
    fw = {f["hostAddr"]: f for f in forwards(guest)}
    assert fw[str(host_sock)]["guestAddr"] == "127.0.0.1:8090"
    assert fw["[::1]:8091"]["via"] == "ssh"
    assert "127.0.0.1:8091" not in fw  # the rule took it, not the implicit one
    log = (instance_dir(guest) / "ha.stderr.log").read_text()
    assert f"Forwarding TCP from 127.0.0.1:8090 to {host_sock}" in log
    assert "Forwarding TCP from 0.0.0.0:8091 to [::1]:8091" in log
    guest.limactl("shell", NAME, "pkill", "-f", "8090 /tmp/www")
    assert eventually(lambda: not host_sock.exists()), "the socket outlived its forward"


def test_reconnect_opens_a_new_master_and_its_forwards(guest: Host) -> None:
    """`shell --reconnect` ends the SSH master (new sessions log in anew); the host
    agent opens a new one and the socket forward that rode on it works again."""
    import socket

    inst_dir = Path(json.loads(guest.limactl("list", "--json", NAME).stdout)["dir"])
    r = guest.limactl("shell", "--reconnect", NAME, "true")
    assert r.returncode == 0 and "Exiting ssh session for the instance `vmtest`" in r.stderr

    def ask() -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(inst_dir / "sock" / "echo.sock"))
            s.sendall(b"again")
            return s.recv(100) == b"unix:again"

    assert eventually(ask)
    assert (inst_dir / "ssh.sock").exists()
    assert "The SSH master connection ended; opening a new one" in \
        (inst_dir / "ha.stderr.log").read_text()


def test_ignore_rule_and_a_taken_host_port(guest: Host) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 18085))
    taken.listen()
    try:
        in_guest_background(guest, "python3", "-c", SERVE, "127.0.0.1", "8082", "/tmp/www")
        in_guest_background(guest, "python3", "-c", SERVE, "127.0.0.1", "18085", "/tmp/www")
        in_guest_background(guest, "python3", "-c", SERVE, "127.0.0.1", "18086", "/tmp/www")
        # the port after the taken one still works
        assert eventually(lambda: http_get(18086) == "page\n")
        hosts = {f["hostAddr"] for f in forwards(guest)}
        assert "127.0.0.1:8082" not in hosts and "127.0.0.1:18085" not in hosts
        log = (Path(json.loads(guest.limactl("list", "--json", NAME).stdout)["dir"])
               / "ha.stderr.log").read_text()
        assert "127.0.0.1:18085" in log and "in use" in log
        assert "Not forwarding TCP 127.0.0.1:8082" in log
    finally:
        taken.close()


# ---- snapshots of the running guest and the SOCKS tunnel (Lima's experimental commands) ----


def test_snapshot_of_the_running_guest_comes_back_with_its_files_and_ports(
        guest: Host) -> None:
    """A file and a tmpfs marker (memory state), a snapshot, both changed, `apply`:
    both are back, the shell answers and a forwarded port works again."""
    r = guest.limactl("shell", NAME, "sh", "-c",
                      "mkdir -p /tmp/www && echo page > /tmp/www/hello.txt && "
                      "echo before > ~/snapfile && echo before > /dev/shm/snapmark && sync")
    assert r.returncode == 0, r.stderr
    in_guest_background(guest, "python3", "-c", SERVE, "127.0.0.1", "18087", "/tmp/www")
    assert eventually(lambda: http_get(18087) == "page\n")
    t0 = time.monotonic()
    r = guest.limactl("snapshot", "create", NAME, "--tag", "warm", timeout=1800)
    create_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "`limactl snapshot` is experimental" in r.stderr
    r = guest.limactl("snapshot", "create", NAME, "--tag", "warm")
    assert r.returncode == 1 and "snapshot 'warm' already exists" in r.stderr, r.stderr
    r = guest.limactl("snapshot", "list", NAME)
    assert r.returncode == 0, r.stderr
    header, line = r.stdout.splitlines()[:2]
    assert header.split()[:3] == ["ID", "TAG", "VM"] and "ICOUNT" in header
    assert line.split()[1] == "warm"
    assert guest.limactl("snapshot", "ls", NAME, "-q").stdout == "warm\n"
    r = guest.limactl("shell", NAME, "sh", "-c",
                      "echo after > ~/snapfile && echo after > /dev/shm/snapmark && sync")
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    r = guest.limactl("snapshot", "apply", NAME, "--tag", "warm", timeout=1800)
    apply_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    print(f"snapshot create {create_s:.1f} s, apply {apply_s:.1f} s (TCG, 2 GiB)")
    r = guest.limactl("shell", NAME, "cat", "snapfile", "/dev/shm/snapmark", timeout=300)
    assert r.returncode == 0 and r.stdout == "before\nbefore\n", r.stdout + r.stderr
    # the guest clock is the host's again, not the snapshot's
    r = guest.limactl("shell", NAME, "date", "+%s")
    assert abs(int(r.stdout) - time.time()) < 10, r.stdout
    # the forwarded port works again
    assert eventually(lambda: http_get(18087) == "page\n", timeout=120)
    r = guest.limactl("snapshot", "apply", NAME, "--tag", "nosuch")
    assert r.returncode == 1 and "snapshot 'nosuch' does not exist" in r.stderr, r.stderr
    r = guest.limactl("snapshot", "apply", NAME)
    assert r.returncode == 1 and "expected tag" in r.stderr, r.stderr
    r = guest.limactl("snapshot", "delete", NAME, "--tag", "warm", timeout=600)
    assert r.returncode == 0, r.stderr
    assert guest.limactl("snapshot", "list", NAME, "--quiet").stdout == ""


TUNNEL: dict[str, int] = {}


def test_tunnel_reaches_a_name_only_the_guest_resolves(guest: Host) -> None:
    r = guest.limactl("shell", NAME, "sh", "-c",
                      "mkdir -p /tmp/www && echo page > /tmp/www/hello.txt && "
                      "echo '127.0.0.1 only-in-guest.test' | sudo tee -a /etc/hosts")
    assert r.returncode == 0, r.stderr
    in_guest_background(guest, "python3", "-c", SERVE, "127.0.0.1", "8090", "/tmp/www")
    r = guest.limactl("tunnel", NAME)
    assert r.returncode == 0, r.stderr
    assert "`limactl tunnel` is experimental" in r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("Set `ALL_PROXY=socks5h://127.0.0.1:") and \
        first.endswith("`, etc.")
    port = int(first.split(":")[2].split("`")[0])
    assert r.stdout.splitlines()[1] == (f"The instance can be connected from the host as "
                                        f"<http://lima-{NAME}.internal> via a web browser.")
    TUNNEL["port"] = port

    def fetch() -> bool:
        c = guest.run("curl", "-sS", "--max-time", "20", "--socks5-hostname",
                      f"127.0.0.1:{port}", "http://only-in-guest.test:8090/hello.txt")
        return c.stdout == "page\n"

    assert eventually(fetch, timeout=60)
    # the same port again: the tunnel is there already
    assert guest.limactl("tunnel", "--socks-port", str(port), NAME).returncode == 0
    # a port another program holds: one line, nothing opened
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        r = guest.limactl("tunnel", "--socks-port", str(busy), NAME)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"failed to open the SOCKS tunnel on 127.0.0.1:{busy}: " in r.stderr, r.stderr


def test_sockets_keys_and_pid_files_are_the_users_alone(guest: Host) -> None:
    d = instance_dir(guest)
    assert d.stat().st_mode & 0o777 == 0o700
    for name in ("ha.sock", "qmp.sock", "ga.sock", "serial.sock", "serialv.sock", "ssh.sock",
                 "ha.pid", "qemu.pid", "ssh_host_ed25519_key"):
        mode = (d / name).stat().st_mode & 0o777
        assert mode & 0o077 == 0, f"{name} is {oct(mode)}"


def test_additional_disk_is_formatted_mounted_and_locked(guest: Host) -> None:
    r = guest.lima("sh", "-c", f"findmnt -no SOURCE,FSTYPE /mnt/lima-{DATA_DISK}; "
                   f"sudo blkid -s LABEL -o value /dev/vdb1; "
                   f"echo kept | sudo tee /mnt/lima-{DATA_DISK}/file >/dev/null && sync",
                   env=lima_env())
    assert r.stdout.split() == ["/dev/vdb1", "ext4", f"lima-{DATA_DISK}"], \
        r.stdout + r.stderr
    rows = guest.limactl("disk", "list").stdout.splitlines()
    assert rows[0].split() == ["NAME", "SIZE", "FORMAT", "DIR", "IN-USE-BY"]
    row = next(r.split() for r in rows[1:] if r.split()[0] == DATA_DISK)
    assert row[1:3] == ["1GiB", "qcow2"] and row[-1] == NAME
    r = guest.limactl("disk", "unlock", DATA_DISK)
    assert f"Cannot unlock disk `{DATA_DISK}` used by running instance `{NAME}`" in r.stderr


def test_a_second_instance_cannot_use_the_disk(guest: Host, shared_image: dict) -> None:
    """A start that fails before it boots (no boot of its own)."""
    other = f"{NAME}2"
    r = guest.limactl("create", f"--name={other}", "--tty=false", "--set",
                      images_set(shared_image) + f' | .additionalDisks = ["{DATA_DISK}"]',
                      "template:debian-12", timeout=600)
    assert r.returncode == 0, r.stderr
    try:
        t0 = time.monotonic()
        r = guest.limactl("start", other, "--tty=false", timeout=600)
        assert r.returncode == 1
        assert (f"could not attach disk `{DATA_DISK}`: in use by instance `{NAME}`"
                in r.stderr), r.stderr
        assert "Traceback" not in r.stderr and time.monotonic() - t0 < 60
        assert not (instance_dir(guest).parent / other / "ha.pid").exists()
        info = json.loads(guest.limactl("disk", "list", "--json", DATA_DISK).stdout)
        assert info["instance"] == NAME
    finally:
        guest.limactl("delete", "-f", other)


def test_host_ssh_agent_is_forwarded(guest: Host, ssh_agent: dict[str, str]) -> None:
    """`ssh.forwardAgent`: the key of the host's agent (in the environment of
    `limactl start` and of the shell) is usable in the guest, by limactl shell and
    lima; pylima's own sessions do not get it."""
    for run in (guest.lima, lambda *a, env: guest.limactl("shell", NAME, *a, env=env)):
        r = run("ssh-add", "-l", env={**lima_env(), **ssh_agent})
        assert r.returncode == 0 and AGENT_KEY_COMMENT in r.stdout, r.stdout + r.stderr
    cfg = (instance_dir(guest) / "ssh.config").read_text()
    assert "  ForwardAgent yes\n" in cfg


def test_start_running_instance_says_so(guest: Host) -> None:
    r = guest.limactl("start", NAME)
    assert r.returncode == 0 and "is already running" in r.stderr


def test_stop_keeps_guest_files(guest: Host) -> None:
    """(The concurrent starts below bring it back and read the files.)"""
    r = guest.limactl("shell", NAME, "sh", "-c",
                      "echo kept > ~/marker && echo durable > ~/durable && sync")
    assert r.returncode == 0, r.stderr
    r = guest.limactl("stop", NAME, timeout=300)
    assert r.returncode == 0, r.stderr
    assert guest.limactl("list", "--format", "{{.Status}}", NAME).stdout == "Stopped\n"
    r = guest.lima("true", env=lima_env())
    assert r.returncode == 1 and f"instance `{NAME}` is stopped" in r.stderr
    # the stop released the additional disk; it is grown while detached
    info = json.loads(guest.limactl("disk", "list", "--json", DATA_DISK).stdout)
    assert info["instance"] == ""
    r = guest.limactl("disk", "resize", DATA_DISK, "--size", "2GiB")
    assert r.returncode == 0, r.stderr


def test_the_tunnel_ended_with_the_instance(guest: Host) -> None:
    import socket

    port = TUNNEL.get("port")
    if port is None:
        pytest.skip("the tunnel test did not run")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass


def test_snapshot_of_the_stopped_guest_is_a_disk_snapshot(guest: Host) -> None:
    assert guest.limactl("list", "--format", "{{.Status}}", NAME).stdout == "Stopped\n"
    r = guest.limactl("snapshot", "create", NAME, "--tag", "cold")
    assert r.returncode == 0, r.stderr
    r = guest.limactl("snapshot", "list", NAME)
    assert r.returncode == 0 and "Snapshot list:" not in r.stdout, r.stdout
    assert r.stdout.splitlines()[1].split()[1] == "cold"
    assert guest.limactl("snapshot", "list", NAME, "-q").stdout == "cold\n"
    r = guest.limactl("snapshot", "create", NAME, "--tag", "cold")
    assert r.returncode == 1 and "snapshot 'cold' already exists" in r.stderr
    r = guest.limactl("snapshot", "apply", NAME, "--tag", "cold")
    assert r.returncode == 0, r.stderr
    r = guest.limactl("snapshot", "del", NAME, "--tag", "cold")
    assert r.returncode == 0, r.stderr
    assert guest.limactl("snapshot", "list", NAME, "-q").stdout == ""
    r = guest.limactl("snapshot", "delete", NAME, "--tag", "cold")
    assert r.returncode == 1 and "snapshot 'cold' does not exist" in r.stderr


# ---- one owner, nothing outlives it (the shared guest's last boots) ----


def instance_dir(h: Host) -> Path:
    return Path(h.env.get("LIMA_HOME") or h.home / ".lima") / NAME


def _same_lima_home(proc: str, h: Host) -> bool:
    """A process named after the instance belongs to it unless its environment shows
    another LIMA_HOME (another run of these tests on the same machine); an environment
    that cannot be read counts as ours."""
    try:
        env = Path(proc, "environ").read_bytes().split(b"\0")
    except OSError:
        return True
    homes = [e.split(b"=", 1)[1].decode() for e in env if e.startswith(b"LIMA_HOME=")]
    return not homes or homes[0] == h.env.get("LIMA_HOME", homes[0])


def processes_of_instance(h: Host) -> list[str]:
    """Command lines of the processes that belong to the instance (QEMU names it with
    `-name lima-NAME`; the host agent, ssh and helpers name its directory or it)."""
    inst = str(instance_dir(h))
    out = []
    for pid, cmd in proc_cmdlines():
        if "limactl list" in cmd:
            continue
        if inst in cmd or ((f"lima-{NAME}" in cmd or cmd.rstrip().endswith(f"hostagent {NAME}"))
                           and _same_lima_home(f"/proc/{pid}", h)):
            out.append(f"{pid}: {cmd.strip()}")
    return out


def qemu_processes(h: Host) -> list[str]:
    return [p for p in processes_of_instance(h) if "qemu-system" in p]


def status(h: Host) -> str:
    return h.limactl("list", "--format", "{{.Status}}", NAME).stdout.strip()


def start_in_background(h: Host, env: dict[str, str] | None = None
                        ) -> subprocess.Popen[str]:
    from tests.vm.conftest import VENV_BIN

    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    cmd = h._argv(["env", *extra, str(VENV_BIN / "limactl"), "start", NAME, "--tty=false"])
    return subprocess.Popen(cmd, env={**os.environ, **h.env, **(env or {})},
                            cwd=str(h.home), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_for_event(h: Host, phase: str, proc: subprocess.Popen[str],
                   timeout: float = 900) -> dict:
    """The host agent's `phase` event (e.g. "paused:ssh") in ha.stdout.log."""
    log = instance_dir(h) / "ha.stdout.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            lines = log.read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("status", {}).get("phase") == phase:
                return ev
        # (paused at "ready", the start has already said READY and exited 0)
        assert proc.poll() in (None, 0), proc.communicate()
        time.sleep(0.3)
    raise AssertionError(f"no `{phase}` event")


def assert_stopped_and_clean(h: Host) -> None:
    assert eventually(lambda: status(h) == "Stopped", timeout=30), status(h)
    assert eventually(lambda: not processes_of_instance(h), timeout=30), \
        processes_of_instance(h)


def qemu_img_check(h: Host) -> None:
    r = subprocess.run(["qemu-img", "check", "-f", "qcow2", str(instance_dir(h) / "disk")],
                       capture_output=True, text=True)
    # 0: clean; 3: leaked clusters only (harmless, reclaimable); 2: corruption.
    assert r.returncode in (0, 3), r.stdout + r.stderr


def test_three_concurrent_starts_make_one_vm(guest: Host) -> None:
    assert status(guest) == "Stopped" and not qemu_processes(guest)
    procs = [start_in_background(guest) for _ in range(3)]
    seen_qemus: set[str] = set()
    while any(p.poll() is None for p in procs):
        seen_qemus |= {q.split(":", 1)[0] for q in qemu_processes(guest)}
        time.sleep(0.5)
    outputs = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert len(seen_qemus) == 1 and len(qemu_processes(guest)) == 1
    stderr = "".join(err for _, err in outputs)
    assert stderr.count("READY") == 1 and stderr.count("is already running") == 2, stderr
    assert guest.limactl("shell", NAME, "cat", "marker", "durable").stdout == \
        "kept\ndurable\n"


def test_stop_while_every_vcpu_is_busy(guest: Host) -> None:
    in_guest_background(guest, "sh", "-c", "for i in 1 2; do (while :; do :; done) & done")
    time.sleep(2)
    r = guest.limactl("stop", NAME, timeout=400)
    assert r.returncode == 0, r.stderr
    assert_stopped_and_clean(guest)
    qemu_img_check(guest)


@pytest.mark.parametrize("phase,victim", [("booting", "hostagent"), ("ssh", "qemu"),
                                          ("boot-scripts", "hostagent"), ("ready", "qemu")])
def test_kill_9_at_each_phase(guest: Host, phase: str, victim: str) -> None:
    """Each recovery start is the next phase's victim: the start paused at `phase`
    (the fault-injection hook), then a real SIGKILL."""
    if status(guest) == "Running":
        assert guest.limactl("stop", NAME, timeout=300).returncode == 0
    proc = start_in_background(guest, {"PYLIMA_HOSTAGENT_PAUSE_AT": phase})
    try:
        wait_for_event(guest, f"paused:{phase}", proc)
        info = json.loads(guest.limactl("list", "--json", NAME).stdout)
        os.kill(info["hostAgentPID" if victim == "hostagent" else "driverPID"],
                signal.SIGKILL)
        proc.wait(timeout=120)
        if phase != "ready":
            assert proc.returncode == 1  # the start waited for READY, which never came
    finally:
        if proc.poll() is None:
            proc.kill()
    # Nothing of the instance outlives its host agent; the list is right.
    assert_stopped_and_clean(guest)
    qemu_img_check(guest)


def test_the_data_survives_and_the_next_start_shows_its_progress(guest: Host) -> None:
    r = guest.limactl("start", "--progress", NAME, timeout=1200)
    assert r.returncode == 0, r.stderr
    assert guest.limactl("shell", NAME, "cat", "durable").stdout == "durable\n"
    # the additional disk: its data kept over stops (and kill -9s), grown to the new size
    d = guest.limactl("shell", NAME, "sh", "-c", f"cat /mnt/lima-{DATA_DISK}/file; "
                      f"df -B1M --output=size /mnt/lima-{DATA_DISK} | tail -n 1")
    kept, size_mib = d.stdout.split()
    assert kept == "kept" and 1800 < int(size_mib) <= 2048, d.stdout + d.stderr
    # --progress: the guest's boot log (pylima-init and boot.sh), ended before READY
    lines = [ln.split("msg=", 1)[1] for ln in r.stderr.splitlines() if "msg=" in ln]
    assert '"Cloud-init provisioning started..."' in lines
    shown = [ln for ln in lines if ln.startswith('"[cloud-init] ')]
    assert any("running boot/25-guestagent.sh" in ln for ln in shown), r.stderr
    assert any("boot done" in ln for ln in shown), r.stderr
    done = lines.index('"Cloud-init progress monitoring done."')
    assert done < next(i for i, ln in enumerate(lines) if ln.startswith('"READY.'))
    # nothing left for the final stage but the per-boot scripts (the disk was grown on
    # the first boot): the image's launcher ran them without starting Python
    j = guest.limactl("shell", NAME, "sudo", "journalctl", "-b", "-o", "cat",
                      "-u", "pylima-final.service")
    assert "(per-boot scripts only)" in j.stdout, j.stdout + j.stderr


def test_delete_f_of_an_instance_whose_host_agent_was_killed(guest: Host) -> None:
    assert status(guest) == "Running"
    # The host agent killed: what it started goes with it.
    info = json.loads(guest.limactl("list", "--json", NAME).stdout)
    os.kill(info["hostAgentPID"], signal.SIGKILL)
    assert_stopped_and_clean(guest)
    r = guest.limactl("delete", "-f", NAME)
    assert r.returncode == 0, r.stderr
    assert not instance_dir(guest).exists()
    # the killed host agent had the disk locked; the delete released it
    info = json.loads(guest.limactl("disk", "list", "--json", DATA_DISK).stdout)
    assert info["instance"] == ""


def test_delete_f_of_a_running_instance(guest: Host, shared_image: dict) -> None:
    """A boot of its own (plain, one CPU): the shared guest is gone by now, and delete -f
    must be tried on a VM that runs."""
    r = guest.limactl("start", f"--name={NAME}", "--tty=false", "--cpus=1", "--memory=1",
                      "--set", images_set(shared_image), "--set", ".plain = true",
                      "template:debian-12", timeout=1500)
    assert r.returncode == 0, r.stdout + r.stderr
    assert processes_of_instance(guest)
    r = guest.limactl("delete", "-f", NAME)
    assert r.returncode == 0, r.stderr
    assert not processes_of_instance(guest), processes_of_instance(guest)
    assert not instance_dir(guest).exists()


@pytest.mark.skipif(os.getuid() != 0, reason="the root case runs where the tests run as root")
def test_runs_as_root(tmp_path: Path, built_image: dict) -> None:
    root = Host("root", Path("/root"), {"LIMA_HOME": str(tmp_path / "lima")})
    r = root.limactl("start", "--name=rootvm", "--tty=false", "--cpus=2", "--memory=2",
                     "--set", images_set(built_image), "template:debian-12", timeout=1500,
                     env={"PYLIMA_GUEST_AGENT_TRANSPORT": "ssh"})
    try:
        assert r.returncode == 0, r.stderr
        r = root.limactl("shell", "rootvm", "id", "-un")
        assert r.stdout.strip() == "lima"
        assert root.limactl("shell", "rootvm", "id", "-u").stdout.strip() == "1000"
        # This guest's agent runs over SSH (the fallback for guests without the
        # virtio-serial port): forwarding works the same.
        r = root.limactl("shell", "rootvm", "sh", "-c",
                         "mkdir -p /tmp/www && echo page > /tmp/www/hello.txt")
        in_guest_background(root, "python3", "-c", SERVE, "127.0.0.1", "8090", "/tmp/www",
                            name="rootvm")
        assert eventually(lambda: http_get(8090) == "page\n")
        log = (tmp_path / "lima" / "rootvm" / "ha.stderr.log").read_text()
        assert "Running the guest agent over SSH" in log
    finally:
        root.limactl("delete", "-f", "rootvm")

