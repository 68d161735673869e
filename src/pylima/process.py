"""The one subprocess wrapper: argument lists only, stdin closed by default,
the command logged at debug level, failures raised as CommandError."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pylima.errors import CommandError, LimaError

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)


def run(argv: Sequence[str], *, input: bytes | str | None = None, check: bool = True,
        capture: bool = True, env: Mapping[str, str] | None = None,
        cwd: str | None = None, timeout: float | None = None,
        hint: str | None = None,
        on_line: Callable[[str], None] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `argv` and return its result with text stdout/stderr.

    stdin is /dev/null unless `input` is given. With `check`, a non-zero exit raises
    CommandError carrying argv, the exit code and the tail of stderr.

    With `on_line`, stdout and stderr are merged and handed over line by line while
    the command runs (for progress of long commands); the result's `stdout` is empty
    and its `stderr` holds the last lines, so errors still carry a useful tail. The
    command then runs in its own process group: if the caller is interrupted, it gets
    SIGTERM (up to 10 s to clean up), then its whole group is killed.
    """
    argv = [str(a) for a in argv]
    log.debug("running %s", shlex.join(argv))
    if on_line is not None:
        return _run_streaming(argv, input=input, check=check, env=env, cwd=cwd,
                              timeout=timeout, hint=hint, on_line=on_line)
    if isinstance(input, bytes):
        input = input.decode()
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            text=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as e:
        raise LimaError(f"command {argv[0]!r} not found", hint=hint) from e
    except subprocess.TimeoutExpired as e:
        raise LimaError(f"command {argv[0]!r} timed out after {timeout} s", hint=hint) from e
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, proc.stderr or "", hint=hint)
    return proc


def _run_streaming(argv: list[str], *, input: bytes | str | None, check: bool,
                   env: Mapping[str, str] | None, cwd: str | None,
                   timeout: float | None, hint: str | None,
                   on_line: Callable[[str], None]) -> subprocess.CompletedProcess[str]:
    import threading

    if isinstance(input, bytes):
        input = input.decode()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=dict(env) if env is not None else None,
            cwd=cwd,
            # Its own process group, so that an interruption can reap every child.
            start_new_session=True,
        )
    except FileNotFoundError as e:
        raise LimaError(f"command {argv[0]!r} not found", hint=hint) from e
    if input is not None:
        assert proc.stdin is not None
        proc.stdin.write(input)
        proc.stdin.close()
    # A timer enforces the timeout while the reader blocks on the pipe.
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, _kill) if timeout is not None else None
    if timer is not None:
        timer.start()
    tail: deque[str] = deque(maxlen=50)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            on_line(line)
        proc.wait()
    except BaseException:
        # SIGTERM to the command first: tools such as mmdebstrap clean up (unmount)
        # on it. Then nothing of its process group may outlive it (a child still
        # writing files would race the caller's cleanup).
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if timed_out.is_set():
        raise LimaError(f"command {argv[0]!r} timed out after {timeout} s", hint=hint)
    out = "\n".join(tail)
    if check and proc.returncode != 0:
        raise CommandError(argv, proc.returncode, out, hint=hint)
    return subprocess.CompletedProcess(argv, proc.returncode, "", out)


def which(name: str) -> str | None:
    return shutil.which(name)


# ---- children that must not outlive their owner ----

_PR_SET_PDEATHSIG = 1
_libc_prctl = None
# The umask the owner's children get (the user's own, saved by an owner that narrows
# its own umask): QEMU's 9p and virtiofsd create files for the guest with it.
child_umask: int | None = None


def _prctl() -> object:
    global _libc_prctl
    if _libc_prctl is None:
        import ctypes

        _libc_prctl = ctypes.CDLL(None, use_errno=True).prctl
    return _libc_prctl


def die_with_parent() -> Callable[[], None]:
    """A `preexec_fn` for children of a long-lived owner (the host agent): the kernel
    kills the child with SIGKILL when the thread that spawned it exits, kill -9
    included (PR_SET_PDEATHSIG). Spawn from the owner's main thread (asyncio's
    subprocesses are), since the signal follows the spawning thread, and never let the
    child daemonise (`ssh -f`), which would leave it with another parent. A child whose
    owner died before the signal was set exits at once."""
    prctl = _prctl()  # loaded before fork: the child only calls it
    owner = os.getpid()
    umask = child_umask

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # type: ignore[operator]
        if os.getppid() != owner:
            os._exit(1)
        if umask is not None:
            os.umask(umask)

    return preexec


async def spawn_owned(program: str, *args: str, **kwargs: Any) -> asyncio.subprocess.Process:
    """`asyncio.create_subprocess_exec` for a child that dies with its owner (see
    `die_with_parent`)."""
    import asyncio

    kwargs.setdefault("preexec_fn", die_with_parent())
    return await asyncio.create_subprocess_exec(program, *args, **kwargs)


async def kill_and_reap(proc: asyncio.subprocess.Process | None) -> None:
    """SIGKILL `proc` if it still runs, and wait for it (no zombie, no stray
    transport).

    asyncio's `wait()` returns once the process has exited *and* every pipe to it has
    closed. A multiplexed ssh client hands its stdio to the SSH master, which keeps
    them, and the remote command with them, until that command ends: a killed client's
    `wait()` would last as long as the remote command does (forever for a `journalctl
    -f`, or for a command that hangs). So once the process itself has exited, this side
    of its pipes is closed: the master's next write to them fails and ends the session."""
    import asyncio

    if proc is None:
        return
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while not waiter.done():
            if proc.returncode is not None:  # exited; only its pipes are held elsewhere
                transport = getattr(proc, "_transport", None)
                for fd in (0, 1, 2):
                    pipe = transport.get_pipe_transport(fd) if transport else None
                    if pipe is not None:
                        pipe.close()
                break
            await asyncio.wait({waiter}, timeout=0.05)
        await waiter
    finally:
        waiter.cancel()


async def run_owned(argv: Sequence[str], *, input: bytes | None = None,
                    timeout: float = 30.0) -> tuple[int, bytes, bytes]:
    """Run `argv` as a child that dies with its owner; (status, stdout, stderr). A
    timeout gives status 255 and stderr b"timeout"; on timeout or cancellation the
    child is killed and reaped, never left behind."""
    import asyncio

    proc = await spawn_owned(
        *argv, stdin=asyncio.subprocess.PIPE if input is not None
        else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except BaseException as e:
        await asyncio.shield(kill_and_reap(proc))
        if isinstance(e, TimeoutError):
            return 255, b"", b"timeout"
        raise
    return proc.returncode or 0, out, err
