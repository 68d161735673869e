"""A raw SFTP v3 client for tests: it speaks the protocol directly over two file
descriptors, the way a hostile guest would, with no sshfs in between.

Standard library only, so that the same file also runs inside a guest.
"""

from __future__ import annotations

import os
import struct


class SFTPError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"status {code}: {message}")
        self.code = code


def _s(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return struct.pack(">I", len(b)) + b


class Client:
    def __init__(self, rfd: int, wfd: int, first_id: int = 1) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.rid = first_id
        self.buf = b""

    def _send(self, ptype: int, payload: bytes) -> None:
        pkt = struct.pack(">IB", len(payload) + 1, ptype) + payload
        while pkt:
            pkt = pkt[os.write(self.wfd, pkt):]

    def _recv(self) -> tuple[int, bytes]:
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    pkt, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
                    return pkt[0], pkt[1:]
            chunk = os.read(self.rfd, 65536)
            if not chunk:
                raise EOFError("the server closed the stream")
            self.buf += chunk

    def init(self) -> int:
        self._send(1, struct.pack(">I", 3))
        ptype, body = self._recv()
        assert ptype == 2, ptype
        return int(struct.unpack(">I", body[:4])[0])

    def request(self, ptype: int, payload: bytes) -> tuple[int, bytes]:
        """Send one request and return the reply for its id (replies for other ids,
        such as those of a stopped sshfs's requests, are skipped)."""
        self.rid += 1
        rid = self.rid
        self._send(ptype, struct.pack(">I", rid) + payload)
        while True:
            rtype, body = self._recv()
            if struct.unpack(">I", body[:4])[0] == rid:
                break
        body = body[4:]
        if rtype == 101:
            code = struct.unpack(">I", body[:4])[0]
            n = struct.unpack(">I", body[4:8])[0]
            if code != 0:
                raise SFTPError(code, body[8:8 + n].decode(errors="replace"))
        return rtype, body

    def _handle(self, body: bytes) -> bytes:
        n = struct.unpack(">I", body[:4])[0]
        return body[4:4 + n]

    def read_file(self, path: str) -> bytes:
        _, body = self.request(3, _s(path) + struct.pack(">II", 1, 0))
        h = self._handle(body)
        out = b""
        try:
            while True:
                try:
                    _, data = self.request(5, _s(h) + struct.pack(">QI", len(out), 32768))
                except SFTPError as e:
                    if e.code == 1:
                        break
                    raise
                n = struct.unpack(">I", data[:4])[0]
                out += data[4:4 + n]
        finally:
            self.request(4, _s(h))
        return out

    def write_file(self, path: str, data: bytes) -> None:
        _, body = self.request(3, _s(path) + struct.pack(">II", 2 | 8 | 16, 0))
        h = self._handle(body)
        try:
            self.request(6, _s(h) + struct.pack(">Q", 0) + _s(data))
        finally:
            self.request(4, _s(h))

    def listdir(self, path: str) -> list[str]:
        _, body = self.request(11, _s(path))
        h = self._handle(body)
        names: list[str] = []
        try:
            while True:
                try:
                    _, data = self.request(12, _s(h))
                except SFTPError as e:
                    if e.code == 1:
                        break
                    raise
                count = struct.unpack(">I", data[:4])[0]
                pos = 4
                for _ in range(count):
                    n = struct.unpack(">I", data[pos:pos + 4])[0]
                    names.append(data[pos + 4:pos + 4 + n].decode())
                    pos += 4 + n
                    n = struct.unpack(">I", data[pos:pos + 4])[0]
                    pos += 4 + n
                    flags = struct.unpack(">I", data[pos:pos + 4])[0]
                    pos += 4 + (8 if flags & 1 else 0) + (8 if flags & 2 else 0) + \
                        (4 if flags & 4 else 0) + (8 if flags & 8 else 0)
        finally:
            self.request(4, _s(h))
        return names

    def stat_size(self, path: str, lstat: bool = False) -> int:
        _, body = self.request(7 if lstat else 17, _s(path))
        return int(struct.unpack(">Q", body[4:12])[0])

    def symlink(self, target: str, link: str) -> None:
        self.request(20, _s(target) + _s(link))

    def rename(self, old: str, new: str) -> None:
        self.request(200, _s("posix-rename@openssh.com") + _s(old) + _s(new))

    def hardlink(self, old: str, new: str) -> None:
        self.request(200, _s("hardlink@openssh.com") + _s(old) + _s(new))

    def remove(self, path: str) -> None:
        self.request(13, _s(path))

    def mkdir(self, path: str) -> None:
        self.request(14, _s(path) + struct.pack(">I", 0))

    def setstat_mode(self, path: str, mode: int) -> None:
        self.request(9, _s(path) + struct.pack(">II", 4, mode))


def escape_attempts(c: Client, secret_abs: str, secret_name: str) -> list[str]:
    """Try every way out of the served directory to the host file `secret_abs` (which
    lies next to the served directory under `secret_name`); return what leaked."""
    leaks: list[str] = []
    paths = [secret_abs, "/../" + secret_name, "../" + secret_name, "../../" + secret_abs,
             "//" + secret_abs, "./../" + secret_name, "/abs-link", "/rel-link",
             "/dir-link/" + secret_name]
    for p in paths:
        for what, fn in (("read", lambda p=p: c.read_file(p)),
                         ("stat", lambda p=p: c.stat_size(p)),
                         ("list", lambda p=p: "\n".join(c.listdir(os.path.dirname(p) or "/")))):
            try:
                got = fn()
            except (SFTPError, OSError):
                continue
            if what == "read" and isinstance(got, bytes) and b"TOPSECRET" in got:
                leaks.append(f"read {p}")
            if what == "list" and isinstance(got, str) and secret_name in got.split("\n"):
                leaks.append(f"list {p}")
    # Links made through the protocol itself, then followed.
    for target in (secret_abs, "../" + secret_name, "../../../../" + secret_abs):
        try:
            c.remove("/made-link")
        except SFTPError:
            pass
        try:
            c.symlink(target, "/made-link")
            if b"TOPSECRET" in c.read_file("/made-link"):
                leaks.append(f"symlink {target}")
        except SFTPError:
            pass
    for how in (lambda: c.hardlink(secret_abs, "/made-hard"),
                lambda: c.hardlink("/../" + secret_name, "/made-hard"),
                lambda: c.rename("/../" + secret_name, "/moved-in")):
        try:
            how()
        except SFTPError:
            continue
        for p in ("/made-hard", "/moved-in"):
            try:
                if b"TOPSECRET" in c.read_file(p):
                    leaks.append(f"link/rename into {p}")
            except SFTPError:
                pass
    # Writing out of the directory.
    for p in ("/../written-outside", "../written-outside", "/rel-link-dir/../written-outside"):
        try:
            c.write_file(p, b"x")
        except SFTPError:
            pass
    return leaks
