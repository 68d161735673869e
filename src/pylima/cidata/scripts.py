"""The fixed shell scripts of pylima's cidata ISO (POSIX sh: dash, busybox ash, bash).

Everything instance-specific lives in the data files next to them on the ISO
(lima.env, param.env, etc_environment, etc_hosts, provision.*/) or in the few
scripts `render.py` generates with shell-quoted values. These scripts only read
data; they never interpolate configuration text into code.

Every file the scripts edit is addressed as "$ROOT/path". In a guest ROOT is empty;
tests point LIMA_CIDATA_ROOT at a scratch directory to run the file-editing steps
on the host. Steps that act on the running system (mount, loginctl, sudo) are
skipped while ROOT is set (see `on_guest`).
"""

from __future__ import annotations

# Marker files under /run (a tmpfs, so they never survive a reboot).
# pylima-init's list of the boot scripts it ran before sshd (see guestagent/init.py).
EARLY_BOOT_SCRIPTS_DONE = "/run/pylima-init/early-boot-scripts"
BOOT_DONE = "/run/lima-boot-done"
BOOT_ERRORS = "/run/lima-boot-errors"
SSH_READY = "/run/lima-ssh-ready"
REBOOT_REQUIRED = "/run/lima-reboot-required"

CIDATA_MOUNT_POINT = "/mnt/lima-cidata"

# Where cloud-init's scripts_per_boot module looks for scripts it runs on every boot.
PER_BOOT_LAUNCHER_PATH = "/var/lib/cloud/scripts/per-boot/00-lima.boot.sh"

# Installed by cloud-init's write_files; mounts the seed and hands over to boot.sh.
PER_BOOT_LAUNCHER = """\
#!/bin/sh
# pylima: started by cloud-init's scripts_per_boot module on every boot.
# Mounts the cidata seed (read-only, root only) and runs its boot.sh.
set -eu
mnt=/mnt/lima-cidata
dev=/dev/disk/by-label/cidata
if [ ! -e "$dev" ]; then
    dev=$(blkid -L cidata 2>/dev/null || findfs LABEL=cidata 2>/dev/null || echo /dev/sr0)
fi
mkdir -p -m 700 "$mnt"
if ! mountpoint -q "$mnt" 2>/dev/null; then
    mount -t iso9660 -o ro,mode=0700,dmode=0700,overriderockperm,exec,uid=0 "$dev" "$mnt" ||
        mount -t iso9660 -o ro "$dev" "$mnt"
fi
LIMA_CIDATA_MNT=$mnt
export LIMA_CIDATA_MNT
# The boot log goes to cloud-init's output (its log file), to the console (the
# host's serial.log) and to the journal (syslog where there is no journal).
journal() {
    if command -v logger >/dev/null 2>&1; then logger -t lima-boot; else cat >/dev/null; fi
}
status=/run/lima-boot.status
rm -f "$status"
{
    if "$mnt/boot.sh" </dev/null 2>&1; then echo 0 >"$status"; else echo "$?" >"$status"; fi
} | tee -a /dev/console /dev/stderr 2>/dev/null | journal
code=$(cat "$status" 2>/dev/null || echo 1)
rm -f "$status"
exit "$code"
"""

# Kernel modules a Lima guest has loaded at boot (Lima's list): FUSE for sshfs, tun/tap
# and bridges for VPNs and container networks, iptables/nftables and their matches for
# container port publishing, overlay for container images.
GUEST_MODULES = ("fuse tun tap bridge veth ip_tables ip6_tables iptable_nat ip6table_nat "
                 "iptable_filter ip6table_filter nf_tables x_tables xt_MASQUERADE "
                 "xt_addrtype xt_comment xt_conntrack xt_mark xt_multiport xt_nat "
                 "xt_tcpudp overlay")

