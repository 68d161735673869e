"""pytest plugin: Linux VMs as fixtures (registered as `pylima` by entry point).

    def test_kernel(lima_vm):
        assert lima_vm.run(["uname", "-s"]).stdout == "Linux\\n"

    @pytest.mark.lima(template="template:debian-12", cpus=2, set=[".mounts = []"])
    def test_on_debian(lima_vm): ...

The VM's configuration comes from the `lima` marker, else the ini options
`lima_template`, `lima_cpus`, `lima_memory`, `lima_set`. VMs live for the whole
session: tests that ask for the same configuration share one VM, and every VM the
plugin made is stopped and deleted when the session ends. With the ini option
`lima_instance` (or the environment variable `PYLIMA_TEST_INSTANCE`) every test
uses that existing instance instead (started if stopped, never stopped or deleted
by the plugin), so test suites and CI jobs can share one booted guest.

When a test that used a VM fails, the tails of the guest's `serial.log` and the
host agent's `ha.stderr.log` are added to its report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    # imported when a test asks for a VM: not on every pytest start-up
    from pylima.machine import Instance

ENV_INSTANCE = "PYLIMA_TEST_INSTANCE"
LOG_TAIL_LINES = 40
_MARKER_KEYS = {"template", "cpus", "memory", "disk", "set", "images", "mounts", "params",
                "arch", "vm_type", "port_forwards"}
_USED_VM = pytest.StashKey["Instance"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("lima_template", "template of the lima_vm fixture's VM",
                  default="template:default")
    parser.addini("lima_cpus", "CPUs of the lima_vm fixture's VM (template default if unset)")
    parser.addini("lima_memory", "memory (GiB) of the lima_vm fixture's VM")
    parser.addini("lima_set", "yq expressions applied to the lima_vm fixture's VM, one a line",
                  type="linelist")
    parser.addini("lima_instance", f"an existing instance for lima_vm to use instead of "
                  f"creating VMs (also ${ENV_INSTANCE})")
    parser.addini("lima_start_timeout", "seconds to wait for a VM to boot", default="600")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lima(template=None, cpus=None, memory=None, set=(), **overrides): the "
        "configuration of the lima_vm fixture's VM (keywords of pylima.Instance.create)")


def _number(text: str, what: str) -> float | None:
    if not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise pytest.UsageError(f"ini option `{what}` must be a number, got `{text}`") from None


def vm_spec(config: pytest.Config, marker: pytest.Mark | None) -> dict[str, Any]:
    """The VM configuration a test asks for: the ini options, overridden by the
    `lima` marker's keywords. Normalized, so equal configurations compare equal."""
    cpus = _number(str(config.getini("lima_cpus") or ""), "lima_cpus")
    memory = _number(str(config.getini("lima_memory") or ""), "lima_memory")
    spec: dict[str, Any] = {
        "template": config.getini("lima_template") or "template:default",
        "cpus": int(cpus) if cpus is not None else None,
        "memory": memory,
        "set": [str(s) for s in config.getini("lima_set")],
    }
    if marker is not None:
        if marker.args:
            spec["template"] = marker.args[0]
        unknown = set(marker.kwargs) - _MARKER_KEYS
        if unknown:
            raise pytest.UsageError(f"unknown keyword(s) of the lima marker: "
                                    f"{', '.join(sorted(unknown))}")
        for k, v in marker.kwargs.items():
            spec[k] = list(v) if k in ("set", "port_forwards") else v
    if isinstance(spec.get("memory"), int):
        spec["memory"] = float(spec["memory"])
    return {k: v for k, v in spec.items() if v is not None and v != []}


def spec_key(spec: Mapping[str, Any]) -> str:
    """The cache key of a VM configuration."""
    return json.dumps(spec, sort_keys=True, default=str)


def create_vm(spec: Mapping[str, Any], timeout: float) -> Instance:
    """Create and start a VM for `spec` (a `vm_spec` result). Replaceable in tests."""
    from pylima.machine import Instance, random_instance_name

    kwargs = dict(spec)
    template = kwargs.pop("template")
    inst = Instance.create(random_instance_name("pytest"), template, **kwargs)
    try:
        inst.start(timeout)
    except BaseException as e:
        # the VM is deleted below: keep what its logs say about the failed boot
        for name in ("serial.log", "ha.stderr.log"):
            tail = log_tail(inst.dir / name)
            if tail:
                e.add_note(f"--- lima {inst.name}: {name} (last {LOG_TAIL_LINES} lines) ---\n"
                           f"{tail}")
        inst._cleanup()
        raise
    return inst


class VMPool:
    """The session's VMs, one per configuration; `close` stops and deletes them."""

    def __init__(self, existing: str | None = None, timeout: float = 600.0) -> None:
        self.existing = existing
        self.timeout = timeout
        self.vms: dict[str, Instance] = {}

    def get(self, spec: Mapping[str, Any]) -> Instance:
        """The VM for `spec`: the existing instance when one is configured, else the
        session's VM of that configuration (made on first request)."""
        if self.existing:
            from pylima.machine import Instance

            inst = Instance.get(self.existing)
            if inst.status != "Running":
                inst.start(self.timeout)
            return inst
        key = spec_key(spec)
        if key not in self.vms:
            # looked up at call time so that tests can replace it
            self.vms[key] = globals()["create_vm"](spec, self.timeout)
        return self.vms[key]

    def close(self) -> None:
        errors = []
        for inst in self.vms.values():
            try:
                inst._cleanup()
            except Exception as e:  # noqa: BLE001 - clean up the others first
                errors.append(e)
        self.vms.clear()
        if errors:
            raise errors[0]


def existing_instance(config: pytest.Config) -> str | None:
    """The instance named by `lima_instance` or $PYLIMA_TEST_INSTANCE, if any."""
    return (str(config.getini("lima_instance") or "").strip()
            or os.environ.get(ENV_INSTANCE, "").strip() or None)


@pytest.fixture(scope="session")
def lima_vm_pool(pytestconfig: pytest.Config) -> Iterator[VMPool]:
    """The session's VMs; `lima_vm_pool.get(spec)` serves fixtures of wider scope."""
    timeout = _number(str(pytestconfig.getini("lima_start_timeout")), "lima_start_timeout")
    pool = VMPool(existing_instance(pytestconfig), timeout or 600.0)
    yield pool
    pool.close()


@pytest.fixture
def lima_vm(request: pytest.FixtureRequest, lima_vm_pool: VMPool) -> Instance:
    """A running `pylima.Instance` configured by the `lima` marker and ini options,
    shared with every test of the session that asks for the same configuration."""
    spec = vm_spec(request.config, request.node.get_closest_marker("lima"))
    inst = lima_vm_pool.get(spec)
    request.node.stash[_USED_VM] = inst
    return inst


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a log file ("" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except OSError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    inst = item.stash.get(_USED_VM, None)
    if inst is None or not report.failed:
        return
    from pylima.store import dirs

    for name in (dirs.SERIAL_LOG, dirs.HA_STDERR_LOG):
        tail = log_tail(inst.dir / name)
        if tail:
            report.sections.append(
                (f"lima {inst.name}: {name} (last {LOG_TAIL_LINES} lines)", tail))
