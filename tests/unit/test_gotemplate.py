"""Tests for pylima.gotemplate: Go text/template semantics over plain data."""

from __future__ import annotations

import dataclasses

import pytest

from pylima.gofmt import sprint, sprintf
from pylima.gotemplate import (
    FORMAT_HELP,
    NO_VALUE,
    TEMPLATE_FUNC_MAP,
    GoStruct,
    GoTemplateError,
    parse,
    render,
)

INSTANCE = {
    "Name": "default",
    "Status": "Running",
    "Dir": "/home/user/.lima/default",
    "VMType": "qemu",
    "Arch": "x86_64",
    "CPUs": 4,
    "Memory": 4294967296,
    "Disk": 107374182400,
    "SSHLocalPort": 60022,
    "Protected": False,
    "Message": "",
    "Config": {"cpus": 4, "mounts": [{"location": "~", "writable": False},
                                     {"location": "/tmp/lima", "writable": True}]},
    "Param": {"B": "two", "A": "one"},
    "Errors": [],
    "Nothing": None,
}


def run(text: str, data: object = INSTANCE, **kw: object) -> str:
    return render(text, data, **kw)  # type: ignore[arg-type]


# --- limactl list --format use cases ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("{{.Name}}", "default"),
        ("{{ .Name }}", "default"),
        ("{{.Name}} {{.Status}} {{.SSHLocalPort}}", "default Running 60022"),
        ("{{.Config.cpus}}", "4"),
        ("{{(index .Config.mounts 1).location}}", "/tmp/lima"),
        ('{{printf "%-20s %s" .Name .Dir}}', "default              /home/user/.lima/default"),
        ('{{if eq .Status "Running"}}up{{else}}down{{end}}', "up"),
        ('{{if eq .Status "Stopped"}}down{{else}}up{{end}}', "up"),
        ('{{.Name}}{{if .Protected}} (protected){{end}}', "default"),
        ("{{.Param.A}}-{{.Param.B}}", "one-two"),
        ("{{len .Config.mounts}}", "2"),
        ("{{range .Config.mounts}}{{.location}};{{end}}", "~;/tmp/lima;"),
        ('{{.Memory}} {{.Disk}}', "4294967296 107374182400"),
    ],
)
def test_lima_list_formats(text: str, want: str) -> None:
    assert run(text) == want


def test_config_answers_to_limas_go_field_names() -> None:
    """Lima's `.Config` is its LimaYAML struct: its Go field names work on pylima's
    YAML map too (case-insensitively; `NineP` is `9p`), nested, and the keys still do."""
    from pylima.gofmt import GoFields

    cfg = {"vmType": "qemu", "cpus": 4, "ssh": {"localPort": 60022},
           "mounts": [{"location": "~", "9p": {"msize": "128KiB"}}],
           "caCerts": {"removeDefaults": False},
           "networks": [{"lima": "user-v2", "macAddress": "52:55:55:00:00:01"}]}
    data = {**INSTANCE, "Config": GoFields(cfg), "Networks": GoFields(cfg)["networks"]}
    assert run("{{.Config.VMType}} {{.Config.CPUs}} {{.Config.SSH.LocalPort}}", data) == \
        "qemu 4 60022"
    assert run("{{(index .Config.Mounts 0).NineP.Msize}} {{.Config.CACertificates."
               "RemoveDefaults}}", data) == "128KiB false"
    assert run("{{range .Networks}}{{.Lima}} {{.MACAddress}}{{end}}", data) == \
        "user-v2 52:55:55:00:00:01"
    assert run("{{.Config.cpus}} {{len .Config.Mounts}}", data) == "4 1"
    assert run("{{json .Config.SSH}}", data) == '{"localPort":60022}'
    with pytest.raises(GoTemplateError, match="can't evaluate field Nope"):
        run("{{.Config.Nope}}", data)  # as Lima: not a field of the struct


def test_json_of_instance_keeps_field_order_and_is_compact() -> None:
    data = {"name": "vm", "cpus": 2, "ratio": 0.5, "big": 1e6, "tiny": 1e-7, "ok": True,
            "none": None, "html": "<a&b>", "text": "é\n\"q\"", "list": [1, "x"], "m": {}}
    want = ('{"name":"vm","cpus":2,"ratio":0.5,"big":1000000,"tiny":1e-7,"ok":true,'
            '"none":null,"html":"<a&b>","text":"é\\n\\"q\\"","list":[1,"x"],"m":{}}')
    assert run("{{json .}}", data) == want
    assert run("{{json .Name}}") == '"default"'
    assert run("{{json .Errors}}") == "[]"


