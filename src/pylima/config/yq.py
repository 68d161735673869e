"""yq expressions (`--set`, `limactl yq`, `list --yq/--filter`, provisioning `mode: yq`)
on a real jq engine.

Lima embeds mikefarah yq (v4). The `jq` package binds libjq; the expressions Lima's
docs and users write (`.cpus = 2`, `.mounts[0].writable = true`, `select(...)`,
`.images |= ...`) mean the same in both. `translate` bridges what differs:

- `==` and `!=` compare scalars by their text, as yq does (`.disk == "1048576"` holds
  for the number 1048576);
- yq's `env(NAME)`, `strenv(NAME)`, `envsubst`, `load("file")`, `load_str("file")`,
  `load_base64("file")`, `upcase`, `downcase`, `to_json`, `from_json`;
- Lima's restrictions: in every embedded evaluation environment and file operations
  are refused with yq's messages (jq's own `env`, `$ENV`, `include` and `import` too),
  so that a template's `--set` or a `list --yq` cannot read the host's secrets; only
  `limactl yq` (yq's own command line) allows them. `system` is refused, as yq does
  by default.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pylima.errors import ConfigError

ENV_DISABLED = "env operations have been disabled"
FILE_DISABLED = "file operations have been disabled"
SYSTEM_DISABLED = "system operations are disabled, use --security-enable-system-operator to enable"


@dataclass(frozen=True)
class Security:
    """What an expression may reach: the environment and a file reader, given by the
    caller (`limactl yq` alone gives them; the core does no I/O of its own)."""
    environ: Mapping[str, str] | None = None
    read_file: Callable[[str], bytes] | None = None

    @property
    def env_ops(self) -> bool:
        return self.environ is not None

    @property
    def file_ops(self) -> bool:
        return self.read_file is not None


RESTRICTED = Security()


class YqError(ConfigError):
    """An expression yq would refuse, with yq's message."""


# ---------------------------------------------------------------------------------
# lexing: just enough of jq's lexical grammar to find names, operators and brackets
# (strings and their `\(...)` interpolations included) with their source offsets

@dataclass
class Tok:
    kind: str  # ident, var, field, str, num, format, op, open, close, interp_open, interp_mid
    text: str
    start: int
    end: int


_OPS = ("?//=", "?//", "//=", "|=", "+=", "-=", "*=", "/=", "%=", "==", "!=", "<=", ">=",
        "//", "..", "|", ",", "+", "-", "*", "/", "%", "=", "<", ">", ":", ";", "?", ".")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*")
_NUM = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WS = re.compile(r"(?:\s+|#[^\n]*)+")


def tokenize(src: str) -> list[Tok]:
    toks: list[Tok] = []
    interp: list[int] = []  # paren depth inside each open `\(`
    i, n = 0, len(src)

    def string(start: int, opener: str) -> int:
        """Scan a string body from `start` (after `"` or after the `)` closing an
        interpolation); emit its token, return the offset after it."""
        j = start
        while j < n:
            c = src[j]
            if c == "\\" and j + 1 < n:
                if src[j + 1] == "(":
                    kind = "interp_open" if opener == '"' else "interp_mid"
                    toks.append(Tok(kind, src[tok_start[0]:j + 2], tok_start[0], j + 2))
                    interp.append(0)
                    return j + 2
                j += 2
                continue
            if c == '"':
                kind = "str" if opener == '"' else "interp_close"
                toks.append(Tok(kind, src[tok_start[0]:j + 1], tok_start[0], j + 1))
                return j + 1
            j += 1
        raise YqError("bad expression, unterminated string")

    tok_start = [0]
    while i < n:
        m = _WS.match(src, i)
        if m:
            i = m.end()
            continue
        c = src[i]
        tok_start[0] = i
        if c == '"':
            i = string(i + 1, '"')
        elif c == ")" and interp and interp[-1] == 0:
            interp.pop()
            i = string(i + 1, ")")
        elif c in "([{":
            if interp and c == "(":
                interp[-1] += 1
            toks.append(Tok("open", c, i, i + 1))
            i += 1
        elif c in ")]}":
            if interp and c == ")":
                interp[-1] -= 1
            toks.append(Tok("close", c, i, i + 1))
            i += 1
        elif c == "$":
            m = _IDENT.match(src, i + 1)
            if not m:
                raise YqError(f"bad expression, invalid input text {src[i:i + 10]!r}")
            toks.append(Tok("var", src[i:m.end()], i, m.end()))
            i = m.end()
        elif c == "@":
            m = _IDENT.match(src, i + 1)
            end = m.end() if m else i + 1
            toks.append(Tok("format", src[i:end], i, end))
            i = end
        elif c == "." and _IDENT.match(src, i + 1):
            m = _IDENT.match(src, i + 1)
            assert m
            toks.append(Tok("field", src[i:m.end()], i, m.end()))
            i = m.end()
        elif (m := _NUM.match(src, i)) and (c.isdigit() or src[i + 1:i + 2].isdigit()):
            toks.append(Tok("num", m.group(), i, m.end()))
            i = m.end()
        elif (m := _IDENT.match(src, i)):
            toks.append(Tok("ident", m.group(), i, m.end()))
            i = m.end()
        else:
            for op in _OPS:
                if src.startswith(op, i):
                    toks.append(Tok("op", op, i, i + len(op)))
                    i += len(op)
                    break
            else:
                raise YqError(f"bad expression, invalid input text {src[i:i + 10]!r}")
    return toks


