"""`kubectl.lima`, `apptainer.lima` (the wrappers of template:k3s/k8s and
template:apptainer) and the `limactl-url-fedora-rawhide` plugin, without a VM."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pylima.store.instance import STATUS_RUNNING, STATUS_STOPPED


def wrapper(func: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", f"from pylima.cli.wrappers import {func}; "
                           f"{func}()", "get", "nodes"], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=60)


def test_kubectl_lima_without_a_cluster_instance() -> None:
    r = wrapper("kubectl_main")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "No k3s or k8s existing instances found. Either create one with",
        "limactl create --name=k3s template:k3s",
        "limactl create --name=k8s template:k8s",
        "or set LIMA_INSTANCE to the name of your Kubernetes instance",
    ]


def test_kubectl_lima_names_a_missing_instance() -> None:
    r = wrapper("kubectl_main", {"LIMA_INSTANCE": "kube"})
    assert r.returncode == 1
    assert r.stderr == ('instance "kube" does not exist, run `limactl create --name=kube` '
                        "to create a new instance\n")


def test_apptainer_lima_without_instance() -> None:
    r = wrapper("apptainer_main")
    assert r.returncode == 1
    assert ('instance "apptainer" does not exist, run `limactl create --name=apptainer '
            "template:apptainer` to create a new instance") in r.stderr


class Exec(Exception):
    pass


@pytest.fixture
def instances(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake instances (name -> status) as the wrappers see them."""
    import pylima.store.instance as store

    table: dict[str, str] = {}
    monkeypatch.setattr(store, "instance_names", lambda: sorted(table))
    monkeypatch.setattr(store, "inspect", lambda name: SimpleNamespace(
        name=name, status=table[name], dir=tmp_path / name))
    return table


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """What the wrapper would exec: the host client, or `lima ARGS`."""
    import pylima.cli.lima_cmd as lima_cmd

    seen: list[Any] = []
    # The wrappers set LIMA_INSTANCE for the `lima` they exec; in this process it must
    # not outlive the test (later tests, VM tests included, would inherit it).
    # (set, then removed: monkeypatch restores only what it has seen exist)
    monkeypatch.setenv("LIMA_INSTANCE", "")
    monkeypatch.delenv("LIMA_INSTANCE")

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen.append(("exec", path, argv, env))
        raise Exec

    def lima_main(argv: list[str]) -> None:
        seen.append(("lima", os.environ.get("LIMA_INSTANCE"), argv))
        raise Exec

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(lima_cmd, "main", lima_main)
    return seen


def run_main(func: Any, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["x.lima", *args])
    with pytest.raises((Exec, SystemExit)):
        func()


def test_kubectl_lima_prefers_k3s_and_the_host_client(
        instances: dict[str, str], calls: list[Any], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    from pylima.cli import wrappers

    instances.update({"k3s": STATUS_RUNNING, "k8s": STATUS_RUNNING})
    monkeypatch.setattr(wrappers.shutil, "which",
                        lambda name: "/usr/bin/kubectl" if name == "kubectl" else None)
    run_main(wrappers.kubectl_main, monkeypatch, "get", "nodes")
    kind, path, argv, env = calls[0]
    assert (kind, path, argv[1:]) == ("exec", "/usr/bin/kubectl", ["get", "nodes"])
    assert env["KUBECONFIG"] == str(tmp_path / "k3s" / "copied-from-guest" / "kubeconfig.yaml")


def test_kubectl_lima_falls_back_to_the_guest(
        instances: dict[str, str], calls: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from pylima.cli import wrappers

    instances.update({"k8s": STATUS_RUNNING})
    monkeypatch.setenv("KUBECTL", "no-such-kubectl")
    monkeypatch.setattr(wrappers.shutil, "which", lambda name: None)
    run_main(wrappers.kubectl_main, monkeypatch, "get", "pods")
    assert calls == [("lima", "k8s", ["sudo", "kubectl", "get", "pods"])]


def test_kubectl_lima_wants_a_running_instance(
        instances: dict[str, str], calls: list[Any], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pylima.cli import wrappers

    instances.update({"k8s": STATUS_STOPPED})
    run_main(wrappers.kubectl_main, monkeypatch)
    assert calls == []
    assert capsys.readouterr().err == (
        'instance "k8s" is not running, run `limactl start k8s` to start the existing '
        "instance\n")


def test_apptainer_lima_binds_the_home_directory(
        instances: dict[str, str], calls: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from pylima.cli import wrappers

    instances.update({"apptainer": STATUS_RUNNING, "app2": STATUS_RUNNING})
    home = os.path.expanduser("~")
    run_main(wrappers.apptainer_main, monkeypatch, "run", "docker://alpine")
    monkeypatch.setenv("LIMA_INSTANCE", "app2")
    monkeypatch.setenv("APPTAINER_BINDPATH", "/data")
    run_main(wrappers.apptainer_main, monkeypatch, "shell")
    assert calls == [
        ("lima", "apptainer", [f"APPTAINER_BINDPATH={home}", "apptainer", "run",
                               "docker://alpine"]),
        ("lima", "app2", [f"APPTAINER_BINDPATH=/data,{home}", "apptainer", "shell"]),
    ]


# ---- limactl-url-fedora-rawhide ---------------------------------------------------


def test_rawhide_image_list() -> None:
    import yaml

    from pylima.cli.url_fedora_rawhide import image_list

    doc = yaml.safe_load(image_list("Fedora-Rawhide-20260316.n.0\n"))
    assert doc == {"images": [
        {"location": "https://dl.fedoraproject.org/pub/fedora/linux/development/rawhide/"
                     "Cloud/x86_64/images/Fedora-Cloud-Base-Generic-Rawhide-20260316.n.0."
                     "x86_64.qcow2", "arch": "x86_64"},
        {"location": "https://dl.fedoraproject.org/pub/fedora/linux/development/rawhide/"
                     "Cloud/aarch64/images/Fedora-Cloud-Base-Generic-Rawhide-20260316.n.0."
                     "aarch64.qcow2", "arch": "aarch64"},
    ]}


def test_rawhide_plugin_writes_the_list_and_prints_its_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from pylima.cli import url_fedora_rawhide as plugin

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    asked = []

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        asked.append(url)
        return io.BytesIO(b"Fedora-Rawhide-20260401.n.1\n")

    monkeypatch.setattr(plugin.urllib.request, "urlopen", urlopen)
    plugin.main(["_images/fedora-rawhide"])
    out = Path(capsys.readouterr().out.strip())
    assert out == tmp_path / "lima" / "limactl-url-fedora-rawhide" / "fedora-rawhide.yaml"
    assert "Rawhide-20260401.n.1.x86_64.qcow2" in out.read_text()
    assert asked == [plugin.COMPOSE_ID_URL]


@pytest.mark.parametrize("args", [[], ["_images/fedora-43"], ["a", "b"]])
def test_rawhide_plugin_refuses_other_arguments(args: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from pylima.cli import url_fedora_rawhide as plugin

    with pytest.raises(SystemExit) as info:
        plugin.main(args)
    assert info.value.code == 1
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_rawhide_plugin_offline_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from pylima.cli import url_fedora_rawhide as plugin

    def urlopen(url: str, timeout: float) -> io.BytesIO:
        raise OSError("Name or service not known")

    monkeypatch.setattr(plugin.urllib.request, "urlopen", urlopen)
    with pytest.raises(SystemExit):
        plugin.main(["_images/fedora-rawhide"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and plugin.COMPOSE_ID_URL in err