# --- Lima's TemplateFuncMap (pkg/textutil/textutil_test.go) -------------------------------

LIMA_X = {"foo": 42, "bar": "hello", "message": "One\nTwo\nThree"}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("{{json .}}", '{"foo":42,"bar":"hello","message":"One\\nTwo\\nThree"}'),
        ("{{yaml .}}", "---\nfoo: 42\nbar: hello\nmessage: |-\n  One\n  Two\n  Three"),
        ('{{.bar}}{{"\\n"}}{{.message | missing "<no message>" | indent 2}}',
         "hello\n  One\n  Two\n  Three"),
        ("{{.message | indent}}", "  One\n  Two\n  Three"),
        ('{{"" | missing}}', "<missing>"),
        ('{{"" | missing "none"}}', "none"),
        ('{{"x" | missing "none"}}', "x"),
        ('{{indent 4 "a\\n\\nb\\n"}}', "    a\n\n    b\n"),
        ("{{yaml .foo}}", "---\n42"),
        ('{{yaml "true"}}', '---\n"true"'),
        ("{{yaml 1.0}}", "---\n1.0"),
        ('{{yaml (index . "nope")}}', "---\nnull"),
    ],
)
def test_lima_funcs(text: str, want: str) -> None:
    assert run(text, LIMA_X) == want


def test_yaml_nested() -> None:
    data = {"a": {"b": [1, 2], "c": ""}, "d": [{"e": "f", "g": None}], "h": {}}
    assert run("{{yaml .}}", data) == (
        '---\na:\n  b:\n  - 1\n  - 2\n  c: ""\nd:\n- e: f\n  g: null\nh: {}')


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("{{indent}}", "error calling indent: function takes at least one string argument"),
        ('{{indent 1 2 "x"}}', "error calling indent: function takes at most 2 arguments"),
        ('{{indent "a" "x"}}', "error calling indent: optional first argument must be an integer"),
        ("{{indent 3}}", "error calling indent: last argument must be a string"),
        ('{{missing 1 "x"}}', "error calling missing: optional first argument must be a string"),
    ],
)
def test_lima_func_errors(text: str, msg: str) -> None:
    with pytest.raises(GoTemplateError, match="executing \"format\" at <.*>: " + msg):
        run(text, LIMA_X)


def test_lima_funcs_are_available_by_default() -> None:
    assert render("{{json .}} {{indent 1 .x}}", {"x": "a"}) == '{"x":"a"}  a'
    assert render("{{json .}}", [1], funcs={"json": lambda v: "mine"}) == "mine"
    with pytest.raises(GoTemplateError) as e:
        render("{{jsonn .}}", {})
    assert str(e.value) == 'template: format:1: function "jsonn" not defined'