_OPENERS = ("open", "interp_open")
_CLOSERS = ("close", "interp_close")


# ---------------------------------------------------------------------------------
# translation

_ENV_FUNCS = ("env", "strenv")
_LOAD_FUNCS = ("load", "load_str", "load_base64")
_UNSUPPORTED = ("load_xml", "load_props", "load_toml", "system")

# a comparison's operands reach no further than these (jq's lower-precedence operators,
# separators and keywords)
_BOUNDARY_OPS = {"|", ",", "//", "?//", "=", "|=", "+=", "-=", "*=", "/=", "%=", "//=",
                 "?//=", ";", ":"}
_BOUNDARY_WORDS = {"or", "and", "if", "then", "elif", "else", "end", "as", "reduce",
                   "foreach", "try", "catch", "label", "def", "import", "include"}

_PRELUDE = {
    "_yq_eq": 'def _yq_s: if type == "number" or type == "boolean" then tostring else . end; '
              "def _yq_eq(a; b): (a | _yq_s) as $l | (b | _yq_s) as $r | $l == $r; ",
    "upcase": "def upcase: ascii_upcase; ",
    "downcase": "def downcase: ascii_downcase; ",
    "to_json": "def to_json: tojson; ",
    "from_json": "def from_json: fromjson; ",
    "envsubst": 'def envsubst: gsub("\\\\$\\\\{(?<a>[A-Za-z_][A-Za-z0-9_]*)\\\\}|'
                '\\\\$(?<b>[A-Za-z_][A-Za-z0-9_]*)"; $__yq_env[.a // .b] // ""); ',
    "env": "def env: $__yq_env; ",
}


def _is_key(toks: list[Tok], k: int, stack: list[str]) -> bool:
    """Is the name at `k` an object key (`{env: 1}`, `{env}`), not a call?"""
    if not stack or stack[-1] != "{":
        return False
    prev = toks[k - 1] if k else None
    return prev is not None and prev.text in ("{", ",")


def _arg(toks: list[Tok], k: int) -> Tok | None:
    """The single name or plain string argument of a call at `k`: `f(NAME)`, `f("x")`."""
    if len(toks) < k + 4:
        return None
    o, a, c = toks[k + 1], toks[k + 2], toks[k + 3]
    if o.text == "(" and c.text == ")" and a.kind in ("ident", "str"):
        return a
    return None


def _string_value(tok: Tok) -> str:
    import json

    try:
        return str(json.loads(tok.text))
    except ValueError as e:
        raise YqError(f"bad expression, invalid string {tok.text}") from e


