"""Go ``text/template`` evaluation over plain Python data.

Lima users write Go templates in ``limactl list --format``, in ``message:`` and in
templated fields of lima.yaml (``{{.Home}}``, ``{{.Param.X}}``, ...).  This module
lexes, parses and executes the part of ``text/template`` those templates use,
over dicts keyed by Go field names, lists, str, int, float, bool and None.

Values print like Go's ``fmt.Sprint``; error messages follow Go's wording.
Dicts stand in for Go structs and keep their insertion order in ``json`` and
``yaml`` output; ``range`` and ``%v`` visit dict keys sorted, like Go maps.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Mapping
from typing import Any, Final, NamedTuple, NoReturn

from pylima.gofmt import (
    exp_notation,
    fixed_notation,
    float_digits,
    format_float,
    format_value,
    go_type,
    quote,
    sort_key,
    sprint,
    sprintf,
    sprintln,
)

__all__ = [
    "FUNC_HELP",
    "NO_VALUE",
    "TEMPLATE_FUNC_MAP",
    "GoTemplateError",
    "Template",
    "sprint",
    "sprintf",
    "parse",
    "render",
]


class GoTemplateError(Exception):
    """A template syntax or execution error, worded like Go's text/template."""


class _NoValue:
    """Go's invalid reflect.Value: a missing map entry; printed as ``<no value>``."""

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


NO_VALUE: Final = _NoValue()
_MISSING: Final = object()  # no piped-in final argument

# ---------------------------------------------------------------------------
# Lexer
# ---------------------------------------------------------------------------

_SPACE: Final = " \t\r\n"
_KEYWORDS: Final = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"})


class _Tok(NamedTuple):
    kind: str  # "text", "{{", "}}", "space", "field", "var", "ident", "dot", "bool", "nil",
    # "number", "charconst", "string", "rawstring", "|", "(", ")", ":=", "=", "char",
    # "eof", "error", or a keyword
    val: str
    pos: int


class _LexError(Exception):
    def __init__(self, msg: str, pos: int) -> None:
        super().__init__(msg)
        self.pos = pos


def _is_alnum(c: str) -> bool:
    return c == "_" or c.isalnum()


def _lex(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos, n = 0, len(text)

    def at_right_delim(p: int) -> tuple[bool, bool]:
        if p + 1 < n and text[p] in _SPACE and text[p + 1] == "-" and text.startswith("}}", p + 2):
            return True, True
        return text.startswith("}}", p), False

    def skip_space(p: int) -> int:
        while p < n and text[p] in _SPACE:
            p += 1
        return p

    def at_terminator(p: int) -> bool:
        return p >= n or text[p] in _SPACE or text[p] in ".,|:()}"

    def char_desc(c: str) -> str:
        return f"U+{ord(c):04X} {quote(c, chr(39))}"

    try:
        while pos < n:
            i = text.find("{{", pos)
            if i < 0:
                toks.append(_Tok("text", text[pos:], pos))
                break
            trim = text.startswith("-", i + 2) and i + 3 < n and text[i + 3] in _SPACE
            seg = text[pos:i].rstrip(_SPACE) if trim else text[pos:i]
            if seg:
                toks.append(_Tok("text", seg, pos))
            pos = i + 2 + (2 if trim else 0)
            if text.startswith("/*", pos):  # comment
                end = text.find("*/", pos + 2)
                if end < 0:
                    raise _LexError("unclosed comment", i)
                pos = end + 2
                delim, rtrim = at_right_delim(pos)
                if not delim:
                    raise _LexError("comment ends before closing delimiter", i)
                pos = skip_space(pos + 4) if rtrim else pos + 2
                continue
            toks.append(_Tok("{{", "{{", i))
            depth = 0
            while True:  # inside the action
                delim, rtrim = at_right_delim(pos)
                if delim:
                    if depth:
                        raise _LexError("unclosed left paren", pos)
                    toks.append(_Tok("}}", "}}", pos + (2 if rtrim else 0)))
                    pos = skip_space(pos + 4) if rtrim else pos + 2
                    break
                if pos >= n:
                    raise _LexError("unclosed action", pos)
                start, c = pos, text[pos]
                kind = ""
                if c in _SPACE:
                    pos = skip_space(pos)
                    if at_right_delim(pos - 1) == (True, True):
                        pos -= 1
                        if pos == start:
                            continue
                    kind = "space"
                elif c == "=":
                    pos, kind = pos + 1, "="
                elif c == ":":
                    if not text.startswith(":=", pos):
                        raise _LexError("expected :=", pos)
                    pos, kind = pos + 2, ":="
                elif c == "|":
                    pos, kind = pos + 1, "|"
                elif c in "\"'":
                    pos += 1
                    while True:
                        if pos >= n or text[pos] == "\n":
                            what = "quoted string" if c == '"' else "character constant"
                            raise _LexError(f"unterminated {what}", start)
                        if text[pos] == "\\":
                            pos += 1
                            if pos >= n or text[pos] == "\n":
                                continue
                        elif text[pos] == c:
                            pos += 1
                            break
                        pos += 1
                    kind = "string" if c == '"' else "charconst"
                elif c == "`":
                    end = text.find("`", pos + 1)
                    if end < 0:
                        raise _LexError("unterminated raw quoted string", start)
                    pos, kind = end + 1, "rawstring"
                elif c == "$" or (c == "." and not (pos + 1 < n and text[pos + 1].isdigit())):
                    pos += 1
                    if at_terminator(pos):
                        kind = "var" if c == "$" else "dot"
                    else:
                        while pos < n and _is_alnum(text[pos]):
                            pos += 1
                        if not at_terminator(pos):
                            raise _LexError(f"bad character {char_desc(text[pos])}", pos)
                        kind = "var" if c == "$" else "field"
                elif c in "+-." or c.isdigit():
                    pos = _scan_number(text, pos)
                    if pos < n and _is_alnum(text[pos]):
                        raise _LexError(
                            f"bad number syntax: {quote(text[start:pos + 1])}", start)
                    kind = "number"
                elif _is_alnum(c):
                    while pos < n and _is_alnum(text[pos]):
                        pos += 1
                    if not at_terminator(pos):
                        raise _LexError(f"bad character {char_desc(text[pos])}", pos)
                    word = text[start:pos]
                    kind = (word if word in _KEYWORDS else "bool" if word in ("true", "false")
                            else "nil" if word == "nil" else "ident")
                elif c == "(":
                    pos, kind, depth = pos + 1, "(", depth + 1
                elif c == ")":
                    depth -= 1
                    if depth < 0:
                        raise _LexError("unexpected right paren", pos)
                    pos, kind = pos + 1, ")"
                elif c.isascii() and c.isprintable():
                    pos, kind = pos + 1, "char"
                else:
                    raise _LexError(f"unrecognized character in action: {char_desc(c)}", pos)
                toks.append(_Tok(kind, text[start:pos], start))
    except _LexError as e:
        toks.append(_Tok("error", str(e), e.pos))
        return toks
    toks.append(_Tok("eof", "", n))
    return toks


def _scan_number(text: str, pos: int) -> int:
    n = len(text)

    def run(p: int, chars: str) -> int:
        while p < n and text[p] in chars:
            p += 1
        return p

    if pos < n and text[pos] in "+-":
        pos += 1
    digits = "0123456789_"
    if pos < n and text[pos] == "0":
        pos += 1
        if pos < n and text[pos] in "xXoObB":
            c = text[pos].lower()
            digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[c]
            pos += 1
    pos = run(pos, digits)
    if pos < n and text[pos] == ".":
        pos = run(pos + 1, digits)
    if len(digits) == 11 and pos < n and text[pos] in "eE":
        pos = run(pos + 1 + (pos + 1 < n and text[pos + 1] in "+-"), "0123456789_")
    if len(digits) == 23 and pos < n and text[pos] in "pP":
        pos = run(pos + 1 + (pos + 1 < n and text[pos + 1] in "+-"), "0123456789_")
    return pos


_UNESCAPE: Final = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                    "v": "\v", "\\": "\\"}


