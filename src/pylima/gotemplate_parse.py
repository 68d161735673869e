"""Lexer and parser for pylima's Go ``text/template`` evaluator.

The counterpart of Go's ``text/template/parse``: it turns template text into
trees of nodes, with Go's syntax error messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NoReturn

from pylima.gofmt import quote

__all__ = ["GoTemplateError", "parse_trees"]


class GoTemplateError(Exception):
    """A template syntax or execution error, worded like Go's text/template."""


_SPACE: Final = " \t\r\n"
_KEYWORDS: Final = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"})


class _Tok:
    """A token. kind is "text", "{{", "}}", "space", "field", "var", "ident", "dot",
    "bool", "nil", "number", "charconst", "string", "rawstring", "|", "(", ")", ":=",
    "=", "char", "eof", "error" or a keyword."""

    __slots__ = ("kind", "val", "pos")

    def __init__(self, kind: str, val: str, pos: int) -> None:
        self.kind, self.val, self.pos = kind, val, pos


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


class Node:
    """A parse tree node; ``pos`` is its offset in the template text and ``str()``
    renders it back as template source, like Go's ``Node.String``."""

    __slots__ = ("pos",)

    def __init__(self, pos: int) -> None:
        self.pos = pos


class Text(Node):
    __slots__ = ("text",)

    def __init__(self, pos: int, text: str) -> None:
        super().__init__(pos)
        self.text = text

    def __str__(self) -> str:
        return self.text


class Leaf(Node):
    """Dot, nil, bool, number, string and identifier operands."""

    __slots__ = ("kind", "src", "value")

    def __init__(self, pos: int, kind: str, src: str, value: object = None) -> None:
        super().__init__(pos)
        self.kind, self.src, self.value = kind, src, value

    def __str__(self) -> str:
        return self.src


class Field(Node):
    """``.A.B`` (var is None) or ``$x.A.B``."""

    __slots__ = ("var", "idents")

    def __init__(self, pos: int, var: str | None, idents: list[str]) -> None:
        super().__init__(pos)
        self.var, self.idents = var, idents

    def __str__(self) -> str:
        return (self.var or "") + "".join("." + i for i in self.idents)


class Chain(Node):
    __slots__ = ("node", "idents")

    def __init__(self, pos: int, node: Node, idents: list[str]) -> None:
        super().__init__(pos)
        self.node, self.idents = node, idents

    def __str__(self) -> str:
        inner = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return inner + "".join("." + i for i in self.idents)


class Command(Node):
    __slots__ = ("args",)

    def __init__(self, pos: int, args: list[Node]) -> None:
        super().__init__(pos)
        self.args = args

    def __str__(self) -> str:
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


class Pipe(Node):
    __slots__ = ("decl", "is_assign", "cmds")

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.decl: list[str] = []
        self.is_assign = False
        self.cmds: list[Command] = []

    def __str__(self) -> str:
        decl = ", ".join(self.decl) + (" = " if self.is_assign else " := ") if self.decl else ""
        return decl + " | ".join(str(c) for c in self.cmds)


class Action(Node):
    __slots__ = ("pipe",)

    def __init__(self, pos: int, pipe: Pipe) -> None:
        super().__init__(pos)
        self.pipe = pipe

    def __str__(self) -> str:
        return "{{" + str(self.pipe) + "}}"


class Branch(Node):
    """if, with and range."""

    __slots__ = ("kind", "pipe", "body", "else_body")

    def __init__(self, pos: int, kind: str, pipe: Pipe, body: list[Node],
                 else_body: list[Node] | None) -> None:
        super().__init__(pos)
        self.kind, self.pipe, self.body, self.else_body = kind, pipe, body, else_body

    def __str__(self) -> str:
        body = "".join(map(str, self.body))
        if self.else_body is not None:
            body += "{{else}}" + "".join(map(str, self.else_body))
        return "{{" + self.kind + " " + str(self.pipe) + "}}" + body + "{{end}}"


class Call(Node):
    """``{{template "name" pipeline}}``."""

    __slots__ = ("name", "pipe")

    def __init__(self, pos: int, name: str, pipe: Pipe | None) -> None:
        super().__init__(pos)
        self.name, self.pipe = name, pipe

    def __str__(self) -> str:
        return "{{template " + quote(self.name) + (f" {self.pipe}" if self.pipe else "") + "}}"


