"""The local algorithm's sandbox (Linux, bubblewrap): what a Batch job's algorithm container gets,
as far as one machine allows.

- Its own user: UID:GID 4000 (4001 when the job may use the network; contract C1). Run as root
  (CI, a VM), bwrap builds the namespaces with root's privileges and util-linux `setpriv` then
  becomes that UID for real, with no capabilities and no_new_privs. Run as a normal user, bwrap
  makes a user namespace in which the algorithm is UID 4000 (on the host it is still that user):
  what protects the host is then what the sandbox shows and how (below), not the UID.
- Its own mount namespace on an empty root: the system's /usr (and /bin, /lib, ... beside it),
  the Python installation and the few /etc files a program needs, read-only; /proc of its own
  PID namespace, a minimal /dev, an empty /tmp; and the job's folder at /data: inputs and the
  algorithm read-only, outputs writable, logs read-only except algorithm.log, which it may append
  to but never replace. The project checkout, the state folder (`.local/`, with stack.json and its
  keys), the home directory and /etc/shadow are not there.
- Its own network namespace (only an unconnected loopback) unless the job allows network access;
  its own IPC, UTS, PID and cgroup namespaces; killed with its parent.

bubblewrap rather than `unshare` + `setpriv` alone: it builds the whole root from explicit binds in
one exec (no mount script running as root), binds single files read-only, works unprivileged on a
developer's machine through a user namespace, and reaps the sandbox with its parent.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

ALGORITHM_UID = 4000
NETWORK_UID = 4001
DATA = "/data"
SANDBOX_BIN = "/opt/c2d/bin"  # `python` and `python3` for the entrypoint, whatever the host names them
SANDBOX_PATH = f"{SANDBOX_BIN}:/usr/local/bin:/usr/bin:/bin"
# The top-level system folders the interpreter and its shell need, bound read-only (or, if the host
# links them into /usr, linked the same way).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The /etc a program needs to load libraries, tell the time, and (when allowed) resolve names and
# check certificates; nothing else of /etc (no shadow, no machine's secrets).
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "alternatives", "ssl",
             "ca-certificates", "ca-certificates.conf", "resolv.conf", "hosts", "host.conf",
             "nsswitch.conf", "gai.conf", "services", "protocols", "mime.types")
TMP_BYTES = 256 * 1024 * 1024
OPTIONAL = ("--disable-userns", "--size")  # bwrap 0.8 and 0.7; used where the installed one has them


def algorithm_uid(allow_network: bool) -> int:
    """C1: one UID per network policy, as the Batch instances' rules expect."""
    return NETWORK_UID if allow_network else ALGORITHM_UID


class NoSandbox(Exception):
    """No sandbox can be made on this machine; the message says why, for `make run` and job logs."""


