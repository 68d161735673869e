"""The cidata (NoCloud) seed of a pylima guest: pure rendering + writing the ISO."""

from pylima.cidata.render import SLIRP, SlirpNet, file_mode, mount_tag, render_cidata

__all__ = ["SLIRP", "SlirpNet", "file_mode", "mount_tag", "render_cidata"]
