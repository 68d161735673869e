"""Boot a real guest under QEMU (TCG here) and use it like a Lima user would.

One guest, started once, serves the tests in this module in order; a second one
checks that pylima also works as root.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import Host

NAME = "vmtest"


# Port-forwarding rules for the shared guest (its tests are below, before the stops).
ECHO_SOCK = "/tmp/pylima-echo.sock"
PORT_RULES = [
    {"guestSocket": ECHO_SOCK, "hostSocket": "echo.sock"},
    {"guestPort": 8082, "ignore": True},
]


def images_set(entry: dict) -> str:
    return f".images = [{json.dumps(entry)}] | .mounts = []"


@pytest.fixture(scope="module")
def guest(unprivileged_host: Host, shared_image: dict) -> Iterator[Host]:
    h = unprivileged_host
    r = h.limactl("start", f"--name={NAME}", "--tty=false", "--cpus=2", "--memory=2",
                  "--set",
                  images_set(shared_image) + f" | .portForwards = {json.dumps(PORT_RULES)}",
                  "template:debian-12", timeout=1500)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "READY" in r.stderr
    yield h
    h.limactl("stop", "-f", NAME)
    h.limactl("delete", "-f", NAME)


def lima_env() -> dict[str, str]:
    return {"LIMA_INSTANCE": NAME}


def test_lima_runs_a_command(guest: Host) -> None:
    r = guest.lima("uname", "-a", env=lima_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Linux lima-vmtest ")


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


def test_copy_both_ways(guest: Host, tmp_path: Path) -> None:
    src = guest.home / "pylima-copy-src.txt"
    guest.run("sh", "-c", f"echo payload > {src}")
    assert guest.limactl("copy", str(src), f"{NAME}:/tmp/copied.txt").returncode == 0
    assert guest.limactl("shell", NAME, "cat", "/tmp/copied.txt").stdout == "payload\n"
    back = guest.home / "pylima-copy-back.txt"
    r = guest.limactl("cp", f"{NAME}:/tmp/copied.txt", str(back))
    assert r.returncode == 0, r.stderr
    assert guest.run("cat", str(back)).stdout == "payload\n"


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


def eventually(check, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll `check` until it returns a true value (generous deadline: TCG is slow)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OSError:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


def http_get(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello.txt", timeout=10) as r:
        return r.read().decode()


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

    def ask() -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(3)
            s.sendto(b"ping", ("127.0.0.1", 9053))
            return s.recvfrom(100)[0] == b"echo:ping"

    assert eventually(ask)


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


def test_start_running_instance_says_so(guest: Host) -> None:
    r = guest.limactl("start", NAME)
    assert r.returncode == 0 and "is already running" in r.stderr


def test_stop_start_keeps_guest_files(guest: Host) -> None:
    assert guest.limactl("shell", NAME, "sh", "-c", "echo kept > ~/marker").returncode == 0
    r = guest.limactl("stop", NAME, timeout=300)
    assert r.returncode == 0, r.stderr
    assert guest.limactl("list", "--format", "{{.Status}}", NAME).stdout == "Stopped\n"
    r = guest.lima("true", env=lima_env())
    assert r.returncode == 1 and f"instance `{NAME}` is stopped" in r.stderr
    r = guest.limactl("start", NAME, timeout=1200)
    assert r.returncode == 0, r.stderr
    assert guest.limactl("shell", NAME, "cat", "marker").stdout == "kept\n"


def test_kill_9_leaves_a_correct_list_and_a_working_start(guest: Host) -> None:
    info = json.loads(guest.limactl("list", "--json", NAME).stdout)
    os.kill(info["hostAgentPID"], signal.SIGKILL)
    os.kill(info["driverPID"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        st = guest.limactl("list", "--format", "{{.Status}}", NAME).stdout.strip()
        if st == "Stopped":
            break
        time.sleep(0.5)
    assert st == "Stopped"
    r = guest.limactl("start", NAME, timeout=1200)
    assert r.returncode == 0, r.stderr
    assert guest.lima("true", env=lima_env()).returncode == 0


def test_stop_force(guest: Host) -> None:
    r = guest.limactl("stop", "-f", NAME)
    assert r.returncode == 0
    info = json.loads(guest.limactl("list", "--json", NAME).stdout)
    assert info["status"] == "Stopped"
    assert not Path(info["dir"], "ha.sock").exists()


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
