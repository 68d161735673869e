"""$LIMA_HOME/_config/default.yaml and override.yaml, read for the pure loader
(`pylima.config.load`), which mixes them into every instance's lima.yaml."""

from __future__ import annotations

import os

from pylima import dirs
from pylima.config.load import ConfigFiles, check_document
from pylima.config.yamlio import parse_yaml
from pylima.errors import ConfigError

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any


def _read_config_file(config_dir: str, fname: str, kind: str) -> tuple[dict[str, Any], list[str]]:
    path = os.path.join(config_dir, fname)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return {}, []
    except OSError as e:
        raise ConfigError(f"failed to read {kind} file `{path}`: {e.strerror}") from e
    what = f"{kind} file `{path}`"
    doc = parse_yaml(data, what)
    return doc, check_document(doc, what)


def read_config_files(config_dir: str | None = None) -> ConfigFiles:
    """Parse and schema-check the two files (a missing one is empty); raises ConfigError
    when one cannot be read or has the wrong types. `config_dir` defaults to
    $LIMA_HOME/_config."""
    cfg_dir = str(dirs.config_dir()) if config_dir is None else config_dir
    d, wd = _read_config_file(cfg_dir, dirs.DEFAULT_YAML, "default")
    o, wo = _read_config_file(cfg_dir, dirs.OVERRIDE_YAML, "override")
    return ConfigFiles(d, o, wd + wo)