# --- text, printing and literals ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "data", "want"),
    [
        ("plain text, no actions }} {", None, "plain text, no actions }} {"),
        ("", None, ""),
        ("{{.}}", "hi", "hi"),
        ("{{.}}", 42, "42"),
        ("{{.}}", -7, "-7"),
        ("{{.}}", True, "true"),
        ("{{.}}", None, "<no value>"),
        ("{{.}}", [1, "a", None, [2, 3]], "[1 a <nil> [2 3]]"),
        ("{{.}}", {"b": 2, "a": [1], "c": None}, "map[a:[1] b:2 c:<nil>]"),
        ("{{.}}", {2: "x", 10: "y"}, "map[2:x 10:y]"),
        ("{{.}}", 1e6, "1e+06"),
        ("{{.}}", 123456.0, "123456"),
        ("{{.}}", 1234567.0, "1.234567e+06"),
        ("{{.}}", 3.0, "3"),
        ("{{.}}", 0.1, "0.1"),
        ("{{.}}", 0.0001, "0.0001"),
        ("{{.}}", 0.00001, "1e-05"),
        ("{{.}}", 1e21, "1e+21"),
        ("{{.}}", -2.5, "-2.5"),
        ("{{.}}", float("inf"), "+Inf"),
        ("{{.}}", float("nan"), "NaN"),
        ("{{.A}}", {"A": None}, "<no value>"),
        ("{{print .A}}", {"A": None}, "<nil>"),
        ('{{"{{ not an action }}"}}', None, "{{ not an action }}"),
        ('{{"a\\tb\\n\\"c\\"\\\\ \\x41\\u00e9\\U0001F600 \\101"}}', None,
         'a\tb\n"c"\\ A\u00e9\U0001F600 A'),
        ("{{`raw \\n {{x}}`}}", None, "raw \\n {{x}}"),
        ("{{`multi\nline`}}", None, "multi\nline"),
        ("{{true}} {{false}}", None, "true false"),
        ("{{1}} {{-2}} {{+3}} {{0x1F}} {{0o17}} {{017}} {{0b101}} {{1_000}}", None,
         "1 -2 3 31 15 15 5 1000"),
        ("{{1.5}} {{1e3}} {{1.0}} {{.5}} {{0x1p-2}}", None, "1.5 1000 1 0.5 0.25"),
        ("{{'a'}} {{'\\n'}} {{'é'}}", None, "97 10 233"),
        ("{{print}}", None, ""),
        ('{{print "a" 1 2 "b" true false}}', None, "a1 2btrue false"),
        ('{{println "a" 1}}', None, "a 1\n"),
        ("{{print nil}}", None, "<nil>"),
    ],
)
def test_printing_and_literals(text: str, data: object, want: str) -> None:
    assert render(text, data) == want


def test_object_attributes_and_methods() -> None:
    @dataclasses.dataclass
    class Inst:
        Name: str
        CPUs: int

        def Greeting(self, who: str) -> str:  # noqa: N802 - Go-style method name
            return f"hi {who} from {self.Name}"

    inst = Inst("vm", 2)
    assert render('{{.Name}} {{.CPUs}} {{.Greeting "bob"}}', inst) == "vm 2 hi bob from vm"
    assert run("{{json .}}", inst) == '{"Name":"vm","CPUs":2}'
    assert run("{{yaml .}}", [inst]) == "---\n- Name: vm\n  CPUs: 2"
    assert render('{{"x" | .Greeting}}', inst) == "hi x from vm"
    with pytest.raises(GoTemplateError, match="can't evaluate field Nope in type Inst"):
        render("{{.Nope}}", inst)


# --- fmt ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "args", "want"),
    [
        ("%s|%v|%d", ("a", "b", 3), "a|b|3"),
        ("%5s|%-5s|%.2s|%5.1s", ("ab", "ab", "abc", "xyz"), "   ab|ab   |ab|    x"),
        ("%q", ("a\"b\n",), '"a\\"b\\n"'),
        ("%q", (["a", "b"],), '["a" "b"]'),
        ("%q", (65,), "'A'"),
        ("%d|%5d|%-5d|%05d|%+d|% d", (1, 2, 3, -4, 5, 6), "1|    2|3    |-0004|+5| 6"),
        ("%x|%X|%#x|%o|%#o|%O|%b|%c|%U", (255, 255, 255, 8, 8, 8, 5, 65, 0x1F600),
         "ff|FF|0xff|10|010|0o10|101|A|U+1F600"),
        ("%x|% x|%X", ("hi", "hi", "hi"), "6869|68 69|6869"),
        ("%f|%.2f|%5.2f|%-8.3f|%08.3f|%+.1f", (3.14159,) * 5 + (2.0,),
         "3.141590|3.14| 3.14|3.142   |0003.142|+2.0"),
        ("%e|%E|%.2e|%g|%g|%g|%.3g",
         (1234.5678, 1234.5678, 1234.5678, 1e6, 100000.0, 1e-5, 3.14159),
         "1.234568e+03|1.234568E+03|1.23e+03|1e+06|100000|1e-05|3.14"),
        ("%v|%v|%v|%v", (1.0, 2.5, None, True), "1|2.5|<nil>|true"),
        ("%t|%5t", (True, False), "true|false"),
        ("%v", ({"b": [1, 2], "a": {"x": None}},), "map[a:map[x:<nil>] b:[1 2]]"),
        ("%d", ([1, 2, 3],), "[1 2 3]"),
        ("%3d", ([1, 22],), "[  1  22]"),
        ("%T %T %T %T %T %T", ("s", 1, 1.5, True, [1], {}),
         "string int float64 bool []interface {} map[string]interface {}"),
        ("%%|100%%", (), "%|100%"),
        ("%d", ("x",), "%!d(string=x)"),
        ("%s", (5,), "%!s(int=5)"),
        ("%s", (None,), "%!s(<nil>)"),
        ("%f", (1,), "%!f(int=1)"),
        ("%t", (1,), "%!t(int=1)"),
        ("%d %d", (1,), "1 %!d(MISSING)"),
        ("%d", (1, "x", 2.5), "1%!(EXTRA string=x, float64=2.5)"),
        ("%", (), "%!(NOVERB)"),
        ("%[2]s %[1]s %s", ("a", "b"), "b a b"),
        ("%[3]s", ("a",), "%!s(BADINDEX)"),
        ("%*d|%-*d|%.*f", (5, 42, 4, 7, 1, 3.14159), "   42|7   |3.1"),
        ("%#v", ("s",), '"s"'),
    ],
)
def test_sprintf(fmt: str, args: tuple[object, ...], want: str) -> None:
    assert sprintf(fmt, *args) == want