# Sourced by boot.sh and by every boot/*.sh script.
LIB_SH = """\
# pylima boot helpers, sourced (not executed) by boot.sh and boot/*.sh.
# shellcheck shell=sh

ROOT="${LIMA_CIDATA_ROOT:-}"

log() {
\tif [ -n "${LIMA_BOOT_NESTED:-}" ]; then
\t\t# Inside a step whose output run_logged already prefixes.
\t\tprintf '%s\\n' "$*"
\telse
\t\tprintf 'LIMA %s| %s\\n' "$(date -Iseconds 2>/dev/null || date)" "$*"
\tfi
}

warn() {
\tlog "WARNING: $*" >&2
}

# Load the kernel modules a Lima guest has at boot, in the background: loading them
# takes seconds of CPU under emulation, and the kernel loads each on first use anyway
# (this only makes them show in lsmod, as on Lima). One modprobe for all; module by
# module only when one is missing.
load_guest_modules() {
\ton_guest && command -v modprobe >/dev/null 2>&1 || return 0
\t(modprobe -a -q MODULES 2>/dev/null || for m in MODULES; do
\t\tmodprobe -q "$m" 2>/dev/null || : # negligible when it is built into the kernel
\tdone) </dev/null >/dev/null 2>&1 &
}

# True in a real guest; false while the scripts edit a root prefix on a host.
on_guest() {
\t[ -z "$ROOT" ]
}

# Start the guest user's systemd manager (lingering) and wait, bounded, until it
# answers, so that `systemctl --user` works.
start_user_manager() {
\tloginctl enable-linger "$LIMA_CIDATA_USER" || true
\ti=0
\twhile [ ! -e "/run/user/$LIMA_CIDATA_UID/systemd/private" ] && [ "$i" -lt 60 ]; do
\t\tsleep 1
\t\ti=$((i + 1))
\tdone
}

# Append one line to the boot error list the host agent reports after boot.
record_error() {
\twarn "$*"
\tmkdir -p "$ROOT/run"
\tprintf '%s\\n' "$*" >>"$ROOT/run/lima-boot-errors"
}

# Export every assignment of a shell-quoted KEY=value file (lima.env, param.env).
load_assignments() {
\tif [ -f "$1" ]; then
\t\tset -a
\t\t# shellcheck disable=SC1090
\t\t. "$1"
\t\tset +a
\tfi
}

# Export the variables of an /etc/environment style file the way pam_env reads it:
# leading blanks and an "export " prefix are skipped, '#' ends the value, and one
# leading quote (and a trailing one) around the value is dropped. Nothing is
# evaluated, so '$' and backquotes stay literal.
load_pam_env() {
\t[ -f "$1" ] || return 0
\twhile IFS= read -r _line || [ -n "$_line" ]; do
\t\t_line=${_line#"${_line%%[! \t]*}"}
\t\tcase $_line in
\t\t"export "*) _line=${_line#export } ;;
\t\tesac
\t\t_line=${_line%%#*}
\t\tcase $_line in
\t\t*=*) ;;
\t\t*) continue ;;
\t\tesac
\t\t_key=${_line%%=*}
\t\t_val=${_line#*=}
\t\tcase $_val in
\t\t\\"*|\\'*)
\t\t\t_val=${_val#?}
\t\t\tcase $_val in
\t\t\t*\\"|*\\') _val=${_val%?} ;;
\t\t\tesac
\t\t\t;;
\t\tesac
\t\tcase $_key in
\t\t"" | [0-9]* | *[!A-Za-z0-9_]*) continue ;;
\t\tesac
\t\texport "$_key=$_val"
\tdone <"$1"
}

# The value of the variable whose name is $1 (names come from file names on the seed).
deref() {
\teval "printf '%s' \\"\\${$1-}\\""
}

# Single-quote $1 for use in a shell command string.
sh_quote() {
\tprintf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\\\\\''/g")"
}

# run_logged NAME CMD...: run CMD with its output prefixed by NAME in the boot log
# (cloud-init copies the log to the console and, under systemd, the journal).
# Returns CMD's exit code.
run_logged() {
\t_name=$1
\tshift
\t_rc_file="$ROOT/run/lima-boot-step.$$.rc"
\t{
\t\t# The left side of a pipeline is a subshell: this export stays in it.
\t\texport LIMA_BOOT_NESTED=1
\t\tif "$@" </dev/null 2>&1; then _rc=0; else _rc=$?; fi
\t\techo "$_rc" >"$_rc_file"
\t} | while IFS= read -r _out || [ -n "$_out" ]; do
\t\t# No timestamp here: one `date` per line is slow under emulation.
\t\tprintf '%s: %s\\n' "$_name" "$_out"
\tdone
\t_rc=$(cat "$_rc_file" 2>/dev/null || echo 1)
\trm -f "$_rc_file"
\treturn "${_rc:-1}"
}

# run_step NAME CMD...: run_logged, and record a failure without stopping the boot.
run_step() {
\t_step=$1
\tif run_logged "$@"; then
\t\treturn 0
\telse
\t\t_code=$?
\t\trecord_error "$_step failed with exit code $_code"
\t\treturn 0
\tfi
}

# Replace the block between two marker lines of FILE with the content of BLOCKFILE
# (which carries the markers itself). Other lines are kept in order; FILE keeps its
# inode, owner and mode. Lines matching the optional extended regexp DROP go too.
# FILE is an absolute path. Three processes, where every one costs under emulation.
replace_block() {
\t_file=$1 _start=$2 _end=$3 _block=$4 _drop=${5:-}
\t[ -d "${_file%/*}" ] || mkdir -p "${_file%/*}"
\t[ -e "$_file" ] || : >"$_file"
\t_tmp="$_file.lima-new"
\tawk -v s="$_start" -v e="$_end" -v drop="$_drop" -v block="$_block" '
\t\tFILENAME == block { print; next }
\t\t$0 == s { skip = 1; next }
\t\t$0 == e { skip = 0; next }
\t\tskip { next }
\t\tdrop != "" && $0 ~ drop { next }
\t\t{ print }
\t' "$_file" "$_block" >"$_tmp"
\tcat "$_tmp" >"$_file"
\trm -f "$_tmp"
}

# Run a command as the guest user, with PARAM_* and XDG_RUNTIME_DIR passed along.
run_as_user() {
\t# PARAM_* and `env` pass through (a login shell under sudo may not read
\t# /etc/environment).
\t_keep="${LIMA_CIDATA_PARAM_NAMES:-}"
\tif [ -n "${LIMA_CIDATA_ENV_NAMES:-}" ]; then
\t\t_keep="${_keep:+$_keep,}$LIMA_CIDATA_ENV_NAMES"
\tfi
\tif command -v sudo >/dev/null 2>&1; then
\t\tsudo -iu "$LIMA_CIDATA_USER" \\
\t\t\t${_keep:+"--preserve-env=$_keep"} \\
\t\t\t"XDG_RUNTIME_DIR=/run/user/$LIMA_CIDATA_UID" "$@"
\telse
\t\t_cmd="XDG_RUNTIME_DIR=/run/user/$LIMA_CIDATA_UID; export XDG_RUNTIME_DIR;"
\t\t_cmd="$_cmd set -a; . $(sh_quote "$LIMA_USER_PARAMS_FILE"); set +a; exec"
\t\tfor _a in "$@"; do _cmd="$_cmd $(sh_quote "$_a")"; done
\t\tsu -l -s /bin/sh "$LIMA_CIDATA_USER" -c "$_cmd"
\tfi
}
""".replace("MODULES", GUEST_MODULES)

