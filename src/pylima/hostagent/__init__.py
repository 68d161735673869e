"""The per-instance host agent: a detached asyncio daemon that owns QEMU, waits for
SSH and the guest's boot-done marker, reports JSON-lines events on stdout
(ha.stdout.log), logs to stderr (ha.stderr.log) and serves ha.sock."""