def test_sprint_spacing() -> None:
    assert sprint("a", "b") == "ab"
    assert sprint(1, 2) == "1 2"
    assert sprint(1, "a", 2) == "1a2"


def test_printf_in_template() -> None:
    assert run('{{printf "%s has %d CPUs" .Name .CPUs}}') == "default has 4 CPUs"
    assert run('{{.Name | printf "%q"}}') == '"default"'
    assert run('{{printf "%v" .Param}}') == "map[A:one B:two]"
    assert run('{{printf "%v" .Nothing}}') == "<nil>"
    with pytest.raises(GoTemplateError, match="wrong type for value; expected string; got int"):
        run("{{printf 3}}")


# --- builtin functions --------------------------------------------------------------------

FUNC_DATA = {"L": [10, 20, 30], "M": {"k": "v", "n": 0}, "S": "héllo", "E": [], "Z": 0,
             "T": True, "N": None}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("{{and 1 2}} {{and 0 2}} {{and 1 \"\" 2}}", "2 0 "),
        ("{{or 0 2}} {{or 0 \"\"}} {{or .E .L}}", "2  [10 20 30]"),
        ("{{and .Z (index .L 99)}}", "0"),  # short-circuit: index is not evaluated
        ("{{or .T .Missing}}", "true"),
        ("{{not 0}} {{not 1}} {{not .E}} {{not .N}}", "true false true true"),
        ("{{len .L}} {{len .M}} {{len .S}} {{len .E}}", "3 2 6 0"),
        ("{{index .L 0}} {{index .M \"k\"}} {{index .M \"zz\"}}", "10 v <no value>"),
        ("{{index .M}}", "map[k:v n:0]"),
        ("{{slice .L 1}} {{slice .L 1 2}} {{slice .L}} {{slice \"hello\" 1 3}}",
         "[20 30] [20] [10 20 30] el"),
        ("{{eq 1 1}} {{eq 1 2}} {{eq \"a\" \"b\" \"a\"}} {{eq 1.5 1.5}} {{eq 1 1.0}}",
         "true false true true true"),
        ("{{ne 1 2}} {{ne \"a\" \"a\"}}", "true false"),
        ("{{lt 1 2}} {{le 2 2}} {{gt 1 2}} {{ge 2 3}} {{lt \"a\" \"b\"}} {{gt 2.5 1}}",
         "true true false false true true"),
        ("{{html \"<a href='x'>&\\\"\"}}", "&lt;a href=&#39;x&#39;&gt;&amp;&#34;"),
        ("{{js \"it's <b> & \\\"q\\\" =\\n\"}}",
         "it\\'s \\u003Cb\\u003E \\u0026 \\\"q\\\" \\u003D\\u000A"),
        ("{{urlquery \"a b&c=d/é\"}}", "a+b%26c%3Dd%2F%C3%A9"),
        ("{{html 1 2}}", "1 2"),
        ("{{.S | len}}", "6"),
        ("{{\"x\" | printf \"%s-%s\" \"a\"}}", "a-x"),
        ("{{printf \"%d\" (len .L)}}", "3"),
        ("{{(len .L)}}", "3"),
    ],
)
def test_builtins(text: str, want: str) -> None:
    assert render(text, FUNC_DATA, missingkey_error=False) == want


