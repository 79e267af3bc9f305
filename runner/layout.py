"""The shared job volume layout (Ocean C2D's /data convention) and who may write where.

The algorithm container runs untrusted code as ALGORITHM_UID (docs/internals.md, "Job volume"):

    /data/                     root 0755
      inputs/                  root 0755, files 0644       read-only to the algorithm
      transformations/         root 0755
        algorithm              root 0644                   read-only to the algorithm
      outputs/                 ALGORITHM_UID 0755          the only place it creates files
      logs/                    root 0755                   it cannot create, replace or link here
        configure.log          root 0644
        publish.log            root 0644
        algorithm.log          ALGORITHM_UID 0644          it can only append to its own log
      .c2d/                    root 0755
        busybox                root 0711                   the algorithm container's shell, execute-only
        ready                  root 0644                   configure succeeded completely

Ownership needs root (the runner container's user in Batch); when the runner runs as another
user (tests, an unprivileged local stack) chown is skipped and the modes are still applied.
"""
from __future__ import annotations

import errno
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

CONFIGURE_LOG = "configure.log"
ALGORITHM_LOG = "algorithm.log"
PUBLISH_LOG = "publish.log"

DIR_MODE = 0o755
FILE_MODE = 0o644
# Execute-only: what execs a file it cannot read is not dumpable (no ptrace, /proc files root's),
# which keeps the algorithm from freezing or reading the algorithm container's PID 1.
BUSYBOX_MODE = 0o711


@dataclass(frozen=True)
class Layout:
    """Paths under DATA_DIR that the three stages of a job agree on."""

    root: Path

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    @property
    def transformations(self) -> Path:
        return self.root / "transformations"

    @property
    def algorithm(self) -> Path:
        return self.transformations / "algorithm"

    @property
    def env_file(self) -> Path:
        return self.transformations / "env.json"

    @property
    def custom_data(self) -> Path:
        return self.inputs / "algoCustomData.json"

    @property
    def outputs(self) -> Path:
        return self.root / "outputs"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def control(self) -> Path:
        """Runner-owned files the algorithm container reads but cannot change."""
        return self.root / ".c2d"

    @property
    def busybox(self) -> Path:
        return self.control / "busybox"

    @property
    def ready(self) -> Path:
        return self.control / "ready"

    @property
    def staging(self) -> Path:
        """Where algorithm files wait for their checksum check before they are placed."""
        return self.control / "staging"

    def install_busybox(self, source: str) -> bool:
        """Copy the static busybox the algorithm container's command starts with; configure does
        this before anything else, so the algorithm container can always start (and, without
        `ready`, say that the algorithm was not run). False if the image has none."""
        self._prepare_root()
        root_dir(self.control)
        _remove(self.ready)  # a marker left on a reused volume must not mean "this attempt is ready"
        if not source or not os.path.isfile(source):
            return False
        _remove(self.busybox)
        shutil.copyfile(source, self.busybox, follow_symlinks=True)
        own(self.busybox, 0, BUSYBOX_MODE)
        return True

    def create(self, algorithm_uid: int) -> None:
        """Create the folders and logs with their owners and modes (see the module docstring)."""
        self._prepare_root()
        for folder in (self.inputs, self.transformations, self.logs, self.control):
            root_dir(folder)
        _remove(self.ready)
        _remove_tree(self.staging)
        root_dir(self.staging, mode=0o700)
        self.outputs.mkdir(exist_ok=True)
        own(self.outputs, algorithm_uid, DIR_MODE)
        for name in (CONFIGURE_LOG, PUBLISH_LOG):
            create_file(self.logs / name, 0)
        create_file(self.logs / ALGORITHM_LOG, algorithm_uid)

    def _prepare_root(self) -> None:
        """DATA_DIR itself (the volume's mount point, which may be a symlink locally): root 0755."""
        self.root.mkdir(parents=True, exist_ok=True)
        if is_root():
            os.chown(self.root, 0, 0)
        os.chmod(self.root, DIR_MODE)

    def mark_ready(self) -> None:
        """Written last, only when every input and the verified algorithm are in place."""
        write_file(self.ready, b"ok\n")


def is_root() -> bool:
    return os.geteuid() == 0


def own(path: Path, uid: int, mode: int) -> None:
    """chown (as root only) then chmod, never through a symlink (Linux has no lchmod, so a
    symlink is refused instead)."""
    if path.is_symlink():
        raise OSError(errno.ELOOP, "refusing to change a symlink")
    if is_root():
        os.chown(path, uid, uid, follow_symlinks=False)
    os.chmod(path, mode)


def root_dir(path: Path, mode: int = DIR_MODE) -> None:
    """A root-owned folder; a symlink or file in its place is removed first."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    own(path, 0, mode)


def create_file(path: Path, uid: int) -> None:
    """An empty regular file owned by uid, 0644, replacing whatever was there."""
    _remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    os.close(fd)
    own(path, uid, FILE_MODE)


def write_file(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write a root-owned file without following a link planted at its name."""
    _remove(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    own(path, 0, mode)


def open_log(path: Path) -> int:
    """A write descriptor on a stage's own log, appended to, never followed through a symlink:
    anything but a regular file at that name is removed and a new file created."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        fd = -1
    if fd >= 0 and stat.S_ISREG(os.fstat(fd).st_mode):
        os.set_blocking(fd, True)
        return fd
    if fd >= 0:
        os.close(fd)
    _remove(path)
    return os.open(path, flags | os.O_EXCL, FILE_MODE)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _remove_tree(path)
    elif os.path.lexists(path):
        path.unlink()


def _remove_tree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