def _functions(src: str, sec: Security, args: dict[str, Any], used: set[str]) -> str:
    """Rewrite yq's environment and file functions into jq variables bound in `args`;
    refuse what `sec` disables."""
    toks = tokenize(src)
    edits: list[tuple[int, int, str]] = []
    stack: list[str] = []
    for k, t in enumerate(toks):
        if t.kind in _OPENERS:
            stack.append(t.text[-1] if t.kind == "open" else "(")
            continue
        if t.kind in _CLOSERS:
            if stack:
                stack.pop()
            continue
        if t.kind == "interp_mid":
            continue
        if t.kind == "var" and t.text == "$ENV":
            if not sec.env_ops:
                raise YqError(ENV_DISABLED)
            used.add("env")
            edits.append((t.start, t.end, "$__yq_env"))
        if t.kind != "ident" or _is_key(toks, k, stack):
            continue
        if k and toks[k - 1].text == "def":
            continue
        call = k + 1 < len(toks) and toks[k + 1].text == "("
        name = t.text
        if name in _ENV_FUNCS or name == "envsubst":
            if not sec.env_ops:
                raise YqError(ENV_DISABLED)
            if name == "envsubst" or not call:  # jq's own `env` object
                used.update(("env", name))
                continue
            a = _arg(toks, k)
            if a is None:
                raise YqError(f"bad expression, {name}() takes a variable name, "
                              f"as in {name}(HOME)")
            var = a.text if a.kind == "ident" else _string_value(a)
            assert sec.environ is not None
            raw = sec.environ.get(var, "")
            if name == "strenv":
                value: Any = raw
            else:
                if raw == "":
                    raise YqError(f"value for env variable '{var}' not provided in env()")
                import yaml

                value = yaml.safe_load(raw)
            key = f"__yq_{len(args)}"
            args[key] = value
            edits.append((t.start, toks[k + 3].end, f"${key}"))
        elif name in _LOAD_FUNCS or name in ("include", "import"):
            if not sec.file_ops:
                raise YqError(FILE_DISABLED)
            if name in ("include", "import"):
                continue
            a = _arg(toks, k)
            if a is None or a.kind != "str":
                raise YqError(f"bad expression, pylima's yq takes {name}() with a quoted "
                              f'file name, as in {name}("file.yaml")')
            path = _string_value(a)
            assert sec.read_file is not None
            try:
                data = sec.read_file(path)
            except OSError as e:
                raise YqError(f"open {path}: {(e.strerror or str(e)).lower()}") from e
            if name == "load":
                import yaml

                try:
                    value = yaml.safe_load(data)
                except yaml.YAMLError as e:
                    raise YqError(f"failed to parse {path}: {' '.join(str(e).split())}") from e
            elif name == "load_str":
                value = data.decode("utf-8", "replace")
            else:
                import binascii

                value = binascii.b2a_base64(data, newline=False).decode()
            key = f"__yq_{len(args)}"
            args[key] = value
            edits.append((t.start, toks[k + 3].end, f"${key}"))
        elif name == "system":
            raise YqError(SYSTEM_DISABLED)
        elif name in _UNSUPPORTED:
            raise YqError(f"bad expression, pylima's yq does not support {name}()")
        elif name in _PRELUDE:
            used.add(name)
    for start, end, text in reversed(edits):
        src = src[:start] + text + src[end:]
    return src


def _operand_start(toks: list[Tok], k: int) -> int:
    depth, j = 0, k - 1
    while j >= 0:
        t = toks[j]
        if t.kind in _CLOSERS or t.kind == "interp_mid":
            if t.kind == "interp_mid" and depth == 0:
                break
            depth += 1 if t.kind in _CLOSERS else 0
        elif t.kind in _OPENERS:
            if depth == 0:
                break
            depth -= 1
        elif depth == 0 and (t.kind == "op" and t.text in _BOUNDARY_OPS
                             or t.kind == "ident" and t.text in _BOUNDARY_WORDS):
            break
        j -= 1
    return j + 1


def _operand_end(toks: list[Tok], k: int) -> int:
    depth, j = 0, k + 1
    while j < len(toks):
        t = toks[j]
        if t.kind in _OPENERS:
            depth += 1
        elif t.kind in _CLOSERS or t.kind == "interp_mid":
            if depth == 0:
                break
            if t.kind in _CLOSERS:
                depth -= 1
        elif depth == 0 and (t.kind == "op" and t.text in _BOUNDARY_OPS
                             or t.kind == "ident" and t.text in _BOUNDARY_WORDS):
            break
        j += 1
    return j - 1


