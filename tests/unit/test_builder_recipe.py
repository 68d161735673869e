"""Pure parts of the Debian image builder: mirror choice, recipe hash, layout, entry."""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pylima.errors import LimaError
from pylima.images import builder as b

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# http://snapshot.debian.org/archive/debian-security/20250520T000000Z
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

ONE_LINE = """\
# a comment
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib
deb-src http://mirror.example/debian bookworm main
deb http://mirror.example/debian-security bookworm-security main # trailing
deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main
"""


def test_parse_deb822_skips_comments_and_reads_fields() -> None:
    srcs = b.parse_deb822_sources(DEB822, "debian.sources")
    assert [s.uris for s in srcs] == [("http://deb.debian.org/debian",),
                                      ("http://deb.debian.org/debian-security",)]
    assert srcs[0].suites == ("bookworm", "bookworm-updates")
    assert srcs[0].components == ("main",)
    assert all(s.enabled and s.types == ("deb",) for s in srcs)


def test_parse_deb822_enabled_no_and_continuation_lines() -> None:
    text = "Types: deb\nURIs: http://a/debian\n  http://b/debian\nSuites: bookworm\n" \
           "Enabled: no\n"
    (src,) = b.parse_deb822_sources(text)
    assert src.uris == ("http://a/debian", "http://b/debian")
    assert not src.enabled
    assert b.choose_mirror([src], "bookworm").origin == "default"


def test_parse_one_line_with_options_and_comments() -> None:
    srcs = b.parse_one_line_sources(ONE_LINE, "sources.list")
    assert [(s.types[0], s.uris[0], s.suites[0]) for s in srcs] == [
        ("deb", "http://mirror.example/debian", "bookworm"),
        ("deb-src", "http://mirror.example/debian", "bookworm"),
        ("deb", "http://mirror.example/debian-security", "bookworm-security"),
        ("deb", "https://packages.cloud.google.com/apt", "cloud-sdk-bookworm"),
    ]
    assert srcs[0].components == ("main", "contrib")


def test_choose_mirror_from_deb822_host_sources() -> None:
    choice = b.choose_mirror(b.parse_deb822_sources(DEB822, "x.sources"), "bookworm", env={})
    assert choice.mirror == "http://deb.debian.org/debian"
    assert choice.security == "http://deb.debian.org/debian-security"
    assert "x.sources" in choice.origin
    assert choice.source_lines("bookworm") == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]


def test_choose_mirror_one_line_ignores_deb_src_and_third_party() -> None:
    choice = b.choose_mirror(b.parse_one_line_sources(ONE_LINE), "bookworm", env={})
    assert choice.mirror == "http://mirror.example/debian"
    assert choice.security == "http://mirror.example/debian-security"


def test_choose_mirror_other_release_host_still_uses_its_debian_archive() -> None:
    srcs = b.parse_one_line_sources("deb http://ftp.example.org/debian/ trixie main\n")
    choice = b.choose_mirror(srcs, "bookworm", env={})
    assert choice.mirror == "http://ftp.example.org/debian"
    assert choice.security is None


def test_choose_mirror_override_and_env_win() -> None:
    srcs = b.parse_deb822_sources(DEB822)
    c = b.choose_mirror(srcs, "bookworm", "http://local/debian/", env={b.MIRROR_ENV: "x"})
    assert (c.mirror, c.security, c.origin) == ("http://local/debian", None, "argument")
    c = b.choose_mirror(srcs, "bookworm", None, env={b.MIRROR_ENV: "http://env/debian",
                                                     b.SECURITY_MIRROR_ENV: "http://s/ds"})
    assert (c.mirror, c.security) == ("http://env/debian", "http://s/ds")
    assert c.source_lines("sid") == ["deb http://env/debian sid main"]


def test_choose_mirror_default_without_sources() -> None:
    c = b.choose_mirror([], "bookworm", env={})
    assert c.mirror == b.DEFAULT_MIRROR and c.origin == "default"


def test_read_host_sources_only_list_and_sources_files(tmp_path: Path) -> None:
    apt = tmp_path / "etc" / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(DEB822)
    (apt / "sources.list.d" / "old.list.disabled").write_text(
        "deb http://nope/debian bookworm main\n")
    (apt / "sources.list.d" / "extra.list").write_text(
        "deb http://extra/debian bookworm main\n")
    srcs = b.read_host_sources(tmp_path)
    uris = [s.uris[0] for s in srcs]
    assert "http://nope/debian" not in uris
    assert uris == ["http://extra/debian", "http://deb.debian.org/debian",
                    "http://deb.debian.org/debian-security"]


