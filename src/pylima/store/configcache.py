"""A cache of filled instance configs, keyed on file stats, for read-only paths.

`limactl list` inspects every instance; parsing each lima.yaml and filling its
defaults costs more than the rest of the command (and needs the YAML library).
The cache holds the filled config as JSON, keyed on pylima's version, the
mtime/size of lima.yaml, _config/default.yaml and _config/override.yaml, and the
host facts that defaults depend on. Any change to those misses the cache.
"""

from __future__ import annotations

import json
import os
import zlib

from pylima import dirs
from pylima.version import __version__

TYPE_CHECKING = False  # typing itself costs start-up time on this path

if TYPE_CHECKING:
    from typing import Any


def _stat_key(path: str) -> list[int]:
    try:
        st = os.stat(path)
    except OSError:
        return [0, 0]
    return [st.st_mtime_ns, st.st_size]


def _cache_file(yaml_path: str) -> str:
    # crc32 only spreads instances of different $LIMA_HOMEs apart; the key decides hits
    inst = os.path.basename(os.path.dirname(yaml_path))
    tag = f"{zlib.crc32(yaml_path.encode()):08x}"
    return os.path.join(dirs.cache_dir(), "pylima", "config", f"{inst}-{tag}.json")


def load_instance_config(yaml_path: str) -> tuple[dict[str, Any], list[str]]:
    """The filled config of an instance's lima.yaml and its load warnings.
    Raises LimaError when the file is invalid (errors are never cached)."""
    from pylima.hostinfo import host_key

    cfg_dir = str(dirs.config_dir())
    key = [__version__, _stat_key(yaml_path),
           _stat_key(os.path.join(cfg_dir, dirs.DEFAULT_YAML)),
           _stat_key(os.path.join(cfg_dir, dirs.OVERRIDE_YAML)), host_key()]
    cache = _cache_file(yaml_path)
    try:
        with open(cache) as f:
            cached = json.load(f)
        if cached.get("key") == json.loads(json.dumps(key)):
            return cached["config"], cached["warnings"]
    except (OSError, ValueError, AttributeError):
        pass

    from pylima.config.load import load_bytes
    from pylima.hostinfo import host_facts
    from pylima.store.configfiles import read_config_files

    with open(yaml_path, "rb") as f:
        data = f.read()
    loaded = load_bytes(data, yaml_path, host_facts(), read_config_files(cfg_dir))
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"key": key, "config": loaded.config, "warnings": loaded.warnings}, f)
        os.replace(tmp, cache)
    except OSError:
        pass  # a cache that cannot be written is only slower
    return loaded.config, loaded.warnings
