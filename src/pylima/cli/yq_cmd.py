"""`limactl yq`, and `limactl` run as `yq` (a link named `yq`, `yq.lima`, ...): mikefarah
yq v4's command line over pylima's yq dialect on libjq (pylima.config.yq).

Like Lima, which embeds yq's own command, this is yq's full command line: env and file
operations are allowed here (and only here), unless --security-disable-env-ops or
--security-disable-file-ops say otherwise. Errors are yq's: `Error: ...` on stderr,
exit 1.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from pylima.cli.colour import colorize
from pylima.version import YQ_COMPAT_VERSION

USAGE = """Usage:
  yq [flags]
  yq [command]

Examples:
  # read the "stuff" node from "myfile.yml"
  yq '.stuff' < myfile.yml

  # update myfile.yml in place
  yq -i '.stuff = "foo"' myfile.yml

  # print contents of sample.json as YAML
  yq -oy sample.json

Available Commands:
  eval        (default) Apply the expression to each document in each yaml file in sequence

Flags:
  -C, --colors                      force print with colors
  -e, --exit-status                 exit 1 if there are no matches, or only null or false
      --expression string           forcibly set the expression argument
      --from-file string            Load expression from specified file.
  -h, --help                        help for yq
  -I, --indent int                  sets indent level for output (default 2)
  -i, --inplace                     update the file in place of first file given.
  -p, --input-format string         [auto|a|yaml|y|json|j] parse format for input. (default "auto")
  -M, --no-colors                   force print with no colors
  -N, --no-doc                      Don't print document separators (---)
  -0, --nul-output                  Use NUL char to separate values.
  -n, --null-input                  Don't read input, simply evaluate the expression given.
  -o, --output-format string        [auto|a|yaml|y|json|j] output format type. (default "auto")
  -P, --prettyPrint                 pretty print (pylima's YAML output is always block style)
      --security-disable-env-ops    Disable env related operations.
      --security-disable-file-ops   Disable file related operations (e.g. load)
  -r, --unwrapScalar                print scalars without quotes (default: true for yaml)
  -v, --verbose                     verbose mode
  -V, --version                     Print version information and quit

pylima's yq speaks mikefarah yq v4's expression language on libjq: see
`limactl help yq-restrictions`.
"""

FORMATS = {"auto": "auto", "a": "auto", "yaml": "yaml", "y": "yaml", "yml": "yaml",
           "json": "json", "j": "json"}

# flag -> (attribute, takes a value)
_LONG = {"colors": ("colors", False), "exit-status": ("exit_status", False),
         "expression": ("expression", True), "from-file": ("from_file", True),
         "help": ("help", False), "indent": ("indent", True), "inplace": ("inplace", False),
         "input-format": ("input_format", True), "no-colors": ("no_colors", False),
         "no-doc": ("no_doc", False), "nul-output": ("nul", False),
         "null-input": ("null_input", False), "output-format": ("output_format", True),
         "prettyPrint": ("pretty", False), "security-disable-env-ops": ("no_env", False),
         "security-disable-file-ops": ("no_file", False), "tojson": ("tojson", False),
         "unwrapScalar": ("unwrap", False), "verbose": ("verbose", False),
         "version": ("version", False), "header-preprocess": ("header", False)}
_SHORT = {"C": "colors", "e": "exit-status", "h": "help", "I": "indent", "i": "inplace",
          "p": "input-format", "M": "no-colors", "N": "no-doc", "0": "nul-output",
          "n": "null-input", "o": "output-format", "P": "prettyPrint", "j": "tojson",
          "r": "unwrapScalar", "v": "verbose", "V": "version"}


class YqUsageError(Exception):
    pass


@dataclass
class Options:
    colors: bool = False
    no_colors: bool = False
    exit_status: bool = False
    expression: str | None = None
    from_file: str | None = None
    help: bool = False
    indent: str = "2"
    inplace: bool = False
    input_format: str = "auto"
    no_doc: bool = False
    nul: bool = False
    null_input: bool = False
    output_format: str = "auto"
    pretty: bool = False
    no_env: bool = False
    no_file: bool = False
    tojson: bool = False
    unwrap: str | None = None
    verbose: bool = False
    version: bool = False
    header: str = "true"
    args: list[str] = field(default_factory=list)


def _set(opts: Options, name: str, value: str | None) -> None:
    attr, takes = _LONG[name]
    if takes:
        assert value is not None
        setattr(opts, attr, value)
    elif attr in ("unwrap", "header"):
        setattr(opts, attr, "true" if value is None else value)
    else:
        if value is not None and value.lower() not in ("true", "false", "1", "0", "t", "f"):
            raise YqUsageError(f'invalid argument "{value}" for "--{name}" flag: '
                               f'strconv.ParseBool: parsing "{value}": invalid syntax')
        setattr(opts, attr, value is None or value.lower() in ("true", "1", "t"))


def parse_argv(argv: list[str]) -> Options:
    """pflag's rules: `--flag value`, `--flag=value`, `-xVALUE`, `-x VALUE`, grouped
    short booleans, `--` ends the flags; arguments and flags may interleave."""
    opts = Options()
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            opts.args += argv[i:]
            break
        if a.startswith("--"):
            name, eq, value = a[2:].partition("=")
            if name not in _LONG:
                raise YqUsageError(f"unknown flag: --{name}")
            if _LONG[name][1] and not eq:
                if i >= len(argv):
                    raise YqUsageError(f"flag needs an argument: --{name}")
                value, eq = argv[i], "="
                i += 1
            _set(opts, name, value if eq else None)
        elif a.startswith("-") and a != "-":
            j = 1
            while j < len(a):
                c = a[j]
                if c not in _SHORT:
                    raise YqUsageError(f"unknown shorthand flag: '{c}' in {a}")
                name = _SHORT[c]
                rest = a[j + 1:]
                if _LONG[name][1]:
                    if rest:
                        _set(opts, name, rest.removeprefix("="))
                    elif i < len(argv):
                        _set(opts, name, argv[i])
                        i += 1
                    else:
                        raise YqUsageError(f"flag needs an argument: '{c}' in -{c}")
                    break
                if rest.startswith("="):
                    _set(opts, name, rest[1:])
                    break
                _set(opts, name, None)
                j += 1
        else:
            opts.args.append(a)
    return opts


def _is_file(path: str) -> bool:
    return os.path.isfile(path)


def _stdin_piped() -> bool:
    import stat

    try:
        return not stat.S_ISCHR(os.fstat(0).st_mode)
    except OSError:
        return False


def _expression_and_files(opts: Options) -> tuple[str, list[str]]:
    """yq's processArgs: which argument is the expression, which are files."""
    args = list(opts.args)
    if not (opts.null_input or not _stdin_piped() or len(args) > 1
            or (args and _is_file(args[0])) or "-" in args):
        args.append("-")
    expression = opts.expression or ""
    expression_file = opts.from_file
    if not expression_file and args and _is_file(args[0]) and args[0].endswith(".yq"):
        expression_file = args.pop(0)
    if expression_file:
        try:
            expression = open(expression_file).read().replace("\r\n", "\n")  # noqa: SIM115
        except OSError as e:
            raise YqUsageError(f"open {expression_file}: {(e.strerror or str(e)).lower()}") \
                from e
    if not expression and args and args[0] != "-" and not _is_file(args[0]):
        expression = args.pop(0)
    return expression or ".", args


def _load_docs(name: str, data: bytes, fmt: str) -> list[Any]:
    """The documents of one input: a YAML stream, or for JSON input a stream of JSON
    values (JSON Lines included)."""
    import yaml

    if fmt == "json":
        text, pos = data.decode("utf-8", "replace"), 0
        docs: list[Any] = []
        decoder = json.JSONDecoder()
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                return docs
            try:
                value, pos = decoder.raw_decode(text, pos)
            except ValueError as e:
                raise YqUsageError(f"bad file '{name}': {e}") from e
            docs.append(value)

    try:
        docs = list(yaml.safe_load_all(data))
    except yaml.YAMLError as e:
        raise YqUsageError(f"bad file '{name}': {' '.join(str(e).split())}") from e
    return docs


def render(value: Any, fmt: str, indent: int, unwrap: bool, colors: bool) -> str:
    """One result as yq prints it (with its final newline)."""
    from pylima.config.yamlio import dump_yaml

    if fmt == "json":
        if unwrap and isinstance(value, str):
            return value + "\n"
        if indent == 0:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        else:
            text = json.dumps(value, indent=indent, ensure_ascii=False)
        return (colorize(text) if colors else text) + "\n"
    if unwrap and not isinstance(value, (dict, list)):
        if value is None:
            return "null\n"
        if isinstance(value, bool):
            return ("true" if value else "false") + "\n"
        return f"{value}\n"
    text = dump_yaml(value, indent=indent or 2)
    return colorize(text) if colors else text


def run(argv: list[str]) -> int:
    from pylima.config.yq import Security, evaluate, has_path
    from pylima.errors import LimaError

    if argv and argv[0] in ("eval", "e"):
        argv = argv[1:]
    elif argv and argv[0] in ("eval-all", "ea"):
        raise YqUsageError("pylima's yq has the `eval` command only (each document in "
                           "turn); `eval-all` is not supported")
    opts = parse_argv(argv)
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    if opts.version:
        sys.stdout.write(f"yq (https://github.com/mikefarah/yq/) version {YQ_COMPAT_VERSION}"
                         f" (pylima's yq dialect on libjq)\n")
        return 0
    try:
        indent = int(opts.indent)
    except ValueError:
        raise YqUsageError(f'invalid argument "{opts.indent}" for "-I, --indent" flag: '
                           f'strconv.ParseInt: parsing "{opts.indent}": invalid syntax') from None
    if indent < 0:
        raise YqUsageError("indent must not be negative")
    out_fmt = FORMATS.get("json" if opts.tojson else opts.output_format)
    if out_fmt is None:
        raise YqUsageError(f"unknown format '{opts.output_format}' please use "
                           f"[auto|a|yaml|y|json|j] (pylima's yq reads and writes YAML "
                           f"and JSON)")
    in_fmt = FORMATS.get(opts.input_format)
    if in_fmt is None:
        raise YqUsageError(f"unknown format '{opts.input_format}' please use "
                           f"[auto|a|yaml|y|json|j] (pylima's yq reads and writes YAML "
                           f"and JSON)")
    expression, files = _expression_and_files(opts)
    if opts.inplace and (not files or files[0] == "-"):
        raise YqUsageError("write in place flag only applicable when giving an expression "
                           "and at least one file")
    if opts.null_input and files:
        raise YqUsageError("cannot pass files in when using null-input flag")
    if not opts.null_input and not files:
        sys.stdout.write(USAGE)
        return 0
    if out_fmt == "auto":
        first = files[0] if files else ""
        out_fmt = "json" if in_fmt == "json" or (in_fmt == "auto" and
                                                  first.endswith(".json")) else "yaml"
    unwrap = (out_fmt == "yaml") if opts.unwrap is None else opts.unwrap.lower() in (
        "true", "1", "t")
    colors = opts.colors or (not opts.no_colors and not os.environ.get("NO_COLOR")
                             and not opts.inplace and sys.stdout.isatty())
    security = Security(environ=None if opts.no_env else os.environ,
                        read_file=None if opts.no_file else _read_file)

    printed = False
    chunks: list[str] = []

    def emit(results: list[Any], doc: Any, first_doc: bool) -> None:
        nonlocal printed
        sep = (out_fmt == "yaml" and not opts.no_doc and not first_doc and results
               and (any(isinstance(r, (dict, list)) for r in results)
                    or has_path(expression, doc, security)))
        if sep:
            chunks.append("---\n")
        for r in results:
            text = render(r, out_fmt, indent, unwrap, colors)
            chunks.append(text.rstrip("\n") + "\0" if opts.nul else text)
            printed = printed or r not in (None, False)
    try:
        if opts.null_input:
            emit(evaluate(expression, None, security=security), None, True)
        else:
            first_doc = True
            for name in files:
                if name == "-":
                    data = sys.stdin.buffer.read()
                else:
                    try:
                        data = open(name, "rb").read()  # noqa: SIM115
                    except OSError as e:
                        raise YqUsageError(f"open {name}: {(e.strerror or str(e)).lower()}") \
                            from e
                if opts.inplace:
                    _inplace(name, data, expression, security)
                    return 0
                fmt = "json" if in_fmt == "json" or (in_fmt == "auto" and
                                                      name.endswith(".json")) else "yaml"
                for doc in _load_docs(name, data, fmt) or [None]:
                    emit(evaluate(expression, doc, security=security), doc, first_doc)
                    first_doc = False
    except LimaError as e:
        sys.stdout.write("".join(chunks))
        raise YqUsageError(e.message) from e
    sys.stdout.write("".join(chunks))
    if opts.exit_status and not printed:
        raise YqUsageError("no matches found")
    return 0


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _inplace(path: str, data: bytes, expression: str, security: Any) -> None:
    """-i: the first file updated, its comments and layout kept."""
    from pylima.config.yamlio import apply_changes, dump_roundtrip, load_roundtrip, to_plain
    from pylima.config.yq import evaluate_one

    doc = load_roundtrip(data, path)
    new = evaluate_one(expression, to_plain(doc), security=security)
    with open(path, "w") as f:
        f.write(dump_roundtrip(apply_changes(doc, new)))


def yq_main(argv: list[str]) -> int:
    """Run yq's command line; errors as yq prints them."""
    try:
        return run(argv)
    except YqUsageError as e:
        sys.stdout.flush()
        sys.stderr.write(f"Error: {e}\n")
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


@click.command("yq", context_settings={"ignore_unknown_options": True,
                                       "allow_interspersed_args": False,
                                       "help_option_names": []},
               add_help_option=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def yq_cmd(args: tuple[str, ...]) -> None:
    """Use the builtin YAML processor (mikefarah yq's command line)."""
    sys.exit(yq_main(list(args)))
