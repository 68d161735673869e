"""ANSI colours for JSON and YAML output (`limactl yq -C`, `limactl list` on a
terminal). Free of click: `limactl list` is answered before click is imported."""

from __future__ import annotations


def colorize(text: str) -> str:
    """ANSI colours for YAML or JSON text (keys, strings, other scalars), each coloured
    span ending in a reset, as yq's colourised output does."""
    import yaml

    spans: list[tuple[int, int, str]] = []
    try:
        tokens = list(yaml.scan(text))
    except yaml.YAMLError:
        return text
    key_next = False
    for tok in tokens:
        if isinstance(tok, yaml.KeyToken):
            key_next = True
            continue
        if isinstance(tok, yaml.ScalarToken):
            if key_next:
                colour = "36"
            elif tok.plain and tok.value in ("true", "false", "null", "~") or \
                    tok.plain and _is_number(tok.value):
                colour = "35"
            else:
                colour = "32"
            spans.append((tok.start_mark.index, tok.end_mark.index, colour))
        key_next = False
    out, pos = [], 0
    for start, end, colour in spans:
        out += [text[pos:start], f"\x1b[{colour}m", text[start:end], "\x1b[0m"]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
