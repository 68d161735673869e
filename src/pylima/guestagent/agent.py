#!/usr/bin/env python3
"""lima-guestagent: pylima's guest agent. Runs inside the guest, as root.

It is one stdlib-only file (any guest that runs cloud-init has python3), shipped on
the cidata seed and run by systemd (`lima-guestagent.service`). It speaks JSON lines
with the host agent over one byte stream:

- `daemon`: the virtio-serial port io.lima-vm.guest_agent.0 (the host end is the
  instance's ga.sock);
- `stdio`: standard input/output, for when the guest has no such port (the host agent
  then runs `sudo lima-guestagent stdio` over SSH).

Guest -> host:
  {"op": "snapshot", "ports": [IPPort...], "version": N}  the whole set (after hello)
  {"op": "ports", "added": [IPPort...], "removed": [IPPort...]}
  {"op": "reply", "id": N, ...}                            answer to a request
  with IPPort = {"protocol": "tcp"|"udp", "ip": "127.0.0.1", "port": 8080}.

Host -> guest:
  {"op": "hello"}                                  send a snapshot
  {"op": "sync-time", "id": N, "time": SECONDS}    set the clock when it is off
  {"op": "relay", "id": N, "protocol": P, "bind": IP, "target": IP, "port": N}
      listen on bind:<free port> and relay each connection (TCP) or datagram flow
      (UDP) to target:port; the reply carries the listening port
  {"op": "unrelay", "id": N, "protocol": P, "port": RELAY_PORT}
  {"op": "hosts", "id": N, "hosts": TEXT}
      the members of the instance's user-v2 networks (/etc/hosts lines): they
      replace the block between #PYLIMA-NETWORKS-START/-END in /etc/hosts
  {"op": "inotify", "path": GUEST_PATH, "time": SECONDS}   (no reply)
      mountInotify: a file under a mount changed on the host; its times are set to
      the host's mtime, which is the inotify event the guest's watchers see

Listening sockets are read from /proc/net/{tcp,tcp6,udp,udp6} twice a second: that
is cheap even under emulation, and a forward appears within about half a second of
the guest's listen(). The relays let the host reach sockets bound to the guest's
loopback through QEMU's own port forwarding (which only reaches the guest's network
address), copying with splice(2) so that the bytes stay in the kernel.
"""

import json
import os
import select
import socket
import sys
import threading
import time

VERSION = 1
SESSION = os.urandom(8).hex()  # tells the host that a restarted agent lost its relays
VIRTIO_PORT = "/dev/virtio-ports/io.lima-vm.guest_agent.0"
SCAN_INTERVAL = 0.5
TIME_SYNC_THRESHOLD = 0.1  # seconds, as Lima's guest agent
TCP_LISTEN = "0A"
UDP_UNCONNECTED = "07"
PROC_FILES = (("tcp", "/proc/net/tcp"), ("tcp", "/proc/net/tcp6"),
              ("udp", "/proc/net/udp"), ("udp", "/proc/net/udp6"))


# ---- listening sockets ----

def decode_address(hex_addr):
    """'0100007F:1F90' -> ('127.0.0.1', 8080); IPv6 likewise; IPv4-mapped IPv6
    addresses come back as IPv4."""
    ip_hex, port_hex = hex_addr.split(":")
    raw = b"".join(int(ip_hex[i:i + 8], 16).to_bytes(4, sys.byteorder)
                   for i in range(0, len(ip_hex), 8))
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw)
    elif raw[:12] == b"\0" * 10 + b"\xff\xff":
        ip = socket.inet_ntop(socket.AF_INET, raw[12:])
    else:
        ip = socket.inet_ntop(socket.AF_INET6, raw)
    return ip, int(port_hex, 16)


def parse_proc_net(text, protocol):
    """The listening sockets of one /proc/net/{tcp,udp}[6] file, as a set of
    (protocol, ip, port)."""
    found = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        local, remote, state = fields[1], fields[2], fields[3]
        if protocol == "tcp" and state != TCP_LISTEN:
            continue
        if protocol == "udp":
            if state != UDP_UNCONNECTED or int(remote.split(":")[1], 16) != 0:
                continue
        ip, port = decode_address(local)
        if port:
            found.add((protocol, ip, port))
    return found