BOOT_SH = """\
#!/bin/sh
# pylima guest boot, run on every boot (see the per-boot launcher in user-data).
#
# Order: boot/*.sh in name order (mounts, /etc/hosts, /etc/environment, guest
# agent, dependency provisioning), then provisioning: data files, system scripts
# (as root), user scripts (as the guest user). "boot" mode provisioning already ran
# from cloud-init's bootcmd, earlier in this boot.
#
# A failing step is logged and listed in /run/lima-boot-errors; the boot goes on.
# Last, /run/lima-boot-done gets this boot's instance id: the host waits for that
# exact content, so a marker left by an earlier boot can never be mistaken for it.
set -u

: "${LIMA_CIDATA_MNT:=/mnt/lima-cidata}"
export LIMA_CIDATA_MNT
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"

load_assignments "$LIMA_CIDATA_MNT/lima.env"
load_assignments "$LIMA_CIDATA_MNT/param.env"
load_pam_env "$LIMA_CIDATA_MNT/etc_environment"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export PATH

EARLY_BOOT_SCRIPTS_DONE=/run/pylima-init/early-boot-scripts
mkdir -p "$ROOT/run"
rm -f "$ROOT/run/lima-boot-done"
# A boot script that reboots the guest creates this file before it does so.
LIMA_REBOOT_REQUIRED="$ROOT/run/lima-reboot-required"
export LIMA_REBOOT_REQUIRED
rm -f "$LIMA_REBOOT_REQUIRED"

log "boot of instance $LIMA_CIDATA_NAME ($LIMA_CIDATA_IID) starts"

if [ "$LIMA_CIDATA_PLAIN" = 1 ]; then
\tlog "plain mode: skipping the boot scripts; provisioning still runs"
\t# No boot script changes the login environment: SSH sessions are final now.
\tprintf '%s\\n' "$LIMA_CIDATA_IID" >"$ROOT/run/lima-ssh-ready"
else
\t# Steps pylima-init already ran, before sshd, in this boot ("IID boot/NN-x.sh"
\t# lines): run once per boot (read with the shell's own `read`: no process).
\tearly_done="" skipped=""
\tif [ -f "$ROOT$EARLY_BOOT_SCRIPTS_DONE" ]; then
\t\twhile IFS= read -r _l || [ -n "$_l" ]; do
\t\t\tearly_done="$early_done|$_l|"
\t\t\tcase $_l in
\t\t\t"$LIMA_CIDATA_IID "*) skipped="$skipped${skipped:+, }${_l#* }" ;;
\t\t\tesac
\t\tdone <"$ROOT$EARLY_BOOT_SCRIPTS_DONE"
\tfi
\t# one line for them all: a log line costs a `date` process under emulation
\t[ -z "$skipped" ] || log "run by pylima-init earlier in this boot: $skipped"
\tfor f in "$LIMA_CIDATA_MNT"/boot/*.sh; do
\t\t[ -f "$f" ] || continue
\t\tcase $early_done in
\t\t*"|$LIMA_CIDATA_IID boot/${f##*/}|"*) continue ;;
\t\tesac
\t\tlog "running boot/${f##*/}"
\t\trun_step "boot/${f##*/}" "$f"
\tdone
fi

if [ -d "$LIMA_CIDATA_MNT/provision.data" ]; then
\tfor f in "$LIMA_CIDATA_MNT"/provision.data/*; do
\t\t[ -f "$f" ] || continue
\t\tn=${f##*/}
\t\tdest=$(deref "LIMA_CIDATA_DATAFILE_${n}_PATH")
\t\towner=$(deref "LIMA_CIDATA_DATAFILE_${n}_OWNER")
\t\tperm=$(deref "LIMA_CIDATA_DATAFILE_${n}_PERMISSIONS")
\t\tover=$(deref "LIMA_CIDATA_DATAFILE_${n}_OVERWRITE")
\t\tif [ -e "$ROOT$dest" ] && [ "$over" = false ]; then
\t\t\tlog "provision.data/$n: keeping existing $dest"
\t\t\tcontinue
\t\tfi
\t\tlog "provision.data/$n: writing $dest"
\t\tuser=${owner%%:*}
\t\tdir=$(dirname "$dest")
\t\tif [ ! -d "$ROOT$dir" ] && on_guest && [ "$user" != root ]; then
\t\t\t# Parent directories belong to the file's owner where the owner may create them.
\t\t\trun_as_user mkdir -p "$dir" >/dev/null 2>&1 || true
\t\tfi
\t\tif mkdir -p "$ROOT$dir" && cp "$f" "$ROOT$dest" && chown "$owner" "$ROOT$dest" &&
\t\t\tchmod "$perm" "$ROOT$dest"; then
\t\t\t:
\t\telse
\t\t\trecord_error "provision.data/$n failed to write $dest"
\t\tfi
\tdone
fi

# "yq" mode provisioning: the host evaluates the expressions (the guest has no yq),
# with no root of its own in the guest (sudo may want a password:
# user.passwordlessSudo: false). boot.sh hands it each target's current content in a
# directory only the user may use, waits for the results and installs them as root.
# Lima's order holds: data, yq, system, user.
if [ -d "$LIMA_CIDATA_MNT/provision.yq" ] && on_guest; then
	xd=$ROOT/run/lima-yq
	rm -rf "$xd" && mkdir -m 700 "$xd"
	for f in "$LIMA_CIDATA_MNT"/provision.yq/*; do
		n=${f##*/}
		dest=$(deref "LIMA_CIDATA_YQ_PROVISION_${n}_PATH")
		if [ -f "$ROOT$dest" ]; then
			cp "$ROOT$dest" "$xd/$n.in"
		fi
	done
	chown -R "$LIMA_CIDATA_USER" "$xd"
	printf '%s\n' "$LIMA_CIDATA_IID" >"$xd/ready"
	log "waiting for the host to apply $LIMA_CIDATA_YQ_PROVISIONS yq provisioning step(s)"
	i=0
	while [ "$(cat "$xd/done" 2>/dev/null)" != "$LIMA_CIDATA_IID" ] && [ "$i" -lt 600 ]; do
		sleep 1
		i=$((i + 1))
	done
	# Out of the user's reach before reading: nothing in it can change under us.
	chown -R root "$xd" && chmod 700 "$xd"
	if [ "$(cat "$xd/done" 2>/dev/null)" != "$LIMA_CIDATA_IID" ]; then
		record_error "the host did not apply the yq provisioning steps within 600 s"
	fi
	for f in "$LIMA_CIDATA_MNT"/provision.yq/*; do
		n=${f##*/}
		out=$xd/$n.out
		[ -f "$out" ] && [ ! -L "$out" ] || continue
		dest=$(deref "LIMA_CIDATA_YQ_PROVISION_${n}_PATH")
		owner=$(deref "LIMA_CIDATA_YQ_PROVISION_${n}_OWNER")
		perm=$(deref "LIMA_CIDATA_YQ_PROVISION_${n}_PERMISSIONS")
		log "provision.yq/$n: writing $dest"
		dir=$(dirname "$dest")
		if [ ! -d "$ROOT$dir" ] && [ "${owner%%:*}" != root ]; then
			run_as_user mkdir -p "$dir" >/dev/null 2>&1 || true
		fi
		if mkdir -p "$ROOT$dir" && cp "$out" "$ROOT$dest" && chown "$owner" "$ROOT$dest" &&
			chmod "$perm" "$ROOT$dest"; then
			:
		else
			record_error "provision.yq/$n failed to write $dest"
		fi
	done
	rm -rf "$xd"
fi

if [ -d "$LIMA_CIDATA_MNT/provision.system" ]; then
\tfor f in "$LIMA_CIDATA_MNT"/provision.system/*; do
\t\t[ -f "$f" ] || continue
\t\tlog "running provision.system/${f##*/} as root"
\t\trun_step "provision.system/${f##*/}" "$f"
\tdone
fi

if [ -d "$LIMA_CIDATA_MNT/provision.user" ] && on_guest; then
\tif command -v loginctl >/dev/null 2>&1; then
\t\t# User scripts may use `systemctl --user`: start the user's manager and wait
\t\t# (bounded) until it answers.
\t\tstart_user_manager
\tfi
\tuser_script="$LIMA_CIDATA_HOME/.lima-user-script"
\t# Readable copy of the PARAM_* file for the su fallback of run_as_user.
\tLIMA_USER_PARAMS_FILE="$LIMA_CIDATA_HOME/.lima-user-params"
\texport LIMA_USER_PARAMS_FILE
\tinstall -m 600 "$LIMA_CIDATA_MNT/param.env" "$LIMA_USER_PARAMS_FILE"
\tchown "$LIMA_CIDATA_USER" "$LIMA_USER_PARAMS_FILE"
\tfor f in "$LIMA_CIDATA_MNT"/provision.user/*; do
\t\t[ -f "$f" ] || continue
\t\tlog "running provision.user/${f##*/} as $LIMA_CIDATA_USER"
\t\t# The seed is readable by root only: hand the user a private copy.
\t\tinstall -m 700 "$f" "$user_script"
\t\tchown "$LIMA_CIDATA_USER" "$user_script"
\t\trun_step "provision.user/${f##*/}" run_as_user "$user_script"
\t\trm -f "$user_script"
\tdone
\trm -f "$LIMA_USER_PARAMS_FILE"
fi

if [ "$LIMA_CIDATA_PASSWORDLESS_SUDO" != 1 ] && on_guest &&
\t[ ! -f "$LIMA_CIDATA_HOME/.lima-password-set" ]; then
\t# sudo asks for a password: give the user a random one, kept in ~/password.
\tpw=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \\n')
\tif printf '%s:%s\\n' "$LIMA_CIDATA_USER" "$pw" | chpasswd; then
\t\t(umask 077 && printf '%s\\n' "$pw" >"$LIMA_CIDATA_HOME/password")
\t\tchown "$LIMA_CIDATA_USER" "$LIMA_CIDATA_HOME/password"
\t\ttouch "$LIMA_CIDATA_HOME/.lima-password-set"
\telse
\t\trecord_error "could not set a password for $LIMA_CIDATA_USER"
\tfi
fi

if [ -e "$LIMA_REBOOT_REQUIRED" ]; then
\tlog "a boot script asked for a reboot: not signalling boot completion"
\texit 0
fi
# Last, so that they do not compete for the CPU with the steps the host waits for.
[ "$LIMA_CIDATA_PLAIN" = 1 ] || load_guest_modules
printf '%s\\n' "$LIMA_CIDATA_IID" >"$ROOT/run/lima-boot-done"
if [ -s "$ROOT/run/lima-boot-errors" ]; then
\tlog "boot done with errors (see /run/lima-boot-errors)"
\texit 1
fi
log "boot done"
exit 0
"""