def test_call() -> None:
    assert render("{{call .F 2 3}}", {"F": lambda a, b: a + b}) == "5"


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("{{index .L 5}}", "error calling index: index out of range: 5"),
        ("{{index .L \"a\"}}", "error calling index: cannot index slice/array with type string"),
        ("{{index 3 1}}", "error calling index: can't index item of type int"),
        ("{{index nil 1}}", "error calling index: index of untyped nil"),
        ("{{slice .L 2 1}}", "error calling slice: invalid slice index: 2 > 1"),
        ("{{len 3}}", "error calling len: len of type int"),
        ("{{eq 1 \"a\"}}", "error calling eq: incompatible types for comparison"),
        ("{{lt true false}}", "error calling lt: invalid type for comparison"),
        ("{{not 1 2}}", "wrong number of args for not: want 1 got 2"),
        ("{{and}}", "wrong number of args for and: want at least 1 got 0"),
        ("{{call 3}}", "error calling call: non-function of type int"),
        ("{{3 4}}", "can't give argument to non-function 3"),
        ("{{nil}}", "nil is not a command"),
        ("{{.M.k.x}}", "can't evaluate field x in type string"),
        ("{{.N.x}}", "nil pointer evaluating interface {}.x"),
        ("{{.M.k 1}}", "k is not a method but has arguments"),
        ("{{range .S}}{{end}}", "range can't iterate over héllo"),
        ("{{template \"nope\"}}", 'template "nope" not defined'),
    ],
)
def test_exec_errors(text: str, msg: str) -> None:
    with pytest.raises(GoTemplateError) as e:
        render(text, FUNC_DATA)
    assert str(e.value).endswith(": " + msg), str(e.value)


def test_user_funcs_override_and_extend() -> None:
    funcs = {"upper": str.upper, "len": lambda v: "custom"}
    assert render("{{upper .}} {{len .}} {{. | upper}}", "ab", funcs=funcs) == "AB custom AB"

    def boom() -> str:
        raise RuntimeError("kaput")

    with pytest.raises(GoTemplateError, match="wrong number of args for upper: want 1 got 2"):
        render('{{upper . "x"}}', "ab", funcs=funcs)
    with pytest.raises(GoTemplateError) as e:
        render("{{boom}}", None, funcs={"boom": boom})
    assert str(e.value) == ('template: format:1:2: executing "format" at <boom>: '
                            "error calling boom: kaput")


# --- control structures -------------------------------------------------------------------

CTRL = {"L": ["a", "b", "c"], "M": {"z": 26, "a": 1, "m": 13}, "E": [], "N": 2, "S": "x",
        "Nested": {"Items": [{"Name": "i1", "Tags": ["t1", "t2"]}, {"Name": "i2", "Tags": []}]}}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("{{if .N}}yes{{end}}", "yes"),
        ("{{if .E}}yes{{else}}no{{end}}", "no"),
        ("{{if eq .N 1}}one{{else if eq .N 2}}two{{else}}many{{end}}", "two"),
        ("{{if eq .N 3}}3{{else if eq .N 4}}4{{else}}other{{end}}", "other"),
        ("{{with .M}}{{.a}}{{end}}", "1"),
        ("{{with .E}}x{{else}}empty{{end}}", "empty"),
        ("{{with $v := .S}}{{$v}}{{.}}{{end}}", "xx"),
        ("{{with .E}}e{{else with .S}}s={{.}}{{end}}", "s=x"),
        ("{{range .L}}{{.}}{{end}}", "abc"),
        ("{{range $v := .L}}{{$v}}{{end}}", "abc"),
        ("{{range $i, $v := .L}}{{$i}}:{{$v}} {{end}}", "0:a 1:b 2:c "),
        ("{{range $k, $v := .M}}{{$k}}={{$v}};{{end}}", "a=1;m=13;z=26;"),
        ("{{range .M}}{{.}},{{end}}", "1,13,26,"),
        ("{{range .E}}x{{else}}none{{end}}", "none"),
        ("{{range .L}}{{if eq . \"b\"}}{{continue}}{{end}}{{.}}{{end}}", "ac"),
        ("{{range .L}}{{if eq . \"b\"}}{{break}}{{end}}{{.}}{{end}}", "a"),
        ("{{range 3}}{{.}}{{end}}", "012"),
        ("{{range .L}}{{$.N}}{{end}}", "222"),
        ("{{range .Nested.Items}}{{.Name}}[{{range .Tags}}{{.}}{{end}}]{{end}}", "i1[t1t2]i2[]"),
        ("{{$x := .N}}{{$x}}", "2"),
        ("{{$x := 1}}{{range .L}}{{$x = .}}{{end}}{{$x}}", "c"),
        ("{{$x := 1}}{{if true}}{{$x := 2}}{{$x}}{{end}}{{$x}}", "21"),
        ("{{$}}", "map[E:[] L:[a b c] M:map[a:1 m:13 z:26] N:2 Nested:map[Items:[map[Name:i1 "
                  "Tags:[t1 t2]] map[Name:i2 Tags:[]]]] S:x]"),
        ('{{define "item"}}<{{.}}>{{end}}{{range .L}}{{template "item" .}}{{end}}', "<a><b><c>"),
        ('{{block "b" .N}}[{{.}}]{{end}}', "[2]"),
        ("{{$n := len .L}}{{if gt $n 2}}many{{end}}", "many"),
    ],
)
def test_control(text: str, want: str) -> None:
    assert render(text, CTRL) == want


