"""`limactl watch [INSTANCE]...`: follow the events of instances until interrupted."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import TextIO

import click

log = logging.getLogger("pylima")

POLL_SECONDS = 0.2
# how often the Lima home is scanned for new instances (watching all of them)
SCAN_SECONDS = 1.0
# Lima's propagation of the host agent's log lines skips those older than the start
# of the watch by more than this.
LOG_EPSILON = 1.0


def _status(out: TextIO, msg: str) -> None:
    out.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
    out.flush()


def _instance_dir(name: str) -> tuple[str, str]:
    """(instance directory, "") or ("", why it cannot be watched), as Lima's inspect
    fails: an invalid name, or no lima.yaml."""
    from pylima.names import validate_instance_name
    from pylima.store import dirs

    reason = validate_instance_name(name)
    if reason:
        return "", reason
    d = dirs.instance_dir(name)
    yaml_path = d / dirs.LIMA_YAML
    if not yaml_path.is_file():
        return "", f"open {yaml_path}: no such file or directory"
    return str(d), ""


def _all_instance_names() -> list[str]:
    """Lima's store.Instances: the directories of the Lima home, minus `.` and `_` ones."""
    from pylima.store import dirs

    try:
        entries = sorted(os.scandir(dirs.lima_home()), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    return [e.name for e in entries if not e.name.startswith((".", "_"))
            and e.is_dir()]


class _Watched:
    def __init__(self, name: str, inst_dir: str, verbose: bool) -> None:
        from pylima.hostagent.watcher import LogFollower
        from pylima.store import dirs

        self.name = name
        self.events = LogFollower(os.path.join(inst_dir, dirs.HA_STDOUT_LOG))
        self.logs = LogFollower(os.path.join(inst_dir, dirs.HA_STDERR_LOG)) if verbose \
            else None


def _propagate(line: str, begin: float | None) -> None:
    """A host agent log line, logged again as `[hostagent] MSG` with its fields."""
    from pylima.hostagent.watcher import log_time, parse_log_line

    if not line.strip():
        return
    fields = parse_log_line(line)
    created = time.time()
    if fields is None:
        level, msg, extra = logging.INFO, line, {}
    else:
        t = log_time(fields)
        if t is not None and begin is not None and begin > t + LOG_EPSILON:
            return
        name = str(fields.get("level"))
        levels = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO,
                  "warning": logging.WARNING, "warn": logging.WARNING,
                  "error": logging.ERROR}
        extra = {k: v for k, v in fields.items() if k not in ("level", "msg", "time")}
        if name in ("fatal", "panic"):  # never fatal here: an error, its level kept
            level, extra["level"] = logging.ERROR, name
        elif name in levels:
            level = levels[name]
        else:
            level, msg, extra = logging.INFO, line, {}
        if name in levels or name in ("fatal", "panic"):
            msg = str(fields.get("msg", ""))
            created = t if t is not None else created
    if not log.isEnabledFor(level):
        return
    record = log.makeRecord(log.name, level, __file__, 0, "[hostagent] %s", (msg,), None,
                            extra={"fields": extra})
    record.created = created
    log.handle(record)


def watch_instances(names: list[str], json_out: bool, history: bool, verbose: bool,
                    stdout: TextIO, stderr: TextIO) -> None:
    """Lima's watch loop; runs until interrupted."""
    from pylima.errors import LimaError
    from pylima.hostagent.watcher import EventDecodeError, decode_event, event_json, event_lines

    begin = None if history else time.time()
    watch_all = not names
    if watch_all:
        names = _all_instance_names()
        if not names:
            _status(stderr, "No instances found")
    watching: dict[str, _Watched | None] = {}  # None: stopped after a bad line

    def start(name: str) -> str:
        """Watch `name`; why it cannot be, or ""."""
        inst_dir, why = _instance_dir(name)
        if not why:
            watching[name] = _Watched(name, inst_dir, verbose)
        return why

    def warn(name: str, why: str) -> None:
        log.warning("Failed to inspect instance `%s`", name, extra={"fields": {"error": why}})

    failed = [(n, why) for n in dict.fromkeys(names) if (why := start(n))]
    if failed and not watch_all and not watching:
        # Lima would wait for ever on nothing: pylima says why, and exits
        raise LimaError(f"Failed to inspect instance `{failed[0][0]}`: {failed[0][1]}")
    for n, why in failed:
        warn(n, why)

    _status(stderr, "Watching for events...")
    next_scan = time.monotonic() + SCAN_SECONDS
    while True:
        for name, w in list(watching.items()):
            if w is None:
                continue
            for line in w.events.poll():
                if not line:
                    continue
                try:
                    ev = decode_event(line)
                except EventDecodeError as e:
                    log.warning("Watcher for instance `%s` stopped", name, extra={"fields": {
                        "error": f"failed to unmarshal `{line}` as events.Event: {e}"}})
                    w.events.close()
                    watching[name] = None
                    break
                log.debug("received an event", extra={"fields": {"event": line}})
                if begin is not None and ev.time.timestamp() < begin:
                    continue
                if json_out:
                    stdout.write(event_json(name, ev) + "\n")
                else:
                    stdout.writelines(ln + "\n" for ln in event_lines(name, ev))
                stdout.flush()
            if w.logs is not None and watching[name] is not None:
                for line in w.logs.poll():
                    _propagate(line, begin)
        if watch_all and time.monotonic() >= next_scan:
            next_scan = time.monotonic() + SCAN_SECONDS
            for n in _all_instance_names():
                if n not in watching and not _instance_dir(n)[1]:
                    _status(stderr, "New instance detected: " + n)
                    why = start(n)
                    if why:
                        warn(n, why)
        time.sleep(POLL_SECONDS)


@click.command("watch", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("instances", nargs=-1, metavar="[INSTANCE]...")
@click.option("--json", "json_out", is_flag=True,
              help="Print each event as one JSON object a line")
@click.option("--history", is_flag=True,
              help="Also show the events written before the watch began")
@click.option("--verbose", is_flag=True,
              help="Also show the host agent's log and pylima's informational messages")
def watch(instances: tuple[str, ...], json_out: bool, history: bool, verbose: bool) -> None:
    """Watch the events of Lima instances.

    Events are status changes (running, exiting), the SSH port, cloud-init progress,
    port forwards and errors, as the host agents report them. Without INSTANCE, every
    instance is watched, including those created while watching. Runs until
    interrupted (Ctrl+C).

    \b
    Examples:
      $ limactl watch
      $ limactl watch --history default
      $ limactl watch --json default
    """
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
    watch_instances(list(instances), json_out, history, verbose, sys.stdout, sys.stderr)
