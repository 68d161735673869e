"""The names of the files in an instance directory and of the directories in
$LIMA_HOME, as Lima writes them. Pure constants that import nothing, so that any
layer (the pure core included) can name a file without reading the environment;
`pylima.dirs` turns them into paths."""

# File names inside an instance directory, as Lima writes them.
LIMA_YAML = "lima.yaml"
LIMA_VERSION = "lima-version"
CIDATA_ISO = "cidata.iso"
IMAGE = "image"
DISK = "disk"
BASEDISK_LEGACY = "basedisk"
DIFFDISK_LEGACY = "diffdisk"
KERNEL = "kernel"
KERNEL_CMDLINE = "kernel.cmdline"
INITRD = "initrd"
QMP_SOCK = "qmp.sock"
SERIAL_LOG = "serial.log"
SERIALV_LOG = "serialv.log"
SSH_SOCK = "ssh.sock"
SSH_CONFIG = "ssh.config"
GA_SOCK = "ga.sock"
PORT_FORWARDS = "ha.portforwards.json"  # pylima: the active forwards, for `limactl list`
VIRTIO_PORT = "io.lima-vm.guest_agent.0"  # the guest agent's virtio-serial port name
HA_PID = "ha.pid"
HA_SOCK = "ha.sock"
HA_STDOUT_LOG = "ha.stdout.log"
HA_STDERR_LOG = "ha.stderr.log"
QEMU_PID = "qemu.pid"
PROTECTED = "protected"
SOCK_DIR = "sock"
LOCK_FILE = ".lock"

# Directories inside $LIMA_HOME.
CONFIG_DIR = "_config"
DISKS_DIR = "_disks"
TEMPLATES_DIR = "_templates"
NETWORKS_DIR = "_networks"
USER_KEY = "user"
DEFAULT_YAML = "default.yaml"
OVERRIDE_YAML = "override.yaml"