@dataclass(frozen=True)
class Sandbox:
    """A working bubblewrap on this machine, and how to use it (see the module docstring)."""

    bwrap: str
    setpriv: str | None  # set when running as root: become the algorithm's UID inside
    options: frozenset[str] = frozenset()  # of the optional ones this bwrap has (0.6 lacks some)

    @property
    def as_root(self) -> bool:
        return self.setpriv is not None

    def describe(self) -> str:
        how = ("as its own UID (setpriv, no capabilities)" if self.as_root
               else "in a user namespace as UID 4000 (the host sees the user running `make run`)")
        return f"bubblewrap sandbox {how}: only the job's folder at /data, no network unless allowed"

    def check(self) -> None:
        """Run a command in a throwaway sandbox; NoSandbox with the reason if it cannot be made."""
        with tempfile.TemporaryDirectory(prefix="c2d-sandbox-probe-") as folder:
            data = Path(folder)
            for name in ("inputs", "transformations", "outputs", "logs"):
                (data / name).mkdir()
            (data / "logs" / "algorithm.log").touch()
            check = f"import os, sys; sys.exit(os.getuid() != {ALGORITHM_UID} or os.path.exists({str(data)!r}))"
            argv = self.command(["python", "-c", check], data, allow_network=False)
            try:
                done = subprocess.run(argv, capture_output=True, timeout=30, env={"PATH": SANDBOX_PATH})
            except (OSError, subprocess.TimeoutExpired) as error:
                raise NoSandbox(f"bubblewrap could not start ({type(error).__name__})") from None
        if done.returncode != 0:
            why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
            raise NoSandbox(f"bubblewrap cannot make the sandbox here ({why[0]}); are user namespaces disabled?")

    def command(self, argv: Sequence[str], job_data: Path, *, allow_network: bool, hide: Sequence[Path] = (),
                etc_dir: Path | None = None) -> list[str]:
        """`argv` run in the sandbox with `job_data` (the job's /data) at /data. `hide`: host
        folders to cover with an empty one if a read-only system bind happens to contain them
        (a checkout under /usr/src, say). `etc_dir`: passwd and group naming the algorithm's user."""
        uid = algorithm_uid(allow_network)
        args = [self.bwrap, "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid",
                "--unshare-uts", "--hostname", "c2d", "--unshare-cgroup-try"]
        if not allow_network:
            args.append("--unshare-net")
        if not self.as_root:
            args += ["--unshare-user", "--uid", str(uid), "--gid", str(uid)]
            args += ["--disable-userns"] if "--disable-userns" in self.options else []
        args += _system_binds() + _python_binds()
        for name in ETC_FILES:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        if etc_dir is not None:
            args += ["--ro-bind", str(etc_dir / "passwd"), "/etc/passwd", "--ro-bind", str(etc_dir / "group"), "/etc/group"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += (["--size", str(TMP_BYTES)] if "--size" in self.options else []) + ["--tmpfs", "/tmp"]
        python = Path(os.path.realpath(sys.base_prefix))
        for path in hide:
            if _covered(path) and not python.is_relative_to(os.path.realpath(path)):
                args += ["--tmpfs", str(path)]
        args += _data_binds(job_data)
        args += ["--chdir", DATA, "--"]
        if self.setpriv:
            args += [self.setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                     "--bounding-set=-all", "--no-new-privs", "--"]
        return args + list(argv)


def find_sandbox() -> Sandbox:
    """The sandbox of this machine, checked by running a command in it; NoSandbox says why not."""
    if not sys.platform.startswith("linux"):
        raise NoSandbox(f"no sandbox on {sys.platform}: Linux namespaces are needed")
    bwrap = shutil.which("bwrap")
    if not bwrap:
        raise NoSandbox("bubblewrap (bwrap) is not installed (Debian/Ubuntu: apt-get install bubblewrap)")
    setpriv = None
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if not setpriv:
            raise NoSandbox("running as root, util-linux's setpriv is needed to drop to the algorithm's UID")
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NoSandbox(f"bubblewrap does not run ({type(error).__name__})") from None
    sandbox = Sandbox(bwrap, setpriv, frozenset(o for o in OPTIONAL if o in usage.split()))
    sandbox.check()
    return sandbox


def sandbox_environment(variables: Mapping[str, str]) -> dict[str, str]:
    """The algorithm's whole environment inside the sandbox: the job's variables (DIDS, ...) with
    paths as the algorithm sees them, and nothing of the host's (no AWS_*, no keys)."""
    return {**variables, "PATH": SANDBOX_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
            "DATA_DIR": DATA, "ALGO": f"{DATA}/transformations/algorithm", "USER": "c2d", "LOGNAME": "c2d"}


def write_user_files(folder: Path, allow_network: bool) -> Path:
    """passwd and group naming the algorithm's user, so `id` and getpass work in the sandbox."""
    uid = algorithm_uid(allow_network)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "passwd").write_text(f"root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
                                   f"c2d:x:{uid}:{uid}:algorithm:/tmp:/bin/sh\n")
    (folder / "group").write_text(f"root:x:0:\nc2d:x:{uid}:\n")
    return folder


def _system_binds() -> list[str]:
    args: list[str] = []
    for folder in SYSTEM_DIRS:
        if os.path.islink(folder):
            args += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            args += ["--ro-bind", folder, folder]
    return args


def _python_binds() -> list[str]:
    """The host's Python installation (the base one, not the project's venv), read-only at its
    own path (its libraries are found by absolute path), and `python`/`python3` naming it."""
    interpreter = Path(os.path.realpath(sys.executable))
    prefix = Path(os.path.realpath(sys.base_prefix))
    args: list[str] = []
    if not _covered(prefix):
        for parent in reversed(prefix.parents[:-1]):
            args += ["--perms", "0755", "--dir", str(parent)]
        args += ["--ro-bind", str(prefix), str(prefix)]
    args += ["--perms", "0755", "--dir", SANDBOX_BIN]
    for name in ("python", "python3"):
        args += ["--symlink", str(interpreter), f"{SANDBOX_BIN}/{name}"]
    return args


def _covered(path: Path) -> bool:
    """Whether a system bind already shows `path`."""
    real = Path(os.path.realpath(path))
    return any(real.is_relative_to(os.path.realpath(folder)) for folder in SYSTEM_DIRS if os.path.isdir(folder))


def _data_binds(job_data: Path) -> list[str]:
    """The job's folder as C2 lays out /data for the algorithm container, enforced by the mounts
    whatever the owners (in a user namespace every file is the algorithm's)."""
    data = str(job_data)
    args = ["--perms", "0755", "--dir", DATA,
            "--ro-bind", f"{data}/inputs", f"{DATA}/inputs",
            "--ro-bind", f"{data}/transformations", f"{DATA}/transformations",
            "--bind", f"{data}/outputs", f"{DATA}/outputs",
            "--ro-bind", f"{data}/logs", f"{DATA}/logs",
            "--bind", f"{data}/logs/algorithm.log", f"{DATA}/logs/algorithm.log"]
    return args  # not /data/.c2d: its ready marker is read here, and the host's shell runs the entrypoint
