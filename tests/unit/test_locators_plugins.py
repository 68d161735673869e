"""`github:` template locators, `limactl-url-SCHEME` locator plugins and `limactl-NAME`
CLI plugins (discovery, invocation, `limactl info`, the help text)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pylima import plugins
from pylima.cli.plugins import visible_plugins
from pylima.errors import TemplateError
from pylima.templates import locator
from pylima.templates.locator import locator_url, read_template

# ---- github: with a fake GitHub ----
#
# The layout of the jandubois/jandubois repository that Lima's own tests use (the same
# on `main` and at the tag `v0.0.0`), and jandubois/lima (default branch `master`).
RAW = "https://raw.githubusercontent.com"
JANDUBOIS = {
    ".lima.yaml": "templates/demo.yaml",
    "back/.lima.yaml": "github:jandubois//loop/",
    "docs/.lima.yaml": "../templates/demo.yaml",
    "example.yaml": "templates/demo.yaml",
    "invalid/org/.lima.yaml": "github:lima-vm",
    "invalid/tag/.lima.yaml": "github:jandubois//@v0.0.0",
    "loop/.lima.yaml": "github:jandubois//back/",
    "redirect/.lima.yaml": "github:jandubois/lima/templates/default",
    "templates/demo.yaml": "base: template:default\n",
    "yaml/.lima.yaml": "{}\n",
}
FILES = {f"jandubois/jandubois/{ref}/{p}": body
         for ref in ("main", "v0.0.0") for p, body in JANDUBOIS.items()}
FILES.update({f"jandubois/lima/{ref}/templates/default.yaml": "images: []\n"
              for ref in ("master", "v1.2.1")})
DEFAULT_BRANCHES = {"jandubois/jandubois": "main", "jandubois/lima": "master"}


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answer GitHub requests from the tables above; the list records the URLs."""
    requested: list[str] = []

    def fake_get(url: str, what: str, headers: dict[str, str] | None = None,
                 limit: int = -1) -> tuple[int, str, bytes]:
        requested.append(url)
        api = "https://api.github.com/repos/"
        if url.startswith(api):
            repo = url[len(api):]
            if repo in DEFAULT_BRANCHES:
                body = json.dumps({"default_branch": DEFAULT_BRANCHES[repo]})
                return 200, url, body.encode()
            return 404, url, b'{"message": "Not Found"}'
        key = url[len(RAW) + 1:]
        if key in FILES:
            data = FILES[key].encode()
            return 200, url, data if limit < 0 else data[:limit]
        return 404, url, b"404: Not Found"

    monkeypatch.setattr(locator, "_http_get", fake_get)
    return requested


JANDUBOIS_URLS = [
    "github:jandubois/jandubois/templates/demo.yaml@main",
    "github:jandubois/jandubois/templates/demo.yaml",
    "github:jandubois/jandubois/templates/demo",
    "github:jandubois/jandubois/.lima.yaml",
    "github:jandubois/jandubois/@v0.0.0",
    "github:jandubois/jandubois",
    "github:jandubois//templates/demo.yaml@main",
    "github:jandubois//templates/demo.yaml",
    "github:jandubois//templates/demo",
    "github:jandubois//.lima.yaml",
    "github:jandubois//@v0.0.0",
    "github:jandubois//",
    "github:jandubois/",
    "github:jandubois@v0.0.0",
    "github:jandubois",
    "github:jandubois/jandubois/example.yaml",
    "github:jandubois/jandubois/example@main",
    "github:jandubois//example.yaml@v0.0.0",
    "github:jandubois//example",
    "github:jandubois/jandubois/docs/.lima.yaml@main",
    "github:jandubois/jandubois/docs/.lima.yaml",
    "github:jandubois/jandubois/docs/.lima",
    "github:jandubois/jandubois/docs/",
    "github:jandubois//docs/.lima.yaml@v0.0.0",
    "github:jandubois//docs/.lima.yaml",
    "github:jandubois//docs/.lima",
    "github:jandubois//docs/@v0.0.0",
    "github:jandubois//docs/",
]


@pytest.mark.parametrize("url", JANDUBOIS_URLS)
def test_github_forms_reach_the_demo_template(github: list[str], url: str) -> None:
    tag = "v0.0.0" if "v0.0.0" in url else "main"
    assert locator_url(url) == f"{RAW}/jandubois/jandubois/{tag}/templates/demo.yaml"


def test_github_lima_yaml_that_is_no_symlink_is_kept(github: list[str]) -> None:
    assert locator_url("github:jandubois//yaml/") == \
        f"{RAW}/jandubois/jandubois/main/yaml/.lima.yaml"


