"""Go ``fmt`` formatting (Sprint, Sprintln, Sprintf) over plain Python values.

Values map to Go types as pylima's Go template evaluator sees them: str is
``string``, int ``int``, float ``float64``, bool ``bool``, None ``nil``, lists
``[]interface {}`` and dicts ``map[string]interface {}`` (printed ``map[k:v]``
with sorted keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["GoFields", "GoStruct", "format_float", "format_value", "go_type", "quote", "sprint",
           "sprintf", "sprintln"]


class GoStruct(dict[str, Any]):
    """A dict standing for a Go struct value of type ``go_type`` (e.g. ``store.FormatData``).

    Fields keep their order; ``%v`` prints ``{v1 v2}`` (``%+v``: ``{K1:v1 K2:v2}``), and
    the template evaluator reports a missing field as Go does for that struct type.
    """

    __slots__ = ("go_type",)

    def __init__(self, go_type: str, fields: Mapping[str, Any] | None = None, /,
                 **kw: Any) -> None:
        super().__init__(fields or {}, **kw)
        self.go_type = go_type


class GoFields(dict[str, Any]):
    """A YAML map that also answers to the Go field names of the struct it was decoded
    into (Lima's `limatype.LimaYAML` for `.Config`): `.Config.VMType`, `.Config.CPUs`
    and `.Config.SSH.LocalPort` find `vmType`, `cpus` and `ssh.localPort`. The YAML
    keys still work, and print as they are. Go names match the keys case-insensitively,
    except where the struct renames one (`ALIASES`). Nested maps are wrapped too."""

    __slots__ = ()
    ALIASES: Final = {"ninep": "9p", "cacertificates": "caCerts"}

    def __init__(self, fields: Mapping[str, Any]) -> None:
        super().__init__((k, _go_fields(v)) for k, v in fields.items())

    def _key(self, name: str) -> str:
        if dict.__contains__(self, name):
            return name
        folded = self.ALIASES.get(name.lower(), name).lower()
        for k in self:
            if isinstance(k, str) and k.lower() == folded:
                return k
        return name

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, self._key(name) if isinstance(name, str) else name)

    def __getitem__(self, name: str) -> Any:
        return dict.__getitem__(self, self._key(name))

    def get(self, name: str, default: Any = None) -> Any:  # type: ignore[override]
        return dict.get(self, self._key(name), default)


def _go_fields(v: Any) -> Any:
    if isinstance(v, Mapping) and not isinstance(v, GoStruct):
        return GoFields(v)
    if isinstance(v, list):
        return [_go_fields(x) for x in v]
    return v


def go_type(v: object) -> str:
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, GoStruct):
        return v.go_type
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if isinstance(v, list | tuple):
        return "[]interface {}"
    if callable(v):
        return "func"
    return type(v).__name__


def float_digits(x: float) -> tuple[str, int]:
    """Shortest round-trip digits of abs(x) and the decimal point position."""
    mant, _, exp = repr(abs(x)).partition("e")
    ip, _, fp = mant.partition(".")
    digits, dp = ip + fp, len(ip) + (int(exp) if exp else 0)
    stripped = digits.lstrip("0")
    dp -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    return (digits, dp) if digits else ("0", 1)


def fixed_notation(digits: str, dp: int) -> str:
    if dp <= 0:
        return "0." + "0" * -dp + digits
    if dp >= len(digits):
        return digits + "0" * (dp - len(digits))
    return digits[:dp] + "." + digits[dp:]


def exp_notation(digits: str, dp: int, e: str = "e") -> str:
    x = dp - 1
    frac = "." + digits[1:] if len(digits) > 1 else ""
    return f"{digits[0]}{frac}{e}{'-' if x < 0 else '+'}{abs(x):02d}"


def format_float(x: float, verb: str = "g", prec: int = -1) -> str:
    """strconv.FormatFloat for the e, E, f, g and G formats (prec -1: shortest)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    if prec >= 0:
        return sign + format(abs(x), f".{prec}{verb}")
    digits, dp = float_digits(x)
    if verb in "eE" or (verb in "gG" and not -4 <= dp - 1 < 6):
        return sign + exp_notation(digits, dp, "E" if verb.isupper() else "e")
    return sign + fixed_notation(digits, dp)


_ESCAPES: Final = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
                   "\t": "\\t", "\v": "\\v", "\\": "\\\\"}