def _unquote(q: str) -> str:
    """strconv.Unquote for "..." strings and '...' character constants."""
    quote, body, out, i = q[0], q[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        e = body[i + 1] if i + 1 < len(body) else ""
        if e in _UNESCAPE or e == quote:
            out += _UNESCAPE.get(e, e).encode()
            i += 2
        elif e in "xuU" and e:
            size = {"x": 2, "u": 4, "U": 8}[e]
            hexd = body[i + 2:i + 2 + size]
            if len(hexd) != size or any(h not in "0123456789abcdefABCDEF" for h in hexd):
                raise ValueError("invalid syntax")
            v = int(hexd, 16)
            out += bytes([v]) if e == "x" else chr(v).encode(errors="replace")
            i += 2 + size
        elif e and e in "01234567":
            octd = body[i + 1:i + 4]
            if len(octd) != 3 or any(o not in "01234567" for o in octd) or int(octd, 8) > 255:
                raise ValueError("invalid syntax")
            out.append(int(octd, 8))
            i += 4
        else:
            raise ValueError("invalid syntax")
    return out.decode(errors="replace")


def _parse_number(text: str) -> int | float:
    t = text.replace("_", "")
    sign = -1 if t.startswith("-") else 1
    body = t.lstrip("+-")
    low = body.lower()
    try:
        if low.startswith("0x") and ("p" in low or "." in low):
            return sign * float.fromhex(body)
        if low.startswith(("0x", "0o", "0b")):
            return sign * int(body, 0)
        if "." not in low and "e" not in low:
            return sign * int(body, 8 if len(body) > 1 and body[0] == "0" else 10)
        return sign * float(body)
    except ValueError:
        raise ValueError(f"illegal number syntax: {quote(text)}") from None


# ---------------------------------------------------------------------------
# Parse tree
# ---------------------------------------------------------------------------


class _Node:
    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


class _Text(_Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text


class _Leaf(_Node):
    """Dot, nil, bool, number, string and identifier operands."""

    __slots__ = ("kind", "src", "value")

    def __init__(self, pos: int, kind: str, src: str, value: object = None) -> None:
        super().__init__(pos)
        self.kind, self.src, self.value = kind, src, value

    def __str__(self) -> str:
        return self.src


class _Field(_Node):
    """``.A.B`` (var is None) or ``$x.A.B``."""

    __slots__ = ("var", "idents")

    def __init__(self, pos: int, var: str | None, idents: list[str]) -> None:
        super().__init__(pos)
        self.var, self.idents = var, idents

    def __str__(self) -> str:
        return (self.var or "") + "".join("." + i for i in self.idents)


class _Chain(_Node):
    __slots__ = ("node", "idents")

    def __init__(self, pos: int, node: _Node, idents: list[str]) -> None:
        super().__init__(pos)
        self.node, self.idents = node, idents

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, _Pipe) else str(self.node)
        return inner + "".join("." + i for i in self.idents)


class _Command(_Node):
    __slots__ = ("args",)

    def __init__(self, pos: int, args: list[_Node]) -> None:
        super().__init__(pos)
        self.args = args

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, _Pipe) else str(a) for a in self.args)


