"""The cidata (NoCloud) seed of a pylima guest: pure rendering + writing the ISO."""

from pylima.cidata.iso import write_cidata_dir, write_cidata_iso
from pylima.cidata.render import SLIRP, SlirpNet, file_mode, mount_tag, render_cidata

__all__ = ["SLIRP", "SlirpNet", "file_mode", "mount_tag", "render_cidata", "write_cidata_dir",
           "write_cidata_iso"]
