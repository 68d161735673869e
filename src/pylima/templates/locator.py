"""Template locators: `template:NAME` (and the old `template://NAME`), file paths,
`file://` and `http(s)://` URLs, `-` for stdin, `github:ORG/REPO/PATH@BRANCH` and
`SCHEME:...` locators answered by a `limactl-url-SCHEME` plugin; plus `base:`
resolution.

This reads files, stdin and URLs, so it lives here with the built-in templates and
not in the pure `config` package, whose merge rules it applies."""

from __future__ import annotations

import logging
import os
import posixpath
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pylima import dirs
from pylima.config.merge import combine_list_entries, merge_base
from pylima.config.yamlio import parse_yaml
from pylima.errors import TemplateError
from pylima.templates import builtin_template_names, read_builtin_template

log = logging.getLogger(__name__)

MAX_TEMPLATE_BYTES = 4 * 1024 * 1024


@dataclass
class Template:
    name: str  # instance name implied by the locator ("" when it implies none)
    locator: str  # as resolved (absolute path for files)
    data: bytes


def seems_template_url(arg: str) -> tuple[bool, str]:
    if arg.startswith("template://"):
        return True, arg[len("template://"):]
    if arg.startswith("template:"):
        return True, arg[len("template:"):]
    return False, ""


def seems_http_url(arg: str) -> bool:
    return arg.startswith(("http://", "https://"))


def inst_name_from_yaml_path(path: str) -> str:
    from pylima.names import validate_identifier

    base = os.path.basename(path)
    name = re.sub(r"\.ya?ml$", "", base, flags=re.IGNORECASE)
    reason = validate_identifier(name)
    if reason:
        raise TemplateError(f"filename `{base}` is invalid: {reason}")
    return name


def templates_paths() -> list[Path]:
    """Where `template:NAME` is looked up: $LIMA_TEMPLATES_PATH (colon-separated),
    then $LIMA_HOME/_templates, then pylima's built-in templates."""
    paths: list[Path] = []
    env = os.environ.get("LIMA_TEMPLATES_PATH")
    if env:
        paths += [Path(p) for p in env.split(os.pathsep) if p]
    paths.append(dirs.user_templates_dir())
    return paths


def _template_file_name(name: str) -> str:
    ext = os.path.splitext(name)[1]
    if not ext or ext[1:2].isdigit():
        return name + ".yaml"
    return name


def read_template_by_name(name: str) -> bytes:
    if ".." in name.split("/") or name.startswith("/"):
        raise TemplateError(f"invalid template name `{name}`")
    fname = _template_file_name(name)
    for base in templates_paths():
        p = base / fname
        if p.is_file():
            return p.read_bytes()
    data = read_builtin_template(name)
    if data is None:
        raise TemplateError(f"template `{name}` not found",
                            hint="run `limactl create --list-templates` to see the templates")
    return data


def list_template_names() -> list[str]:
    names = set(builtin_template_names())
    for base in templates_paths():
        if base.is_dir():
            for p in base.rglob("*.yaml"):
                rel = p.relative_to(base).as_posix()[: -len(".yaml")]
                if not any(part.startswith(".") for part in rel.split("/")):
                    names.add(rel)
    return sorted(n for n in names if not n.startswith("_"))


def _read_url(url: str) -> bytes:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as resp:  # noqa: S310 - user's locator
            data: bytes = resp.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as e:
        raise TemplateError(f"failed to read template `{url}`: {e}") from e
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template `{url}` exceeds the size limit (4 MiB)")
    return data


