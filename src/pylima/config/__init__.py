"""PURE lima.yaml handling: parse, resolve `base:`, fill defaults, merge, validate.

Nothing in this package does I/O: it takes data in and gives data out. Reading
templates (`pylima.templates.locator`) and $LIMA_HOME/_config
(`pylima.store.configfiles`) is the outer layer, which passes what it read in.
"""