class _Pipe(_Node):
    __slots__ = ("decl", "is_assign", "cmds")

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.decl: list[str] = []
        self.is_assign = False
        self.cmds: list[_Command] = []

    def __str__(self) -> str:
        decl = ", ".join(self.decl) + (" = " if self.is_assign else " := ") if self.decl else ""
        return decl + " | ".join(str(c) for c in self.cmds)


class _Action(_Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: _Pipe) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class _Branch(_Node):
    """if, with and range."""

    __slots__ = ("kind", "pipe", "body", "else_body")

    def __init__(self, pos: int, kind: str, pipe: _Pipe, body: list[_Node],
                 else_body: list[_Node] | None) -> None:
        super().__init__(pos)
        self.kind, self.pipe, self.body, self.else_body = kind, pipe, body, else_body

    def __str__(self) -> str:
        return "{{" + self.kind + " " + str(self.pipe) + "}}"


class _Call(_Node):
    """``{{template "name" pipeline}}``."""

    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: _Pipe | None) -> None:
        super().__init__(pos)
        self.name, self.pipe = name, pipe

    def __str__(self) -> str:
        return "{{template " + quote(self.name) + (f" {self.pipe}" if self.pipe else "") + "}}"


class _Marker(_Node):
    """end, else, break and continue."""

    __slots__ = ("kind",)

    def __init__(self, pos: int, kind: str) -> None:
        super().__init__(pos)
        self.kind = kind

    def __str__(self) -> str:
        return "{{" + self.kind + "}}"


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


