"""Template locators: `template:NAME` (and the old `template://NAME`), file paths,
`file://` and `http(s)://` URLs, and `-` for stdin; plus `base:` resolution.

This reads files, stdin and URLs, so it lives here with the built-in templates and
not in the pure `config` package, whose merge rules it applies."""

from __future__ import annotations

import logging
import os
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


def read_template(locator: str, name: str = "") -> Template:
    """Read a template (the first step of `limactl create/start/template copy`)."""
    is_tmpl, tmpl_name = seems_template_url(locator)
    if is_tmpl:
        if locator.startswith("template://"):
            log.warning("Template locator `%s` should be written `template:%s` since Lima v2.0",
                        locator, tmpl_name)
            locator = f"template:{tmpl_name}"
        return Template(name or inst_name_from_yaml_path(tmpl_name), locator,
                        read_template_by_name(tmpl_name))
    if seems_http_url(locator):
        path = urllib.parse.urlparse(locator).path
        return Template(name or inst_name_from_yaml_path(os.path.basename(path)), locator,
                        _read_url(locator))
    if locator.startswith("file://"):
        path = locator[len("file://"):]
        if not os.path.isabs(path):
            raise TemplateError(f"file URL `{locator}` is not an absolute path")
        return Template(name or inst_name_from_yaml_path(path), locator, _read_file(path, locator))
    if locator == "-":
        return Template(name, "-", sys.stdin.buffer.read())
    path = os.path.abspath(locator)
    return Template(name or inst_name_from_yaml_path(locator), path, _read_file(path, locator))


def _abs_locator(ref: str, parent: str) -> str:
    """Relative file references in `base:` are relative to the including template."""
    if seems_template_url(ref)[0] or seems_http_url(ref) or ref.startswith("file://"):
        return ref
    if os.path.isabs(ref):
        return ref
    if parent and os.path.isabs(parent):
        return os.path.join(os.path.dirname(parent), ref)
    if seems_http_url(parent):
        return urllib.parse.urljoin(parent, ref)
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