def test_recipe_hash_is_stable() -> None:
    assert b.make_recipe().digest() == b.make_recipe().digest()
    assert len(b.make_recipe().digest()) == 64


@pytest.mark.parametrize("change", [
    lambda: b.make_recipe(suite="trixie"),
    lambda: b.make_recipe(arch="aarch64"),
    lambda: b.make_recipe(extra_packages=["jq"]),
    lambda: b.make_recipe(tuning=dataclasses.replace(b.Tuning(), esp_mib=200)),
    lambda: b.make_recipe(tuning=dataclasses.replace(b.Tuning(), cmdline_extra=())),
])
def test_recipe_hash_changes_with_the_recipe(change) -> None:  # type: ignore[no-untyped-def]
    assert change().digest() != b.make_recipe().digest()


def test_recipe_hash_covers_version(monkeypatch: pytest.MonkeyPatch) -> None:
    before = b.make_recipe().digest()
    monkeypatch.setattr(b, "RECIPE_VERSION", b.RECIPE_VERSION + 1)
    assert b.make_recipe().digest() != before


def test_recipe_contents() -> None:
    r = b.make_recipe()
    assert "linux-image-amd64" in r.packages
    assert "linux-image-cloud-amd64" not in r.packages
    for pkg in ("openssh-server", "openssh-sftp-server", "sshfs", "python3", "python3-yaml",
                "sudo", "cloud-guest-utils", "e2fsprogs", "initramfs-tools", "systemd-sysv"):
        assert pkg in r.packages
    assert "ifupdown" not in r.packages
    conf = r.pre_files["etc/initramfs-tools/conf.d/pylima.conf"].content
    assert "MODULES=list" in conf
    hook = r.pre_files["etc/initramfs-tools/hooks/pylima"]
    assert hook.mode == 0o755
    for mod in ("virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "9p",
                "9pnet_virtio", "virtiofs", "ext4"):
        assert mod in hook.content.split()
    masked = {p for p, f in r.post_files.items() if f.symlink and f.content == "/dev/null"}
    assert "etc/systemd/system/systemd-networkd-wait-online.service" in masked
    assert "etc/systemd/system/fstrim.timer" in masked
    assert "etc/systemd/system/modprobe@drm.service" in masked
    assert "blacklist kvm_amd" in r.pre_files["etc/modprobe.d/pylima-blacklist.conf"].content
    assert "apt-mark hold linux-image-amd64" in r.customize_script
    assert "ssh_host_" in r.customize_script


def test_default_image_boots_with_pylima_init() -> None:
    """No cloud-init: pylima-init's launcher and its two units, enabled."""
    r = b.make_recipe()
    assert "cloud-init" not in r.packages
    assert not any(p.startswith("etc/cloud/") for p in r.post_files)
    launcher = r.post_files["usr/local/lib/pylima/init-launch"]
    assert launcher.mode == 0o755
    assert "exec /usr/bin/python3 -S -c " in launcher.content
    # boot/20's delegation drop-in is in the image already: no daemon-reload at boot
    assert r.post_files["etc/systemd/system/user@.service.d/lima.conf"].content == (
        "[Service]\nDelegate=yes\n")
    early = r.post_files["etc/systemd/system/pylima-init.service"].content
    assert "DefaultDependencies=no" in early
    before = next(ln for ln in early.splitlines() if ln.startswith("Before="))
    for unit in ("ssh.service", "systemd-networkd.service", "sysinit.target"):
        assert unit in before
    assert "ExecStart=/usr/local/lib/pylima/init-launch early" in early
    final = r.post_files["etc/systemd/system/pylima-final.service"].content
    assert "ExecStart=/usr/local/lib/pylima/init-launch final" in final
    assert "After=pylima-init.service network.target ssh.service" in final
    assert "systemctl enable systemd-networkd.service systemd-resolved.service " \
        "pylima-init.service pylima-final.service" in r.customize_script


