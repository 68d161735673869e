"""yq expressions: pylima's yq dialect on libjq (pure), Lima's restrictions in every
embedded evaluation, and `limactl yq` as mikefarah yq's command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pylima.config.yq import (
    ENV_DISABLED,
    FILE_DISABLED,
    SYSTEM_DISABLED,
    Security,
    evaluate,
    translate,
)
from pylima.errors import ConfigError

OPEN = Security(environ={"FOO": "bar", "NUM": "42", "EMPTY": ""},
                read_file=lambda p: {"/x.yaml": b"a: 1\n", "/t.txt": b"hi\n"}[p])


@pytest.mark.parametrize(("expr", "value", "want"), [
    # yq compares scalars by their text
    ('.disk == "1048576"', {"disk": 1048576}, [True]),
    ('.disk != "1048576"', {"disk": 1048576}, [False]),
    ('.ok == "true"', {"ok": True}, [True]),
    (".a == 1 and .b == 2", {"a": "1", "b": 2}, [True]),
    ("[.[] | select(. == 2)]", [1, 2, "2"], [[2, "2"]]),
    ('if .a == 1 then "one" else "other" end', {"a": "1"}, ["one"]),
    ('"x\\(.a == 1)y"', {"a": 1}, ["xtruey"]),
    ("{a: (.b == 1)}", {"b": 1}, [{"a": True}]),
    ("{x: 1} == {x: 1}", None, [True]),
    # what jq and yq share stays jq's
    (".foo = 42", None, [{"foo": 42}]),
    (".a.b |= . + 1", {"a": {"b": 1}}, [{"a": {"b": 2}}]),
    ('select(.name | test("z")) | .name', {"name": "baz"}, ["baz"]),
    ("{env: 1}", None, [{"env": 1}]),
    (".env.HOME", {"env": {"HOME": "/h"}}, ["/h"]),
    ('"a" | upcase', None, ["A"]),
    ('"A" | downcase', None, ["a"]),
])
def test_dialect(expr: str, value: object, want: list[object]) -> None:
    assert evaluate(expr, value) == want


@pytest.mark.parametrize(("expr", "message"), [
    ("env(HOME)", ENV_DISABLED),
    ("strenv(HOME)", ENV_DISABLED),
    ("env", ENV_DISABLED),
    ("env.HOME", ENV_DISABLED),
    ("$ENV.HOME", ENV_DISABLED),
    ('"\\(env.HOME)"', ENV_DISABLED),
    ('"\\($ENV)"', ENV_DISABLED),
    (".a | envsubst", ENV_DISABLED),
    ('.name = strenv(SECRET)', ENV_DISABLED),
    ('load("/etc/passwd")', FILE_DISABLED),
    ('load_str("/etc/passwd")', FILE_DISABLED),
    ('include "x"; .', FILE_DISABLED),
    ('import "x" as x; .', FILE_DISABLED),
    ('system("echo hello")', SYSTEM_DISABLED),
])
def test_embedded_evaluation_is_restricted(expr: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        evaluate(expr, {"a": "x"}, what="filter")
    assert e.value.message == message


def test_yq_command_line_reaches_env_and_files() -> None:
    assert evaluate("env(FOO)", None, security=OPEN) == ["bar"]
    assert evaluate("env(NUM) + 1", None, security=OPEN) == [43]  # parsed as YAML
    assert evaluate("strenv(NUM)", None, security=OPEN) == ["42"]
    assert evaluate("env.FOO", None, security=OPEN) == ["bar"]  # the given environment
    assert evaluate('"${FOO}-$FOO" | envsubst', None, security=OPEN) == ["bar-bar"]
    assert evaluate('load("/x.yaml") | .a', None, security=OPEN) == [1]
    assert evaluate('load_str("/t.txt")', None, security=OPEN) == ["hi\n"]
    assert evaluate('load_base64("/t.txt")', None, security=OPEN) == ["aGkK"]
    with pytest.raises(ConfigError, match="value for env variable 'EMPTY' not provided"):
        evaluate("env(EMPTY)", None, security=OPEN)
    with pytest.raises(ConfigError, match="system operations are disabled"):
        evaluate('system("id")', None, security=OPEN)


def test_values_travel_as_variables_not_text() -> None:
    program, args = translate('.a = strenv(FOO) | .b = env(NUM)', OPEN)
    assert "bar" not in program and sorted(args.values(), key=str) == [42, "bar"]


def test_bad_expressions_are_one_line() -> None:
    with pytest.raises(ConfigError, match='invalid input text "foo"'):
        evaluate("foo", None)
    with pytest.raises(ConfigError, match="needs a value on each side"):
        evaluate(".a ==", None)
    with pytest.raises(ConfigError, match="unterminated string"):
        evaluate('"abc', None)


# --- the command line -------------------------------------------------------------

def yq(*args: str, input: str | None = None, env: dict[str, str] | None = None,
       argv0: str | None = None) -> subprocess.CompletedProcess[str]:
    if argv0:
        cmd = [argv0, *args]
    else:
        cmd = [sys.executable, "-m", "pylima", "yq", *args]
    return subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_version_names_the_yq_it_follows() -> None:
    r = yq("--version")
    assert r.returncode == 0 and r.stdout.startswith("yq (https://github.com/mikefarah/yq/) ")
    assert " version v4." in r.stdout


def test_null_input_output_formats_and_indent() -> None:
    assert yq("-n", ".foo=42").stdout == "foo: 42\n"
    assert yq("-n", "-o", "json", "-I", "0", ".foo=42").stdout == '{"foo":42}\n'
    assert yq("-n", "-oj", ".foo=42").stdout == '{\n  "foo": 42\n}\n'
    assert yq("-n", "-o=json", "-I4", ".a.b=1").stdout == \
        '{\n    "a": {\n        "b": 1\n    }\n}\n'
    assert yq("-n", '.a="x" | .a').stdout == "x\n"  # yaml unwraps scalars
    assert yq("-n", "-o", "json", '"x"').stdout == '"x"\n'
    assert yq("-n", "-o", "json", "-r", '"x"').stdout == "x\n"


def test_documents_and_separators(tmp_path: Path) -> None:
    two = "a: 1\n---\na: 2\n"
    assert yq(".a", input=two).stdout == "1\n---\n2\n"
    assert yq("-N", ".a", input=two).stdout == "1\n2\n"
    assert yq("true", input=two).stdout == "true\ntrue\n"  # computed values: no separator
    r = yq("--input-format", "json", "--output-format", "json", "--indent", "0", ".",
           input='{"a":1}\n{"a":2}\n')
    assert r.stdout == '{"a":1}\n{"a":2}\n'
    f = tmp_path / "x.json"
    f.write_text('{"a": [1, 2]}')
    assert yq(".a[1]", str(f)).stdout == "2\n"  # format from the file name
    assert yq("-oy", ".", str(f)).stdout == "a:\n- 1\n- 2\n"


def test_inplace_keeps_comments(tmp_path: Path) -> None:
    f = tmp_path / "x.yaml"
    f.write_text("# keep me\na: 1\n")
    assert yq("-i", ".a = 2", str(f)).returncode == 0
    assert f.read_text() == "# keep me\na: 2\n"
    r = yq("-i", ".a = 3", input="a: 1\n")
    assert r.returncode == 1 and r.stderr == (
        "Error: write in place flag only applicable when giving an expression and at least "
        "one file\n")


def test_env_and_security_flags() -> None:
    assert yq("-n", "env(FOO)", env={"FOO": "bar"}).stdout == "bar\n"
    r = yq("-n", "--security-disable-env-ops", "env(FOO)", env={"FOO": "bar"})
    assert (r.returncode, r.stderr) == (1, f"Error: {ENV_DISABLED}\n")
    r = yq("-n", "--security-disable-file-ops", 'load("/etc/hostname")')
    assert (r.returncode, r.stderr) == (1, f"Error: {FILE_DISABLED}\n")
    r = yq("-n", 'system("echo hello")')
    assert r.returncode == 1 and "system operations are disabled" in r.stderr


def test_errors_are_yqs() -> None:
    r = yq("-n", "foo")
    assert r.returncode == 1 and "invalid input" in r.stderr and "Traceback" not in r.stderr
    assert yq("--nope").stderr == "Error: unknown flag: --nope\n"
    assert yq("-q").stderr == "Error: unknown shorthand flag: 'q' in -q\n"
    assert yq("-n", "-e", "null").returncode == 1
    assert yq("-n", "-o", "xml", ".").returncode == 1


def test_multi_call_binary(tmp_path: Path) -> None:
    """A link to limactl named yq (all extensions stripped: yq.lima.exe) runs as yq."""
    limactl = Path(sys.executable).parent / "limactl"
    if not limactl.exists():
        pytest.skip("limactl is not installed beside this interpreter")
    link = tmp_path / "yq.lima.exe"
    link.symlink_to(limactl)
    assert yq("--version", argv0=str(link)).stdout.startswith("yq (https://github.com/mikefarah")
    assert yq("-n", "-o", "json", "-I", "0", ".foo=42", argv0=str(link)).stdout == \
        '{"foo":42}\n'


def test_embedded_evaluations_refuse_env(lima_home: Path) -> None:
    """`list --yq`, `--filter`, `info --yq` and `--set` cannot read the host's secrets."""
    from tests.unit.test_cli import fatal_lines, limactl

    assert limactl("create", "--name=one", "template:debian-12").returncode == 0
    for args in (["list", "--yq", "env(HOME)"], ["list", "--yq", "env"],
                 ["list", "--filter", '.name == strenv(HOME)'], ["info", "--yq", "$ENV"],
                 ["edit", "--set", ".cpus = env(NUM)", "one"]):
        r = limactl(*args, env={"NUM": "3"})
        assert r.returncode == 1, args
        assert [ln.split("msg=", 1)[1] for ln in fatal_lines(r.stderr)] == \
            [json.dumps(ENV_DISABLED)], args
    r = limactl("list", "--yq", f'load("{lima_home}/one/lima.yaml")')
    assert r.returncode == 1 and FILE_DISABLED in r.stderr
    r = limactl("help", "yq-restrictions")
    assert r.returncode == 0 and "env operations have been disabled" in r.stdout


