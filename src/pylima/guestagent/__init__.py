"""The programs pylima ships to the guest on the cidata seed.

- `agent.py`, the guest agent (stdlib only, any Python 3 that cloud-init runs on),
  shipped as `lima-guestagent`.
- `init.py`, pylima-init (stdlib only), shipped as `pylima-init`: what cloud-init
  does with the seed, for pylima's own images, which carry no cloud-init. It reads
  the seed's documents from `pylima-init.marshal` (`cidata.render.guest_init_docs`).
"""

from __future__ import annotations

from importlib import resources


def guest_agent_bytes() -> bytes:
    """The program as it is installed in the guest."""
    return resources.files(__name__).joinpath("agent.py").read_bytes()


def guest_init_bytes() -> bytes:
    """pylima-init, the boot path of pylima's own images (no cloud-init)."""
    return resources.files(__name__).joinpath("init.py").read_bytes()