GUEST_SETUP_SH = """\
#!/bin/sh
# The small things Lima's boot leaves in every Linux guest, in one step (a step costs a
# shell start-up under emulation): sshd accepting COLORTERM (which `limactl shell`
# sends when the host sets it; pylima-init runs this step before sshd starts, so that
# the host agent's first connection, which later sessions share, accepts it too);
# /run/host-services owned by the user; a user with a uid below 1000 in
# systemd-journal (so that `journalctl` shows the system log); and, for the instance
# named `default`, Lima's lime-green prompt in a Debian-style ~/.bashrc.
set -eu
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
conf="$ROOT/etc/ssh/sshd_config.d/10-acceptenv-colorterm.conf"
if [ -d "$ROOT/etc/ssh/sshd_config.d" ] && [ ! -e "$conf" ]; then
\techo "AcceptEnv COLORTERM" >"$conf"
\tif on_guest && command -v systemctl >/dev/null 2>&1; then
\t\tfor unit in ssh sshd; do
\t\t\tif systemctl -q is-active "$unit" 2>/dev/null; then
\t\t\t\tsystemctl reload "$unit" || true
\t\t\t\tbreak
\t\t\tfi
\t\tdone
\tfi
fi
mkdir -p "$ROOT/run/host-services"
chmod 700 "$ROOT/run/host-services"
! on_guest || chown "$LIMA_CIDATA_USER" "$ROOT/run/host-services"
if on_guest && [ "$LIMA_CIDATA_UID" -lt 1000 ] && getent group systemd-journal >/dev/null 2>&1
then
\tusermod -aG systemd-journal "$LIMA_CIDATA_USER" || true
fi
bashrc="$ROOT$LIMA_CIDATA_HOME/.bashrc"
# (the second test first: on every boot but the first it is the one grep that runs)
if [ "$LIMA_CIDATA_NAME" = default ] && [ -f "$bashrc" ] && ! grep -q "^# Lima PS1" "$bashrc" &&
\tgrep -q color_prompt "$bashrc"; then
\t# after Debian's own prompt: lime green (#32CD32) where the terminal has the colours
\tcat >>"$bashrc" <<'PS1_END'
# Lima PS1: the prompt in lime green
case "${COLORTERM:-}:${TERM:-}" in
truecolor:*) lima_c='38;2;50;205;50' ;;
*:*-256color) lima_c='38;5;77' ;;
*) lima_c='' ;;
esac
if [ -n "$lima_c" ]; then
    lima_tail='\\[\\033[00m\\]:\\[\\033[01;34m\\]\\w\\[\\033[00m\\]\\$ '
    PS1='${debian_chroot:+($debian_chroot)}\\[\\033['"$lima_c"'m\\]\\u@\\h'"$lima_tail"
fi
unset lima_c lima_tail
PS1_END
fi
"""