def _equality(src: str, used: set[str]) -> str:
    """`A == B` -> `_yq_eq(A; B)` and `A != B` -> `(_yq_eq(A; B) | not)`, one at a time
    (an operand may hold another comparison)."""
    while True:
        toks = tokenize(src)
        k = next((i for i, t in enumerate(toks) if t.kind == "op" and t.text in ("==", "!=")),
                 None)
        if k is None:
            return src
        s, e = _operand_start(toks, k), _operand_end(toks, k)
        if s == k or e == k:
            raise YqError(f"bad expression, `{toks[k].text}` needs a value on each side")
        used.add("_yq_eq")
        left = src[toks[s].start:toks[k].start]
        right = src[toks[k].end:toks[e].end]
        call = f"_yq_eq({left}; {right})"
        if toks[k].text == "!=":
            call = f"({call} | not)"
        src = src[:toks[s].start] + call + src[toks[e].end:]


def translate(expr: str, sec: Security = RESTRICTED) -> tuple[str, dict[str, Any]]:
    """The jq program for yq expression `expr`, and the variables it binds."""
    args: dict[str, Any] = {}
    used: set[str] = set()
    src = _functions(expr, sec, args, used)
    src = _equality(src, used)
    if "env" in used:
        assert sec.environ is not None
        args["__yq_env"] = dict(sec.environ)  # the caller's, not this process's
    prelude = "".join(_PRELUDE[name] for name in sorted(used))
    if not sec.env_ops:
        # jq's own environment access, should a form have escaped the scan above
        prelude += f'def env: error("{ENV_DISABLED}"); def input_filename: null; '
    if prelude and src.lstrip().startswith(("import ", "include ")):
        raise YqError("bad expression, import and include must come first")
    return prelude + src if prelude else src, args


@functools.lru_cache(maxsize=64)
def _compile(program: str, arg_items: tuple[tuple[str, str], ...]) -> Any:
    import json

    import jq

    return jq.compile(program, args={k: json.loads(v) for k, v in arg_items})


def _jq_message(e: Exception) -> str:
    msg = " ".join(str(e).split())
    m = re.search(r"\b([A-Za-z_][A-Za-z0-9_]*)/0 is not defined", msg)
    if m and not m.group(1).startswith("_yq"):
        return f'invalid input text "{m.group(1)}"'
    msg = re.sub(r"^jq: error(?: \(at [^)]*\))?: ", "", msg)
    msg = re.sub(r" \(Unix shell quoting issues\?\)", "", msg)
    return msg.removesuffix(" at <top-level>, line 1:").strip()


def evaluate(expr: str, value: Any, *, what: str = "expression",
             security: Security = RESTRICTED) -> list[Any]:
    """All outputs of yq expression `expr` applied to `value`."""
    import json

    program, args = translate(expr, security)  # yq's refusals, worded as yq's
    try:
        compiled = _compile(program, tuple((k, json.dumps(v)) for k, v in sorted(args.items())))
    except ValueError as e:
        raise ConfigError(f"invalid {what} `{expr}`: {_jq_message(e)}") from e
    try:
        return list(compiled.input_value(value).all())
    except ValueError as e:
        raise ConfigError(f"failed to evaluate {what} `{expr}`: {_jq_message(e)}") from e


def evaluate_one(expr: str, value: Any, *, what: str = "expression",
                 security: Security = RESTRICTED) -> Any:
    """The single output of an update expression such as `.cpus = 2`."""
    out = evaluate(expr, value, what=what, security=security)
    if len(out) != 1:
        raise ConfigError(f"{what} `{expr}` must produce exactly one document, "
                          f"got {len(out)}")
    return out[0]


def has_path(expr: str, value: Any, security: Security = RESTRICTED) -> bool:
    """Does `expr` select nodes of `value` (so yq prints a document separator between
    documents), rather than compute new values?"""
    try:
        evaluate(f"path({expr})", value, security=security)
    except ConfigError:
        return False
    return True
