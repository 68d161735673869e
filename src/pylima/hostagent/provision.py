"""What the host agent does for provisioning beyond the guest's boot scripts.

* `yq` mode: the guest has no yq (its agent is stdlib-only Python), so the host
  evaluates the expression (with pylima's jq, the same dialect as `--set`). It needs
  no root in the guest (sudo may want a password): boot.sh puts each target's current
  content in YQ_DIR, a directory only the user may use, and says `ready`; the host
  reads it as the user, writes `N.out` and `done`; boot.sh installs the results with
  the entry's owner and permissions (so Lima's order data, yq, system, user holds).
* `copyToHost`: guest files copied to the host once the guest is ready, and
  removed again on stop for entries with `deleteOnStop`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("pylima.hostagent")

YQ_DIR = "/run/lima-yq"
YQ_READY_TIMEOUT = 1800  # the boot scripts before it may install containerd

SSH = Callable[..., Awaitable[tuple[int, bytes, bytes]]]

_BY_EXTENSION = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def yq_entries(cfg: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return [(i, p) for i, p in enumerate(cfg.get("provision") or [])
            if isinstance(p, dict) and p.get("mode") == "yq"]


def yq_format(path: str, fmt: str) -> str:
    """json or yaml; `auto` goes by the file name as Lima does (yaml otherwise)."""
    if fmt in ("", "auto"):
        return _BY_EXTENSION.get(os.path.splitext(path)[1], "yaml")
    return fmt


def yq_apply_text(current: str | None, expression: str, fmt: str) -> str:
    """The new content of a file after `expression` (None: the file does not exist)."""
    import yaml

    from pylima.config.yq import evaluate_one

    if fmt not in ("json", "yaml"):
        raise ValueError(f"format `{fmt}` is not supported (json and yaml are)")
    doc: Any = None
    if current is not None and current.strip():
        doc = json.loads(current) if fmt == "json" else yaml.safe_load(current)
    new = evaluate_one(expression, doc, what="yq provisioning expression")
    if fmt == "json":
        return json.dumps(new, indent=2) + "\n"
    return str(yaml.safe_dump(new, sort_keys=False, default_flow_style=False))


async def apply_yq(ssh: SSH, cfg: dict[str, Any], instance_id: str) -> list[str]:
    """Apply every yq entry; returns the errors (each also logged). Always releases
    the guest's boot.sh, which waits for `done` in YQ_DIR, even after errors."""
    from pylima.errors import LimaError

    errors: list[str] = []
    iid = shlex.quote(instance_id)
    rc, _, err = await ssh(
        f"i=0; until [ \"$(cat {YQ_DIR}/ready 2>/dev/null)\" = {iid} ]; do "
        f"i=$((i + 1)); [ $i -lt {YQ_READY_TIMEOUT * 5} ] || exit 4; sleep 0.2; done",
        timeout=YQ_READY_TIMEOUT + 30)
    if rc != 0:
        errors.append("the guest's boot.sh did not reach yq provisioning: "
                      f"{err.decode(errors='replace').strip() or f'status {rc}'}")
        for msg in errors:
            log.error("%s", msg)
        return errors
    for i, p in yq_entries(cfg):
        path = str(p.get("path") or "")
        fmt = yq_format(path, str(p.get("format") or "auto"))
        n = f"{i:08d}"
        log.info("provision[%d] (yq): updating %s", i, path)
        rc, out, err = await ssh(f"if [ -f {YQ_DIR}/{n}.in ]; then cat {YQ_DIR}/{n}.in; "
                                 f"else exit 3; fi", timeout=60)
        if rc not in (0, 3):
            errors.append(f"provision[{i}] (yq) could not read {path}: "
                          f"{err.decode(errors='replace').strip()}")
            continue
        try:
            text = yq_apply_text(out.decode() if rc == 0 else None,
                                 str(p.get("expression") or ""), fmt)
        except (LimaError, ValueError) as e:
            errors.append(f"provision[{i}] (yq) failed for {path}: {e}")
            continue
        rc, _, err = await ssh(f"cat >{YQ_DIR}/{n}.out", input=text.encode(), timeout=60)
        if rc != 0:
            errors.append(f"provision[{i}] (yq) could not hand {path} to the guest: "
                          f"{err.decode(errors='replace').strip()}")
    for msg in errors:
        log.error("%s", msg)
    rc, _, err = await ssh(f"echo {iid} >{YQ_DIR}/done", timeout=30)
    if rc != 0:
        errors.append(f"could not signal the end of yq provisioning to the guest: "
                      f"{err.decode(errors='replace').strip()}")
    return errors


async def copy_to_host(ssh: SSH, cfg: dict[str, Any]) -> list[str]:
    """Copy each `copyToHost` entry; returns the errors."""
    errors = []
    for i, c in enumerate(cfg.get("copyToHost") or []):
        if not isinstance(c, dict):
            continue
        guest, host = str(c.get("guest") or ""), str(c.get("host") or "")
        rc, out, err = await ssh(f"cat {shlex.quote(guest)}", timeout=120)
        if rc != 0:
            if c.get("skipIfMissing"):
                log.info("copyToHost[%d]: %s is missing in the guest, skipped", i, guest)
                continue
            errors.append(f"copyToHost[{i}]: could not copy {guest} from the guest: "
                          f"{err.decode(errors='replace').strip()}")
            continue
        dest = Path(host)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.write_bytes(out)
            os.chmod(tmp, 0o600)
            os.replace(tmp, dest)
        except OSError as e:
            errors.append(f"copyToHost[{i}]: could not write {host}: {e.strerror}")
            continue
        log.info("Copied %s from the guest to %s", guest, host)
    return errors


def delete_copies(cfg: dict[str, Any]) -> None:
    """Remove the host copies of `copyToHost` entries with `deleteOnStop`."""
    for c in cfg.get("copyToHost") or []:
        if isinstance(c, dict) and c.get("deleteOnStop") and c.get("host"):
            try:
                Path(str(c["host"])).unlink()
                log.info("Deleted %s (copyToHost deleteOnStop)", c["host"])
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("could not delete %s: %s", c["host"], e.strerror)