@pytest.mark.parametrize(("url", "missing"), [
    ("github:jandubois//missing/", "missing/.lima.yaml"),
    ("github:jandubois//test/.hidden", "test/.hidden.yaml"),  # hidden: .yaml added
])
def test_github_missing_file(github: list[str], url: str, missing: str) -> None:
    with pytest.raises(TemplateError) as e:
        locator_url(url)
    assert e.value.message == (f"file `{RAW}/jandubois/jandubois/main/{missing}` not found or "
                               "inaccessible: status 404")


def test_github_other_extensions_are_not_fetched(github: list[str]) -> None:
    assert locator_url("github:jandubois//test/.script.sh") == \
        f"{RAW}/jandubois/jandubois/main/test/.script.sh"
    assert github == ["https://api.github.com/repos/jandubois/jandubois"]


def test_github_with_branch_and_other_extension_needs_no_network(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*_a: object, **_k: object) -> object:
        raise AssertionError("no request expected")

    monkeypatch.setattr(locator, "_http_get", no_network)
    assert locator_url("github:org//sub/dir/../run.sh@v1") == f"{RAW}/org/org/v1/sub/run.sh"
    assert locator_url("github:org/repo/x.json@main") == f"{RAW}/org/repo/main/x.json"


def test_github_experimental_warning_and_debug_lines(
        github: list[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    assert locator_url("github:jandubois//redirect/") == \
        f"{RAW}/jandubois/lima/master/templates/default.yaml"
    msgs = [r.getMessage() for r in caplog.records]
    assert ("Locator `github:jandubois//redirect/` replaced with "
            "`github:jandubois/lima/templates/default`") in msgs
    assert ("Locator `github:jandubois/lima/templates/default` replaced with "
            f"`{RAW}/jandubois/lima/master/templates/default.yaml`") in msgs
    assert msgs[-1] == "The github: scheme is still EXPERIMENTAL"


def test_github_redirect_takes_an_explicit_tag_along(github: list[str]) -> None:
    assert locator_url("github:jandubois//redirect/@v1.2.1") == \
        f"{RAW}/jandubois/lima/v1.2.1/templates/default.yaml"


@pytest.mark.parametrize(("url", "message"), [
    ("github:", "github: URL must contain at least an ORG, got ``"),
    ("github:/jandubois", "github: URL must contain at least an ORG, got ``"),
    ("github://jandubois", "github: URL must contain at least an ORG, got ``"),
    ("github:@main", "github: URL must contain at least an ORG, got ``"),
    ("github:org/../x", "repo `..` in github: URL `org/../x` escapes the org"),
    ("github:org/repo/../../x@v1",
     "path `../../x` in github: URL `org/repo/../../x` escapes the repository"),
    ("github:org/repo/x.sh@../y",
     "branch `../y` in github: URL `org/repo/x.sh` escapes the repository"),
])
def test_github_bad_locators(url: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        locator_url(url)
    assert e.value.message == message


@pytest.mark.parametrize(("url", "message"), [
    ("github:jandubois//invalid/org/", "redirect `github:lima-vm` is not a `github:jandubois` "
     f"URL (from `{RAW}/jandubois/jandubois/main/invalid/org/.lima.yaml`)"),
    ("github:jandubois//invalid/org/@main", "redirect `github:lima-vm` is not a "
     f"`github:jandubois` URL (from `{RAW}/jandubois/jandubois/main/invalid/org/.lima.yaml`)"),
    ("github:jandubois//invalid/tag/", "redirect `github:jandubois//@v0.0.0` must not include "
     f"a branch/tag/sha (from `{RAW}/jandubois/jandubois/main/invalid/tag/.lima.yaml`)"),
    ("github:jandubois//invalid/tag/@v0.0.0", "redirect `github:jandubois//@v0.0.0` must not "
     f"include a branch/tag/sha (from `{RAW}/jandubois/jandubois/v0.0.0/invalid/tag/.lima.yaml`)"),
    ("github:jandubois//loop/", "custom locator `github:jandubois//loop/` has a redirect loop"),
    ("github:jandubois//back/@main",
     "custom locator `github:jandubois//back/@main` has a redirect loop"),
])
def test_github_bad_redirects(github: list[str], url: str, message: str) -> None:
    with pytest.raises(TemplateError) as e:
        locator_url(url)
    assert e.value.message == message


def test_github_symlink_may_not_leave_the_repository(
        github: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FILES, "jandubois/jandubois/main/up/.lima.yaml", "../../x.yaml")
    with pytest.raises(TemplateError) as e:
        locator_url("github:jandubois//up/")
    assert e.value.message == ("symlink target `../../x.yaml` in `up/.lima.yaml` escapes "
                               "the repository")


def test_github_api_errors(github: list[str]) -> None:
    with pytest.raises(TemplateError) as e:
        locator_url("github:nobody/nothing")
    assert e.value.message == ("failed to get default branch for nobody/nothing: GitHub API "
                               'returned status 404: {"message": "Not Found"}')


def test_github_token_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, str]] = []

    def fake_get(url: str, what: str, headers: dict[str, str] | None = None,
                 limit: int = -1) -> tuple[int, str, bytes]:
        seen.append(dict(headers or {}))
        return 200, url, b'{"default_branch": "trunk"}'

    monkeypatch.setattr(locator, "_http_get", fake_get)
    monkeypatch.setenv("GITHUB_TOKEN", "t0k")
    monkeypatch.delenv("GH_TOKEN", raising=False)
    assert locator.github_default_branch("o", "r") == "trunk"
    assert seen[0]["Authorization"] == "token t0k"


def test_github_offline_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import urllib.error
    import urllib.request

    def offline(*_a: object, **_k: object) -> object:
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(TemplateError) as e:
        locator_url("github:jandubois")
    assert e.value.message == (
        "failed to get default branch for jandubois/jandubois: failed to query GitHub API: "
        'Get "https://api.github.com/repos/jandubois/jandubois": lookup api.github.com: '
        "Temporary failure in name resolution")
    with pytest.raises(TemplateError) as e:
        locator_url("github:jandubois//x.yaml@main")
    assert e.value.message.startswith(
        f'failed to fetch file: Get "{RAW}/jandubois/jandubois/main/x.yaml": lookup ')


def test_create_from_github_offline_creates_nothing(lima_home: Path) -> None:
    # an unresolvable host, whatever this machine's network
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    code = ("import socket, urllib.error, urllib.request\n"
            "def offline(*a, **k):\n"
            "    raise urllib.error.URLError(socket.gaierror(-2, 'Name or service not known'))\n"
            "urllib.request.urlopen = offline\n"
            "from pylima.cli.main import main\n"
            "main(['create', '--name=gh', 'github:jandubois'])\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    fatal = [ln for ln in r.stderr.splitlines() if "level=fatal" in ln]
    assert len(fatal) == 1 and "failed to get default branch for jandubois/jandubois" in fatal[0]
    assert "Traceback" not in r.stderr
    assert not (lima_home / "gh").exists()


def test_template_locators_unchanged() -> None:
    for loc in ("template:default", "./x.yaml", "/abs/x.yaml", "-", "https://e.com/x.yaml",
                "file:///x.yaml", "c:x.yaml"):
        assert locator_url(loc) == loc


def test_old_template_form_is_rewritten(caplog: pytest.LogCaptureFixture) -> None:
    assert locator_url("template://deprecated/centos-7") == "template:deprecated/centos-7"
    assert ("Template locator `template://deprecated/centos-7` should be written "
            "`template:deprecated/centos-7` since Lima v2.0") in caplog.text


def test_github_base_relative_to_parent() -> None:
    assert locator._abs_locator("b.yaml", "github:org/repo/dir/a.yaml@v1") == \
        "github:org/repo/dir/b.yaml"
    assert locator._abs_locator("github:o/r", "/x/a.yaml") == "github:o/r"


# ---- plugins: real executables in temporary directories ----


def write_exe(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    p = directory / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(mode)
    return p


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """(the directory of `limactl`, a PATH directory, a second PATH directory)."""
    bindir, p1, p2 = tmp_path / "prefix" / "bin", tmp_path / "p1", tmp_path / "p2"
    for d in (bindir, p1, p2):
        d.mkdir(parents=True)
    (bindir / "limactl").write_text("")
    monkeypatch.setattr(sys, "argv", [str(bindir / "limactl")])
    monkeypatch.setenv("PATH", f"{p1}{os.pathsep}{p2}")
    return bindir, p1, p2


def test_discovery_order_precedence_and_descriptions(dirs: tuple[Path, Path, Path],
                                                     tmp_path: Path) -> None:
    bindir, p1, p2 = dirs
    write_exe(p1, "limactl-hello", "# <limactl-desc> Say hello </limactl-desc>\necho hi\n")
    write_exe(bindir, "limactl-hello", "echo beside\n")
    write_exe(p2, "limactl-abc", "true\n")
    write_exe(p1, "limactl-notexec", "true\n", mode=0o644)
    write_exe(p2, "limactl-notexec", "true\n")
    (p1 / "limactl-adir").mkdir()
    write_exe(p1, "other-tool", "true\n")
    write_exe(tmp_path / "prefix" / "libexec" / "lima", "limactl-url-x", "true\n")
    found = plugins.discover()
    assert [(p.name, p.path) for p in found] == [
        ("abc", str(p2 / "limactl-abc")),
        ("hello", str(bindir / "limactl-hello")),  # beside limactl wins over PATH
        ("notexec", str(p2 / "limactl-notexec")),  # the first executable one
        ("url-x", str(tmp_path / "prefix" / "libexec" / "lima" / "limactl-url-x")),
    ]
    assert found[1].description == ""
    assert plugins.find_plugin("hello") == plugins.Plugin("hello", str(bindir / "limactl-hello"))
    assert plugins.find_plugin("notexec") == plugins.Plugin("notexec",
                                                            str(p2 / "limactl-notexec"))
    assert plugins.find_plugin("adir") is None
    assert plugins.find_plugin("../p1/limactl-abc") is None
    (bindir / "limactl-hello").unlink()
    plugins._discovered.clear()  # found once a process, as Lima's
    assert plugins.discover()[1].description == "Say hello"
    assert plugins.discover()[1].to_json() == {"name": "hello",
                                               "path": str(p1 / "limactl-hello"),
                                               "description": "Say hello"}


def test_self_dirs_keep_and_resolve_links(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "limactl").write_text("")
    link = tmp_path / "bin"
    link.mkdir()
    (link / "limactl").symlink_to(real / "limactl")
    assert plugins.self_dirs(str(link / "limactl")) == [str(link), str(real)]
    assert plugins.self_dirs(str(real / "limactl")) == [str(real)]


def run_cli(*args: str) -> int:
    from pylima.cli.main import cli, run

    return run(cli, list(args), prog_name="limactl")


def test_plugin_command_gets_its_arguments_and_gives_its_exit_code(
        dirs: tuple[Path, Path, Path], capfd: pytest.CaptureFixture[str]) -> None:
    _, p1, _ = dirs
    write_exe(p1, "limactl-echo", 'for a in "$@"; do echo "[$a]"; done\n'
              'echo "path=$PATH" >&2\nexit 7\n')
    rc = run_cli("--log-level", "warn", "echo", "--debug", "-y", "--help", "a b", "--", "x")
    out, err = capfd.readouterr()
    assert rc == 7
    assert out.splitlines() == ["[--debug]", "[-y]", "[--help]", "[a b]", "[--]", "[x]"]
    assert f"path={os.pathsep.join(plugins.plugin_dirs())}" in err


def test_plugin_killed_by_a_signal_exits_255(dirs: tuple[Path, Path, Path],
                                             capfd: pytest.CaptureFixture[str]) -> None:
    write_exe(dirs[1], "limactl-die", "kill -TERM $$\n")
    assert run_cli("die") == 255


def test_plugin_that_cannot_start(dirs: tuple[Path, Path, Path],
                                  capfd: pytest.CaptureFixture[str]) -> None:
    p = dirs[1] / "limactl-broken"
    p.write_text("not a script\n")
    p.chmod(0o755)
    assert run_cli("broken") == 1
    err = capfd.readouterr().err
    assert f"external command `{p}` failed: fork/exec {p}: exec format error" in err


def test_builtin_commands_and_aliases_win(dirs: tuple[Path, Path, Path],
                                          capfd: pytest.CaptureFixture[str]) -> None:
    for name in ("list", "ls", "info"):
        write_exe(dirs[1], f"limactl-{name}", "echo plugin; exit 3\n")
    assert run_cli("ls", "--format", "{{.Name}}") == 0
    assert "plugin" not in capfd.readouterr().out


def test_unknown_command_is_still_an_error(dirs: tuple[Path, Path, Path],
                                           caplog: pytest.LogCaptureFixture) -> None:
    assert run_cli("no-such-command") == 1


def test_help_lists_plugins_but_not_url_helpers(dirs: tuple[Path, Path, Path],
                                                capfd: pytest.CaptureFixture[str]) -> None:
    write_exe(dirs[1], "limactl-hello", "# <limactl-desc>Say hello</limactl-desc>\n")
    write_exe(dirs[1], "limactl-url-foo", "true\n")
    write_exe(dirs[1], "limactl-list", "true\n")
    assert run_cli("--help") == 0
    out = capfd.readouterr().out
    section = out.split("Available Plugins (Experimental):", 1)[1].split("\n\n", 1)[0]
    assert section.split() == ["hello", "Say", "hello"]
    assert "url-foo" not in out
    import click

    from pylima.cli.main import cli

    names = cli.list_commands(click.Context(cli))
    assert "hello" in names and "url-foo" not in names and names.count("list") == 1
    assert [p.name for p in visible_plugins({"list"})] == ["hello"]


def test_url_helper_plugin_is_runnable_though_hidden(dirs: tuple[Path, Path, Path],
                                                     capfd: pytest.CaptureFixture[str]) -> None:
    write_exe(dirs[1], "limactl-url-foo", 'echo "got $1"\n')
    assert run_cli("url-foo", "bar") == 0
    assert capfd.readouterr().out == "got bar\n"


def test_info_lists_plugins(dirs: tuple[Path, Path, Path],
                            capfd: pytest.CaptureFixture[str]) -> None:
    assert run_cli("info", "--yq", ".plugins") == 0
    assert capfd.readouterr().out.strip() == "null"  # none: null, as Lima's nil slice
    write_exe(dirs[1], "limactl-hello", "# <limactl-desc>Say hello</limactl-desc>\n")
    write_exe(dirs[2], "limactl-url-foo", "true\n")
    plugins._discovered.clear()  # found once a process, as Lima's
    assert run_cli("info", "--yq", ".plugins") == 0
    assert json.loads(capfd.readouterr().out) == [
        {"name": "hello", "path": str(dirs[1] / "limactl-hello"), "description": "Say hello"},
        {"name": "url-foo", "path": str(dirs[2] / "limactl-url-foo")},
    ]


def test_fast_paths_do_not_search_plugins() -> None:
    code = ("import sys\n"
            "from pylima.cli import entry\n"
            "for argv in (['--version'], ['list', '--quiet']):\n"
            "    try:\n"
            "        entry.main(argv)\n"
            "    except SystemExit:\n"
            "        pass\n"
            "assert 'pylima.plugins' not in sys.modules, 'plugins imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=60)


# ---- limactl-url-SCHEME locator plugins ----


def test_url_plugin_rewrites_the_locator(dirs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    tmpl = tmp_path / "from-plugin.yaml"
    tmpl.write_text("images: []\n")
    write_exe(dirs[1], "limactl-url-fedora-rawhide",
              f'[ "$1" = "_images/fedora-rawhide" ] || exit 9\necho "  {tmpl}  "\n')
    assert locator_url("fedora-rawhide:_images/fedora-rawhide") == str(tmpl)
    t = read_template("fedora-rawhide:_images/fedora-rawhide")
    assert (t.name, t.locator, t.data) == ("from-plugin", str(tmpl), b"images: []\n")


def test_url_plugin_gets_everything_after_the_scheme(dirs: tuple[Path, Path, Path],
                                                     tmp_path: Path) -> None:
    got = tmp_path / "arg"
    write_exe(dirs[1], "limactl-url-ex", f'printf %s "$1" > {got}\necho done\n')
    for loc, arg in (("EX:a/b?c#d", "a/b?c#d"), ("ex://host/p", "//host/p")):
        assert locator_url(loc) == "done"
        assert got.read_text() == arg


def test_url_plugins_chain_and_loops_are_caught(dirs: tuple[Path, Path, Path]) -> None:
    write_exe(dirs[1], "limactl-url-one", 'echo "two:$1"\n')
    write_exe(dirs[1], "limactl-url-two", 'echo "https://example.com/$1.yaml"\n')
    assert locator_url("one:x") == "https://example.com/x.yaml"
    write_exe(dirs[1], "limactl-url-ping", 'echo "pong:$1"\n')
    write_exe(dirs[1], "limactl-url-pong", 'echo "ping:$1"\n')
    with pytest.raises(TemplateError) as e:
        locator_url("ping:x")
    assert e.value.message == "custom locator `ping:x` has a redirect loop"


def test_url_plugin_failures(dirs: tuple[Path, Path, Path]) -> None:
    p = write_exe(dirs[1], "limactl-url-bad", 'echo " no such thing: $1 " >&2\nexit 2\n')
    with pytest.raises(TemplateError) as e:
        locator_url("bad:x")
    assert e.value.message == f"command `{p} x` failed: no such thing: x"
    q = write_exe(dirs[1], "limactl-url-quiet", "exit 3\n")
    with pytest.raises(TemplateError) as e:
        locator_url("quiet:x")
    assert e.value.message == f"command `{q} x` failed: exit status 3"


def test_scheme_without_plugin_is_left_alone(dirs: tuple[Path, Path, Path]) -> None:
    assert locator_url("nosuch:x") == "nosuch:x"