ETC_HOSTS_SH = """\
#!/bin/sh
# Put pylima's names (host.lima.internal, lima-NAME, hostResolver.hosts) into
# /etc/hosts, replacing the block a previous boot wrote.
set -eu
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
replace_block "$ROOT/etc/hosts" '#LIMA-START' '#LIMA-END' "$LIMA_CIDATA_MNT/etc_hosts" \\
\t'[ \\t]host[.]lima[.]internal([ \\t]|$)'
"""

ETC_ENVIRONMENT_SH = """\
#!/bin/sh
# Put env (and the host's proxy settings) into /etc/environment for every login,
# replacing the block a previous boot wrote.
set -eu
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
before=$(cat "$ROOT/etc/environment" 2>/dev/null || true)
replace_block "$ROOT/etc/environment" '#LIMA-START' '#LIMA-END' \\
\t"$LIMA_CIDATA_MNT/etc_environment"
after=$(cat "$ROOT/etc/environment")
if on_guest && [ "$before" != "$after" ] && [ -d "/run/user/$LIMA_CIDATA_UID" ] &&
	command -v loginctl >/dev/null 2>&1; then
\t# A session opened before the change would keep the old values.
\tloginctl terminate-user "$LIMA_CIDATA_USER" 2>/dev/null || true
fi
# From here on, new SSH sessions see the final environment.
printf '%s\\n' "$LIMA_CIDATA_IID" >"$ROOT/run/lima-ssh-ready"
"""

ROOTLESS_BASE_SH = """\
#!/bin/sh
# What a Lima guest with systemd has for rootless containers and user services, on
# every boot: the user's manager lingers (so `systemctl --user` services run without
# a login, and the first SSH login does not wait for the manager to start), cgroup
# delegation to it, sysctls (ping for all, ports below 1024 for the user),
# subordinate ids for the user, and /usr/sbin:/sbin on the user's PATH. First, on
# every guest: the home reachable by both of Lima's names, /home/USER.guest (Lima 2.1
# and later) and /home/USER.linux (before), whichever is the real one.
# pylima-init also runs this before logind and sshd start (loginctl cannot answer
# yet: the linger file alone tells logind, which then starts the manager at boot).
set -eu
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
for ext in guest:linux linux:guest; do
	real="$ROOT/home/$LIMA_CIDATA_USER.${ext%%:*}"
	alias="$ROOT/home/$LIMA_CIDATA_USER.${ext##*:}"
	if [ -d "$real" ] && [ ! -L "$real" ] && [ ! -e "$alias" ] && [ ! -L "$alias" ]; then
		ln -s "$LIMA_CIDATA_USER.${ext%%:*}" "$alias"
	fi
done
if on_guest && ! command -v systemctl >/dev/null 2>&1; then
	exit 0
fi
home="$ROOT$LIMA_CIDATA_HOME"
if on_guest && [ -d "$home" ] && [ "$LIMA_CIDATA_UID" != 0 ] &&
	[ "$(stat -c %u "$home")" = 0 ]; then
	# created by root for a mount point below it, before the user existed
	find "$home" -xdev -exec chown "$LIMA_CIDATA_USER" {} + 2>/dev/null || true
fi
for f in .profile .bashrc .zshrc; do
	if ! grep -q "^# Lima BEGIN" "$home/$f" 2>/dev/null; then
		mkdir -p "$home"
		printf '%s\n' "# Lima BEGIN" "# Make sure iptables and mount.fuse3 are available" \
			'PATH="$PATH:/usr/sbin:/sbin"' "export PATH" "# Lima END" >>"$home/$f"
		on_guest && chown "$LIMA_CIDATA_USER" "$home/$f"
	fi
done
dropin="$ROOT/etc/systemd/system/user@.service.d/lima.conf"
if [ ! -e "$dropin" ]; then
	mkdir -p "$(dirname "$dropin")"
	printf '[Service]\nDelegate=yes\n' >"$dropin"
	! on_guest || systemctl daemon-reload
fi
conf="$ROOT/etc/sysctl.d/99-lima.conf"
if [ ! -e "$conf" ]; then
	mkdir -p "$(dirname "$conf")"
	{
		[ ! -e /proc/sys/kernel/unprivileged_userns_clone ] ||
			echo "kernel.unprivileged_userns_clone=1"
		echo "net.ipv4.ping_group_range = 0 2147483647"
		echo "net.ipv4.ip_unprivileged_port_start=0"
	} >"$conf"
	! on_guest || sysctl -q --system >/dev/null
fi
# Lima's range: above the ids systemd-homed uses, and above the user's own uid.
first=524288
[ "$LIMA_CIDATA_UID" -lt "$first" ] || first=$((LIMA_CIDATA_UID + 1))
for f in "$ROOT/etc/subuid" "$ROOT/etc/subgid"; do
	if ! grep -q "^$LIMA_CIDATA_USER:" "$f" 2>/dev/null; then
		mkdir -p "$(dirname "$f")"
		echo "$LIMA_CIDATA_USER:$first:1073741824" >>"$f"
	fi
done
linger="$ROOT/var/lib/systemd/linger/$LIMA_CIDATA_USER"
if [ ! -e "$linger" ]; then
	if on_guest && systemctl -q is-active systemd-logind.service 2>/dev/null; then
		loginctl enable-linger "$LIMA_CIDATA_USER"
	else
		mkdir -p "$(dirname "$linger")"
		: >"$linger"
	fi
fi
"""