def test_cloud_init_variant_boots_with_cloud_init() -> None:
    r = b.make_recipe(variant="cloud-init")
    assert "cloud-init" in r.packages
    assert r.digest() != b.make_recipe().digest()
    assert not any("pylima-init" in p or "init-launch" in p for p in r.post_files)
    assert "pylima-init" not in r.customize_script
    cfg = r.post_files["etc/cloud/cloud.cfg.d/90_pylima.cfg"].content
    assert "datasource_list: [NoCloud, None]" in cfg
    assert "ssh_genkeytypes: [ed25519]" in cfg
    assert "renderers: [networkd]" in cfg
    assert "  - growpart\n" in cfg and "  - resizefs\n" in cfg


def test_unknown_arch() -> None:
    with pytest.raises(LimaError, match="unsupported arch `mips`"):
        b.make_recipe(arch="mips")


def test_disk_ids_derive_from_hash() -> None:
    a, a2, c = b.disk_ids("a" * 64), b.disk_ids("a" * 64), b.disk_ids("c" * 64)
    assert a == a2 and a != c
    assert len({a.disk_guid, a.esp_partuuid, a.root_partuuid, a.root_fs_uuid}) == 4
    assert len(a.esp_volume_id) == 8


def test_layout_is_aligned_and_root_last() -> None:
    lay = b.plan_layout(1000 * b.MIB + 1, 100)
    assert lay.esp_start == 2048
    assert lay.esp_sectors == 100 * 2048
    assert lay.root_start == lay.esp_start + lay.esp_sectors
    assert lay.root_sectors == 1001 * 2048
    assert lay.total_bytes == (lay.root_start + lay.root_sectors) * 512 + b.MIB
    ids = b.disk_ids("f" * 64)
    script = b.render_sfdisk_script(lay, ids)
    assert script.startswith("label: gpt\n")
    assert f"uuid={ids.root_partuuid}" in script.splitlines()[-1]
    assert b.ESP_TYPE_GUID in script


def test_root_fs_size_has_headroom_and_is_rounded() -> None:
    t = b.Tuning()
    size = b.root_fs_bytes(700 * b.MIB, t)
    assert size >= 700 * b.MIB * t.root_size_ratio + t.root_headroom_mib * b.MIB
    assert size % (64 * b.MIB) == 0


def test_cmdline_grub_and_fstab_name_the_same_root() -> None:
    ids = b.disk_ids("1" * 64)
    cmd = b.kernel_cmdline(b.arch_spec("x86_64"), ids, b.Tuning())
    assert cmd.startswith(f"root=PARTUUID={ids.root_partuuid} rw console=ttyS0")
    assert "quiet" in cmd and "systemd.show_status=false" in cmd
    grub = b.render_grub_cfg(ids, cmd)
    assert f"search --no-floppy --fs-uuid --set=root {ids.root_fs_uuid}" in grub
    assert f"linux /vmlinuz {cmd}" in grub
    assert f"PARTUUID={ids.root_partuuid}\t/\text4" in b.render_fstab(ids)


def test_images_entry_shape(tmp_path: Path) -> None:
    img = b.BuiltImage(
        directory=tmp_path, arch="x86_64", suite="bookworm", recipe_hash="0" * 64,
        disk=tmp_path / b.DISK_FILE, kernel=tmp_path / b.KERNEL_FILE,
        initrd=tmp_path / b.INITRD_FILE, cmdline="root=PARTUUID=x rw",
        digests={b.DISK_FILE: "1" * 64, b.KERNEL_FILE: "2" * 64, b.INITRD_FILE: "3" * 64},
    )
    assert b.images_entry(img) == {
        "location": (tmp_path / "disk.qcow2").as_uri(),
        "arch": "x86_64",
        "digest": "sha256:" + "1" * 64,
        "kernel": {"location": (tmp_path / "vmlinuz").as_uri(),
                   "digest": "sha256:" + "2" * 64, "cmdline": "root=PARTUUID=x rw"},
        "initrd": {"location": (tmp_path / "initrd.img").as_uri(),
                   "digest": "sha256:" + "3" * 64},
    }


def test_sha256sums_roundtrip_and_incomplete_results(tmp_path: Path) -> None:
    sums = {"disk.qcow2": "a" * 64, "vmlinuz": "b" * 64}
    assert b.parse_sha256sums(b.render_sha256sums(sums)) == sums
    assert b.load_built_image(tmp_path) is None
    (tmp_path / b.SUMS_FILE).write_text(b.render_sha256sums(sums))
    (tmp_path / b.RECIPE_FILE).write_text("{}")
    (tmp_path / b.CMDLINE_FILE).write_text("x\n")
    assert b.load_built_image(tmp_path) is None  # initrd missing


