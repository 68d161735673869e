"""A one-choice menu on the terminal, in the style of Lima's prompts (survey's
Select): arrows move, typing filters, Enter picks. Without a terminal on stdin, a
numbered list and one line read (a number or the start of a choice)."""

from __future__ import annotations

import os
import sys


class PromptError(Exception):
    """The menu could not be shown or was interrupted (^C, end of input)."""


def select(message: str, options: list[str]) -> int:
    if not sys.stdin.isatty():
        return _select_line(message, options)
    import termios
    import tty

    fd = sys.stdin.fileno()
    out = sys.stdout
    try:
        saved = termios.tcgetattr(fd)
    except termios.error as e:
        raise PromptError(str(e)) from None
    cur, typed, drawn = 0, "", 0

    def shown() -> list[int]:
        return [i for i, o in enumerate(options) if typed.lower() in o.lower()]

    def draw() -> int:
        lines = [f"\x1b[32m?\x1b[0m \x1b[1m{message}\x1b[0m  "
                 f"\x1b[36m[Use arrows to move, type to filter]\x1b[0m{typed}"]
        for i in shown():
            lines.append(f"\x1b[36m> {options[i]}\x1b[0m" if i == cur else f"  {options[i]}")
        up = f"\x1b[{drawn}A" if drawn else ""
        out.write(up + "\r\x1b[J" + "\r\n".join(lines) + "\r\n")
        out.flush()
        return len(lines)

    try:
        tty.setraw(fd)
        drawn = draw()
        buf = b""
        while True:
            chunk = os.read(fd, 32)
            if not chunk:
                raise PromptError("EOF")
            buf += chunk
            while buf:
                if buf.startswith((b"\x1b[A", b"\x1bOA", b"\x1b[B", b"\x1bOB")):
                    vis = shown()
                    if vis:
                        pos = vis.index(cur) if cur in vis else 0
                        pos = (pos + (-1 if buf[2:3] == b"A" else 1)) % len(vis)
                        cur = vis[pos]
                    buf = buf[3:]
                elif buf[:1] == b"\x1b":
                    if len(buf) < 3:
                        break  # the rest of the sequence is still coming
                    buf = buf[3:]
                elif buf[:1] in (b"\r", b"\n"):
                    vis = shown()
                    if vis:
                        choice = cur if cur in vis else vis[0]
                        out.write(f"\x1b[{drawn}A\r\x1b[J\x1b[32m?\x1b[0m \x1b[1m{message}"
                                  f"\x1b[0m \x1b[36m{options[choice]}\x1b[0m\r\n")
                        out.flush()
                        return choice
                    buf = buf[1:]
                elif buf[:1] in (b"\x03", b"\x04"):
                    raise PromptError("interrupt")
                elif buf[:1] in (b"\x7f", b"\x08"):
                    typed, buf = typed[:-1], buf[1:]
                else:
                    ch = buf[:1].decode(errors="ignore")
                    buf = buf[1:]
                    if ch.isprintable():
                        typed += ch
                        vis = shown()
                        if vis and cur not in vis:
                            cur = vis[0]
            drawn = draw()
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _select_line(message: str, options: list[str]) -> int:
    out = sys.stdout
    out.write(f"? {message}\n" + "".join(f"  {i + 1}) {o}\n" for i, o in enumerate(options))
              + "Answer: ")
    out.flush()
    line = sys.stdin.readline()
    if not line:
        raise PromptError("EOF")
    ans = line.strip().lower()
    if ans.isdigit() and 1 <= int(ans) <= len(options):
        return int(ans) - 1
    for i, o in enumerate(options):
        if ans and o.lower().startswith(ans):
            return i
    raise PromptError(f"invalid answer {line.strip()!r}")
