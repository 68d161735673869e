"""Go ``text/template`` evaluation over plain Python data.

Lima users write Go templates in ``limactl list --format``, in ``message:`` and in
templated fields of lima.yaml (``{{.Home}}``, ``{{.Param.X}}``, ...).  This module
executes the part of ``text/template`` those templates use over dicts keyed by
Go field names, lists, str, int, float, bool and None (parsing lives in
``gotemplate_parse``, Go's fmt verbs in ``gofmt``).

Values print like Go's ``fmt.Sprint``; error messages follow Go's wording.
Dicts stand in for Go structs and keep their insertion order in ``json`` and
``yaml`` output; ``range`` and ``%v`` visit dict keys sorted, like Go maps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Final, NoReturn

from pylima.gofmt import (
    GoStruct,
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
from pylima.gotemplate_parse import (
    Action,
    Branch,
    Call,
    Chain,
    Command,
    Field,
    GoTemplateError,
    Leaf,
    Marker,
    Node,
    Pipe,
    Text,
    parse_trees,
)

__all__ = [
    "FORMAT_HELP",
    "FUNC_HELP",
    "GoStruct",
    "NO_VALUE",
    "TEMPLATE_FUNC_MAP",
    "GoTemplateError",
    "Template",
    "parse",
    "render",
]


class _NoValue:
    """Go's invalid reflect.Value: a missing map entry; printed as ``<no value>``."""

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


