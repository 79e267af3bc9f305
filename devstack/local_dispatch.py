"""The local compute backend of `make run`: runs a job's three stages (runner configure, the
algorithm, runner publish) as processes on this machine, in a job folder laid out like /data,
and reports them through the same event handler code as AWS Batch and the runner's EventBridge
events do in AWS.

It implements the job service's Dispatcher protocol and plugs into chalicelib through
`services.register_local_dispatcher` (see `register`), called by the process serving the API:
chalicelib never imports this module.

The algorithm's container image is NOT used: the algorithm runs with the entrypoint of its DDO
(`python $ALGO`, ...) and the host's Python, in a bubblewrap sandbox (devstack/sandbox.py) that
gives it what its Batch container gets (contracts C1-C3): its own UID, /data with read-only inputs
and writable outputs, no network unless the job allows it, and nothing else of the host. Where no
sandbox can be made, it runs on the host, and every job's configure log and algorithm log say so.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

from chalicelib.compute.batch_naming import JOB_ID_PATTERN, STOP_REASON_PREFIX
from chalicelib.compute.container_rules import AlgorithmContainer
from chalicelib.compute.environments import Environment
from chalicelib.compute.event_signals import batch_state_event
from chalicelib.job_key import ENVIRONMENT_VARIABLE as JOB_KEY_VARIABLE
from devstack.sandbox import NoSandbox, Sandbox, algorithm_uid, find_sandbox, sandbox_environment, write_user_files

log = logging.getLogger(__name__)
EVENT_PREFIX = "C2D-EVENT "
REPO_ROOT = Path(__file__).resolve().parent.parent
RUNNER_SECONDS = 15 * 60  # a runner stage's own limit; the job's duration limits the algorithm only
TIMED_OUT = 124  # C3: the algorithm ran out of time
ALGORITHM_LOG_BYTES = 1024 * 1024  # the head computeStreamableLogs shows (chalicelib.node.logs.MAX_LOG_BYTES)
Deliver = Callable[[dict[str, Any]], Any]


def state_dir() -> Path:
    return Path(os.environ.get("DEVSTACK_STATE_DIR") or REPO_ROOT / ".local")


def unsandboxed_warning(reason: str) -> str:
    return (f"WARNING: the algorithm runs UNSANDBOXED on this machine, with the rights of the user running "
            f"the provider, its network and files ({reason})")


def detect_sandbox() -> tuple[Sandbox | None, str]:
    """This machine's sandbox, or None and why there is none."""
    try:
        return find_sandbox(), ""
    except NoSandbox as problem:
        return None, str(problem)


class LocalDispatcher:
    """Implements the job service's Dispatcher protocol with local processes, one thread per job.

    `sandbox` None runs the algorithm on the host; `unsandboxed_reason` then says why, in the logs."""

    def __init__(self, jobs_dir: Path, deliver: Deliver, runner_env: Mapping[str, str],
                 sandbox: Sandbox | None, unsandboxed_reason: str = "no sandbox was configured"):
        self._jobs_dir = jobs_dir
        self._deliver = deliver
        self._runner_env = dict(runner_env)
        self._sandbox = sandbox
        self._unsandboxed_reason = unsandboxed_reason
        self._running: dict[str, "_LocalJob"] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> "LocalDispatcher":
        from chalicelib import services

        env = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
        env.update({"RUNNER_EVENTS": "stdout", "RESULTS_BUCKET": settings.bucket, "C2D_REGION": settings.region,
                    "ALLOW_PRIVATE_NETWORKS": "1" if settings.allow_private_networks else "0"})
        sandbox, reason = detect_sandbox()
        if sandbox is None:
            log.warning("%s", unsandboxed_warning(reason))
        else:
            log.info("local jobs run their algorithm in a %s", sandbox.describe())
        return cls(state_dir() / "jobs", lambda event: services.job_events().handle(event), env, sandbox, reason)

    @property
    def sandbox(self) -> Sandbox | None:
        return self._sandbox

    def submit(self, job_id: str, environment: Environment, manifest_uri: str, container: AlgorithmContainer,
               timeout: int | None = None, *, dids: Sequence[str] = (), algorithm_did: str = "",
               allow_network: bool = False, runner_key: str, registry_secret: str = "") -> str:
        """Start the job in a thread; `allow_network` (C8) only when every dataset allows it.
        `runner_key` reaches the configure and publish processes' environment only, as on Batch.
        No image is pulled here, so no start with a registry login reaches this backend (the
        /node edge refuses the field locally)."""
        if registry_secret:
            raise ValueError("the local backend pulls no image: a registry login has nothing to do")
        if not JOB_ID_PATTERN.fullmatch(job_id):
            raise ValueError("job id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}")
        local_id = "local-" + uuid.uuid4().hex[:12]
        job = _LocalJob(job_id, local_id, environment.job_queue, self._jobs_dir / job_id, manifest_uri,
                        container.entrypoint, timeout or environment.max_job_duration, allow_network,
                        self._runner_env, self._deliver, self._sandbox, self._unsandboxed_reason, runner_key)
        with self._lock:
            self._running[local_id] = job
        threading.Thread(target=self._run, args=(job,), name=f"job-{job_id}", daemon=True).start()
        return local_id

    def terminate(self, batch_job_id: str, reason: str = "Job stopped") -> None:
        with self._lock:
            job = self._running.get(batch_job_id)
        if job is not None:
            job.stop(reason)

    def algorithm_log(self, job_id: str) -> bytes | None:
        """C8: the algorithm's log so far (None if the job has none, or no such job is here)."""
        if not JOB_ID_PATTERN.fullmatch(job_id):
            return None
        try:
            with open(self._jobs_dir / job_id / "data" / "logs" / "algorithm.log", "rb") as handle:
                return handle.read(ALGORITHM_LOG_BYTES)  # the algorithm decides how big it is
        except OSError:
            return None

    def _run(self, job: "_LocalJob") -> None:
        try:
            job.run()
        except Exception:  # a crash of the local backend must still end the job
            log.exception("local job %s crashed", job.job_id)
            job.finish("FAILED", {"configure": 1}, "local dispatcher crashed")
        finally:
            with self._lock:
                self._running.pop(job.local_id, None)


