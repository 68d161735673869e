"""Load a lima.yaml the way Lima does: parse, check the schema (errors for wrong
types, warnings for unknown fields), mix in $LIMA_HOME/_config/default.yaml and
override.yaml, fill defaults, validate.

Pure: the caller reads default.yaml and override.yaml (`pylima.store.configfiles`)
and passes them in as `ConfigFiles`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pylima.config.defaults import FillResult, HostFacts, fill_defaults
from pylima.config.schema import check
from pylima.config.validate import PathKind, validate, validate_param_is_used
from pylima.config.yamlio import parse_yaml
from pylima.errors import ConfigError, ValidationError

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    config: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def check_document(doc: dict[str, Any], what: str) -> list[str]:
    """Schema check; raises ConfigError on type errors, returns unknown-field warnings."""
    errors, unknown = check(doc)
    if errors:
        raise ConfigError(f"failed to unmarshal YAML ({what}): {errors[0]}"
                          + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
    return [f"Non-strict YAML detected; please check for typos: unknown field `{u}` ({what})"
            for u in unknown]


@dataclass
class ConfigFiles:
    """$LIMA_HOME/_config/default.yaml and override.yaml, parsed and schema-checked
    (empty when absent), with the unknown-field warnings about them."""

    default: dict[str, Any] = field(default_factory=dict)
    override: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def load_document(doc: dict[str, Any], file_path: str, host: HostFacts,
                  config_files: ConfigFiles, *, what: str | None = None,
                  existing_lima_version: str | None = None) -> Loaded:
    """Fill defaults for a parsed main document (defaults and override mixed in)."""
    what = what or f"main file `{file_path}`"
    warnings = check_document(doc, what) + config_files.warnings
    unused = validate_param_is_used(doc)
    if unused:
        raise ConfigError(unused)
    result: FillResult = fill_defaults(doc, config_files.default, config_files.override, host,
                                       file_path, existing_lima_version)
    return Loaded(result.config, warnings + result.warnings)


def load_bytes(data: bytes, file_path: str, host: HostFacts,
               config_files: ConfigFiles) -> Loaded:
    what = f"main file `{file_path}`"
    return load_document(parse_yaml(data, what), file_path, host, config_files, what=what)


def validate_or_raise(cfg: dict[str, Any], lima_version: str, *, warn: bool = False,
                      hint: str | None = None, path_kind: PathKind | None = None,
                      network_modes: Any = None) -> list[str]:
    """Validate (see `validate`); raises ValidationError with every error, returns the
    warnings."""
    errors, warnings = validate(cfg, lima_version, warn=warn, path_kind=path_kind,
                                network_modes=network_modes)
    if errors:
        raise ValidationError(errors, hint=hint)
    return warnings
