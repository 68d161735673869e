"""PURE lima.yaml handling: parse, resolve `base:`, fill defaults, merge, validate.

Nothing in this package touches the network or the instance store except `load`
(reading $LIMA_HOME/_config), which is the thin outer layer; reading templates is
`pylima.templates.locator`'s job. The rest takes data in and gives data out.
"""
