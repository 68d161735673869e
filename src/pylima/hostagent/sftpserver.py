"""pylima's host-side SFTP service for reverse-sshfs mounts, confined to one directory.

Lima serves reverse-sshfs mounts with OpenSSH's `sftp-server`, which answers for the
whole host file system: whoever speaks SFTP on the guest's end of the SSH channel (a
root guest can) reads any host file the host user can. This server answers for one
directory only. Every path a client sends is resolved with openat2(2) and
RESOLVE_IN_ROOT, so `..`, absolute paths and symbolic links (absolute or relative)
all stay inside the directory, the way a chroot would keep them; operations on a
last component (lstat, remove, rename, readlink, ...) act on that name inside a
parent directory opened the same way. A read-only mount refuses every change here
too, not only in the guest's sshfs.

Protocol: SFTP version 3 (draft-ietf-secsh-filexfer-02) with the OpenSSH extensions
sshfs uses (posix-rename, statvfs, fstatvfs, hardlink, fsync). Run as
`python -m pylima.hostagent.sftpserver DIR [--read-only] [--owner UID:GID]` with the
SFTP stream on stdin/stdout.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import platform
import posixpath
import stat
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

SFTP_VERSION = 3

# packet types
FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE = 1, 2, 3, 4, 5, 6
FXP_LSTAT, FXP_FSTAT, FXP_SETSTAT, FXP_FSETSTAT, FXP_OPENDIR, FXP_READDIR = 7, 8, 9, 10, 11, 12
FXP_REMOVE, FXP_MKDIR, FXP_RMDIR, FXP_REALPATH, FXP_STAT, FXP_RENAME = 13, 14, 15, 16, 17, 18
FXP_READLINK, FXP_SYMLINK = 19, 20
FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_NAME, FXP_ATTRS = 101, 102, 103, 104, 105
FXP_EXTENDED, FXP_EXTENDED_REPLY = 200, 201

# status codes
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED, FX_FAILURE = 0, 1, 2, 3, 4
FX_BAD_MESSAGE, FX_OP_UNSUPPORTED = 5, 8

# attribute flags
ATTR_SIZE, ATTR_UIDGID, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x1, 0x2, 0x4, 0x8
ATTR_EXTENDED = 0x80000000

# open flags
FXF_READ, FXF_WRITE, FXF_APPEND, FXF_CREAT, FXF_TRUNC, FXF_EXCL = 1, 2, 4, 8, 0x10, 0x20

EXTENSIONS = (("posix-rename@openssh.com", "1"), ("statvfs@openssh.com", "2"),
              ("fstatvfs@openssh.com", "2"), ("hardlink@openssh.com", "1"),
              ("fsync@openssh.com", "1"))

MAX_PACKET = 256 * 1024
MAX_READ = 255 * 1024
READDIR_BATCH = 128

# openat2(2): the same number on every Linux architecture.
_SYS_OPENAT2 = 437
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2_in_root(root_fd: int, path: str, flags: int, mode: int = 0) -> int:
    """open(2) `path` as if `root_fd` were the root directory: no component, `..` or
    symbolic link can leave it."""
    # openat2 refuses a mode without O_CREAT.
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                   RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(root_fd),
                       ctypes.c_char_p(os.fsencode(path)), ctypes.byref(how),
                       ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return int(fd)


def openat2_supported() -> bool:
    if platform.system() != "Linux":
        return False
    try:
        fd = openat2_in_root(os.open("/", os.O_PATH), ".", os.O_PATH | os.O_DIRECTORY)
    except OSError:
        return False
    os.close(fd)
    return True


class Refused(Exception):
    """A request the server answers with a status other than an errno's."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise Refused(FX_BAD_MESSAGE, "truncated packet")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self) -> int:
        return int(struct.unpack(">I", self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack(">Q", self._take(8))[0])

    def bytes_(self) -> bytes:
        return self._take(self.u32())

    def str_(self) -> str:
        return os.fsdecode(self.bytes_())

    def attrs(self) -> dict[str, Any]:
        flags = self.u32()
        a: dict[str, Any] = {}
        if flags & ATTR_SIZE:
            a["size"] = self.u64()
        if flags & ATTR_UIDGID:
            a["uid"], a["gid"] = self.u32(), self.u32()
        if flags & ATTR_PERMISSIONS:
            a["mode"] = self.u32()
        if flags & ATTR_ACMODTIME:
            a["atime"], a["mtime"] = self.u32(), self.u32()
        if flags & ATTR_EXTENDED:
            for _ in range(self.u32()):
                self.bytes_()
                self.bytes_()
        return a


def _s(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = os.fsencode(b)
    return struct.pack(">I", len(b)) + b


@dataclass
class _Handle:
    fd: int
    is_dir: bool = False
    entries: Iterator[str] | None = None
    path: str = ""


@dataclass
class Server:
    root: str
    read_only: bool = False
    # Reported owner of files owned by the server's own user (uid, gid), or None.
    owner: tuple[int, int] | None = None
    handles: dict[bytes, _Handle] = field(default_factory=dict)
    next_handle: int = 0

    def __post_init__(self) -> None:
        self.root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.my_ids = (os.geteuid(), os.getegid())

    # ---- paths ----

    @staticmethod
    def _rel(path: str) -> str:
        """The client's path, relative to the root ("." for the root itself)."""
        return posixpath.normpath("/" + path).lstrip("/") or "."

    def _open(self, path: str, flags: int, mode: int = 0) -> int:
        return openat2_in_root(self.root_fd, self._rel(path), flags, mode)

    def _parent(self, path: str) -> tuple[int, str]:
        """An O_PATH fd of the parent directory and the last component."""
        rel = self._rel(path)
        if rel == ".":
            raise Refused(FX_PERMISSION_DENIED, "the root of the mount")
        parent, name = posixpath.split(rel)
        return openat2_in_root(self.root_fd, parent or ".", os.O_PATH | os.O_DIRECTORY), name

    # ---- encoding ----

    def _attrs(self, st: os.stat_result) -> bytes:
        uid, gid = st.st_uid, st.st_gid
        if self.owner is not None:
            if uid == self.my_ids[0]:
                uid = self.owner[0]
            if gid == self.my_ids[1]:
                gid = self.owner[1]
        return struct.pack(">IQIIIII", ATTR_SIZE | ATTR_UIDGID | ATTR_PERMISSIONS
                           | ATTR_ACMODTIME, st.st_size, uid, gid, st.st_mode,
                           int(st.st_atime) & 0xFFFFFFFF, int(st.st_mtime) & 0xFFFFFFFF)

    @staticmethod
    def _longname(name: str, st: os.stat_result) -> str:
        when = time.strftime("%b %d %H:%M", time.localtime(st.st_mtime))
        return (f"{stat.filemode(st.st_mode)} {st.st_nlink:3d} {st.st_uid:<8d} "
                f"{st.st_gid:<8d} {st.st_size:8d} {when} {name}")

    @staticmethod
    def _status(rid: int, code: int, msg: str = "") -> bytes:
        return struct.pack(">BII", FXP_STATUS, rid, code) + _s(msg) + _s("")

    def _new_handle(self, h: _Handle) -> bytes:
        self.next_handle += 1
        key = str(self.next_handle).encode()
        self.handles[key] = h
        return key

    def _handle(self, r: Reader) -> _Handle:
        h = self.handles.get(r.bytes_())
        if h is None:
            raise Refused(FX_FAILURE, "invalid handle")
        return h

    def _writable(self) -> None:
        if self.read_only:
            raise Refused(FX_PERMISSION_DENIED, "read-only mount")

    # ---- requests ----

    def handle_packet(self, data: bytes) -> bytes:
        ptype = data[0]
        r = Reader(data[1:])
        if ptype == FXP_INIT:
            out = struct.pack(">BI", FXP_VERSION, SFTP_VERSION)
            for name, value in EXTENSIONS:
                out += _s(name) + _s(value)
            return out
        rid = r.u32()
        try:
            return self._dispatch(ptype, rid, r)
        except Refused as e:
            return self._status(rid, e.code, str(e))
        except OSError as e:
            code = {errno.ENOENT: FX_NO_SUCH_FILE, errno.EACCES: FX_PERMISSION_DENIED,
                    errno.EPERM: FX_PERMISSION_DENIED, errno.EROFS: FX_PERMISSION_DENIED,
                    errno.EXDEV: FX_PERMISSION_DENIED}.get(e.errno or 0, FX_FAILURE)
            return self._status(rid, code, e.strerror or "failure")

    def _dispatch(self, ptype: int, rid: int, r: Reader) -> bytes:
        ok = self._status(rid, FX_OK, "Success")
        if ptype == FXP_OPEN:
            path, pflags, a = r.str_(), r.u32(), r.attrs()
            if pflags & FXF_WRITE and pflags & FXF_READ:
                flags = os.O_RDWR
            elif pflags & FXF_WRITE:
                flags = os.O_WRONLY
            else:
                flags = os.O_RDONLY
            if pflags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC):
                self._writable()
            if pflags & FXF_APPEND:
                flags |= os.O_APPEND
            if pflags & FXF_CREAT:
                flags |= os.O_CREAT
            if pflags & FXF_TRUNC:
                flags |= os.O_TRUNC
            if pflags & FXF_EXCL:
                flags |= os.O_EXCL
            # O_NONBLOCK: opening a FIFO in the mount must not stall the whole server.
            fd = self._open(path, flags | os.O_NONBLOCK, a.get("mode", 0o666) & 0o7777)
            return struct.pack(">BI", FXP_HANDLE, rid) + _s(self._new_handle(_Handle(fd)))
        if ptype == FXP_CLOSE:
            key = r.bytes_()
            h = self.handles.pop(key, None)
            if h is None:
                raise Refused(FX_FAILURE, "invalid handle")
            os.close(h.fd)
            return ok
        if ptype == FXP_READ:
            h = self._handle(r)
            offset, length = r.u64(), r.u32()
            data = os.pread(h.fd, min(length, MAX_READ), offset)
            if not data:
                return self._status(rid, FX_EOF, "End of file")
            return struct.pack(">BI", FXP_DATA, rid) + _s(data)
        if ptype == FXP_WRITE:
            h = self._handle(r)
            offset, data = r.u64(), r.bytes_()
            self._writable()
            view = memoryview(data)
            while view:
                n = os.pwrite(h.fd, view, offset)
                view, offset = view[n:], offset + n
            return ok
        if ptype in (FXP_LSTAT, FXP_STAT):
            path = r.str_()
            if ptype == FXP_STAT or self._rel(path) == ".":
                fd = self._open(path, os.O_PATH)
                try:
                    st = os.fstat(fd)
                finally:
                    os.close(fd)
            else:
                pfd, name = self._parent(path)
                try:
                    st = os.lstat(name, dir_fd=pfd)
                finally:
                    os.close(pfd)
            return struct.pack(">BI", FXP_ATTRS, rid) + self._attrs(st)
        if ptype == FXP_FSTAT:
            h = self._handle(r)
            return struct.pack(">BI", FXP_ATTRS, rid) + self._attrs(os.fstat(h.fd))
        if ptype == FXP_SETSTAT:
            path, a = r.str_(), r.attrs()
            self._writable()
            fd = self._open(path, os.O_PATH)
            try:
                self._setstat(fd, a)
            finally:
                os.close(fd)
            return ok
        if ptype == FXP_FSETSTAT:
            h, a = self._handle(r), r.attrs()
            self._writable()
            self._setstat(h.fd, a)
            return ok
        if ptype == FXP_OPENDIR:
            path = r.str_()
            fd = self._open(path, os.O_RDONLY | os.O_DIRECTORY)
            entries = iter([".", "..", *sorted(os.listdir(fd))])
            key = self._new_handle(_Handle(fd, True, entries, path))
            return struct.pack(">BI", FXP_HANDLE, rid) + _s(key)
        if ptype == FXP_READDIR:
            h = self._handle(r)
            if not h.is_dir or h.entries is None:
                raise Refused(FX_FAILURE, "not a directory handle")
            items = []
            for name in h.entries:
                try:
                    st = os.fstat(h.fd) if name in (".", "..") else \
                        os.lstat(name, dir_fd=h.fd)
                except OSError:
                    continue  # removed since the listing
                items.append(_s(name) + _s(self._longname(name, st)) + self._attrs(st))
                if len(items) >= READDIR_BATCH:
                    break
            if not items:
                return self._status(rid, FX_EOF, "End of file")
            return struct.pack(">BII", FXP_NAME, rid, len(items)) + b"".join(items)
        if ptype == FXP_REMOVE:
            path = r.str_()
            self._writable()
            pfd, name = self._parent(path)
            try:
                os.unlink(name, dir_fd=pfd)
            finally:
                os.close(pfd)
            return ok
        if ptype == FXP_MKDIR:
            path, a = r.str_(), r.attrs()
            self._writable()
            pfd, name = self._parent(path)
            try:
                os.mkdir(name, a.get("mode", 0o777) & 0o7777, dir_fd=pfd)
            finally:
                os.close(pfd)
            return ok
        if ptype == FXP_RMDIR:
            path = r.str_()
            self._writable()
            pfd, name = self._parent(path)
            try:
                os.rmdir(name, dir_fd=pfd)
            finally:
                os.close(pfd)
            return ok
        if ptype == FXP_REALPATH:
            path = r.str_()
            norm = posixpath.normpath("/" + (path or "."))
            entry = _s(norm) + _s(norm) + struct.pack(">I", 0)
            return struct.pack(">BII", FXP_NAME, rid, 1) + entry
        if ptype in (FXP_RENAME,):
            old, new = r.str_(), r.str_()
            self._writable()
            return self._rename(rid, old, new, overwrite=False)
        if ptype == FXP_READLINK:
            path = r.str_()
            pfd, name = self._parent(path)
            try:
                target = os.readlink(name, dir_fd=pfd)
            finally:
                os.close(pfd)
            entry = _s(target) + _s(target) + struct.pack(">I", 0)
            return struct.pack(">BII", FXP_NAME, rid, 1) + entry
        if ptype == FXP_SYMLINK:
            # OpenSSH's order (which sshfs follows): the target first, then the link.
            target, link = r.str_(), r.str_()
            self._writable()
            pfd, name = self._parent(link)
            try:
                os.symlink(target, name, dir_fd=pfd)
            finally:
                os.close(pfd)
            return ok
        if ptype == FXP_EXTENDED:
            return self._extended(rid, r.str_(), r)
        raise Refused(FX_OP_UNSUPPORTED, f"unsupported request {ptype}")

    def _rename(self, rid: int, old: str, new: str, *, overwrite: bool) -> bytes:
        ofd, oname = self._parent(old)
        try:
            nfd, nname = self._parent(new)
            try:
                if not overwrite:
                    try:
                        os.lstat(nname, dir_fd=nfd)
                        raise Refused(FX_FAILURE, "target exists")
                    except FileNotFoundError:
                        pass
                os.rename(oname, nname, src_dir_fd=ofd, dst_dir_fd=nfd)
            finally:
                os.close(nfd)
        finally:
            os.close(ofd)
        return self._status(rid, FX_OK, "Success")

    def _setstat(self, fd: int, a: dict[str, Any]) -> None:
        # An O_PATH descriptor names the inode; /proc/self/fd/N reaches it for the calls
        # that take no descriptor of that kind (the path never leaves this process).
        target = f"/proc/self/fd/{fd}"
        if "size" in a:
            wfd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(wfd, a["size"])
            finally:
                os.close(wfd)
        if "mode" in a:
            os.chmod(target, a["mode"] & 0o7777)
        if "uid" in a:
            uid, gid = a["uid"], a["gid"]
            if self.owner is not None:
                uid = self.my_ids[0] if uid == self.owner[0] else uid
                gid = self.my_ids[1] if gid == self.owner[1] else gid
            os.chown(target, uid, gid)
        if "mtime" in a:
            os.utime(target, (a["atime"], a["mtime"]))

    def _extended(self, rid: int, name: str, r: Reader) -> bytes:
        if name == "posix-rename@openssh.com":
            old, new = r.str_(), r.str_()
            self._writable()
            return self._rename(rid, old, new, overwrite=True)
        if name in ("statvfs@openssh.com", "fstatvfs@openssh.com"):
            if name.startswith("f"):
                fd, own = self._handle(r).fd, False
            else:
                fd, own = self._open(r.str_(), os.O_PATH), True
            try:
                v = os.fstatvfs(fd)
            finally:
                if own:
                    os.close(fd)
            flag = (1 if self.read_only or v.f_flag & os.ST_RDONLY else 0) | \
                (2 if v.f_flag & os.ST_NOSUID else 0)
            return struct.pack(">BI11Q", FXP_EXTENDED_REPLY, rid, v.f_bsize, v.f_frsize,
                               v.f_blocks, v.f_bfree, v.f_bavail, v.f_files, v.f_ffree,
                               v.f_favail, v.f_fsid & 0xFFFFFFFFFFFFFFFF, flag, v.f_namemax)
        if name == "hardlink@openssh.com":
            old, new = r.str_(), r.str_()
            self._writable()
            ofd, oname = self._parent(old)
            try:
                nfd, nname = self._parent(new)
                try:
                    os.link(oname, nname, src_dir_fd=ofd, dst_dir_fd=nfd,
                            follow_symlinks=False)
                finally:
                    os.close(nfd)
            finally:
                os.close(ofd)
            return self._status(rid, FX_OK, "Success")
        if name == "fsync@openssh.com":
            os.fsync(self._handle(r).fd)
            return self._status(rid, FX_OK, "Success")
        raise Refused(FX_OP_UNSUPPORTED, f"unsupported extension {name}")

    # ---- the stream ----

    def serve(self, rfd: int, wfd: int) -> None:
        buf = bytearray()

        def need(n: int) -> bool:
            while len(buf) < n:
                chunk = os.read(rfd, 1 << 20)
                if not chunk:
                    return False
                buf.extend(chunk)
            return True

        while need(4):
            length = struct.unpack(">I", buf[:4])[0]
            if length < 1 or length > MAX_PACKET:
                raise Refused(FX_BAD_MESSAGE, f"bad packet length {length}")
            if not need(4 + length):
                return
            data = bytes(buf[4:4 + length])
            del buf[:4 + length]
            try:
                reply = self.handle_packet(data)
            except Refused:
                reply = b""
            if reply:
                view = memoryview(struct.pack(">I", len(reply)) + reply)
                while view:
                    view = view[os.write(wfd, view):]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="pylima-sftp-server",
                                description="An SFTP server confined to one directory.")
    p.add_argument("root")
    p.add_argument("--read-only", action="store_true")
    p.add_argument("--owner", help="UID:GID to report for the server user's own files")
    args = p.parse_args(argv)
    owner = None
    if args.owner:
        u, _, g = args.owner.partition(":")
        owner = (int(u), int(g or u))
    try:
        server = Server(args.root, read_only=args.read_only, owner=owner)
    except OSError as e:
        print(f"pylima-sftp-server: {args.root}: {e.strerror}", file=sys.stderr)
        return 1
    if not openat2_supported():
        print("pylima-sftp-server: openat2(2) with RESOLVE_IN_ROOT is required (Linux 5.6 "
              "or later)", file=sys.stderr)
        return 1
    try:
        server.serve(sys.stdin.fileno(), sys.stdout.fileno())
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass
    except Refused as e:
        print(f"pylima-sftp-server: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
