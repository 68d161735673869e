"""The user's SSH key pair $LIMA_HOME/_config/user{,.pub}, generated once."""

from __future__ import annotations

import os
from pathlib import Path

from pylima import dirs, process


def ensure_user_key() -> Path:
    """Return the private key path, generating an ed25519 pair (0600) when absent."""
    cfg = dirs.config_dir()
    key = cfg / dirs.USER_KEY
    if key.exists() and key.with_suffix(".pub").exists():
        return key
    cfg.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = cfg / f".{dirs.USER_KEY}.tmp{os.getpid()}"
    for p in (tmp, tmp.with_name(tmp.name + ".pub")):
        p.unlink(missing_ok=True)
    process.run(["ssh-keygen", "-t", "ed25519", "-q", "-N", "", "-C", "lima", "-f", str(tmp)],
                hint="install the OpenSSH client: apt-get install openssh-client")
    os.chmod(tmp, 0o600)
    os.replace(tmp.with_name(tmp.name + ".pub"), key.with_suffix(".pub"))
    os.replace(tmp, key)
    return key
