"""PURE lima.yaml handling: parse, resolve `base:`, fill defaults, merge, validate.

Nothing in this package touches the network or the instance store except
`locator` (reading template files) and `load` (reading $LIMA_HOME/_config), which
are the thin outer layer; the rest takes data in and gives data out.
"""