GUEST_AGENT_SH = """\
#!/bin/sh
# Install the guest agent shipped on the seed and run it as a transient systemd
# service on the virtio-serial port (started by this script on every boot: no unit
# file, so no `systemctl daemon-reload`, which costs seconds under emulation).
# Without systemd or without the port, the host agent runs it over SSH instead
# (`lima-guestagent stdio`), so nothing here is fatal.
set -eu
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
src="$LIMA_CIDATA_MNT/lima-guestagent"
[ -f "$src" ] || exit 0
bin="$LIMA_CIDATA_GUEST_INSTALL_PREFIX/bin/lima-guestagent"
if ! cmp -s "$src" "$ROOT$bin"; then
\tmkdir -p "$(dirname "$ROOT$bin")"
\tinstall -m 755 "$src" "$ROOT$bin"
\tlog "installed $bin"
fi
[ -n "$LIMA_CIDATA_VIRTIO_PORT" ] || exit 0
on_guest || exit 0
[ -d /run/systemd/system ] || exit 0
[ -e "/dev/virtio-ports/$LIMA_CIDATA_VIRTIO_PORT" ] || exit 0
unit=/etc/systemd/system/lima-guestagent.service
if [ -e "$unit" ]; then
\t# left by an older pylima: the transient unit takes its name
\tsystemctl disable --quiet --now lima-guestagent.service 2>/dev/null || true
\trm -f "$unit"
\tsystemctl daemon-reload
fi
# one left by an earlier run of this step in this boot (a transient unit does not
# outlive the boot: at boot there is none to stop, and no systemctl to run)
if [ -e /run/systemd/transient/lima-guestagent.service ]; then
\tsystemctl stop lima-guestagent.service 2>/dev/null || true
fi
systemd-run --quiet --unit=lima-guestagent --collect \\
\t--description="pylima guest agent (listening ports, time sync)" \\
\t--property=Restart=always --property=RestartSec=2 "$bin" daemon
"""

DEPENDENCIES_SH = """\
#!/bin/sh
# "dependency" mode provisioning, then the packages pylima itself needs.
set -u
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
code=0
if [ -d "$LIMA_CIDATA_MNT/provision.dependency" ]; then
\tfor f in "$LIMA_CIDATA_MNT"/provision.dependency/*; do
\t\t[ -f "$f" ] || continue
\t\tlog "running provision.dependency/${f##*/}"
\t\tif ! "$f" </dev/null; then
\t\t\trecord_error "provision.dependency/${f##*/} failed"
\t\t\tcode=1
\t\tfi
\tdone
fi
if [ "$LIMA_CIDATA_SKIP_DEFAULT_DEPENDENCY_RESOLUTION" = 1 ]; then
\texit "$code"
fi
# reverse-sshfs mounts need the sshfs client in the guest.
if on_guest && [ "$LIMA_CIDATA_MOUNTTYPE" = reverse-sshfs ] && [ "$LIMA_CIDATA_MOUNTS" -gt 0 ] &&
\t! command -v sshfs >/dev/null 2>&1; then
\tlog "installing sshfs"
\tif command -v apt-get >/dev/null 2>&1; then
\t\tDEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends sshfs || code=1
\telif command -v dnf >/dev/null 2>&1; then
\t\tdnf install -y fuse-sshfs || code=1
\telif command -v apk >/dev/null 2>&1; then
\t\tapk add sshfs || code=1
\telif command -v zypper >/dev/null 2>&1; then
\t\tzypper --non-interactive install sshfs || code=1
\telse
\t\twarn "no known package manager to install sshfs"
\t\tcode=1
\tfi
fi
exit "$code"
"""