def scan(exclude=frozenset()):
    ports = set()
    for protocol, path in PROC_FILES:
        try:
            with open(path) as f:
                ports |= parse_proc_net(f.read(), protocol)
        except OSError:
            continue
    return {p for p in ports if (p[0], p[2]) not in exclude}


def ipport(entry):
    return {"protocol": entry[0], "ip": entry[1], "port": entry[2]}


# ---- relays ----

def _pump(src, dst):
    """Copy src -> dst until EOF, in the kernel where splice(2) is available."""
    try:
        if hasattr(os, "splice"):
            r, w = os.pipe()
            try:
                while True:
                    n = os.splice(src.fileno(), w, 1 << 20)
                    if n == 0:
                        break
                    while n:
                        n -= os.splice(r, dst.fileno(), n)
            finally:
                os.close(r)
                os.close(w)
        else:
            buf = bytearray(1 << 17)
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    break
                dst.sendall(memoryview(buf)[:n])
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class TcpRelay:
    def __init__(self, bind, target, port):
        self.target = (target, port)
        self.sock = socket.socket(_family(bind), socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((bind, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        try:
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class UdpRelay:
    """One upstream socket per client address, so that replies find their way back."""

    def __init__(self, bind, target, port):
        self.target = (target, port)
        self.sock = socket.socket(_family(bind), socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.port = self.sock.getsockname()[1]
        self.flows = {}
        self.closed = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.closed:
            try:
                data, client = self.sock.recvfrom(65535)
            except OSError:
                return
            up = self.flows.get(client)
            if up is None:
                up = socket.socket(_family(self.target[0]), socket.SOCK_DGRAM)
                up.connect(self.target)
                self.flows[client] = up
                threading.Thread(target=self._back, args=(up, client), daemon=True).start()
            try:
                up.send(data)
            except OSError:
                pass

    def _back(self, up, client):
        while not self.closed:
            try:
                data = up.recv(65535)
                self.sock.sendto(data, client)
            except OSError:
                return

    def close(self):
        self.closed = True
        self.sock.close()
        for up in self.flows.values():
            up.close()


# ---- the link to the host ----

class Link:
    """A JSON-lines stream. Writes never block for long: when the host is not there,
    messages are dropped and the next hello gets a fresh snapshot."""

    def __init__(self, rfd, wfd, virtio):
        self.rfd, self.wfd, self.virtio = rfd, wfd, virtio
        self.buf = b""
        self.lock = threading.Lock()
        self.lost = False

    def host_connected(self):
        if not self.virtio:
            return True
        p = select.poll()
        p.register(self.rfd, select.POLLIN)
        return not any(ev & select.POLLHUP for _, ev in p.poll(0))

    def send(self, msg):
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        with self.lock:
            if not self.host_connected():
                self.lost = True
                return
            deadline = time.monotonic() + 2
            while data:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([], [self.wfd], [], left)[1]:
                    self.lost = True
                    return
                try:
                    data = data[os.write(self.wfd, data):]
                except BlockingIOError:
                    continue
                except OSError:
                    self.lost = True
                    return

    def read_lines(self, timeout):
        """Messages that arrive within `timeout` seconds; None at EOF (stdio only)."""
        if self.virtio and not self.host_connected():
            time.sleep(timeout)
            return []
        if not select.select([self.rfd], [], [], timeout)[0]:
            return []
        try:
            chunk = os.read(self.rfd, 65536)
        except BlockingIOError:
            return []
        if not chunk:
            if self.virtio:
                time.sleep(timeout)
                return []
            return None
        self.buf += chunk
        out = []
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict):
                out.append(msg)
        return out


class Agent:
    def __init__(self, link):
        self.link = link
        self.known = set()
        self.relays = {}  # (protocol, port) -> relay

    def own_sockets(self):
        return frozenset(self.relays)

    def handle(self, msg):
        op = msg.get("op")
        reply = {"op": "reply", "id": msg.get("id")}
        if op == "hello":
            self.known = scan(self.own_sockets())
            self.link.lost = False
            self.link.send({"op": "snapshot", "version": VERSION, "session": SESSION,
                            "ports": [ipport(p) for p in sorted(self.known)]})
            return
        if op == "inotify":
            touch(str(msg.get("path") or ""), msg.get("time"))
            return
        if op == "sync-time":
            reply.update(sync_time(float(msg["time"])))
        elif op == "relay":
            try:
                cls = TcpRelay if msg["protocol"] == "tcp" else UdpRelay
                relay = cls(msg["bind"], msg["target"], int(msg["port"]))
                self.relays[(msg["protocol"], relay.port)] = relay
                reply["port"] = relay.port
            except (OSError, KeyError, ValueError) as e:
                reply["error"] = str(e)
        elif op == "hosts":
            try:
                replace_hosts_block(str(msg.get("hosts") or ""))
            except OSError as e:
                reply["error"] = str(e)
        elif op == "unrelay":
            relay = self.relays.pop((msg.get("protocol"), msg.get("port")), None)
            if relay is not None:
                relay.close()
        else:
            reply["error"] = f"unknown op {op!r}"
        self.link.send(reply)

    def rescan(self):
        now = scan(self.own_sockets())
        if self.link.lost:
            return  # the next hello brings the host up to date
        added, removed = now - self.known, self.known - now
        self.known = now
        if added or removed:
            self.link.send({"op": "ports", "added": [ipport(p) for p in sorted(added)],
                            "removed": [ipport(p) for p in sorted(removed)]})

    def run(self):
        if self.link.host_connected():
            self.handle({"op": "hello"})  # a restarted agent announces itself
        next_scan = time.monotonic() + SCAN_INTERVAL
        while True:
            msgs = self.link.read_lines(max(0.0, next_scan - time.monotonic()))
            if msgs is None:
                return 0
            for msg in msgs:
                self.handle(msg)
            if time.monotonic() >= next_scan:
                self.rescan()
                next_scan = time.monotonic() + SCAN_INTERVAL


def touch(path, mtime):
    """Set a path's times (as Lima's agent does: both to the host's mtime); a path
    that is gone, or a bad message, changes nothing."""
    try:
        t = float(mtime)
        if path.startswith("/") and os.path.lexists(path):
            os.utime(path, (t, t))
    except (OSError, TypeError, ValueError) as e:
        print(f"lima-guestagent: inotify {path}: {e}", file=sys.stderr)


HOSTS_FILE = "/etc/hosts"
HOSTS_START = "#PYLIMA-NETWORKS-START"
HOSTS_END = "#PYLIMA-NETWORKS-END"


def hosts_with_block(current, lines):
    """`current` (an /etc/hosts text) with its networks block replaced by `lines`
    (appended when there is none; removed when `lines` is empty)."""
    out, inside = [], False
    for line in current.splitlines():
        if line.strip() == HOSTS_START:
            inside = True
        elif line.strip() == HOSTS_END:
            inside = False
        elif not inside:
            out.append(line)
    body = [x for x in lines.splitlines() if x.strip()]
    if body:
        out += [HOSTS_START, *body, HOSTS_END]
    return "\n".join(out) + "\n"


def replace_hosts_block(lines, path=HOSTS_FILE):
    with open(path) as f:
        current = f.read()
    new = hosts_with_block(current, lines)
    if new == current:
        return
    tmp = f"{path}.pylima-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(new)
    st = os.stat(path)
    os.chmod(tmp, st.st_mode & 0o7777)
    os.replace(tmp, path)


def sync_time(host_time):
    drift = time.time() - host_time
    out = {"adjusted": False, "driftMs": int(drift * 1000), "error": ""}
    if abs(drift) > TIME_SYNC_THRESHOLD:
        try:
            time.clock_settime(time.CLOCK_REALTIME, host_time)
            out["adjusted"] = True
        except OSError as e:
            out["error"] = str(e)
    return out


def main(argv):
    mode = argv[1] if len(argv) > 1 else "daemon"
    if mode == "--version":
        print(f"lima-guestagent (pylima) {VERSION}")
        return 0
    if mode == "stdio":
        link = Link(sys.stdin.fileno(), sys.stdout.fileno(), virtio=False)
    elif mode == "daemon":
        try:
            fd = os.open(VIRTIO_PORT, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            print(f"lima-guestagent: cannot open {VIRTIO_PORT}: {e.strerror}; the host "
                  "agent falls back to running `lima-guestagent stdio` over SSH",
                  file=sys.stderr)
            return 1
        link = Link(fd, fd, virtio=True)
    else:
        print("usage: lima-guestagent [daemon|stdio|--version]", file=sys.stderr)
        return 2
    return Agent(link).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