def test_list_yaml_documents_and_colours(lima_home: Path) -> None:
    from tests.unit.test_cli import limactl

    for n in ("foo", "bar"):
        assert limactl("create", f"--name={n}", "template:debian-12").returncode == 0
    js = limactl("ls", "foo", "bar", "--format", "json").stdout
    y = limactl("ls", "foo", "bar", "--format", "yaml").stdout
    assert y.startswith("---\nname: foo\n") and "\n---\nname: bar\n" in y
    back = yq("--input-format", "yaml", "--output-format", "json", "--indent", "0", ".", input=y)
    assert back.stdout == js
    coloured = limactl("ls", "foo", "bar", "--format", "yaml",
                       env={"_LIMA_OUTPUT_IS_TTY": "1"}).stdout
    import re

    assert "\x1b[0m" in coloured and re.sub(r"\x1b\[[0-9;]*m", "", coloured) == y
    cj = limactl("ls", "foo", "bar", "--format", "json", env={"_LIMA_OUTPUT_IS_TTY": "1"}).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", cj)
    assert "\x1b[0m" in cj and plain.startswith('{\n    "name": "foo"')
    assert yq("-p", "json", "-o", "json", "-I", "0", ".", input=plain).stdout == js
    # --filter ANDs; == compares by text as yq does
    r = limactl("ls", "-q", "--filter", '.name == "foo"', "--filter", '.disk == "1M"')
    assert r.stdout == ""
    r = limactl("ls", "-q", "--filter", '.name == "foo"', "--filter", '.config.disk == "100GiB"')
    assert r.stdout == "foo\n"
