"""Kept so that modules not yet moved keep working: the paths are in `pylima.dirs`,
the file names in `pylima.filenames` (which import nothing from the store)."""

from pylima.dirs import *  # noqa: F403 - the whole of pylima.dirs (its __all__), as before
