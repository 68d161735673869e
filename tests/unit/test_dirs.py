"""Lima's file names (pylima.filenames), the paths built from them (pylima.dirs) and
the old import location (pylima.store.dirs), which must stay interchangeable."""

from pathlib import Path

from pylima import dirs, filenames
from pylima.store import dirs as store_dirs


def test_dirs_reexports_every_file_name():
    names = {n for n in vars(filenames) if n.isupper()}
    assert names and names <= set(dirs.__all__)
    for n in names:
        assert getattr(dirs, n) == getattr(filenames, n)


def test_store_dirs_is_pylima_dirs():
    for n in dirs.__all__:
        assert getattr(store_dirs, n) is getattr(dirs, n)


def test_paths_follow_lima_home(lima_home: Path):
    assert dirs.lima_home() == lima_home
    assert dirs.instance_dir("default") == lima_home / "default"
    assert dirs.config_dir() == lima_home / "_config"
    assert dirs.disks_dir() == lima_home / "_disks"
    assert dirs.user_templates_dir() == lima_home / "_templates"
