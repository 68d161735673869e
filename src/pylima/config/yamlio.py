"""YAML reading and writing.

Read-only paths (list, info, start-up) use libyaml's C loader through PyYAML: Lima's
templates are long and `limactl list` loads one per instance. Editing paths
(`--set`, `edit`, `create`) use ruamel.yaml's round-trip mode so comments survive.
"""

from __future__ import annotations

import io
from typing import Any

import yaml

from pylima.errors import ConfigError

try:
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader


class _StrDatesLoader(_Loader):  # type: ignore[misc,valid-type]
    """Timestamps stay strings: lima.yaml has none, and Go's decoder keeps them textual."""


_StrDatesLoader.yaml_implicit_resolvers = {
    k: [(tag, regexp) for tag, regexp in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in _Loader.yaml_implicit_resolvers.items()  # type: ignore[attr-defined]
}


def parse_yaml(data: bytes | str, what: str) -> dict[str, Any]:
    """Parse a lima.yaml document; `what` names it in errors (e.g. "main file `x`")."""
    try:
        doc = yaml.load(data, Loader=_StrDatesLoader)
    except yaml.YAMLError as e:
        raise ConfigError(f"failed to unmarshal YAML ({what}): {_one_line(e)}") from e
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"failed to unmarshal YAML ({what}): the document must be a map, "
                          f"not {type(doc).__name__}")
    return doc


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def dump_yaml(data: Any, indent: int = 2) -> str:
    """Plain YAML for machine output (`list --format yaml`, `validate --fill`)."""
    return yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), indent=indent,
                     sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16)


def roundtrip() -> Any:
    from ruamel.yaml import YAML

    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=2, offset=0)
    return y


def load_roundtrip(data: bytes | str, what: str) -> Any:
    from ruamel.yaml.error import YAMLError

    try:
        doc = roundtrip().load(data)
    except YAMLError as e:
        raise ConfigError(f"failed to unmarshal YAML ({what}): {_one_line(e)}") from e
    if doc is None:
        from ruamel.yaml.comments import CommentedMap

        doc = CommentedMap()
    return doc


def dump_roundtrip(doc: Any) -> str:
    buf = io.StringIO()
    roundtrip().dump(doc, buf)
    return buf.getvalue()


def apply_changes(doc: Any, new: Any) -> Any:
    """Make round-trip `doc` equal to plain `new`, keeping comments where entries stay.

    Used after evaluating a jq/yq expression on a plain copy: unchanged entries keep
    their comments and order, new ones are appended, removed ones deleted.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(doc, CommentedMap) and isinstance(new, dict):
        for key in [k for k in doc if k not in new]:
            _keep_comments_of_removed_key(doc, key)
            del doc[key]
        for key, value in new.items():
            if key in doc:
                doc[key] = apply_changes(doc[key], value)
            else:
                doc[key] = apply_changes(None, value)
        return doc
    if isinstance(doc, CommentedSeq) and isinstance(new, list) and len(doc) == len(new):
        for i, value in enumerate(new):
            doc[i] = apply_changes(doc[i], value)
        return doc
    if isinstance(new, dict):
        m = CommentedMap()
        for k, v in new.items():
            m[k] = apply_changes(None, v)
        return m
    if isinstance(new, list):
        s = CommentedSeq()
        for v in new:
            s.append(apply_changes(None, v))
        return s
    if doc is not None and not isinstance(doc, (dict, list)) and doc == new \
            and type(doc) is not bool and type(new) is not bool:
        return doc  # keep the original scalar (its quoting style)
    return new


def _keep_comments_of_removed_key(doc: Any, key: Any) -> None:
    """Full-line comments that follow a removed key's value belong to what comes next:
    move them to the previous key (or the document start) instead of losing them."""
    from ruamel.yaml.tokens import CommentToken

    slot = doc.ca.items.get(key)
    if not slot or len(slot) < 3 or slot[2] is None:
        return
    text = slot[2].value
    _eol, _, rest = text.partition("\n")
    if not rest.strip():
        return
    keys = list(doc)
    i = keys.index(key)
    if i > 0:
        prev = keys[i - 1]
        prev_slot = doc.ca.items.setdefault(prev, [None, None, None, None])
        if prev_slot[2] is None:
            prev_slot[2] = CommentToken("\n" + rest, slot[2].start_mark, None)
        else:
            prev_slot[2].value = prev_slot[2].value.rstrip("\n") + "\n" + rest
    else:
        lines = [ln.strip() for ln in rest.splitlines()]
        body = "\n".join(ln[1:].lstrip() if ln.startswith("#") else ln for ln in lines if ln)
        if body:
            doc.yaml_set_start_comment(body)


def to_plain(doc: Any) -> Any:
    """Round-trip objects -> plain dict/list/str/int/float/bool/None."""
    if isinstance(doc, dict):
        return {str(k): to_plain(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [to_plain(v) for v in doc]
    if isinstance(doc, bool) or doc is None:
        return doc
    if isinstance(doc, int):
        return int(doc)
    if isinstance(doc, float):
        return float(doc)
    return str(doc)