@pytest.mark.parametrize(
    ("value", "truth"),
    [(0, False), (1, True), (-1, True), (0.0, False), (0.5, True), ("", False), ("0", True),
     ([], False), ([0], True), ({}, False), ({"a": 0}, True), (None, False), (False, False),
     (True, True)],
)
def test_truthiness(value: object, truth: bool) -> None:
    assert render("{{if .V}}T{{else}}F{{end}}", {"V": value}) == ("T" if truth else "F")


# --- whitespace trimming and comments -----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("a  {{- .S -}}  b", "axb"),
        ("a  {{- .S}}  b", "ax  b"),
        ("a  {{.S -}}  b", "a  xb"),
        ("a\n\t {{- .S -}} \n\nb", "axb"),
        ("{{- .S -}}", "x"),
        ("a {{-3}} b", "a -3 b"),
        ("a {{- 3}} b", "a3 b"),
        ("{{range .L -}}\n  {{.}}\n{{- end}}", "abc"),
        ("a{{/* a comment */}}b", "ab"),
        ("a {{- /* trimmed\n comment */ -}} b", "ab"),
        ("a {{/* c */ -}} b", "a b"),
        ("{{if true -}}\n  yes\n{{- end}}", "yes"),
    ],
)
def test_trim_and_comments(text: str, want: str) -> None:
    assert render(text, CTRL) == want


# --- missing keys and error messages ------------------------------------------------------


def test_missing_field_is_an_error_by_default() -> None:
    with pytest.raises(GoTemplateError) as e:
        run("{{.Foo}}")
    assert str(e.value) == ('template: format:1:2: executing "format" at <.Foo>: '
                            "can't evaluate field Foo in type map[string]interface {}")


def test_missing_nested_field_position_and_name() -> None:
    with pytest.raises(GoTemplateError) as e:
        render("line one\n  x {{.Config.nope}}", INSTANCE, name="message")
    assert str(e.value) == ('template: message:2:6: executing "message" at <.Config.nope>: '
                            "can't evaluate field nope in type map[string]interface {}")


def test_error_context_is_truncated_like_go() -> None:
    with pytest.raises(GoTemplateError) as e:
        render("{{index .LongListNameHere 5}}", {"LongListNameHere": []})
    assert "at <index .LongListNameH...>: error calling index" in str(e.value)


def test_missing_key_without_error_is_no_value() -> None:
    assert render("{{.Foo}}|{{.Foo.Bar}}|{{.Param.X}}", INSTANCE,
                  missingkey_error=False) == "<no value>|<no value>|<no value>"
    assert render("{{if .Foo}}y{{else}}n{{end}}", {}, missingkey_error=False) == "n"
    assert render('{{printf "%v" .Foo}}', {}, missingkey_error=False) == "<nil>"


