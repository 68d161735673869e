"""The guest agent: `agent.py` runs inside the guest (stdlib only, any Python 3 that
cloud-init runs on) and is shipped on the cidata seed as `lima-guestagent`."""

from __future__ import annotations

from importlib import resources


def guest_agent_bytes() -> bytes:
    """The program as it is installed in the guest."""
    return resources.files(__name__).joinpath("agent.py").read_bytes()
