"""The algorithm container's script (C3), run for real by a static busybox as it is in the job:
the dispatcher's exact command, with /data replaced by a temporary directory laid out as the
runner's configure leaves it (C2)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from chalicelib.compute.algorithm_script import algorithm_command
from chalicelib.compute.job_placement import SEALED_UID

BUSYBOX = shutil.which("busybox")
pytestmark = pytest.mark.skipif(
    BUSYBOX is None, reason="needs busybox (Debian busybox-static; .ci/run installs it) to run the algorithm script")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return volume(tmp_path / "data")


def volume(root: Path) -> Path:
    """A job volume after configure: busybox in .c2d, algorithm.log pre-created, ready written."""
    (root / ".c2d").mkdir(parents=True)
    (root / "logs").mkdir()
    (root / "outputs").mkdir()
    shutil.copy(BUSYBOX, root / ".c2d" / "busybox")
    (root / ".c2d" / "busybox").chmod(0o711)  # as configure installs it
    (root / "logs" / "algorithm.log").write_text("")
    (root / ".c2d" / "ready").write_text("")
    return root


def run(data: Path, entrypoint: str, limit: int = 30, extra_env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "ALGO": str(data / "transformations" / "algorithm"),
           "C2D_MAX_SECONDS": str(limit), **(extra_env or {})}
    return subprocess.run(algorithm_command(entrypoint, str(data)), env=env, capture_output=True, text=True,
                          timeout=timeout)


def algorithm_log(data: Path) -> str:
    return (data / "logs" / "algorithm.log").read_text()


def test_without_ready_the_algorithm_does_not_run_and_the_container_exits_0(data):
    (data / ".c2d" / "ready").unlink()
    done = run(data, f"touch {data}/outputs/ran")
    assert done.returncode == 0
    assert not (data / "outputs" / "ran").exists()
    assert "the algorithm was not run" in done.stdout
    assert "the algorithm was not run" in algorithm_log(data)


def test_without_ready_and_without_a_log_it_still_exits_0(data):
    """configure failed before creating the logs: nothing to append to, the job goes on."""
    (data / ".c2d" / "ready").unlink()
    (data / "logs" / "algorithm.log").unlink()
    (data / "logs").rmdir()
    done = run(data, "true")
    assert done.returncode == 0 and "not run" in done.stdout


def test_exit_code_output_and_no_credentials(data):
    (data / "logs" / "algorithm.log").write_text("earlier line\n")
    secrets = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/secret-id",
               "AWS_CONTAINER_AUTHORIZATION_TOKEN": "token-value", "AWS_SESSION_TOKEN": "session-value",
               "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x"}
    done = run(data, 'echo "algo at $ALGO"; echo oops >&2; env; exit 3', extra_env=secrets)
    assert done.returncode == 3
    text = algorithm_log(data)
    assert text.startswith(f"earlier line\nalgo at {data}/transformations/algorithm\n")
    assert "oops" in text and "oops" in done.stdout  # stderr too, in the log and on stdout (CloudWatch)
    assert f"algo at {data}" in done.stdout
    for value in [*secrets, *secrets.values()]:
        assert value not in text and value not in done.stdout


def test_success_is_0_and_the_entrypoint_text_is_not_reinterpreted(data):
    """The entrypoint is quoted into the script: quotes and $ in it reach sh -c unchanged."""
    done = run(data, """printf '%s|' "it's" '$ALGO' "$ALGO" > "$ALGO.out" """.replace("$ALGO.out", str(data / "outputs" / "o")))
    assert done.returncode == 0
    assert (data / "outputs" / "o").read_text() == f"it's|$ALGO|{data}/transformations/algorithm|"


def test_out_of_time_exits_124_and_kills_the_algorithm_and_its_children(data):
    pids = data / "outputs" / "pids"
    entrypoint = f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; echo started; wait"
    started = time.monotonic()
    done = run(data, entrypoint, limit=2)
    took = time.monotonic() - started
    assert done.returncode == 124
    assert 2 <= took < 15
    assert "ran out of time" in done.stdout and "ran out of time" in algorithm_log(data)
    assert "started" in algorithm_log(data)
    for pid in pids.read_text().split():
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_an_algorithm_that_ignores_sigterm_is_killed(data):
    done = run(data, "trap '' TERM; sleep 300", limit=1)
    assert done.returncode == 124


@pytest.mark.skipif(os.geteuid() != 0, reason="running as the algorithm's UID needs root")
def test_as_the_algorithm_uid_it_appends_to_its_log():
    """As in the job: UID 4000, algorithm.log owned by it (C2), outputs writable, .c2d not."""
    top = Path(tempfile.mkdtemp(prefix="c2d-volume-"))  # pytest's tmp_path is 0700 to others
    top.chmod(0o755)
    data = volume(top / "data")
    for path in (data / "logs" / "algorithm.log", data / "outputs"):
        os.chown(path, SEALED_UID, SEALED_UID)
    command = ["setpriv", f"--reuid={SEALED_UID}", f"--regid={SEALED_UID}", "--clear-groups",
               *algorithm_command(f"id -u; echo x > {data}/outputs/o; touch {data}/.c2d/ready2", str(data))]
    done = subprocess.run(command, env={"PATH": os.environ["PATH"], "C2D_MAX_SECONDS": "30"},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1  # touch in .c2d failed: the entrypoint's own status
    assert str(SEALED_UID) in algorithm_log(data)
    assert (data / "outputs" / "o").exists() and not (data / ".c2d" / "ready2").exists()
    shutil.rmtree(top)


def _as_pid_1(data: Path, entrypoint: str, limit: int) -> subprocess.CompletedProcess[str]:
    """The dispatcher's command as in the container: PID 1 of a PID namespace of its own, as the
    algorithm's UID, which every process of that namespace has."""
    for path in (data / "logs" / "algorithm.log", data / "outputs"):
        os.chown(path, SEALED_UID, SEALED_UID)
    command = ["unshare", "--pid", "--fork", "--mount-proc", "setpriv", f"--reuid={SEALED_UID}",
               f"--regid={SEALED_UID}", "--clear-groups", *algorithm_command(entrypoint, str(data))]
    return subprocess.run(command, env={"PATH": os.environ["PATH"], "C2D_MAX_SECONDS": str(limit)},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a PID namespace and the algorithm's UID need root and util-linux unshare")
def test_an_algorithm_that_kills_every_other_process_it_can_does_not_work_past_its_limit():
    """The algorithm shares the UID of everything in its container but PID 1 cannot be killed from
    inside the namespace: it kills the tee and any watcher, again and again, and then works on
    past maxJobDuration. It is stopped (its output ended when it killed the tee) and what it would
    have written after the limit never appears."""
    top = Path(tempfile.mkdtemp(prefix="c2d-volume-"))
    top.chmod(0o755)
    data = volume(top / "data")
    proof = data / "outputs" / "proof"
    killer = ("for i in $(seq 16); do for p in /proc/[0-9]*; do p=${p#/proc/}; "
              "case $p in 1|$$|$PPID) ;; *) kill -9 $p 2>/dev/null;; esac; done; sleep 0.5; done; "
              f"echo worked past the limit > {proof}")
    started = time.monotonic()
    done = _as_pid_1(data, killer, limit=2)
    took = time.monotonic() - started
    assert done.returncode != 0, done.stdout + done.stderr
    assert took < 8
    assert not proof.exists()
    shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a PID namespace and the algorithm's UID need root and util-linux unshare")
def test_an_algorithm_that_stops_every_other_process_it_can_is_stopped_at_its_limit():
    """SIGSTOP instead of SIGKILL: a stopped watcher never wakes its parent. PID 1 keeps the time
    with builtins alone (no child of it is needed), so the limit holds: 124, nothing written after it."""
    top = Path(tempfile.mkdtemp(prefix="c2d-volume-"))
    top.chmod(0o755)
    data = volume(top / "data")
    proof = data / "outputs" / "proof"
    freezer = ("for p in /proc/[0-9]*; do p=${p#/proc/}; case $p in 1|$$|$PPID) ;; *) kill -STOP $p 2>/dev/null;; "
               f"esac; done; sleep 6; echo worked past the limit > {proof}")
    started = time.monotonic()
    done = _as_pid_1(data, freezer, limit=2)
    took = time.monotonic() - started
    assert done.returncode == 124, done.stdout + done.stderr
    assert 2 <= took < 8
    assert not proof.exists()
    assert "ran out of time" in done.stdout and "ran out of time" in algorithm_log(data)
    shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a PID namespace and the algorithm's UID need root and util-linux unshare")
def test_a_detached_algorithm_that_ignores_sigterm_and_holds_stdout_is_killed_at_the_limit():
    """setsid leaves the process group a watcher would signal; as PID 1 the script stops every
    process of its namespace, wherever it moved."""
    top = Path(tempfile.mkdtemp(prefix="c2d-volume-"))
    top.chmod(0o755)
    data = volume(top / "data")
    proof = data / "outputs" / "proof"
    entrypoint = (f"setsid sh -c 'trap \"\" TERM; sleep 30; echo escaped > {proof}' & echo main exits")
    done = _as_pid_1(data, entrypoint, limit=1)
    assert done.returncode == 124
    assert "main exits" in algorithm_log(data) and not proof.exists()
    shutil.rmtree(top)


_FREEZE_PID_1 = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(0x4206, 1, 0, 0) == 0:  # PTRACE_SEIZE, then PTRACE_INTERRUPT: PID 1 stops
    libc.ptrace(0x4207, 1, 0, 0)
    print("froze PID 1", flush=True)
time.sleep(6)
open(sys.argv[1], "w").write("worked past the limit")
"""


def _python_for(uid: int) -> str | None:
    """An interpreter the algorithm's UID can run (the test's own may live in root's home)."""
    for candidate in (os.path.realpath(sys.executable), shutil.which("python3") or "", "/usr/bin/python3"):
        if candidate and subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                         candidate, "-c", "import ctypes"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                    reason="a PID namespace and the algorithm's UID need root and util-linux unshare")
