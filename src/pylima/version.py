"""pylima's version and the Lima release it follows: leaf constants that any module
may import (the package root re-exports them as public API)."""

__version__ = "0.1.0"

# The Lima release whose behaviour pylima follows. Templates' `minimumLimaVersion`
# is checked against it and each instance records it in `lima-version`.
LIMA_COMPAT_VERSION = "2.2.0"

# The mikefarah yq release Lima v2.2.0 embeds: `limactl yq --version` names it, as the
# dialect pylima's yq follows.
YQ_COMPAT_VERSION = "v4.53.3"