class _Parser:
    def __init__(self, text: str, name: str, funcs: Mapping[str, object]) -> None:
        self.text, self.name, self.funcs = text, name, funcs
        self.toks = _lex(text)
        self.i = 0
        self.vars = ["$"]
        self.range_depth = 0
        self.trees: dict[str, list[_Node]] = {}
        self._newlines = [k for k, c in enumerate(text) if c == "\n"]

    def error(self, msg: str, tok: _Tok | None = None) -> NoReturn:
        tok = tok or self.toks[max(self.i - 1, 0)]
        line = bisect_right(self._newlines, tok.pos - 1) + 1
        raise GoTemplateError(f"template: {self.name}:{line}: {msg}")

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind == "error":
            self.error(tok.val, tok)
        self.i += 1
        return tok

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next_non_space(self) -> _Tok:
        tok = self.next()
        while tok.kind == "space":
            tok = self.next()
        return tok

    def peek_non_space(self) -> _Tok:
        tok = self.next_non_space()
        self.i -= 1
        return tok

    def unexpected(self, tok: _Tok, context: str) -> NoReturn:
        if tok.kind == "eof":
            desc = "EOF"
        elif tok.kind in _KEYWORDS:
            desc = f"<{tok.val}>"
        else:
            desc = quote(tok.val[:10]) + ("..." if len(tok.val) > 10 else "")
        self.error(f"unexpected {desc} in {context}", tok)

    def expect(self, kind: str, context: str) -> _Tok:
        tok = self.next_non_space()
        if tok.kind != kind:
            self.unexpected(tok, context)
        return tok

    def parse(self) -> dict[str, list[_Node]]:
        root: list[_Node] = []
        while self.peek().kind != "eof":
            if self.peek().kind == "{{":
                save = self.i
                self.next()
                if self.next_non_space().kind == "define":
                    self.parse_define()
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, _Marker) and node.kind in ("end", "else"):
                self.error(f"unexpected {node}")
            root.append(node)
        self.next()  # raise a pending lexer error
        trees = dict(self.trees)
        if root or self.name not in trees:
            trees[self.name] = root
        return trees

    def template_name(self, context: str) -> tuple[str, _Tok]:
        tok = self.next_non_space()
        if tok.kind not in ("string", "rawstring"):
            self.unexpected(tok, context)
        return self.string_value(tok), tok

    def string_value(self, tok: _Tok) -> str:
        if tok.kind == "rawstring":
            return tok.val[1:-1].replace("\r", "")
        try:
            return _unquote(tok.val)
        except ValueError as e:
            self.error(str(e))

    def parse_define(self) -> None:
        name, _ = self.template_name("define clause")
        self.expect("}}", "define clause")
        saved_vars, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        if end.kind != "end":
            self.error(f"unexpected {end} in define clause")
        self.vars = saved_vars
        self.trees[name] = body

    def item_list(self) -> tuple[list[_Node], _Marker]:
        nodes: list[_Node] = []
        while self.peek_non_space().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, _Marker) and node.kind in ("end", "else"):
                return nodes, node
            nodes.append(node)
        self.error("unexpected EOF")

    def text_or_action(self) -> _Node:
        tok = self.next_non_space()
        if tok.kind == "text":
            return _Text(tok.pos, tok.val)
        if tok.kind == "{{":
            return self.action()
        self.unexpected(tok, "input")

    def action(self) -> _Node:
        tok = self.next_non_space()
        kind = tok.kind
        if kind in ("if", "with", "range"):
            return self.control(kind, tok.pos)
        if kind in ("end", "else"):
            if kind == "else" and self.peek_non_space().kind in ("if", "with"):
                return _Marker(tok.pos, "else")
            self.expect("}}", kind)
            return _Marker(tok.pos, kind)
        if kind in ("break", "continue"):
            t = self.next_non_space()
            if t.kind != "}}":
                self.unexpected(t, "{{" + kind + "}}")
            if not self.range_depth:
                self.error(f"{{{{{kind}}}}} outside {{{{range}}}}")
            return _Marker(tok.pos, kind)
        if kind in ("template", "block"):
            context = "template clause" if kind == "template" else "block clause"
            name, ntok = self.template_name(context)
            pipe = None
            if self.next_non_space().kind != "}}":
                self.i -= 1
                pipe = self.pipeline(context, "}}")
            elif kind == "block":
                self.error("missing value for block clause")
            if kind == "block":
                saved_vars, self.vars = self.vars, ["$"]
                body, end = self.item_list()
                if end.kind != "end":
                    self.error(f"unexpected {end} in block clause")
                self.vars = saved_vars
                self.trees[name] = body
            return _Call(ntok.pos, name, pipe)
        if kind == "define":
            self.error("unexpected <define> in command")
        self.i -= 1
        pos = self.peek_non_space().pos
        return _Action(pos, self.pipeline("command", "}}"))

    def control(self, kind: str, pos: int) -> _Node:
        nvars = len(self.vars)
        pipe = self.pipeline(kind, "}}")
        if kind == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_body: list[_Node] | None = None
        if nxt.kind == "else":
            follow = self.peek_non_space()
            if kind in ("if", "with") and follow.kind == kind:
                self.next_non_space()
                else_body = [self.control(kind, follow.pos)]
            else:
                else_body, end = self.item_list()
                if end.kind != "end":
                    self.error(f"expected end; found {end}")
        del self.vars[nvars:]
        return _Branch(pos, kind, pipe, body, else_body)

    def pipeline(self, context: str, end: str) -> _Pipe:
        pipe = _Pipe(self.peek_non_space().pos)
        while self.peek_non_space().kind == "var":
            save = self.i
            v = self.next_non_space()
            nxt = self.next_non_space()
            if nxt.kind in (":=", "="):
                pipe.is_assign = nxt.kind == "="
                pipe.decl.append(v.val)
                self.vars.append(v.val)
                break
            if nxt.kind == "char" and nxt.val == ",":
                pipe.decl.append(v.val)
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    if self.peek_non_space().kind in ("var", "}}", ")"):
                        continue
                    self.error("range can only initialize variables")
                self.error(f"too many declarations in {context}")
            self.i = save
            break
        while True:
            tok = self.next_non_space()
            if tok.kind == end:
                if not pipe.cmds:
                    self.error(f"missing value for {context}")
                for k, cmd in enumerate(pipe.cmds[1:]):
                    first = cmd.args[0]
                    if isinstance(first, _Leaf) and first.kind != "ident":
                        self.error(f"non executable command in pipeline stage {k + 2}")
                return pipe
            if tok.kind in ("bool", "charconst", "dot", "field", "ident", "number", "nil",
                            "rawstring", "string", "var", "("):
                self.i -= 1
                pipe.cmds.append(self.command())
            else:
                self.unexpected(tok, context)

    def command(self) -> _Command:
        cmd = _Command(self.peek_non_space().pos, [])
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("}}", ")"):
                self.i -= 1
            elif tok.kind != "|":
                self.unexpected(tok, "operand")
            break
        if not cmd.args:
            self.error("empty command")
        return cmd

    def operand(self) -> _Node | None:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        idents = []
        while self.peek().kind == "field":
            idents.append(self.next().val[1:])
        if isinstance(node, _Field):
            return _Field(node.pos, node.var, node.idents + idents)
        if isinstance(node, _Leaf) and node.kind != "ident":
            self.error(f"unexpected . after term {quote(str(node))}")
        return _Chain(node.pos, node, idents)

    def term(self) -> _Node | None:
        tok = self.next_non_space()
        k, v, pos = tok
        if k == "ident":
            if v not in self.funcs:
                self.error(f"function {quote(v)} not defined")
            return _Leaf(pos, "ident", v)
        if k in ("dot", "nil"):
            return _Leaf(pos, k, v)
        if k == "bool":
            return _Leaf(pos, k, v, v == "true")
        if k == "var":
            if v not in self.vars:
                self.error(f"undefined variable {quote(v)}")
            return _Field(pos, v, [])
        if k == "field":
            return _Field(pos, None, [v[1:]])
        if k in ("number", "charconst"):
            try:
                value: object = (ord(_unquote(v)) if k == "charconst" else _parse_number(v))
            except (ValueError, TypeError):
                self.error(f"malformed character constant: {v}" if k == "charconst" else
                           f"illegal number syntax: {quote(v)}")
            return _Leaf(pos, "number", v, value)
        if k in ("string", "rawstring"):
            return _Leaf(pos, "string", v, self.string_value(tok))
        if k == "(":
            return self.pipeline("parenthesized pipeline", ")")
        self.i -= 1
        return None


# ---------------------------------------------------------------------------
# Execution
# ---------------------------------------------------------------------------


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class _ExecError(Exception):
    pass


def _truth(v: object) -> bool:
    if v is None or v is NO_VALUE:
        return False
    if isinstance(v, bool | int | float):
        return v != 0
    if isinstance(v, str | bytes | list | tuple | Mapping):
        return len(v) > 0
    return True