def register() -> None:
    """Make this the dispatcher of COMPUTE_BACKEND=local in this process (the local API server)."""
    from chalicelib import services

    services.register_local_dispatcher(LocalDispatcher.from_settings)


class _LocalJob:
    def __init__(self, job_id: str, local_id: str, queue: str, folder: Path, manifest_uri: str, entrypoint: str,
                 timeout: int, allow_network: bool, runner_env: Mapping[str, str], deliver: Deliver,
                 sandbox: Sandbox | None, unsandboxed_reason: str, runner_key: str):
        self.job_id, self.local_id, self.queue, self.folder = job_id, local_id, queue, folder
        self.data = folder / "data"
        self.manifest_uri, self.entrypoint, self.timeout = manifest_uri, entrypoint, timeout
        self.allow_network, self.uid = allow_network, algorithm_uid(allow_network)
        self.runner_env, self.deliver = runner_env, deliver
        self.sandbox, self.unsandboxed_reason = sandbox, unsandboxed_reason
        self.runner_key = runner_key
        self.stopped: str | None = None
        self.process: subprocess.Popen | None = None

    def run(self) -> None:
        """As the ECS agent runs the task: configure; the algorithm only if configure succeeded
        (dependsOn SUCCESS), then publish; the job is STARTING until publish starts (a task's
        known status is the lowest of its containers'), when it becomes RUNNING."""
        for status in ("RUNNABLE", "STARTING"):
            self._batch(status)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.data.mkdir(parents=True)
        exits: dict[str, int | None] = {"configure": self._runner("configure"), "algorithm": None, "publish": None}
        if not self.stopped and exits["configure"] == 0:
            started = time.time()
            exits["algorithm"] = self._algorithm(configured=True)
            self._write_task_metadata(started, time.time(), exits["algorithm"])
            if not self.stopped:
                self._batch("RUNNING")
                exits["publish"] = self._runner("publish")
        succeeded = not self.stopped and all(code in (0, None) for code in exits.values()) and exits["algorithm"] == 0
        reason = STOP_REASON_PREFIX + self.stopped if self.stopped else ""
        self.finish("SUCCEEDED" if succeeded else "FAILED", exits, reason)

    def finish(self, status: str, exits: Mapping[str, int | None], reason: str) -> None:
        self.deliver(batch_state_event(self.job_id, self.local_id, self.queue, status, exit_codes=exits,
                                       status_reason=reason, stopped_at_ms=int(time.time() * 1000)))

    def stop(self, reason: str) -> None:
        self.stopped = reason
        process = self.process
        if process is not None and process.poll() is None:
            _kill_group(process, signal.SIGTERM)

    def _batch(self, status: str) -> None:
        self.deliver(batch_state_event(self.job_id, self.local_id, self.queue, status))

    # -- the runner's stages -----------------------------------------------------------------

    def _runner(self, stage: str) -> int:
        """`python -m runner <stage>` as the provider's user, with only what the runner needs in its
        environment (as its Batch container: no provider key, no JWT secret; the job's own key,
        which the algorithm's environment never holds)."""
        env = {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", **self.runner_env,
               "JOB_ID": self.job_id, "MANIFEST_URI": self.manifest_uri, "DATA_DIR": str(self.data),
               "ALGORITHM_UID": str(self.uid), "PYTHONPATH": str(REPO_ROOT), JOB_KEY_VARIABLE: self.runner_key,
               "ECS_CONTAINER_METADATA_URI_V4": self.metadata_dir.resolve().as_uri()}
        return self._execute([sys.executable, "-m", "runner", stage], env, subprocess.PIPE, RUNNER_SECONDS,
                             on_line=self._runner_line)

    def _runner_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace").strip()
        if not text.startswith(EVENT_PREFIX):
            return
        try:
            detail = json.loads(text[len(EVENT_PREFIX):])
        except ValueError:
            log.warning("job %s: unreadable runner event", self.job_id)
            return
        self.deliver({"version": "0", "source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change",
                      "detail": detail})

    # -- the task metadata the ECS agent would serve -------------------------------------------

    @property
    def metadata_dir(self) -> Path:
        """Beside /data, never inside it: the sandboxed algorithm sees only /data."""
        return self.folder / "task-metadata"

    def _write_task_metadata(self, started: float, finished: float, exit_code: int | None) -> None:
        """The algorithm's times as the ECS agent's task metadata v4 `/task` would give them
        (runner/task_metadata.py reads it through ECS_CONTAINER_METADATA_URI_V4): this process,
        not the algorithm, measured them."""
        def stamp(moment: float) -> str:
            return datetime.fromtimestamp(moment, timezone.utc).isoformat().replace("+00:00", "Z")

        container = {"Name": "algorithm", "KnownStatus": "STOPPED", "StartedAt": stamp(started),
                     "FinishedAt": stamp(finished), **({"ExitCode": exit_code} if exit_code is not None else {})}
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        (self.metadata_dir / "task").write_text(json.dumps({"TaskARN": self.local_id, "Containers": [container]}))

    # -- the algorithm -----------------------------------------------------------------------

    def _algorithm(self, configured: bool) -> int | None:
        """C3 locally: not ready, not run (None, and the log says so); else the entrypoint, in the
        sandbox, its output appended to logs/algorithm.log, TIMED_OUT past the job's duration."""
        logs = self.data / "logs"
        if not logs.is_dir():  # configure could not even lay out /data: nothing to run in or log to
            return None
        log_path = self._algorithm_log_file(logs / "algorithm.log")
        with open(log_path, "ab") as log_file:
            if not (configured and self._ready()):
                log_file.write(b"The algorithm was not run: the job's configuration did not complete.\n")
                return None
            if self.sandbox is None:
                self._note_unsandboxed(log_file)
                return self._execute(["sh", "-c", self.entrypoint], self._host_environment(), log_file, self.timeout,
                                     cwd=self.data)
            etc = write_user_files(self.folder / "etc", self.allow_network)
            argv = self.sandbox.command(["/bin/sh", "-c", self.entrypoint], self.data, allow_network=self.allow_network,
                                        hide=(REPO_ROOT, state_dir(), Path(os.path.expanduser("~"))), etc_dir=etc)
            return self._execute(argv, sandbox_environment(self._variables()), log_file, self.timeout)

    def _ready(self) -> bool:
        """C2's ready marker, written by configure last, after everything succeeded (checksums
        included). A runner from before C2 makes no /data/.c2d: its exit code alone says so."""
        marker_dir = self.data / ".c2d"
        return not marker_dir.exists() or (marker_dir / "ready").is_file()

    def _algorithm_log_file(self, path: Path) -> Path:
        """C2: algorithm.log exists before the algorithm starts and belongs to its UID (configure
        makes it; if it did not, it is made here). The sandbox binds only this file writable."""
        if not path.exists():
            path.touch(0o644)
            if os.geteuid() == 0 and self.sandbox is not None:
                os.chown(path, self.uid, self.uid)
        return path

    def _variables(self) -> dict[str, str]:
        try:
            variables = json.loads((self.data / "transformations" / "env.json").read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in variables.items()} if isinstance(variables, dict) else {}

    def _host_environment(self) -> dict[str, str]:
        bin_dir = os.path.dirname(sys.executable)
        return {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HOME": str(self.folder),
                "LANG": "C.UTF-8", **self._variables(), "DATA_DIR": str(self.data)}

    def _note_unsandboxed(self, algorithm_log: IO[bytes]) -> None:
        """Where no sandbox exists, the job's own logs say so (configure.log is published too)."""
        warning = unsandboxed_warning(self.unsandboxed_reason) + "\n"
        algorithm_log.write(warning.encode())
        algorithm_log.flush()
        try:
            with open(self.data / "logs" / "configure.log", "a", encoding="utf-8") as configure_log:
                configure_log.write(warning)
        except OSError:
            log.warning("job %s: could not note the missing sandbox in configure.log", self.job_id)

    # -- processes ---------------------------------------------------------------------------

    def _execute(self, argv: list[str], env: Mapping[str, str], stdout: Any, seconds: float,
                 cwd: Path | None = None, on_line: Callable[[bytes], None] | None = None) -> int:
        """Run one stage in its own process group; killed (with all it started) after `seconds`."""
        stderr = subprocess.DEVNULL if stdout is subprocess.PIPE else subprocess.STDOUT
        process = subprocess.Popen(argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                   cwd=cwd, start_new_session=True)
        self.process = process
        if self.stopped:  # a stop that came while this stage was starting
            _kill_group(process, signal.SIGTERM)
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            _kill_group(process, signal.SIGKILL)

        timer = threading.Timer(max(1.0, seconds), expire)
        timer.daemon = True
        timer.start()
        try:
            if on_line is not None and process.stdout is not None:
                for line in process.stdout:
                    on_line(line)
            code = process.wait()
        finally:
            timer.cancel()
        return TIMED_OUT if expired.is_set() else code


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
