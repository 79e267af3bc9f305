"""The local compute backend of `make run`: runs a job's three stages (runner configure, the
algorithm, runner publish) as processes on this machine, in a job folder laid out like /data,
and reports them through the same event handler code as AWS Batch and the runner's EventBridge
events do in AWS.

For development only: the algorithm's container image is NOT used, and the algorithm runs
unsandboxed on the host with the entrypoint of its DDO (`python $ALGO`, `node $ALGO`, ...).
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
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from chalicelib.compute.dispatch import STOP_REASON_PREFIX, AlgorithmContainer
from chalicelib.compute.environments import Environment
from chalicelib.compute.events import batch_state_event

log = logging.getLogger(__name__)
EVENT_PREFIX = "C2D-EVENT "
REPO_ROOT = Path(__file__).resolve().parent.parent
Deliver = Callable[[dict[str, Any]], Any]


class LocalDispatcher:
    """Implements the job service's Dispatcher protocol with local processes, one thread per job."""

    def __init__(self, jobs_dir: Path, deliver: Deliver, runner_env: Mapping[str, str]):
        self._jobs_dir = jobs_dir
        self._deliver = deliver
        self._runner_env = dict(runner_env)
        self._running: dict[str, "_LocalJob"] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> "LocalDispatcher":
        from chalicelib import services

        state = Path(os.environ.get("DEVSTACK_STATE_DIR") or REPO_ROOT / ".local")
        env = {name: value for name, value in os.environ.items() if name.startswith("AWS_")}
        env.update({"RUNNER_EVENTS": "stdout", "RESULTS_BUCKET": settings.bucket,
                    "ALLOW_PRIVATE_NETWORKS": "1" if settings.allow_private_networks else "0"})
        return cls(state / "jobs", lambda event: services.job_events().handle(event), env)

    def submit(self, job_id: str, environment: Environment, manifest_uri: str, container: AlgorithmContainer,
               timeout: int | None = None, *, dids: Sequence[str] = (), algorithm_did: str = "") -> str:
        local_id = "local-" + uuid.uuid4().hex[:12]
        job = _LocalJob(job_id, local_id, environment.job_queue, self._jobs_dir / job_id, manifest_uri,
                        container.entrypoint, timeout or environment.max_job_duration, self._runner_env, self._deliver)
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
        """The algorithm's log so far (contract C8), None while the job has none."""
        path = self._jobs_dir / job_id / "data" / "logs" / "algorithm.log"
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
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


class _LocalJob:
    def __init__(self, job_id: str, local_id: str, queue: str, folder: Path, manifest_uri: str, entrypoint: str,
                 timeout: int, runner_env: Mapping[str, str], deliver: Deliver):
        self.job_id, self.local_id, self.queue, self.folder = job_id, local_id, queue, folder
        self.data = folder / "data"
        self.manifest_uri, self.entrypoint, self.timeout = manifest_uri, entrypoint, timeout
        self.runner_env, self.deliver = runner_env, deliver
        self.deadline = time.monotonic() + timeout
        self.stopped: str | None = None
        self.process: subprocess.Popen | None = None

    def run(self) -> None:
        for status in ("RUNNABLE", "STARTING", "RUNNING"):
            self._batch(status)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.data.mkdir(parents=True)
        exits: dict[str, int | None] = {"configure": self._runner("configure"), "algorithm": None, "publish": None}
        if exits["configure"] == 0 and not self.stopped:
            exits["algorithm"] = self._algorithm()
        if not self.stopped:
            exits["publish"] = self._runner("publish")
        succeeded = not self.stopped and all(code in (0, None) for code in exits.values()) and exits["algorithm"] == 0
        reason = STOP_REASON_PREFIX + self.stopped if self.stopped else ""
        self.finish("SUCCEEDED" if succeeded else "FAILED", exits, reason)

    def finish(self, status: str, exits: Mapping[str, int | None], reason: str) -> None:
        self.deliver(batch_state_event(self.job_id, self.local_id, self.queue, status, exit_codes=exits,
                                       status_reason=reason, stopped_at_ms=int(time.time() * 1000)))

    def stop(self, reason: str) -> None:
        self.stopped = reason
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def _batch(self, status: str) -> None:
        self.deliver(batch_state_event(self.job_id, self.local_id, self.queue, status))

    def _runner(self, stage: str) -> int:
        env = {**os.environ, **self.runner_env, "JOB_ID": self.job_id, "MANIFEST_URI": self.manifest_uri,
               "DATA_DIR": str(self.data), "PYTHONPATH": str(REPO_ROOT)}
        process = self._start([sys.executable, "-m", "runner", stage], env, stdout=subprocess.PIPE)
        assert process.stdout is not None
        for line in process.stdout:
            text = line.decode("utf-8", "replace").strip()
            if text.startswith(EVENT_PREFIX):
                self._runner_event(text[len(EVENT_PREFIX):])
        return self._wait(process)

    def _runner_event(self, payload: str) -> None:
        try:
            detail = json.loads(payload)
        except ValueError:
            log.warning("job %s: unreadable runner event", self.job_id)
            return
        self.deliver({"version": "0", "source": "ocean.c2d.runner", "detail-type": "Compute Job Stage Change",
                      "detail": detail})

    def _algorithm(self) -> int:
        variables = json.loads((self.data / "transformations" / "env.json").read_text())
        bin_dir = os.path.dirname(sys.executable)
        env = {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "HOME": str(self.folder),
               "DATA_DIR": str(self.data), "LANG": "C.UTF-8", **{k: str(v) for k, v in variables.items()}}
        log_file = open(self.data / "logs" / "algorithm.log", "ab")
        with log_file:
            process = self._start(["sh", "-c", self.entrypoint], env, stdout=log_file, cwd=self.data)
            return self._wait(process)

    def _start(self, argv: list[str], env: Mapping[str, str], stdout: Any, cwd: Path | None = None) -> subprocess.Popen:
        self.process = subprocess.Popen(argv, env=dict(env), stdout=stdout, stderr=subprocess.STDOUT
                                        if stdout is not subprocess.PIPE else subprocess.DEVNULL,
                                        cwd=cwd, start_new_session=True)
        return self.process

    def _wait(self, process: subprocess.Popen) -> int:
        try:
            return process.wait(timeout=max(1.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return 124