class _State:
    def __init__(self, tmpl: Template, funcs: Mapping[str, Callable[..., object]],
                 missingkey_error: bool) -> None:
        self.tmpl, self.funcs, self.missingkey_error = tmpl, funcs, missingkey_error
        self.name = tmpl.name
        self.node: _Node | None = None
        self.vars: list[list[Any]] = []
        self.out: list[str] = []
        self.depth = 0

    def errorf(self, msg: str) -> NoReturn:
        text, name = self.tmpl.text, self.tmpl.name
        if self.node is None:
            raise GoTemplateError(f"template: {self.name}: {msg}")
        before = text[: self.node.pos]
        line_start = before.rfind("\n") + 1
        col = len(before[line_start:].encode())
        if line_start == 0:
            col = len(before.encode())
        ctx = str(self.node)
        if len(ctx) > 20:
            ctx = ctx[:20] + "..."
        raise GoTemplateError(f"template: {name}:{before.count(chr(10)) + 1}:{col}: "
                              f'executing "{self.name}" at <{ctx}>: {msg}')

    # -- variables ---------------------------------------------------------
    def var(self, name: str) -> object:
        for entry in reversed(self.vars):
            if entry[0] == name:
                return entry[1]
        self.errorf(f"undefined variable: {name}")

    def set_var(self, name: str, value: object) -> None:
        for entry in reversed(self.vars):
            if entry[0] == name:
                entry[1] = value
                return
        self.errorf(f"undefined variable: {name}")

    # -- walking -----------------------------------------------------------
    def walk(self, dot: object, nodes: list[_Node]) -> None:
        for node in nodes:
            self.node = node
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                val = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.print_value(node, val)
            elif isinstance(node, _Branch):
                mark = len(self.vars)
                try:
                    if node.kind == "range":
                        self.walk_range(dot, node)
                    else:
                        val = self.pipeline(dot, node.pipe)
                        if _truth(val):
                            self.walk(val if node.kind == "with" else dot, node.body)
                        elif node.else_body is not None:
                            self.walk(dot, node.else_body)
                finally:
                    del self.vars[mark:]
            elif isinstance(node, _Marker):
                raise _Break() if node.kind == "break" else _Continue()
            elif isinstance(node, _Call):
                self.walk_template(dot, node)

    def walk_range(self, dot: object, node: _Branch) -> None:
        self.node = node
        pipe = node.pipe
        val = self.pipeline(dot, _strip_decl(pipe) if pipe.decl else pipe)
        if isinstance(val, Mapping):
            items: list[tuple[object, object]] = [
                (k, val[k]) for k in sorted(val, key=sort_key)]
        elif isinstance(val, list | tuple):
            items = list(enumerate(val))
        elif isinstance(val, int) and not isinstance(val, bool):
            items = [(k, k) for k in range(val)]
        elif val is None or val is NO_VALUE:
            items = []
        else:
            self.node = node
            self.errorf(f"range can't iterate over {format_value(val)}")
        decl = pipe.decl
        if decl and not pipe.is_assign:
            self.vars.extend([name, val] for name in decl)
        mark = len(self.vars)
        for key, elem in items:
            if decl:
                values = [elem] if len(decl) == 1 else [key, elem]
                for name, value in zip(decl, values, strict=True):
                    self.set_var(name, value)
            try:
                self.walk(elem, node.body)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                del self.vars[mark:]
        if not items and node.else_body is not None:
            self.walk(dot, node.else_body)

    def walk_template(self, dot: object, node: _Call) -> None:
        body = self.tmpl.trees.get(node.name)
        if body is None:
            self.errorf(f"template {quote(node.name)} not defined")
        new_dot = self.pipeline(dot, node.pipe) if node.pipe else NO_VALUE
        if self.depth >= 10000:
            self.errorf("exceeded maximum template depth (10000)")
        saved = (self.vars, self.name)
        self.vars, self.name = [["$", new_dot]], node.name
        self.depth += 1
        try:
            self.walk(new_dot, body)
        finally:
            self.depth -= 1
            self.vars, self.name = saved

    def print_value(self, node: _Node, val: object) -> None:
        self.node = node
        if val is None or val is NO_VALUE:
            self.out.append("<no value>")
        elif callable(val) and not isinstance(val, type):
            self.errorf(f"can't print {node} of type func")
        else:
            self.out.append(format_value(val))

    # -- evaluation --------------------------------------------------------
    def pipeline(self, dot: object, pipe: _Pipe) -> object:
        self.node = pipe
        value: object = _MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        for name in pipe.decl:
            if pipe.is_assign:
                self.set_var(name, value)
            else:
                self.vars.append([name, value])
        return value

    def not_a_function(self, args: list[_Node], final: object) -> None:
        if len(args) > 1 or final is not _MISSING:
            self.errorf(f"can't give argument to non-function {args[0]}")

    def command(self, dot: object, cmd: _Command, final: object) -> object:
        first = cmd.args[0]
        if isinstance(first, _Field):
            return self.field_node(dot, first, cmd.args, final)
        if isinstance(first, _Chain):
            return self.chain_node(dot, first, cmd.args, final)
        if isinstance(first, _Pipe):
            self.not_a_function(cmd.args, final)
            return self.pipeline(dot, first)
        assert isinstance(first, _Leaf)
        if first.kind == "ident":
            return self.call(dot, first, cmd, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if first.kind == "dot":
            return dot
        if first.kind == "nil":
            self.errorf("nil is not a command")
        return first.value

    def field_node(self, dot: object, node: _Field, args: list[_Node], final: object) -> object:
        self.node = node
        if node.var is None:
            receiver = dot
        else:
            receiver = self.var(node.var)
            if not node.idents:
                self.not_a_function(args, final)
                return receiver
        return self.field_chain(dot, receiver, node, node.idents, args, final)

    def chain_node(self, dot: object, node: _Chain, args: list[_Node], final: object) -> object:
        self.node = node
        if isinstance(node.node, _Leaf) and node.node.kind == "nil":
            self.errorf(f"indirection through explicit nil in {node}")
        receiver = self.arg(dot, node.node, keep_missing=True)
        return self.field_chain(dot, receiver, node, node.idents, args, final)

    def field_chain(self, dot: object, receiver: object, node: _Node, idents: list[str],
                    args: list[_Node], final: object) -> object:
        for name in idents[:-1]:
            receiver = self.field(dot, name, node, [], _MISSING, receiver)
        return self.field(dot, idents[-1], node, args, final, receiver)

    def field(self, dot: object, name: str, node: _Node, args: list[_Node], final: object,
              receiver: object) -> object:
        has_args = len(args) > 1 or final is not _MISSING
        if receiver is NO_VALUE or receiver is _MISSING:
            if self.missingkey_error:
                self.errorf(f"nil data; no entry for key {quote(name)}")
            return NO_VALUE
        if receiver is None:
            self.errorf(f"nil pointer evaluating interface {{}}.{name}")
        if isinstance(receiver, Mapping):
            if name in receiver:
                if has_args:
                    self.errorf(f"{name} is not a method but has arguments")
                return receiver[name]
            if self.missingkey_error:
                self.errorf(f"can't evaluate field {name} in type {go_type(receiver)}")
            return NO_VALUE
        attr = getattr(receiver, name, _MISSING) if not name.startswith("_") else _MISSING
        if attr is _MISSING or isinstance(receiver, str | int | float | list | tuple):
            self.errorf(f"can't evaluate field {name} in type {go_type(receiver)}")
        if callable(attr) and not isinstance(attr, type):
            argv = [self.arg(dot, a) for a in args[1:]]
            if final is not _MISSING:
                argv.append(final)
            return self.invoke(attr, name, node, argv)
        if has_args:
            self.errorf(f"{name} has arguments but cannot be invoked as function")
        return attr

    def arg(self, dot: object, node: _Node, keep_missing: bool = False) -> object:
        """Evaluate a function argument; a missing value becomes nil."""
        self.node = node
        if isinstance(node, _Field):
            val = self.field_node(dot, node, [node], _MISSING)
        elif isinstance(node, _Chain):
            val = self.chain_node(dot, node, [node], _MISSING)
        elif isinstance(node, _Pipe):
            val = self.pipeline(dot, node)
        elif isinstance(node, _Leaf) and node.kind == "ident":
            val = self.call(dot, node, node, [node], _MISSING)
        elif isinstance(node, _Leaf) and node.kind == "dot":
            val = dot
        else:
            assert isinstance(node, _Leaf)
            val = node.value
        if keep_missing and val is NO_VALUE:
            return val
        return None if val is NO_VALUE or val is _MISSING else val

    def call(self, dot: object, ident: _Leaf, cmd: _Node, args: list[_Node],
             final: object) -> object:
        self.node = ident
        name = ident.src
        fn = self.funcs.get(name)
        if fn is _builtin_and_or:
            nargs = len(args) - 1 + (final is not _MISSING)
            if nargs < 1:
                self.errorf(f"wrong number of args for {name}: want at least 1 got 0")
            val: object = None
            for a in args[1:]:
                val = self.arg(dot, a)
                if _truth(val) != (name == "and"):
                    return val
            if final is not _MISSING:
                val = final
            return val
        if fn is None:
            self.errorf(f"{quote(name)} is not a defined function")
        argv = [self.arg(dot, a) for a in args[1:]]
        if final is not _MISSING:
            argv.append(None if final is NO_VALUE else final)
        return self.invoke(fn, name, cmd, argv)

    def invoke(self, fn: Callable[..., object], name: str, node: _Node,
               argv: list[object]) -> object:
        self.node = node
        try:
            return fn(*argv)
        except (_Break, _Continue):
            raise
        except GoTemplateError:
            raise
        except _ExecError as e:
            self.errorf(str(e))
        except Exception as e:
            if isinstance(e, TypeError):
                import inspect

                try:
                    inspect.signature(fn).bind(*argv)
                except TypeError:
                    self.errorf(f"wrong number of args for {name}: got {len(argv)}")
                except ValueError:
                    pass
            self.errorf(f"error calling {name}: {e}")


def _strip_decl(pipe: _Pipe) -> _Pipe:
    p = _Pipe(pipe.pos)
    p.cmds = pipe.cmds
    return p


# ---------------------------------------------------------------------------
# Builtin functions
# ---------------------------------------------------------------------------


def _nargs(name: str, args: tuple[object, ...], want: int, at_least: bool = False) -> None:
    if len(args) < want or (not at_least and len(args) != want):
        qual = "at least " if at_least else ""
        raise _ExecError(f"wrong number of args for {name}: want {qual}{want} got {len(args)}")


def _not(*args: object) -> bool:
    _nargs("not", args, 1)
    return not _truth(args[0])


def _len(*args: object) -> int:
    _nargs("len", args, 1)
    v = args[0]
    if isinstance(v, str):
        return len(v.encode())
    if isinstance(v, bytes | list | tuple | Mapping):
        return len(v)
    if v is None:
        raise ValueError("len of nil pointer")
    raise ValueError(f"len of type {go_type(v)}")


def _index_arg(i: object, cap: int) -> int:
    if i is None:
        raise ValueError("cannot index slice/array with nil")
    if not isinstance(i, int) or isinstance(i, bool):
        raise ValueError(f"cannot index slice/array with type {go_type(i)}")
    if i < 0 or i > cap:
        raise ValueError(f"index out of range: {i}")
    return i


def _index(*args: object) -> object:
    _nargs("index", args, 1, True)
    item = args[0]
    if item is None:
        raise ValueError("index of untyped nil")
    for i in args[1:]:
        if isinstance(item, str | bytes | list | tuple):
            seq = item.encode() if isinstance(item, str) else item
            k = _index_arg(i, len(seq))
            if k == len(seq):
                raise ValueError(f"index out of range: {k}")
            item = seq[k]
        elif isinstance(item, Mapping):
            item = item.get(i)
        elif item is None:
            raise ValueError("index of nil pointer")
        else:
            raise ValueError(f"can't index item of type {go_type(item)}")
    return item


def _slice(*args: object) -> object:
    _nargs("slice", args, 1, True)
    item, idx = args[0], args[1:]
    if item is None:
        raise ValueError("slice of untyped nil")
    if len(idx) > 3:
        raise ValueError(f"too many slice indexes: {len(idx)}")
    if isinstance(item, str):
        if len(idx) == 3:
            raise ValueError("cannot 3-index slice a string")
        data = item.encode()
    elif isinstance(item, list | tuple):
        data = item  # type: ignore[assignment]
    else:
        raise ValueError(f"can't slice item of type {go_type(item)}")
    bounds = [0, len(data)]
    for k, i in enumerate(idx[:2]):
        bounds[k] = _index_arg(i, len(data))
    if len(idx) == 3:
        _index_arg(idx[2], len(data))
    if bounds[0] > bounds[1]:
        raise ValueError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    out = data[bounds[0]:bounds[1]]
    return out.decode(errors="replace") if isinstance(out, bytes) else list(out)


def _kind(v: object) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "nil"
    return "other"


def _eq(*args: object) -> bool:
    _nargs("eq", args, 1, True)
    if len(args) < 2:
        raise ValueError("missing argument for comparison")
    a = args[0]
    for b in args[1:]:
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            if ka != "nil" and kb != "nil":
                raise ValueError("incompatible types for comparison")
            continue
        if ka == "other" and (isinstance(a, list | dict) or isinstance(b, list | dict)):
            raise ValueError(f"non-comparable type {format_value(a)}: {go_type(a)}")
        if a == b:
            return True
    return False


def _lt(*args: object) -> bool:
    _nargs("lt", args, 2)
    a, b = args
    ka, kb = _kind(a), _kind(b)
    if ka not in ("number", "string") or kb not in ("number", "string"):
        raise ValueError("invalid type for comparison")
    if ka != kb:
        raise ValueError("incompatible types for comparison")
    return a < b  # type: ignore[operator]


def _ne(*args: object) -> bool:
    _nargs("ne", args, 2)
    return not _eq(*args)


def _le(*args: object) -> bool:
    _nargs("le", args, 2)
    return _lt(*args) or _eq(*args)


def _gt(*args: object) -> bool:
    _nargs("gt", args, 2)
    return not _le(*args)


def _ge(*args: object) -> bool:
    _nargs("ge", args, 2)
    return not _lt(*args)


def _eval_args(args: tuple[object, ...]) -> str:
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint(*("<no value>" if a is None else a for a in args))


def _html(*args: object) -> str:
    s = _eval_args(args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"),
                 ('"', "&#34;"), ("\0", "\ufffd")):
        s = s.replace(a, b)
    return s


def _js(*args: object) -> str:
    out = []
    special = {"\\": "\\\\", "'": "\\'", '"': '\\"', "<": "\\u003C", ">": "\\u003E",
               "&": "\\u0026", "=": "\\u003D"}
    for ch in _eval_args(args):
        if ch in special:
            out.append(special[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04X}")
        elif ord(ch) >= 0x80 and not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


def _urlquery(*args: object) -> str:
    from urllib.parse import quote_plus

    return quote_plus(_eval_args(args), safe="")


def _printf(*args: object) -> str:
    _nargs("printf", args, 1, True)
    if not isinstance(args[0], str):
        raise _ExecError(f"wrong type for value; expected string; got {go_type(args[0])}")
    return sprintf(args[0], *args[1:])


def _call(*args: object) -> object:
    _nargs("call", args, 1, True)
    fn = args[0]
    if fn is None:
        raise ValueError("call of nil")
    if not callable(fn):
        raise ValueError(f"non-function of type {go_type(fn)}")
    return fn(*args[1:])


def _builtin_and_or(*args: object) -> object:  # placeholder: evaluated lazily by _State.call
    raise AssertionError("unreachable")


_BUILTINS: Final[dict[str, Callable[..., object]]] = {
    "and": _builtin_and_or, "or": _builtin_and_or, "not": _not, "len": _len,
    "index": _index, "slice": _slice, "print": sprint, "printf": _printf,
    "println": sprintln, "eq": _eq, "ne": _ne, "lt": _lt, "le": _le, "gt": _gt,
    "ge": _ge, "html": _html, "js": _js, "urlquery": _urlquery, "call": _call,
}

# ---------------------------------------------------------------------------
# Lima's template functions (pkg/textutil TemplateFuncMap)
# ---------------------------------------------------------------------------


def _json_value(v: object, out: list[str]) -> None:
    import json

    if v is None or v is NO_VALUE:
        out.append("null")
    elif isinstance(v, bool):
        out.append("true" if v else "false")
    elif isinstance(v, int):
        out.append(str(v))
    elif isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"json: unsupported value: {format_float(v)}")
        digits, dp = float_digits(v)
        if v and not 1e-6 <= abs(v) < 1e21:
            s = exp_notation(digits, dp).replace("e-0", "e-")
        else:
            s = fixed_notation(digits, dp)
        out.append(("-" if v < 0 else "") + s)
    elif isinstance(v, str):
        out.append(json.dumps(v, ensure_ascii=False).replace("\u2028", "\\u2028")
                   .replace("\u2029", "\\u2029"))
    elif isinstance(v, Mapping):
        out.append("{")
        for k, (key, item) in enumerate(v.items()):
            if k:
                out.append(",")
            _json_value(key if isinstance(key, str) else format_value(key), out)
            out.append(":")
            _json_value(item, out)
        out.append("}")
    elif isinstance(v, list | tuple):
        out.append("[")
        for k, item in enumerate(v):
            if k:
                out.append(",")
            _json_value(item, out)
        out.append("]")
    else:
        _json_value(str(v), out)


def _json(v: object) -> str:
    """Lima's ``json``: compact JSON, HTML characters unescaped."""
    out: list[str] = []
    try:
        _json_value(v, out)
    except ValueError as e:
        raise ValueError(f"failed to marshal as JSON: {format_value(v)}: {e}") from None
    return "".join(out)


_YAML_DUMPER: list[type] = []


def _yaml_dumper() -> type:
    if not _YAML_DUMPER:
        import yaml

        class Dumper(yaml.SafeDumper):
            def choose_scalar_style(self) -> str:
                style: str = super().choose_scalar_style()
                return '"' if style == "'" else style

        def represent_str(dumper: yaml.SafeDumper, s: str) -> yaml.Node:
            style = "|" if "\n" in s else None
            return dumper.represent_scalar("tag:yaml.org,2002:str", s, style=style)

        def represent_float(dumper: yaml.SafeDumper, f: float) -> yaml.Node:
            s = ".nan" if math.isnan(f) else (".inf" if f > 0 else "-.inf") if math.isinf(
                f) else format_float(f)
            if s[-1].isdigit() and "." not in s and "e" not in s:
                s += ".0"
            return dumper.represent_scalar("tag:yaml.org,2002:float", s)

        Dumper.add_representer(str, represent_str)
        Dumper.add_representer(float, represent_float)
        Dumper.add_representer(tuple, Dumper.represent_list)
        _YAML_DUMPER.append(Dumper)
    return _YAML_DUMPER[0]


def _yaml(v: object) -> str:
    """Lima's ``yaml``: a YAML document with a leading ``---``."""
    import yaml

    text = yaml.dump(None if v is NO_VALUE else v, Dumper=_yaml_dumper(), sort_keys=False,
                     default_flow_style=False, allow_unicode=True, width=1 << 30, indent=2)
    text = text.removesuffix("...\n").removesuffix("\n")
    return "---\n" + text


def _optional_and_text(args: tuple[object, ...], default: object,
                       kind: type, kind_name: str) -> tuple[Any, str]:
    if not args:
        raise ValueError("function takes at least one string argument")
    if len(args) > 2:
        raise ValueError("function takes at most 2 arguments")
    opt = default
    if len(args) > 1:
        opt = args[0]
        if not isinstance(opt, kind) or isinstance(opt, bool):
            raise ValueError(f"optional first argument must be {kind_name}")
    text = args[-1]
    if not isinstance(text, str):
        raise ValueError("last argument must be a string")
    return opt, text


def _indent(*args: object) -> str:
    """Lima's ``indent [size] text``: prefix each non-empty line with spaces (default 2)."""
    size, text = _optional_and_text(args, 2, int, "an integer")
    prefix = " " * size
    return "\n".join(prefix + line if line else line for line in text.split("\n"))


def _missing(*args: object) -> str:
    """Lima's ``missing [message] text``: the message (default ``<missing>``) if text is empty."""
    message, text = _optional_and_text(args, "<missing>", str, "a string")
    return text or message


TEMPLATE_FUNC_MAP: Final[Mapping[str, Callable[..., object]]] = {
    "json": _json, "yaml": _yaml, "indent": _indent, "missing": _missing,
}
"""Extra functions of ``limactl list --format`` (Lima's ``textutil.TemplateFuncMap``)."""

FUNC_HELP: Final = (
    "indent <size>: add spaces to beginning of each line",
    "missing <message>: return message if the text is empty",
)

# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


class Template:
    """A parsed template: the main tree plus any ``define``/``block`` trees."""

    def __init__(self, name: str, text: str, trees: dict[str, list[_Node]],
                 user_funcs: Mapping[str, Callable[..., object]]) -> None:
        self.name, self.text, self.trees, self.user_funcs = name, text, trees, user_funcs

    def execute(self, data: object, *, funcs: Mapping[str, Callable[..., object]] | None = None,
                missingkey_error: bool = True) -> str:
        """Apply the template to ``data``; raises GoTemplateError on execution errors.

        With ``missingkey_error`` a dict without the key is an error, as for a
        Go struct without the field; otherwise it is Go's ``<no value>``.
        """
        all_funcs = {**_BUILTINS, **self.user_funcs, **(funcs or {})}
        state = _State(self, all_funcs, missingkey_error)
        state.vars.append(["$", data])
        try:
            state.walk(data, self.trees[self.name])
        except RecursionError:
            state.errorf("exceeded maximum template depth")
        return "".join(state.out)


def parse(text: str, name: str = "format", *,
          funcs: Mapping[str, Callable[..., object]] | None = None) -> Template:
    """Parse ``text``; calls to functions other than the builtins and ``funcs`` are errors."""
    user = dict(funcs or {})
    trees = _Parser(text, name, {**_BUILTINS, **user}).parse()
    return Template(name, text, trees, user)


def render(text: str, data: object, *, funcs: Mapping[str, Callable[..., object]] | None = None,
           name: str = "format", missingkey_error: bool = True) -> str:
    """Parse and execute a Go template over ``data`` in one go."""
    if "{{" not in text:
        return text
    return parse(text, name, funcs=funcs).execute(data, missingkey_error=missingkey_error)
