"""`limactl-url-fedora-rawhide`: the URL plugin behind `template:experimental/fedora-rawhide`.

That template's `base:` names `fedora-rawhide:_images/fedora-rawhide`; the template
locator runs `limactl-url-fedora-rawhide _images/fedora-rawhide` and reads the
template from the path it prints. Rawhide's cloud images are named after the current
compose, so the image list is written afresh on each call: the compose id comes from
dl.fedoraproject.org, the list goes to
`$XDG_CACHE_HOME/lima/limactl-url-fedora-rawhide/fedora-rawhide.yaml` (as Lima's
plugin writes it). Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import os
import platform
import sys
import urllib.request
from pathlib import Path

ARG = "_images/fedora-rawhide"
RAWHIDE = "https://dl.fedoraproject.org/pub/fedora/linux/development/rawhide"
COMPOSE_ID_URL = f"{RAWHIDE}/COMPOSE_ID"
ARCHES = ("x86_64", "aarch64")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        home = Path.home()
        base = str(home / "Library" / "Caches" if platform.system() == "Darwin"
                   else home / ".cache")
    return Path(base) / "lima" / "limactl-url-fedora-rawhide"


def image_list(compose_id: str) -> str:
    """The `images:` template for compose `Fedora-Rawhide-DATE.n.N`."""
    build = compose_id.strip().removeprefix("Fedora-Rawhide-")
    lines = ["images:"]
    for arch in ARCHES:
        lines.append(f'- location: "{RAWHIDE}/Cloud/{arch}/images/'
                     f'Fedora-Cloud-Base-Generic-Rawhide-{build}.{arch}.qcow2"')
        lines.append(f'  arch: "{arch}"')
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    prog = os.path.basename(sys.argv[0]) or "limactl-url-fedora-rawhide"
    if len(args) != 1:
        sys.stderr.write(f"Usage: {prog} {ARG}\n")
        sys.exit(1)
    if args[0] != ARG:
        sys.stderr.write(f"{prog}: expected the argument `{ARG}`, got `{args[0]}`\n")
        sys.exit(1)
    try:
        with urllib.request.urlopen(COMPOSE_ID_URL, timeout=30) as resp:
            compose_id = resp.read(4096).decode("ascii", "replace")
    except OSError as e:
        sys.stderr.write(f"{prog}: cannot read {COMPOSE_ID_URL}: {e}\n")
        sys.exit(1)
    if not compose_id.strip():
        sys.stderr.write(f"{prog}: {COMPOSE_ID_URL} is empty\n")
        sys.exit(1)
    out = cache_dir() / "fedora-rawhide.yaml"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(image_list(compose_id))
    except OSError as e:
        sys.stderr.write(f"{prog}: cannot write {out}: {e.strerror}\n")
        sys.exit(1)
    sys.stdout.write(f"{out}\n")


if __name__ == "__main__":
    main()