def _read_file(path: str, locator: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as e:
        raise TemplateError(f"failed to read template `{locator}`: {e.strerror}") from e
    if len(data) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template `{locator}` exceeds the size limit (4 MiB)")
    return data


# ---- custom locators: `github:` and `limactl-url-SCHEME` plugins ----
#
# Lima first rewrites a locator whose URL scheme is neither `template`, `http(s)` nor
# `file` (and is longer than one letter, which would be a Windows drive): `github:`
# becomes a raw.githubusercontent.com URL, `SCHEME:REST` becomes what the plugin
# `limactl-url-SCHEME REST` prints. The result is rewritten again until it stays the
# same; `limactl template url` shows it.

GITHUB_DEFAULT_FILENAME = ".lima.yaml"
_HTTP_TIMEOUT = 30


def go_q(s: str) -> str:
    """Go's `%#q`: backquoted when strconv.CanBackquote allows it, else quoted."""
    if "`" not in s and "\ufeff" not in s and all(c == "\t" or (c >= " " and c != "\x7f")
                                                  for c in s):
        return f"`{s}`"
    from pylima.gofmt import quote

    return quote(s)


def go_path_clean(p: str) -> str:
    """Go's path.Clean (posixpath.normpath keeps a leading `//`, Go does not)."""
    if p == "":
        return "."
    cleaned = posixpath.normpath(p)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def go_path_join(*elems: str) -> str:
    """Go's path.Join: the non-empty elements joined with `/`, cleaned; "" if none."""
    parts = [e for e in elems if e]
    return go_path_clean("/".join(parts)) if parts else ""


def go_path_base(p: str) -> str:
    if p == "":
        return "."
    p = p.rstrip("/")
    if p == "":
        return "/"
    return p.rsplit("/", 1)[-1]


def go_path_dir(p: str) -> str:
    return go_path_clean(p[: p.rfind("/") + 1])


@dataclass
class LocatorURL:
    """The parts of a locator that Go's url.Parse yields and Lima looks at."""

    scheme: str  # lower case
    opaque: str  # the part after `SCHEME:` when it does not start with `/`
    host: str
    path: str


_SCHEME_FIRST = re.compile(r"[A-Za-z]")
_SCHEME_CHAR = re.compile(r"[A-Za-z0-9+.\-]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_locator_url(locator: str) -> LocatorURL | None:
    """Go's url.Parse, as far as Lima's locator rules depend on it; None where Go
    finds no scheme or fails (the locator is then used as it is)."""
    if any(c < " " or c == "\x7f" for c in locator):
        return None
    raw, _, fragment = locator.partition("#")
    if _BAD_ESCAPE.search(fragment):
        return None
    scheme, rest = "", raw
    for i, c in enumerate(raw):
        if c == ":":
            if i == 0:
                return None  # "missing protocol scheme"
            scheme, rest = raw[:i], raw[i + 1:]
            break
        if not (_SCHEME_FIRST.match(c) or (i > 0 and _SCHEME_CHAR.match(c))):
            return None
    else:
        return None
    if rest.endswith("?") and rest.count("?") == 1:
        rest = rest[:-1]
    else:
        rest = rest.partition("?")[0]
    if not rest.startswith("/"):
        return LocatorURL(scheme.lower(), rest, "", "")
    host, path = "", rest
    if rest.startswith("//") and not rest.startswith("///"):
        authority, slash, tail = rest[2:].partition("/")
        host, path = authority.rpartition("@")[2], slash + tail
    if _BAD_ESCAPE.search(path):
        return None
    return LocatorURL(scheme.lower(), "", host, urllib.parse.unquote(path))


def _http_get(url: str, what: str, headers: dict[str, str] | None = None,
              limit: int = -1) -> tuple[int, str, bytes]:
    """GET `url`: (status, final URL after redirects, body). Only a failure to get
    any answer raises, worded as Go's client words it after `what: `."""
    import socket
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "lima", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=_HTTP_TIMEOUT) as resp:  # noqa: S310
            return int(resp.status), str(resp.geturl()), resp.read(limit)
    except urllib.error.HTTPError as e:
        try:
            body = e.read(limit)
        except OSError:
            body = b""
        return int(e.code), str(e.geturl() or url), body
    except (OSError, ValueError) as e:
        reason: object = getattr(e, "reason", e)
        if isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(url).hostname or ""
            reason = f"lookup {host}: {reason.strerror or reason}"
        elif isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror[:1].lower() + reason.strerror[1:]
        raise TemplateError(f'{what}: Get "{url}": {reason}') from e


def github_user_content_url(org: str, repo: str, branch: str, file_path: str) -> str:
    # A cleaned path, so that the server never resolves `../`.
    return (f"https://raw.githubusercontent.com/{org}/{repo}/{branch}/"
            f"{go_path_clean(file_path)}")


def github_default_branch(org: str, repo: str) -> str:
    import json

    api_url = f"https://api.github.com/repos/{org}/{repo}"
    headers = {"Accept": "application/vnd.github.v3+json"}
    token = os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN")
    if token:
        headers["Authorization"] = "token " + token
    status, _, body = _http_get(api_url, "failed to query GitHub API", headers)
    text = body.decode(errors="replace")
    if status != 200:
        raise TemplateError(f"GitHub API returned status {status}: {text}")
    try:
        data = json.loads(text)
    except ValueError as e:
        raise TemplateError(f"failed to parse GitHub API response: {e}") from e
    branch = data.get("default_branch") if isinstance(data, dict) else None
    if not isinstance(branch, str) or not branch:
        raise TemplateError(f"repository {org}/{repo} has no default branch")
    return branch


def _escapes_repo(p: str) -> bool:
    p = go_path_clean(p)
    return p == ".." or p.startswith("../")


def transform_github_url(spec: str) -> str:
    """`ORG/REPO[/PATH][@BRANCH]` (the part after `github:`) -> the next locator: a
    raw.githubusercontent.com URL, or another `github:` locator where a `.lima.yaml`
    in a `github:ORG//` repository redirects to one.

    REPO defaults to ORG, PATH to `.lima.yaml` (also after a trailing `/`), a file name
    without an extension gets `.yaml`, BRANCH defaults to the repository's default
    branch (asked of the GitHub API). A YAML file whose content is a single line with
    no space or colon is a symlink to that path, relative to its directory."""
    spec, _, orig_branch = spec.partition("@")
    parts = spec.split("/")
    while len(parts) < 2:
        parts.append("")
    org = parts[0]
    if not org:
        raise TemplateError(f"github: URL must contain at least an ORG, got {go_q(spec)}")
    repo = parts[1] or org
    file_path = "/".join(parts[2:])
    # `..` collapses on the server and would fetch from another org; redirects come
    # back through here, so they are checked too.
    if repo == "..":
        raise TemplateError(f"repo {go_q(repo)} in github: URL {go_q(spec)} escapes the org")
    if _escapes_repo(file_path):
        raise TemplateError(f"path {go_q(file_path)} in github: URL {go_q(spec)} escapes "
                            "the repository")
    if _escapes_repo(orig_branch):
        raise TemplateError(f"branch {go_q(orig_branch)} in github: URL {go_q(spec)} escapes "
                            "the repository")
    if not file_path:
        file_path = GITHUB_DEFAULT_FILENAME
    else:
        if file_path.endswith("/"):
            file_path += GITHUB_DEFAULT_FILENAME
        # a leading dot is a hidden file's, not an extension's
        if "." not in go_path_base(file_path)[1:]:
            file_path += ".yaml"
    branch = orig_branch
    if not branch:
        try:
            branch = github_default_branch(org, repo)
        except TemplateError as e:
            raise TemplateError(f"failed to get default branch for {org}/{repo}: "
                                f"{e.message}") from e
    if posixpath.splitext(file_path)[1].lower() in (".yaml", ".yml"):
        return _resolve_github_symlink(org, repo, branch, file_path, orig_branch)
    return github_user_content_url(org, repo, branch, file_path)


def _resolve_github_symlink(org: str, repo: str, branch: str, file_path: str,
                            orig_branch: str) -> str:
    url = github_user_content_url(org, repo, branch, file_path)
    status, final_url, body = _http_get(url, "failed to fetch file", limit=1024)
    if status == 404 and repo == org:
        # github:ORG// with a branch or tag that ORG/ORG lacks: the redirect is read
        # from the default branch and the branch or tag goes on to its target.
        try:
            default_branch = github_default_branch(org, repo)
        except TemplateError:
            pass
        else:
            return _resolve_github_redirect(org, repo, default_branch, file_path, branch)
    if status != 200:
        raise TemplateError(f"file {go_q(final_url)} not found or inaccessible: "
                            f"status {status}")
    content = body.decode(errors="replace")
    if repo == org and content.startswith("github:"):
        return _validate_github_redirect(content, org, orig_branch, final_url)
    if not (content == "" or any(c in content for c in "\n :")):
        target = go_path_join(go_path_dir(file_path), content)
        if _escapes_repo(target):
            raise TemplateError(f"symlink target {go_q(content)} in {go_q(file_path)} "
                                "escapes the repository")
        file_path = target
    return github_user_content_url(org, repo, branch, file_path)


def _resolve_github_redirect(org: str, repo: str, default_branch: str, file_path: str,
                             orig_branch: str) -> str:
    url = github_user_content_url(org, repo, default_branch, file_path)
    status, final_url, body = _http_get(url, "failed to fetch file")
    if status != 200:
        raise TemplateError(f"file {go_q(final_url)} not found or inaccessible: "
                            f"status {status}")
    return _validate_github_redirect(body.decode(errors="replace"), org, orig_branch,
                                     final_url)


def _validate_github_redirect(body: str, org: str, orig_branch: str, url: str) -> str:
    redirect = body.partition("\n")[0].strip()
    if not redirect.startswith(f"github:{org}/"):
        raise TemplateError(f"redirect {go_q(redirect)} is not a `github:{org}` URL "
                            f"(from {go_q(url)})")
    if "@" in redirect:
        raise TemplateError(f"redirect {go_q(redirect)} must not include a branch/tag/sha "
                            f"(from {go_q(url)})")
    return redirect + "@" + orig_branch if orig_branch else redirect


def _run_url_plugin(plugin_path: str, arg: str) -> str:
    import signal

    from pylima import process
    from pylima.plugins import plugin_env

    shown = go_q(f"{plugin_path} {arg}")
    try:
        proc = process.run([plugin_path, arg], check=False, env=plugin_env())
    except OSError as e:
        raise TemplateError(f"command {shown} failed: fork/exec {plugin_path}: "
                            f"{_go_errno_text(e)}") from e
    if proc.returncode != 0:
        stderr = (proc.stderr or "").strip()
        if stderr:
            raise TemplateError(f"command {shown} failed: {stderr}")
        if proc.returncode < 0:
            name = signal.strsignal(-proc.returncode) or f"signal {-proc.returncode}"
            raise TemplateError(f"command {shown} failed: signal: "
                                f"{name[:1].lower() + name[1:]}")
        raise TemplateError(f"command {shown} failed: exit status {proc.returncode}")
    return (proc.stdout or "").strip()


def _go_errno_text(e: OSError) -> str:
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def _transform_custom_url_once(locator: str) -> str:
    u = parse_locator_url(locator)
    if u is None or len(u.scheme) <= 1:
        return locator
    if u.scheme == "template":
        if u.opaque:
            return locator
        new = "template:" + go_path_join(u.host, u.path)
        log.warning("Template locator %s should be written %s since Lima v2.0",
                    go_q(locator), go_q(new))
        return new
    if u.scheme == "github":
        return transform_github_url(u.opaque)
    from pylima.plugins import find_plugin

    plugin = find_plugin("url-" + u.scheme)
    if plugin is None:
        return locator
    return _run_url_plugin(plugin.path, locator[len(u.scheme) + 1:])


def transform_custom_url(locator: str) -> str:
    """Rewrite `locator` until it stays the same (Lima's TransformCustomURL)."""
    seen: set[str] = set()
    github = False
    orig = locator
    while locator not in seen:
        seen.add(locator)
        github = github or locator.startswith("github:")
        new = _transform_custom_url_once(locator)
        if new == locator:
            if github:
                log.warning("The github: scheme is still EXPERIMENTAL")
            return new
        log.debug("Locator %s replaced with %s", go_q(locator), go_q(new))
        locator = new
    raise TemplateError(f"custom locator {go_q(orig)} has a redirect loop")


def locator_url(locator: str) -> str:
    """What `limactl template url LOCATOR` prints: the locator with `github:` and
    plugin schemes resolved to a file path, file:// or https:// URL (other locators
    unchanged). Raises TemplateError with Lima's message."""
    return transform_custom_url(locator)


def read_template(locator: str, name: str = "") -> Template:
    """Read a template (the first step of `limactl create/start/template copy`).

    `github:` and plugin locators are first rewritten (`transform_custom_url`); the
    template keeps the locator as written, as Lima's does, except that a file path
    becomes absolute and `template://NAME` becomes `template:NAME`."""
    orig = locator
    locator = transform_custom_url(locator)
    is_tmpl, tmpl_name = seems_template_url(locator)
    if is_tmpl:
        return Template(name or inst_name_from_yaml_path(tmpl_name), locator,
                        read_template_by_name(tmpl_name))
    if seems_http_url(locator):
        path = urllib.parse.urlparse(locator).path
        return Template(name or inst_name_from_yaml_path(os.path.basename(path)), orig,
                        _read_url(locator))
    if locator.startswith("file://"):
        path = locator[len("file://"):]
        if not os.path.isabs(path):
            raise TemplateError(f"file URL `{locator}` is not an absolute path")
        return Template(name or inst_name_from_yaml_path(path), orig, _read_file(path, locator))
    if locator == "-":
        return Template(name, "-", sys.stdin.buffer.read())
    path = os.path.abspath(locator)
    return Template(name or inst_name_from_yaml_path(locator), path, _read_file(path, locator))


def _abs_locator(ref: str, parent: str) -> str:
    """Relative file references in `base:` are relative to the including template."""
    ref_url = parse_locator_url(ref)
    if seems_template_url(ref)[0] or (ref_url is not None and len(ref_url.scheme) > 1):
        return ref  # any URL (template:, https:, file:, github:, a plugin's scheme)
    if os.path.isabs(ref):
        return ref
    if parent and os.path.isabs(parent):
        return os.path.join(os.path.dirname(parent), ref)
    if seems_http_url(parent):
        return urllib.parse.urljoin(parent, ref)
    parent_url = parse_locator_url(parent)
    if parent_url is not None and parent_url.opaque and len(parent_url.scheme) > 1:
        # `github:ORG/REPO/dir/x.yaml` + `y.yaml` -> `github:ORG/REPO/dir/y.yaml`
        base = go_path_dir(parent_url.opaque)
        return f"{parent_url.scheme}:{go_path_join('' if base == '.' else base, ref)}"
    raise TemplateError(f"base `{ref}` is a relative path, but the template `{parent}` has no "
                        "directory to resolve it against")


def _base_list(doc: dict[str, Any]) -> list[str]:
    base = doc.get("base")
    if base is None:
        return []
    if isinstance(base, str):
        return [base]
    out = []
    for entry in base:
        if isinstance(entry, dict):
            if entry.get("digest"):
                raise TemplateError(f"base `{entry.get('url')}` has specified a digest; digest "
                                    "support is not yet implemented")
            out.append(str(entry.get("url")))
        else:
            out.append(str(entry))
    return out


def embed_bases(doc: dict[str, Any], locator: str,
                _seen: set[str] | None = None) -> dict[str, Any]:
    """Resolve `base:` recursively (Lima's merge rules), detecting loops."""
    seen = _seen if _seen is not None else set()
    doc = dict(doc)
    while True:
        bases = _base_list(doc)
        if not bases:
            doc.pop("base", None)
            break
        ref = _abs_locator(bases[0], locator)
        if ref in seen:
            raise TemplateError(f"base template loop detected: template `{ref}` already included")
        seen.add(ref)
        doc["base"] = bases[1:]
        base_tmpl = read_template(ref, name="-")
        base_doc = parse_yaml(base_tmpl.data, f"base template `{ref}`")
        base_doc = embed_bases(embed_scripts(base_doc, base_tmpl.locator), base_tmpl.locator,
                               seen)
        doc = merge_base(doc, base_doc)
        if not doc.get("base"):
            doc.pop("base", None)
    if _seen is None:
        doc = combine_list_entries(doc)
    return doc


def embed_scripts(doc: dict[str, Any], locator: str) -> dict[str, Any]:
    """Replace the `file:` of `provision` and `probes` entries by the text it names (a
    path relative to the template, a URL or template:NAME), as Lima does when it
    creates an instance: into `script`, or `content` (data) or `expression` (yq).
    An entry that already has that text keeps it."""
    import hashlib

    def has_file(section: str) -> bool:
        entries = doc.get(section)
        return isinstance(entries, list) and any(
            isinstance(e, dict) and e.get("file") not in (None, "") for e in entries)

    if not (has_file("provision") or has_file("probes")):
        return doc
    out = dict(doc)
    for section in ("provision", "probes"):
        entries = doc.get(section)
        if not isinstance(entries, list):
            continue
        new = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or entry.get("file") in (None, ""):
                new.append(entry)
                continue
            ref = entry["file"]
            url = str(ref.get("url") or "") if isinstance(ref, dict) else str(ref)
            digest = str(ref.get("digest") or "") if isinstance(ref, dict) else ""
            key = "script"
            if section == "provision" and entry.get("mode") == "data":
                key = "content"
            elif section == "provision" and entry.get("mode") == "yq":
                key = "expression"
            if entry.get(key):
                new.append(entry)
                continue
            data = read_template(_abs_locator(url, locator), name="-").data
            if digest:
                algo, _, want = digest.partition(":")
                try:
                    got = hashlib.new(algo, data).hexdigest()
                except ValueError:
                    raise TemplateError(f"field `{section}[{i}].file.digest` has an unknown "
                                        f"algorithm `{algo}`") from None
                if got != want:
                    raise TemplateError(f"`{section}[{i}].file` `{url}` does not match its "
                                        f"digest: expected {digest}, got {algo}:{got}")
            entry = {k: v for k, v in entry.items() if k != "file"}
            entry[key] = data.decode()
            new.append(entry)
        out[section] = new
    return out
