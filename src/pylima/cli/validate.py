"""`limactl validate` (shares its code with `limactl template validate`)."""

from pylima.cli.template import validate

__all__ = ["validate"]