NO_VALUE: Final = _NoValue()
_MISSING: Final = object()  # no piped-in final argument

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
        self.node: Node | None = None
        self.vars: list[list[Any]] = []
        self.out: list[str] = []
        self.depth = 0

    def errorf(self, msg: str) -> NoReturn:
        text, name = self.tmpl.text, self.tmpl.name
        if self.node is None:
            raise GoTemplateError(f"template: {self.name}: {msg}")
        before = text[: self.node.pos]
        col = len(before[before.rfind("\n") + 1:].encode())  # Go counts bytes
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
    def walk(self, dot: object, nodes: list[Node]) -> None:
        for node in nodes:
            self.node = node
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                val = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.print_value(node, val)
            elif isinstance(node, Branch):
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
            elif isinstance(node, Marker):
                raise _Break() if node.kind == "break" else _Continue()
            elif isinstance(node, Call):
                self.walk_template(dot, node)

    def walk_range(self, dot: object, node: Branch) -> None:
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

    def walk_template(self, dot: object, node: Call) -> None:
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

    def print_value(self, node: Node, val: object) -> None:
        self.node = node
        if val is None or val is NO_VALUE:
            self.out.append("<no value>")
        elif callable(val) and not isinstance(val, type):
            self.errorf(f"can't print {node} of type func")
        else:
            self.out.append(format_value(val))

    # -- evaluation --------------------------------------------------------
    def pipeline(self, dot: object, pipe: Pipe) -> object:
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

    def not_a_function(self, args: list[Node], final: object) -> None:
        if len(args) > 1 or final is not _MISSING:
            self.errorf(f"can't give argument to non-function {args[0]}")

    def command(self, dot: object, cmd: Command, final: object) -> object:
        first = cmd.args[0]
        if isinstance(first, Field):
            return self.field_node(dot, first, cmd.args, final)
        if isinstance(first, Chain):
            return self.chain_node(dot, first, cmd.args, final)
        if isinstance(first, Pipe):
            self.not_a_function(cmd.args, final)
            return self.pipeline(dot, first)
        assert isinstance(first, Leaf)
        if first.kind == "ident":
            return self.call(dot, first, cmd, cmd.args, final)
        self.node = first
        self.not_a_function(cmd.args, final)
        if first.kind == "dot":
            return dot
        if first.kind == "nil":
            self.errorf("nil is not a command")
        return first.value

    def field_node(self, dot: object, node: Field, args: list[Node], final: object) -> object:
        self.node = node
        if node.var is None:
            receiver = dot
        else:
            receiver = self.var(node.var)
            if not node.idents:
                self.not_a_function(args, final)
                return receiver
        return self.field_chain(dot, receiver, node, node.idents, args, final)

    def chain_node(self, dot: object, node: Chain, args: list[Node], final: object) -> object:
        self.node = node
        if isinstance(node.node, Leaf) and node.node.kind == "nil":
            self.errorf(f"indirection through explicit nil in {node}")
        receiver = self.arg(dot, node.node, keep_missing=True)
        return self.field_chain(dot, receiver, node, node.idents, args, final)

    def field_chain(self, dot: object, receiver: object, node: Node, idents: list[str],
                    args: list[Node], final: object) -> object:
        for name in idents[:-1]:
            receiver = self.field(dot, name, node, [], _MISSING, receiver)
        return self.field(dot, idents[-1], node, args, final, receiver)

    def field(self, dot: object, name: str, node: Node, args: list[Node], final: object,
              receiver: object) -> object:
        has_args = len(args) > 1 or final is not _MISSING
        if receiver is NO_VALUE:
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
            if self.missingkey_error or isinstance(receiver, GoStruct):
                self.errorf(f"can't evaluate field {name} in type {go_type(receiver)}")
            return NO_VALUE
        attr = getattr(receiver, name, _MISSING) if not name.startswith("_") else _MISSING
        if attr is _MISSING or isinstance(receiver, str | int | float | list | tuple):
            self.errorf(f"can't evaluate field {name} in type {go_type(receiver)}")
        if callable(attr) and not isinstance(attr, type):
            argv = [self.arg(dot, a) for a in args[1:]]
            if final is not _MISSING:
                argv.append(None if final is NO_VALUE else final)
            return self.invoke(attr, name, node, argv)
        if has_args:
            self.errorf(f"{name} has arguments but cannot be invoked as function")
        return attr

    def arg(self, dot: object, node: Node, keep_missing: bool = False) -> object:
        """Evaluate a function argument; a missing value becomes nil."""
        self.node = node
        if isinstance(node, Field):
            val = self.field_node(dot, node, [node], _MISSING)
        elif isinstance(node, Chain):
            val = self.chain_node(dot, node, [node], _MISSING)
        elif isinstance(node, Pipe):
            val = self.pipeline(dot, node)
        elif isinstance(node, Leaf) and node.kind == "ident":
            val = self.call(dot, node, node, [node], _MISSING)
        elif isinstance(node, Leaf) and node.kind == "dot":
            val = dot
        else:
            assert isinstance(node, Leaf)
            val = node.value
        if keep_missing and val is NO_VALUE:
            return val
        return None if val is NO_VALUE or val is _MISSING else val

    def call(self, dot: object, ident: Leaf, cmd: Node, args: list[Node],
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

    def invoke(self, fn: Callable[..., object], name: str, node: Node,
               argv: list[object]) -> object:
        self.node = node
        try:
            return fn(*argv)
        except GoTemplateError:
            raise
        except _ExecError as e:
            self.errorf(str(e))
        except Exception as e:
            if isinstance(e, TypeError):
                self._check_arity(fn, name, argv)
            self.errorf(f"error calling {name}: {e}")

    def _check_arity(self, fn: Callable[..., object], name: str, argv: list[object]) -> None:
        """Report a call with the wrong number of arguments the way Go does."""
        import inspect

        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return
        try:
            sig.bind(*argv)
        except TypeError:
            want = sum(p.default is p.empty and p.kind <= p.POSITIONAL_OR_KEYWORD
                       for p in sig.parameters.values())
            self.errorf(f"wrong number of args for {name}: want {want} got {len(argv)}")


def _strip_decl(pipe: Pipe) -> Pipe:
    p = Pipe(pipe.pos)
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


def _as_data(v: object) -> object:
    """Dataclass instances (Go structs) as dicts of their fields, recursively."""
    fields = getattr(type(v), "__dataclass_fields__", None)
    if fields is not None:
        return {name: _as_data(getattr(v, name)) for name in fields}
    if isinstance(v, Mapping):
        return {k: _as_data(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_as_data(x) for x in v]
    return None if v is NO_VALUE else v


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
        _json_value(_as_data(v), out)
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

    text = yaml.dump(_as_data(v), Dumper=_yaml_dumper(), sort_keys=False,
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

FORMAT_HELP: Final = "\nThese functions are available to go templates:\n\n" + _indent(
    "\n".join(FUNC_HELP) + "\n")
"""The ``limactl list --format`` help addendum (Lima's ``store.FormatHelp``)."""

# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


class Template:
    """A parsed template: the main tree plus any ``define``/``block`` trees."""

    def __init__(self, name: str, text: str, trees: dict[str, list[Node]],
                 funcs: Mapping[str, Callable[..., object]]) -> None:
        self.name, self.text, self.trees, self.funcs = name, text, trees, funcs

    def execute(self, data: object, *, missingkey_error: bool = True) -> str:
        """Apply the template to ``data``; raises GoTemplateError on execution errors.

        With ``missingkey_error`` a dict without the key is an error, as for a
        Go struct without the field; otherwise it is Go's ``<no value>``.
        """
        state = _State(self, self.funcs, missingkey_error)
        state.vars.append(["$", data])
        try:
            state.walk(data, self.trees[self.name])
        except RecursionError:
            state.errorf("exceeded maximum template depth")
        return "".join(state.out)


def parse(text: str, name: str = "format", *,
          funcs: Mapping[str, Callable[..., object]] | None = None) -> Template:
    """Parse ``text`` into a Template.

    The functions available are Go's builtins, Lima's ``TEMPLATE_FUNC_MAP`` (json,
    yaml, indent, missing) and ``funcs``, which may override either; a call to any
    other function is a syntax error, as in Go.
    """
    all_funcs = {**_BUILTINS, **TEMPLATE_FUNC_MAP, **(funcs or {})}
    return Template(name, text, parse_trees(text, name, all_funcs), all_funcs)


def render(text: str, data: object, *, funcs: Mapping[str, Callable[..., object]] | None = None,
           name: str = "format", missingkey_error: bool = True) -> str:
    """Parse and execute a Go template over ``data`` in one go."""
    if "{{" not in text:
        return text
    return parse(text, name, funcs=funcs).execute(data, missingkey_error=missingkey_error)