class Marker(Node):
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
        self.trees: dict[str, list[Node]] = {}

    def error(self, msg: str, tok: _Tok | None = None) -> NoReturn:
        tok = tok or self.toks[max(self.i - 1, 0)]
        line = self.text.count("\n", 0, tok.pos) + 1
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

    def parse(self) -> dict[str, list[Node]]:
        root: list[Node] = []
        while self.peek().kind != "eof":
            if self.peek().kind == "{{":
                save = self.i
                self.next()
                if self.next_non_space().kind == "define":
                    self.parse_define()
                    continue
                self.i = save
            node = self.text_or_action()
            if isinstance(node, Marker) and node.kind in ("end", "else"):
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

    def item_list(self) -> tuple[list[Node], Marker]:
        nodes: list[Node] = []
        while self.peek_non_space().kind != "eof":
            node = self.text_or_action()
            if isinstance(node, Marker) and node.kind in ("end", "else"):
                return nodes, node
            nodes.append(node)
        self.error("unexpected EOF")

    def text_or_action(self) -> Node:
        tok = self.next_non_space()
        if tok.kind == "text":
            return Text(tok.pos, tok.val)
        if tok.kind == "{{":
            return self.action()
        self.unexpected(tok, "input")

    def action(self) -> Node:
        tok = self.next_non_space()
        kind = tok.kind
        if kind in ("if", "with", "range"):
            return self.control(kind)
        if kind in ("end", "else"):
            if kind == "else" and self.peek_non_space().kind in ("if", "with"):
                return Marker(tok.pos, "else")
            self.expect("}}", kind)
            return Marker(tok.pos, kind)
        if kind in ("break", "continue"):
            t = self.next_non_space()
            if t.kind != "}}":
                self.unexpected(t, "{{" + kind + "}}")
            if not self.range_depth:
                self.error(f"{{{{{kind}}}}} outside {{{{range}}}}")
            return Marker(tok.pos, kind)
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
            return Call(ntok.pos, name, pipe)
        if kind == "define":
            self.error("unexpected <define> in command")
        self.i -= 1
        pos = self.peek_non_space().pos
        return Action(pos, self.pipeline("command", "}}"))

    def control(self, kind: str) -> Node:
        nvars = len(self.vars)
        pipe = self.pipeline(kind, "}}")
        if kind == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if kind == "range":
            self.range_depth -= 1
        else_body: list[Node] | None = None
        if nxt.kind == "else":
            follow = self.peek_non_space()
            if kind in ("if", "with") and follow.kind == kind:
                self.next_non_space()
                else_body = [self.control(kind)]
            else:
                else_body, end = self.item_list()
                if end.kind != "end":
                    self.error(f"expected end; found {end}")
        del self.vars[nvars:]
        return Branch(pipe.pos, kind, pipe, body, else_body)

    def pipeline(self, context: str, end: str) -> Pipe:
        pipe = Pipe(self.peek_non_space().pos)
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
                    if isinstance(first, Leaf) and first.kind != "ident":
                        self.error(f"non executable command in pipeline stage {k + 2}")
                return pipe
            if tok.kind in ("bool", "charconst", "dot", "field", "ident", "number", "nil",
                            "rawstring", "string", "var", "("):
                self.i -= 1
                pipe.cmds.append(self.command())
            else:
                self.unexpected(tok, context)

    def command(self) -> Command:
        cmd = Command(self.peek_non_space().pos, [])
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

    def operand(self) -> Node | None:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        idents = []
        while self.peek().kind == "field":
            idents.append(self.next().val[1:])
        if isinstance(node, Field):
            return Field(node.pos, node.var, node.idents + idents)
        if isinstance(node, Leaf) and node.kind != "ident":
            self.error(f"unexpected . after term {quote(str(node))}")
        return Chain(node.pos, node, idents)

    def term(self) -> Node | None:
        tok = self.next_non_space()
        k, v, pos = tok.kind, tok.val, tok.pos
        if k == "ident":
            if v not in self.funcs:
                self.error(f"function {quote(v)} not defined")
            return Leaf(pos, "ident", v)
        if k in ("dot", "nil"):
            return Leaf(pos, k, v)
        if k == "bool":
            return Leaf(pos, k, v, v == "true")
        if k == "var":
            if v not in self.vars:
                self.error(f"undefined variable {quote(v)}")
            return Field(pos, v, [])
        if k == "field":
            return Field(pos, None, [v[1:]])
        if k in ("number", "charconst"):
            try:
                value: object = (ord(_unquote(v)) if k == "charconst" else _parse_number(v))
            except (ValueError, TypeError):
                self.error(f"malformed character constant: {v}" if k == "charconst" else
                           f"illegal number syntax: {quote(v)}")
            return Leaf(pos, "number", v, value)
        if k in ("string", "rawstring"):
            return Leaf(pos, "string", v, self.string_value(tok))
        if k == "(":
            return self.pipeline("parenthesized pipeline", ")")
        self.i -= 1
        return None


def parse_trees(text: str, name: str, funcs: Mapping[str, object]) -> dict[str, list[Node]]:
    """Parse ``text`` into the named template and its ``define``/``block`` templates."""
    parser = _Parser(text, name, funcs)
    try:
        return parser.parse()
    except RecursionError:
        parser.error("max expression depth exceeded")