def test_can_build_reports_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(b, "find_tool", lambda name: None)
    ok, why = b.can_build()
    assert not ok
    assert "apt-get install" in why
    for pkg in ("mmdebstrap", "qemu-utils", "e2fsprogs", "dosfstools", "mtools", "fdisk"):
        assert pkg in why.split()


def test_mounts_under_work_dir_deepest_first() -> None:
    info = (
        "22 1 0:21 / / rw - ext4 /dev/vda rw\n"
        "90 22 0:5 / /c/.build-x/rootfs/proc rw - proc proc rw\n"
        "91 22 0:6 / /c/.build-x/rootfs/dev rw - tmpfs tmpfs rw\n"
        "92 91 0:7 / /c/.build-x/rootfs/dev/pts rw - devpts devpts rw\n"
        "93 22 0:8 / /c/.build-xy/rootfs/proc rw - proc proc rw\n"
        "94 22 0:9 / /c/.build-x/with\\040space rw - tmpfs tmpfs rw\n"
    )
    assert b._mounts_under(Path("/c/.build-x"), info) == [
        "/c/.build-x/rootfs/dev/pts", "/c/.build-x/rootfs/proc", "/c/.build-x/rootfs/dev",
        "/c/.build-x/with space",
    ]


def test_build_without_tools_names_packages(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    monkeypatch.setattr(b, "find_tool", lambda name: None)
    with pytest.raises(LimaError) as err:
        b.build_debian_image(cache_root=tmp_path)
    assert "missing mmdebstrap" in err.value.message
    assert err.value.hint is not None
    assert err.value.hint.startswith("apt-get install mmdebstrap qemu-utils e2fsprogs")
    assert not (tmp_path / "images").exists()


def _fake_result(directory: Path) -> None:
    directory.mkdir(parents=True)
    digests = {}
    for name in (b.DISK_FILE, b.KERNEL_FILE, b.INITRD_FILE):
        (directory / name).write_bytes(name.encode())
        digests[name] = b._sha256_file(directory / name)
    (directory / b.CMDLINE_FILE).write_text("root=PARTUUID=x rw\n")
    (directory / b.RECIPE_FILE).write_text(
        '{"recipe": {"arch": "x86_64", "suite": "bookworm"}, "build": {}}')
    (directory / b.SUMS_FILE).write_text(b.render_sha256sums(digests))


def test_complete_cached_result_is_reused_without_tools(monkeypatch: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    monkeypatch.setattr(b, "find_tool", lambda name: None)
    final = tmp_path / "images" / b.make_recipe().digest()
    _fake_result(final)
    img = b.build_debian_image(cache_root=tmp_path)
    assert img.directory == final
    assert img.cmdline == "root=PARTUUID=x rw"
    assert b.find_cached_image(cache_root=tmp_path) == img
    assert b.images_entry(img)["digest"] == "sha256:" + img.digests[b.DISK_FILE]
    # Another recipe (suite) is not served from this result.
    assert b.find_cached_image(suite="trixie", cache_root=tmp_path) is None


def test_variants_extend_the_base_recipe_without_changing_it(monkeypatch):
    base = b.make_recipe("x86_64")
    monkeypatch.setitem(b.VARIANTS, "extra", ("hello",))
    variant = b.make_recipe("x86_64", variant="extra")
    assert "hello" in variant.packages and "hello" not in base.packages
    assert variant.digest() != base.digest()
    assert b.make_recipe("x86_64", variant="").digest() == base.digest()


def test_unknown_variant_is_one_clear_error():
    with pytest.raises(LimaError, match="unknown image variant `nope`"):
        b.make_recipe("x86_64", variant="nope")


def _read_newc(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """The entries of a newc cpio archive: (name, mode, data, rdev)."""
    out, pos = [], 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = data[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out.append((name, f[1], body, (f[9], f[10])))


def test_small_initrd_archive() -> None:
    ids = b.disk_ids("a" * 64)
    entries = b.small_initrd_entries(ids, b"BUSYBOX", {"virtio_blk.ko": b"VB", "ext4.ko": b"E4"},
                                     ["virtio_blk.ko", "ext4.ko"])
    archive = b.newc_archive(entries)
    assert archive == b.newc_archive(entries)  # reproducible
    got = {name: (mode, body, rdev) for name, mode, body, rdev in _read_newc(archive)}
    assert got["init"][0] == 0o100755 and got["init"][1].startswith(b"#!/bin/busybox sh\n")
    assert got["bin/busybox"] == (0o100755, b"BUSYBOX", (0, 0))
    assert got["dev/console"] == (0o020600, b"", (5, 1))
    assert got["load"][1] == b"virtio_blk.ko\next4.ko\n"
    assert got["lib/modules/ext4.ko"][1] == b"E4"
    for d in ("dev", "proc", "sys", "root", "bin", "lib/modules"):
        assert got[d][0] == 0o040755


def test_small_init_finds_the_root_and_switches() -> None:
    ids = b.disk_ids("a" * 64)
    init = b.render_small_init(ids)
    # the image's root partition maps to its file system UUID (busybox's findfs
    # knows UUID=, not PARTUUID=)
    assert f"PARTUUID={ids.root_partuuid}) spec=UUID={ids.root_fs_uuid} ;;" in init
    assert 'insmod "/lib/modules/$m"' in init and "done </load" in init
    assert 'mount -t "$fstype" -o "$flags" "$dev" /root' in init
    assert init.rstrip().endswith('exec switch_root /root "$init"')
    assert "poweroff -f" in init  # a failure ends the VM instead of hanging it
    assert b.kernel_cmdline(b.ARCHES["x86_64"], ids, b.Tuning()).startswith(
        f"root=PARTUUID={ids.root_partuuid} rw ")


def test_small_init_is_valid_shell(tmp_path: Path) -> None:
    init = b.render_small_init(b.disk_ids("a" * 64))
    script = tmp_path / "init"
    script.write_text(init)
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


def _launcher_tail(tmp: Path, seed: Path) -> str:
    """The launcher from its copy of pylima-init on, runnable on this host: the seed
    at `seed`, the cache under `tmp`, this Python and its yaml, `--root` appended."""
    import yaml

    content = b.make_recipe().post_files["usr/local/lib/pylima/init-launch"].content
    tail = content[content.index(f"lib={b.INIT_CACHE_DIR}\n"):]
    site = str(Path(yaml.__file__).parent.parent)
    tail = (tail.replace(b.INIT_CACHE_DIR, str(tmp / "cache"))
            .replace("/usr/bin/python3", sys.executable)
            .replace("/usr/lib/python3/dist-packages", site)
            .replace('"$1" "$mnt"', '"$1" "$mnt" --root "$ROOT"'))
    return f"set -eu\nmnt={shlex.quote(str(seed))}\n{tail}"


def test_launcher_runs_a_cached_copy_of_the_seeds_pylima_init(tmp_path: Path) -> None:
    """The launcher runs pylima-init as a module from its copy on the root disk, so its
    bytecode is compiled once and reused; a seed with another pylima-init replaces
    the copy."""
    from tests.unit.test_cidata import IID, render
    from tests.unit.test_guest_init import fake_root, write_seed

    from pylima.guestagent import guest_init_bytes

    seed = write_seed(tmp_path, render(guest_init=guest_init_bytes()))
    root = fake_root(tmp_path)
    script = _launcher_tail(tmp_path, seed)

    # as in the guest's systemd unit: bytecode is written
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def launch() -> None:
        r = subprocess.run(["sh", "-c", script, "init-launch", "early"],
                           env={**env, "ROOT": str(root)},
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "early stage done" in r.stdout

    launch()
    cache = tmp_path / "cache"
    assert (cache / "pylima_init.py").read_bytes() == (seed / "pylima-init").read_bytes()
    pyc = list((cache / "__pycache__").glob("pylima_init.*.pyc"))
    assert len(pyc) == 1
    assert (root / "run" / "pylima-init" / "early.done").read_text() == IID + "\n"
    compiled = pyc[0].stat().st_mtime_ns
    launch()  # the same seed: the copy and its bytecode are kept
    assert pyc[0].stat().st_mtime_ns == compiled
    (seed / "pylima-init").write_bytes(guest_init_bytes() + b"\n# another pylima\n")
    launch()
    assert (cache / "pylima_init.py").read_bytes().endswith(b"# another pylima\n")


def test_launcher_runs_the_per_boot_scripts_itself_when_planned(tmp_path: Path) -> None:
    """With the early stage's final-scripts-only plan, the final stage is the
    launcher's own loop: each executable per-boot script in order, a failing one
    named, final.done written; no seed mount, no Python."""
    content = b.make_recipe().post_files["usr/local/lib/pylima/init-launch"].content
    head = content[:content.index("mnt=/mnt/lima-cidata\n")]
    state, per_boot = tmp_path / "state", tmp_path / "per-boot"
    state.mkdir()
    per_boot.mkdir()
    head = head.replace(b.INIT_STATE_DIR, str(state)).replace(b.PER_BOOT_DIR, str(per_boot))
    (per_boot / "00-a.sh").write_text("#!/bin/sh\necho a ran\n")
    (per_boot / "10-b.sh").write_text("#!/bin/sh\nexit 3\n")
    (per_boot / "20-off.sh").write_text("#!/bin/sh\necho never\n")
    (per_boot / "00-a.sh").chmod(0o755)
    (per_boot / "10-b.sh").chmod(0o755)
    script = head + "echo fell through\n"

    def launch(stage: str) -> str:
        r = subprocess.run(["sh", "-c", script, "init-launch", stage],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert launch("final") == "fell through\n"  # no plan: Python's final stage
    (state / "final-scripts-only").write_text("iid-1\n")
    assert launch("early") == "fell through\n"
    out = launch("final")
    assert out.splitlines() == [
        "pylima-init: final stage of iid-1 (per-boot scripts only)",
        f"pylima-init: running {per_boot}/00-a.sh", "a ran",
        f"pylima-init: running {per_boot}/10-b.sh",
        "pylima-init: 10-b.sh exited with status 3",
        "pylima-init: final stage done"]
    assert (state / "final.done").read_text() == "iid-1\n"


def test_launcher_state_paths_are_pylima_inits() -> None:
    from pylima.guestagent import init

    assert b.INIT_STATE_DIR == init.STATE_DIR and b.PER_BOOT_DIR == init.PER_BOOT_DIR
    assert init.SCRIPTS_ONLY_FILE == f"{b.INIT_STATE_DIR}/final-scripts-only"


def test_sshd_pam_stack_loses_only_pam_motd(tmp_path: Path) -> None:
    """The customize script's PAM edit, run on Debian 12's /etc/pam.d/sshd lines."""
    script = b.make_recipe().customize_script
    loop = script[script.index("for m in 'pam_motd"):]
    loop = loop[:loop.index("done\n") + 5]
    pam = tmp_path / "etc" / "pam.d" / "sshd"
    pam.parent.mkdir(parents=True)
    lines = ["# Print the message of the day upon successful login.",
             "session    optional     pam_motd.so  motd=/run/motd.dynamic",
             "session    optional     pam_motd.so noupdate",
             "session    optional     pam_mail.so standard noenv # [1]",
             "session    required     pam_env.so user_readenv=1 envfile=/etc/default/locale"]
    pam.write_text("\n".join(lines) + "\n")
    subprocess.run(["sh", "-c", loop], env={**os.environ, "ROOT": str(tmp_path)}, check=True)
    out = pam.read_text().splitlines()
    assert out[0] == lines[0]
    assert out[1] == "# pylima: " + lines[1] and out[2] == "# pylima: " + lines[2]
    assert out[3:] == lines[3:]


def test_etc_profile_forks_no_id_in_bash(tmp_path: Path) -> None:
    """The customize script's /etc/profile edit, on Debian 12's lines: bash takes its
    uid from EUID, dash (no EUID) still asks `id -u`."""
    script = b.make_recipe().customize_script
    edit = next(ln for ln in script.splitlines() if "/etc/profile" in ln and "sed" in ln)
    profile = tmp_path / "etc" / "profile"
    profile.parent.mkdir()
    profile.write_text('if [ "$(id -u)" -eq 0 ]; then\n  echo root\nelse\n  echo user\nfi\n')
    subprocess.run(["sh", "-c", edit], env={**os.environ, "ROOT": str(tmp_path)}, check=True)
    text = profile.read_text()
    assert text.count('"${EUID:-$(id -u)}"') == 1 and '"$(id -u)"' not in text
    want = "root\n" if os.geteuid() == 0 else "user\n"
    for sh in ("bash", "dash"):
        r = subprocess.run([sh, str(profile)], capture_output=True, text=True, check=True)
        assert r.stdout == want
    # bash never forks for it: a PATH without `id` still gives the answer
    bash = shutil.which("bash") or "/bin/bash"
    r = subprocess.run([bash, "-c", f". {shlex.quote(str(profile))}"],
                       env={"PATH": "/nonexistent"}, capture_output=True, text=True)
    assert r.stdout == want and r.returncode == 0, r.stderr