@pytest.mark.parametrize(
    ("text", "msg"),
    [
        ("{{.Name}", 'unexpected "}" in operand'),
        ("{{.Name", "unclosed action"),
        ("{{if .X}}", "unexpected EOF"),
        ("{{if .X}}{{else}}{{else}}{{end}}", "expected end; found {{else}}"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{else}}", "unexpected {{else}}"),
        ("{{foo}}", 'function "foo" not defined'),
        ("{{$x}}", 'undefined variable "$x"'),
        ("{{if true}}{{$y := 1}}{{end}}{{$y}}", 'undefined variable "$y"'),
        ('{{"abc}}', "unterminated quoted string"),
        ("{{`abc}}", "unterminated raw quoted string"),
        ("{{'ab}}", "unterminated character constant"),
        ("{{(.X}}", "unclosed left paren"),
        ("{{.X)}}", "unexpected right paren"),
        ("{{}}", "missing value for command"),
        ("{{if}}{{end}}", "missing value for if"),
        ("{{range}}{{end}}", "missing value for range"),
        ("{{.X | 3}}", "non executable command in pipeline stage 2"),
        ("{{break}}", "{{break}} outside {{range}}"),
        ("{{continue}}", "{{continue}} outside {{range}}"),
        ("{{range .L}}{{break 1}}{{end}}", 'unexpected "1" in {{break}}'),
        ("{{/* x", "unclosed comment"),
        ("{{/* x */ .X}}", "comment ends before closing delimiter"),
        ("{{3x}}", 'bad number syntax: "3x"'),
        ("{{.X!}}", "bad character U+0021 '!'"),
        ('{{"\\q"}}', "invalid syntax"),
        ("{{range $i, $v, $w := .L}}{{end}}", "too many declarations in range"),
        ("{{if $a, $b := .L}}{{end}}", "too many declarations in if"),
        ('{{"a".X}}', 'unexpected . after term "\\"a\\""'),
        ("{{.X := 1}}", 'unexpected ":=" in operand'),
        ("{{a:b}}", "expected :="),
    ],
)
def test_syntax_errors(text: str, msg: str) -> None:
    with pytest.raises(GoTemplateError) as e:
        parse(text, funcs={"a": str})
    assert str(e.value) == f"template: format:1: {msg}"


def test_syntax_error_line_number_and_name() -> None:
    with pytest.raises(GoTemplateError) as e:
        parse("one\ntwo\n{{.X}\n", "msg")
    assert str(e.value) == 'template: msg:3: unexpected "}" in operand'


def test_go_struct_data() -> None:
    data = GoStruct("store.FormatData", {"Name": "vm", "CPUs": 2, "Config": {"a": 1}})
    assert render("{{.}}", data) == "{vm 2 map[a:1]}"
    assert render('{{printf "%+v" .}}', data) == "{Name:vm CPUs:2 Config:map[a:1]}"
    assert run("{{json .}}", data) == '{"Name":"vm","CPUs":2,"Config":{"a":1}}'
    assert run("{{yaml .}}", data) == "---\nName: vm\nCPUs: 2\nConfig:\n  a: 1"
    # A struct has no missing-key mode: an unknown field is always an error.
    with pytest.raises(GoTemplateError) as e:
        render("{{.Foo}}", data, missingkey_error=False)
    assert str(e.value) == ('template: format:1:2: executing "format" at <.Foo>: '
                            "can't evaluate field Foo in type store.FormatData")
    assert render("{{.Config.b}}", data, missingkey_error=False) == "<no value>"


def test_format_help() -> None:
    assert FORMAT_HELP == ("\nThese functions are available to go templates:\n\n"
                           "  indent <size>: add spaces to beginning of each line\n"
                           "  missing <message>: return message if the text is empty\n")


def test_runaway_nesting_is_an_error() -> None:
    with pytest.raises(GoTemplateError, match="max expression depth exceeded"):
        parse("{{" + "(" * 5000 + "1" + ")" * 5000 + "}}")
    with pytest.raises(GoTemplateError, match="exceeded maximum template depth"):
        render('{{define "x"}}{{template "x"}}{{end}}{{template "x"}}', None)


def test_parse_once_execute_many() -> None:
    tmpl = parse("{{.Name}}:{{json .CPUs}}", funcs=TEMPLATE_FUNC_MAP)
    got = [tmpl.execute({"Name": n, "CPUs": c}) for n, c in (("a", 1), ("b", 2))]
    assert got == ["a:1", "b:2"]


def test_template_func_map_names() -> None:
    # Lima's pkg/textutil TemplateFuncMap
    assert sorted(TEMPLATE_FUNC_MAP) == ["indent", "json", "missing", "yaml"]


def test_no_value_sentinel() -> None:
    assert repr(NO_VALUE) == "<no value>"
    assert not NO_VALUE