CONTAINERD_SH = """\
#!/bin/sh
# containerd.system / containerd.user: containerd, nerdctl and friends from the
# archive the host put on the seed (the first `containerd.archives` entry of this
# architecture that it could download, digest checked), extracted into the install
# prefix once per archive. Without an archive (the host could not download one and
# said so) the distribution's containerd is used for containerd.system when the image
# has it; otherwise containerd is skipped.
set -u
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
on_guest || exit 0
if ! command -v systemctl >/dev/null 2>&1; then
\tlog "containerd: no systemd in this guest, skipped"
\texit 0
fi
prefix=$LIMA_CIDATA_GUEST_INSTALL_PREFIX
archive="$LIMA_CIDATA_MNT/${LIMA_CIDATA_CONTAINERD_ARCHIVE:-none}"
if [ -z "${LIMA_CIDATA_CONTAINERD_ARCHIVE:-}" ] || [ ! -f "$archive" ]; then
\tif [ "$LIMA_CIDATA_CONTAINERD_SYSTEM" = 1 ] && command -v containerd >/dev/null 2>&1; then
\t\tlog "containerd: no archive on the seed; using the distribution's containerd"
\t\tsystemctl enable --now containerd.service
\t\texit $?
\tfi
\tlog "containerd: no archive on the seed and none in the image; skipped"
\texit 0
fi
stamp="$prefix/share/lima/containerd-archive.sha256"
sum=$(sha256sum "$archive" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
\tlog "containerd: extracting the archive into $prefix"
\tmkdir -p "$prefix" "$(dirname "$stamp")"
\ttar -C "$prefix" -xf "$archive" || exit 1
\tprintf '%s\\n' "$sum" >"$stamp"
\tsystemctl daemon-reload
fi
code=0
if [ "$LIMA_CIDATA_CONTAINERD_SYSTEM" = 1 ]; then
\tif [ ! -e /etc/containerd/config.toml ]; then
\t\tmkdir -p /etc/containerd
\t\tprintf 'version = 2\\n' >/etc/containerd/config.toml
\tfi
\tunits=""
\tfor u in containerd buildkit stargz-snapshotter; do
\t\tif [ -e "$prefix/lib/systemd/system/$u.service" ] ||
\t\t\t[ -e "/etc/systemd/system/$u.service" ]; then
\t\t\tunits="$units $u.service"
\t\tfi
\tdone
\tif [ -z "$units" ]; then
\t\twarn "containerd: the archive has no lib/systemd/system/containerd.service"
\t\tcode=1
\telse
\t\tlog "containerd: starting$units"
\t\t# shellcheck disable=SC2086
\t\tsystemctl enable --now $units || code=1
\tfi
fi
if [ "$LIMA_CIDATA_CONTAINERD_USER" = 1 ]; then
\ttool="$prefix/bin/containerd-rootless-setuptool.sh"
\tif [ ! -x "$tool" ]; then
\t\twarn "containerd.user: the archive has no bin/containerd-rootless-setuptool.sh"
\t\tcode=1
\telif [ ! -e "$LIMA_CIDATA_HOME/.config/systemd/user/containerd.service" ]; then
\t\tstart_user_manager
\t\tlog "containerd: setting up rootless containerd for $LIMA_CIDATA_USER"
\t\trun_as_user env "PATH=$prefix/bin:$PATH" "$tool" install || code=1
\t\tif [ -e "$prefix/bin/buildkitd" ]; then
\t\t\trun_as_user env "PATH=$prefix/bin:$PATH" "$tool" install-buildkit-containerd || code=1
\t\tfi
\tfi
fi
exit "$code"
"""

