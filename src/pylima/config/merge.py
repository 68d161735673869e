"""Lima's merge rules for `base:` inheritance, as plain-data functions.

`merge_base(tmpl, base)` is one step of resolving `base:` (Lima's limatmpl embed):
the template wins for scalars; maps merge recursively; lists get the base's entries
appended, except `base`, `provision` and `probes` where the base's come first; `dns`
is taken from the base only when the template has none; `mountTypesUnsupported`
stays unique; the higher `minimumLimaVersion` and `vmOpts.qemu.minimumVersion` win.

`combine_list_entries(doc)` runs once after all bases are merged: `mounts` entries
with the same mountPoint, `additionalDisks` with the same name and `networks` with the
same interface are folded into the first one (which keeps its own values and only
gains missing fields); a key of "*" fills every earlier entry.
"""

from __future__ import annotations

import copy
from typing import Any

from pylima.config.versions import version_greater

_PREPEND_LISTS = ("base", "provision", "probes")


def _merge_maps(a: dict[str, Any], b: dict[str, Any], top: str | None) -> dict[str, Any]:
    out = dict(a)
    for key, bval in b.items():
        root = key if top is None else top
        if key not in out:  # an explicit null in the template stays null, as in Lima
            out[key] = copy.deepcopy(bval)
            continue
        aval = out[key]
        if isinstance(aval, dict) and isinstance(bval, dict):
            out[key] = _merge_maps(aval, bval, root)
        elif isinstance(aval, list) and isinstance(bval, list):
            if root in _PREPEND_LISTS:
                out[key] = copy.deepcopy(bval) + aval
            else:
                out[key] = aval + copy.deepcopy(bval)
        # else: the template's scalar (or differently shaped value) wins
    return out


def merge_base(tmpl: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """Merge one already-resolved `base` document under `tmpl` (whose `base:` the caller
    has already advanced past this base)."""
    base = dict(base)
    base.pop("base", None)
    if tmpl.get("dns"):
        base.pop("dns", None)
    out = _merge_maps(tmpl, base, None)
    tv, bv = tmpl.get("minimumLimaVersion"), base.get("minimumLimaVersion")
    if tv is not None and bv is not None and version_greater(str(bv), str(tv)):
        out["minimumLimaVersion"] = bv
    tq = ((tmpl.get("vmOpts") or {}).get("qemu") or {}).get("minimumVersion")
    bq = ((base.get("vmOpts") or {}).get("qemu") or {}).get("minimumVersion")
    if tq is not None and bq is not None and version_greater(str(bq), str(tq)):
        out["vmOpts"]["qemu"]["minimumVersion"] = bq
    if isinstance(out.get("mountTypesUnsupported"), list):
        out["mountTypesUnsupported"] = _unique(out["mountTypesUnsupported"])
    return out


def _unique(items: list[Any]) -> list[Any]:
    seen: list[Any] = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def _fill_missing(dest: dict[str, Any], src: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Copy fields of `src` that `dest` lacks, recursing into nested maps."""
    for key, value in src.items():
        if key in skip:
            continue
        if key not in dest or dest[key] is None:
            dest[key] = copy.deepcopy(value)
        elif isinstance(dest[key], dict) and isinstance(value, dict):
            _fill_missing(dest[key], value)


def _combine(entries: list[Any], key_of: Any, fill: Any) -> list[Any]:
    out: list[Any] = []
    index: dict[str, int] = {}
    for entry in entries:
        key = key_of(entry)
        if key == "*":
            for dest in out:
                fill(dest, entry)
            continue
        if key and key in index:
            fill(out[index[key]], entry)
            continue
        if key:
            index[key] = len(out)
        out.append(copy.deepcopy(entry))
    return out


def _mount_key(m: Any) -> str:
    if not isinstance(m, dict):
        return ""
    return str(m.get("mountPoint") or m.get("location") or "")


def _fill_mount(dest: dict[str, Any], src: dict[str, Any]) -> None:
    _fill_missing(dest, src, skip=("location",))


def _disk_key(d: Any) -> str:
    return str(d if isinstance(d, str) else (d or {}).get("name") or "")


def _fill_disk(dest: Any, src: Any) -> None:
    # a disk given as a bare name string becomes {name: ...} when it gains fields
    if isinstance(src, str):
        return
    if isinstance(dest, str):  # pragma: no cover - handled by _combine_disks
        return
    _fill_missing(dest, src, skip=("name",))


def _fill_network(dest: dict[str, Any], src: dict[str, Any]) -> None:
    if not dest.get("lima") and not dest.get("socket"):
        for k in ("lima", "socket"):
            if src.get(k):
                dest[k] = src[k]
    for k in ("macAddress", "vzNAT", "metric"):
        if dest.get(k) in (None, "") and src.get(k) not in (None, ""):
            dest[k] = src[k]


def combine_list_entries(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    if isinstance(out.get("additionalDisks"), list):
        disks = [d if not isinstance(d, str) else {"name": d} for d in out["additionalDisks"]]
        combined = _combine(disks, _disk_key, _fill_disk)
        # keep the short string form for entries that gained nothing
        out["additionalDisks"] = [d["name"] if isinstance(d, dict) and list(d) == ["name"]
                                  else d for d in combined]
    if isinstance(out.get("mounts"), list):
        out["mounts"] = _combine(out["mounts"], _mount_key, _fill_mount)
    if isinstance(out.get("networks"), list):
        out["networks"] = _combine(out["networks"],
                                   lambda n: str((n or {}).get("interface") or ""),
                                   _fill_network)
    return out