def quote(s: str, quote: str = '"', ascii_only: bool = False) -> str:
    """strconv.Quote (or QuoteRune with quote="'")."""
    out = [quote]
    for ch in s:
        o = ord(ch)
        if ch == quote:
            out.append("\\" + ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable() and not (ascii_only and o >= 0x80):
            out.append(ch)
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append(quote)
    return "".join(out)


class _Spec:
    """One verb with its flags, width and precision."""

    __slots__ = ("verb", "minus", "plus", "sharp", "space", "zero", "width", "prec", "plus_v")

    def __init__(self, verb: str = "v", minus: bool = False, plus: bool = False,
                 sharp: bool = False, space: bool = False, zero: bool = False,
                 width: int | None = None, prec: int | None = None) -> None:
        self.verb, self.minus, self.plus, self.sharp = verb, minus, plus, sharp
        self.space, self.zero, self.width, self.prec = space, zero, width, prec
        # %+v: the plus flag names struct fields instead of signing numbers.
        self.plus_v = plus and verb == "v"
        if self.plus_v:
            self.plus = False


_PLAIN: Final = _Spec()


def _pad(s: str, spec: _Spec, numeric: bool = False) -> str:
    w = spec.width
    if w is None or len(s) >= w:
        return s
    if spec.minus:
        return s + " " * (w - len(s))
    if spec.zero and numeric:
        sign = s[0] if s[:1] in ("+", "-", " ") else ""
        return sign + "0" * (w - len(s)) + s[len(sign):]
    return " " * (w - len(s)) + s


def _bad_verb(v: object, spec: _Spec) -> str:
    if v is None:
        return f"%!{spec.verb}(<nil>)"
    return f"%!{spec.verb}({go_type(v)}={_fmt(v, _PLAIN)})"


def _fmt_int(n: int, spec: _Spec) -> str:
    verb = spec.verb
    if verb == "c":
        return _pad(chr(n), spec)
    if verb == "q":
        return _pad(quote(chr(n), "'", spec.plus), spec)
    if verb == "U":
        s = f"U+{n:04X}" + (f" '{chr(n)}'" if spec.sharp else "")
        return _pad(s, spec)
    base = {"d": "d", "v": "d", "b": "b", "o": "o", "O": "o", "x": "x", "X": "X"}.get(verb)
    if base is None:
        return _bad_verb(n, spec)
    digits = format(abs(n), base)
    if spec.prec is not None:
        digits = digits.zfill(spec.prec) if spec.prec else digits.lstrip("0")
    prefix = "0o" if verb == "O" else ""
    if spec.sharp:
        prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(verb, prefix)
    sign = "-" if n < 0 else "+" if spec.plus else " " if spec.space else ""
    return _pad(sign + prefix + digits, spec, numeric=spec.prec is None)


def _fmt_float(x: float, spec: _Spec) -> str:
    verb = spec.verb
    if verb not in "vfFeEgG":
        return _bad_verb(x, spec)
    if verb == "v":
        verb = "g"
    prec = spec.prec if spec.prec is not None else (6 if verb in "fFeE" else -1)
    s = format_float(x, verb, prec)
    if s[0] not in "+-" and s != "NaN":
        s = ("+" if spec.plus else " " if spec.space else "") + s
    elif s == "+Inf" and spec.space and not spec.plus:
        s = " Inf"
    return _pad(s, spec, numeric=not s.endswith(("Inf", "NaN")))


def _fmt_str(s: str, spec: _Spec) -> str:
    verb = spec.verb
    if spec.prec is not None and verb in "vsq":
        s = s[: spec.prec]
    if verb in "vs":
        return _pad(s, spec)
    if verb == "q":
        if spec.sharp and "`" not in s and s.isprintable():
            return _pad("`" + s + "`", spec)
        return _pad(quote(s, ascii_only=spec.plus), spec)
    if verb in "xX":
        data = s.encode()
        if spec.prec is not None:
            data = data[: spec.prec]
        fmt = "02x" if verb == "x" else "02X"
        parts = [("0" + verb if spec.sharp else "") + format(b, fmt) for b in data]
        return _pad((" " if spec.space else "").join(parts), spec)
    return _bad_verb(s, spec)


def sort_key(k: object) -> tuple[int, Any]:
    if isinstance(k, bool):
        return (0, k)
    if isinstance(k, int | float):
        return (1, k)
    if isinstance(k, str):
        return (2, k)
    return (3, str(k))


def _fmt(v: object, spec: _Spec) -> str:
    """Format one operand like Go's fmt printArg."""
    if v is None:
        return _pad("<nil>", spec) if spec.verb == "v" else _bad_verb(v, spec)
    if isinstance(v, bool):
        return _pad("true" if v else "false", spec) if spec.verb in "vt" else _bad_verb(v, spec)
    if isinstance(v, int):
        return _fmt_int(v, spec)
    if isinstance(v, float):
        return _fmt_float(v, spec)
    if isinstance(v, str):
        return _fmt_str(v, spec)
    if spec.verb == "T":
        return _pad(go_type(v), spec)
    if isinstance(v, GoStruct):
        return "{" + " ".join((f"{k}:" if spec.plus_v else "") + _fmt(x, spec)
                              for k, x in v.items()) + "}"
    if isinstance(v, Mapping):
        items = sorted(v.items(), key=lambda kv: sort_key(kv[0]))
        return "map[" + " ".join(f"{_fmt(k, spec)}:{_fmt(x, spec)}" for k, x in items) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(_fmt(x, spec) for x in v) + "]"
    if isinstance(v, bytes):
        return _fmt_str(v.decode(errors="replace"), spec)
    return _pad(str(v), spec) if spec.verb in "vs" else _bad_verb(v, spec)


def sprint(*args: object) -> str:
    """fmt.Sprint: spaces are added between operands when neither is a string."""
    out: list[str] = []
    prev_string = False
    for i, a in enumerate(args):
        is_string = isinstance(a, str)
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(_fmt(a, _PLAIN))
        prev_string = is_string
    return "".join(out)


def sprintln(*args: object) -> str:
    """fmt.Sprintln: operands separated by spaces, newline appended."""
    return " ".join(_fmt(a, _PLAIN) for a in args) + "\n"


def sprintf(fmt: str, *args: object) -> str:
    """fmt.Sprintf for the common verbs, flags, widths, precisions and ``%[n]`` indexes."""
    out: list[str] = []
    i, n, argn, reordered = 0, len(fmt), 0, False

    def arg_index(i: int, argn: int) -> tuple[int, int, bool]:
        # Parses "[n]" at fmt[i]; returns (new i, new argn, ok).
        if i < n and fmt[i] == "[":
            j = fmt.find("]", i)
            if j < 0 or not fmt[i + 1:j].isdigit() or not 0 < int(fmt[i + 1:j]) <= len(args):
                return (j + 1 if j >= 0 else n), argn, False
            return j + 1, int(fmt[i + 1:j]) - 1, True
        return i, argn, True

    def number(i: int, argn: int) -> tuple[int, int | None, int, bool]:
        # Width or precision: digits or '*'; returns (i, value, argn, ok).
        if i < n and fmt[i] == "*":
            if argn < len(args) and isinstance(args[argn], int):
                return i + 1, int(args[argn]), argn + 1, True  # type: ignore[call-overload]
            return i + 1, None, argn + 1, False
        j = i
        while j < n and fmt[j].isdigit():
            j += 1
        return j, (int(fmt[i:j]) if j > i else None), argn, True

    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        flags = {"-": False, "+": False, "#": False, " ": False, "0": False}
        while i < n and fmt[i] in flags:
            flags[fmt[i]] = True
            i += 1
        i, argn, ok = arg_index(i, argn)
        reordered = reordered or (i > 0 and fmt[i - 1] == "]")
        i, width, argn, wok = number(i, argn)
        if not wok:
            out.append("%!(BADWIDTH)")
        elif width is not None and width < 0:
            flags["-"], width = True, -width
        prec: int | None = None
        if i < n and fmt[i] == ".":
            i, argn, ok2 = arg_index(i + 1, argn)
            ok = ok and ok2
            i, prec, argn, pok = number(i, argn)
            if not pok or (prec is not None and prec < 0):
                out.append("%!(BADPREC)")
                prec = None
            elif prec is None:
                prec = 0
        i, argn, ok3 = arg_index(i, argn)
        ok = ok and ok3
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if not ok:
            out.append(f"%!{verb}(BADINDEX)")
            continue
        if argn >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        spec = _Spec(verb, flags["-"], flags["+"], flags["#"], flags[" "],
                     flags["0"] and not flags["-"], width, prec)
        a = args[argn]
        argn += 1
        if verb == "T":
            out.append(_pad(go_type(a), spec))
        elif verb == "v" and flags["#"] and isinstance(a, str):
            out.append(_pad(quote(a), spec))
        else:
            out.append(_fmt(a, spec))
    if not reordered and argn < len(args):
        extra = ", ".join("<nil>" if a is None else f"{go_type(a)}={_fmt(a, _PLAIN)}"
                          for a in args[argn:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def format_value(v: object) -> str:
    """fmt.Sprint of a single value (``%v``)."""
    return _fmt(v, _PLAIN)