def test_the_algorithm_can_neither_ptrace_pid_1_nor_read_its_environment():
    """PID 1 runs an execute-only busybox it exec'd itself as the algorithm's UID, so it is not
    dumpable: PTRACE_SEIZE, which would freeze the time limit with it, is refused, and its
    environment (the task role's credential URI) is root's to read."""
    python = _python_for(SEALED_UID)
    if python is None:
        pytest.skip("no Python the algorithm's UID may run")
    top = Path(tempfile.mkdtemp(prefix="c2d-volume-"))
    top.chmod(0o755)
    data = volume(top / "data")
    (data / "freeze.py").write_text(_FREEZE_PID_1)
    (data / "freeze.py").chmod(0o644)
    proof = data / "outputs" / "proof"
    entrypoint = f"cat /proc/1/environ; echo; {python} {data}/freeze.py {proof}"
    for path in (data / "logs" / "algorithm.log", data / "outputs"):
        os.chown(path, SEALED_UID, SEALED_UID)
    command = ["unshare", "--pid", "--fork", "--mount-proc", "setpriv", f"--reuid={SEALED_UID}",
               f"--regid={SEALED_UID}", "--clear-groups", *algorithm_command(entrypoint, str(data))]
    env = {"PATH": os.environ["PATH"], "C2D_MAX_SECONDS": "2",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/task-role-secret"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 124, done.stdout + done.stderr
    assert "froze PID 1" not in done.stdout and not proof.exists()
    assert "task-role-secret" not in done.stdout and "task-role-secret" not in algorithm_log(data)
    shutil.rmtree(top)