# boot/05-lima-disks.sh: the additionalDisks, on every boot. Disk N of the list is
# /dev/vd(b+N) (the QEMU driver attaches them in that order, right after the boot
# disk); its first GPT partition carries the label lima-NAME and is mounted at
# /mnt/lima-NAME (fsType `swap`: enabled as swap). A disk without that label is
# partitioned and formatted when `format` is true and it holds no data at all; one
# that holds something else is left untouched and reported. A disk grown with
# `limactl disk resize` is grown here too (partition, then file system).
DISKS_SH = """\
#!/bin/sh
set -u
# shellcheck source=/dev/null
. "$LIMA_CIDATA_MNT/lib.sh"
on_guest || exit 0
PATH="$PATH:/usr/sbin:/sbin"

# disk_fail NAME MESSAGE: one line in the boot errors, the boot goes on.
disk_fail() {
	record_error "additional disk \\`$1\\`: $2"
	return 1
}

# The label of a block device, probed afresh (no cache), or nothing.
disk_label() {
	blkid -p -o value -s LABEL "$1" 2>/dev/null || true
}

# Whether a block device holds any signature (partition table, file system, swap).
disk_has_data() {
	[ -n "$(blkid -p -o value -s TYPE "$1" 2>/dev/null)" ] ||
		[ -n "$(blkid -p -o value -s PTTYPE "$1" 2>/dev/null)" ]
}

disk_format() { # NAME DEV PART FSTYPE FSARGS
	if ! command -v sfdisk >/dev/null 2>&1; then
		disk_fail "$1" "sfdisk is not installed in the guest"
		return 1
	fi
	if [ "$4" = swap ]; then
		_type=swap _mkfs=mkswap
	else
		_type=linux _mkfs=mkfs.$4
	fi
	if ! command -v "$_mkfs" >/dev/null 2>&1; then
		disk_fail "$1" "fsType \\`$4\\`: $_mkfs is not installed in the guest"
		return 1
	fi
	log "formatting $2 as $4 (lima-$1)"
	if ! _err=$(echo "type=$_type" | sfdisk --quiet --label gpt "$2" 2>&1); then
		disk_fail "$1" "partitioning $2 failed: $(printf '%s' "$_err" | tr '\\n' ' ')"
		return 1
	fi
	udevadm settle 2>/dev/null || true
	i=0
	while [ ! -b "$3" ] && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	# shellcheck disable=SC2086
	if ! _err=$($_mkfs $5 -L "lima-$1" "$3" 2>&1); then
		disk_fail "$1" "$_mkfs failed on $3: $(printf '%s' "$_err" | tail -n 1)"
		return 1
	fi
	udevadm settle 2>/dev/null || true
}

disk_grow() { # NAME DEV PART FSTYPE
	command -v growpart >/dev/null 2>&1 || return 0
	# NOCHANGE (exit 1) is the usual case: the disk has not been resized.
	growpart "$2" 1 >/dev/null 2>&1 || return 0
	log "grew partition $3 of disk $1"
	case $4 in
	ext2 | ext3 | ext4) resize2fs "$3" >/dev/null 2>&1 || warn "resize2fs $3 failed" ;;
	xfs) xfs_growfs "/mnt/lima-$1" >/dev/null 2>&1 || warn "xfs_growfs $3 failed" ;;
	swap) ;;
	*) warn "file system $4 of disk $1 is not grown automatically" ;;
	esac
}

disk_setup() { # NAME DEV FORMAT FSTYPE FSARGS
	_part=${2}1
	if [ ! -b "$2" ]; then
		disk_fail "$1" "no device $2 in the guest"
		return 1
	fi
	if [ "$(disk_label "$_part")" != "lima-$1" ]; then
		if [ "$3" != true ]; then
			:  # format: false: the disk is the user's to prepare; mount what is there
		elif disk_has_data "$2" || { [ -b "$_part" ] && disk_has_data "$_part"; }; then
			disk_fail "$1" "$2 already holds data without the label lima-$1; not formatting it"
			return 1
		else
			disk_format "$1" "$2" "$_part" "$4" "$5" || return 1
		fi
	fi
	if [ "$4" = swap ]; then
		disk_grow "$1" "$2" "$_part" swap
		grep -q "^$_part " /proc/swaps 2>/dev/null && return 0
		if ! _err=$(swapon "$_part" 2>&1); then
			disk_fail "$1" "swapon $_part failed: $_err"
			return 1
		fi
		return 0
	fi
	mkdir -p "/mnt/lima-$1"
	if ! mountpoint -q "/mnt/lima-$1"; then
		if ! _err=$(mount -t "$4" "$_part" "/mnt/lima-$1" 2>&1); then
			_err=$(printf '%s' "$_err" | tr '\\n' ' ')
			disk_fail "$1" "mount $_part on /mnt/lima-$1 ($4) failed: $_err"
			return 1
		fi
	fi
	disk_grow "$1" "$2" "$_part" "$4"
}

code=0
i=0
while [ "$i" -lt "${LIMA_CIDATA_DISKS:-0}" ]; do
	name=$(deref "LIMA_CIDATA_DISK_${i}_NAME")
	dev=/dev/$(deref "LIMA_CIDATA_DISK_${i}_DEVICE")
	format=$(deref "LIMA_CIDATA_DISK_${i}_FORMAT")
	fstype=$(deref "LIMA_CIDATA_DISK_${i}_FSTYPE")
	fsargs=$(deref "LIMA_CIDATA_DISK_${i}_FSARGS")
	i=$((i + 1))
	disk_setup "$name" "$dev" "${format:-true}" "${fstype:-ext4}" "$fsargs" || code=1
done
exit "$code"
"""

# Helpers the generated boot/05-mounts.sh calls, one line per mount.
MOUNT_FUNCS = """\
# Create a mount point (and any missing parents inside the user's home) owned by
# the guest user, so that the user can reach the mounted directory.
prepare_mount_point() {
\tmp=$1
\tif [ ! -e "$ROOT$mp" ]; then
\t\ttop=$mp
\t\twhile parent=$(dirname "$top") && [ "$parent" != "$top" ] && [ ! -e "$ROOT$parent" ]; do
\t\t\ttop=$parent
\t\tdone
\t\tmkdir -p "$ROOT$mp"
\t\tgid=$(id -g "$LIMA_CIDATA_USER" 2>/dev/null || echo "$LIMA_CIDATA_UID")
\t\tcase "$top/" in
\t\t"$LIMA_CIDATA_HOME"/*) chown -R "$LIMA_CIDATA_UID:$gid" "$ROOT$top" ;;
\t\t*) chown "$LIMA_CIDATA_UID:$gid" "$ROOT$mp" ;;
\t\tesac
\tfi
}

mounted() {
\tmountpoint -q "$1" 2>/dev/null
}

# A mount that fails is recorded under its tag (the host agent names the host
# directory in its place) with mount's own message; the boot goes on.
mount_failed() {
	record_error "mount $1 on $2 ($3) failed in the guest: $(printf '%s' "$4" | tr '\\n' ' ')"
}

mount_9p() {
	prepare_mount_point "$2"
	on_guest || return 0
	mounted "$2" && return 0
	modprobe 9pnet_virtio 2>/dev/null || true
	log "mounting $1 on $2 (9p, $3)"
	if ! _err=$(mount -t 9p -o "$3" "$1" "$2" 2>&1); then
		mount_failed "$1" "$2" 9p "$_err"
	fi
}

mount_virtiofs() {
	prepare_mount_point "$2"
	on_guest || return 0
	mounted "$2" && return 0
	modprobe virtiofs 2>/dev/null || true
	log "mounting $1 on $2 (virtiofs, $3)"
	if ! _err=$(mount -t virtiofs -o "$3" "$1" "$2" 2>&1); then
		mount_failed "$1" "$2" virtiofs "$_err"
	fi
}

# reverse-sshfs: the host agent runs `sshfs -o slave ... -o allow_other` as the user
# once the guest is up; the guest provides the mount point and lets FUSE users
# share their mounts with root (user_allow_other).
mount_reverse_sshfs() {
	prepare_mount_point "$2"
	for _conf in "$ROOT/etc/fuse.conf" "$ROOT/etc/fuse3.conf"; do
		[ -f "$_conf" ] || continue
		grep -q '^user_allow_other' "$_conf" || echo user_allow_other >>"$_conf"
		return 0
	done
	mkdir -p "$ROOT/etc"
	echo user_allow_other >>"$ROOT/etc/fuse.conf"
}
"""
