"""$LIMA_HOME/_config/default.yaml and override.yaml: read by the store, mixed in by
the pure loader."""

from pathlib import Path

import pytest

from pylima.config.defaults import HostFacts
from pylima.config.load import ConfigFiles, load_document
from pylima.errors import ConfigError
from pylima.store.configfiles import read_config_files


def write(lima_home: Path, name: str, text: str) -> Path:
    cfg = lima_home / "_config"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / name).write_text(text)
    return cfg / name


def test_missing_files_are_empty(lima_home: Path):
    assert read_config_files() == ConfigFiles({}, {}, [])


def test_reads_both_from_lima_home_with_warnings(lima_home: Path):
    write(lima_home, "default.yaml", "cpus: 3\nbogus: 1\n")
    path = write(lima_home, "override.yaml", "memory: 2GiB\n")
    files = read_config_files()
    assert files.default == {"cpus": 3, "bogus": 1}
    assert files.override == {"memory": "2GiB"}
    assert files.warnings == [
        "Non-strict YAML detected; please check for typos: unknown field `bogus` "
        f"(default file `{path.parent / 'default.yaml'}`)"]


def test_explicit_directory(tmp_path: Path):
    (tmp_path / "override.yaml").write_text("cpus: 5\n")
    assert read_config_files(str(tmp_path)).override == {"cpus": 5}


def test_wrong_types_and_unreadable_files_are_errors(lima_home: Path):
    path = write(lima_home, "override.yaml", "cpus: [1]\n")
    with pytest.raises(ConfigError, match=f"override file `{path}`"):
        read_config_files()
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError, match=f"failed to read override file `{path}`: "):
        read_config_files()


def test_loader_mixes_in_what_it_is_given(tmp_path: Path):
    host = HostFacts(cpus=8, memory=16 << 30, arch="x86_64", user="u", uid=1000,
                     home="/home/u", lima_home=str(tmp_path))
    files = ConfigFiles({"cpus": 3}, {"memory": "2GiB"}, ["from the files"])
    loaded = load_document({"cpus": 1, "memory": "1GiB"}, str(tmp_path / "x" / "lima.yaml"),
                           host, files)
    assert loaded.config["cpus"] == 1  # the main file wins over default.yaml
    assert loaded.config["memory"] == "2GiB"  # override.yaml wins over the main file
    assert loaded.warnings[0] == "from the files"
