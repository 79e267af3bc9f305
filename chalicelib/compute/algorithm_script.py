"""What runs as PID 1 of the algorithm container: a busybox `sh` script that runs the DDO's
entrypoint only when configure finished, without the task's credential variables, with its
output in algorithm.log, and stops it at the job's maxJobDuration (exit 124) whatever the
algorithm does to the processes of its own UID. `algorithm_script` says how.

maxJobDuration is enforced here, inside the container, because Batch's own timeout stops the
whole task, publish included, and then no log or result would be published.
"""
from __future__ import annotations

import shlex

DATA_DIR = "/data"
TIMED_OUT = 124  # the algorithm's exit code when it ran out of maxJobDuration (as coreutils timeout)
KILL_GRACE_SECONDS = 10  # between SIGTERM and SIGKILL of an algorithm that ran out of time
# ECS hands the task role's credentials to every container of the task; the algorithm is
# untrusted code, so its shell starts without the variables that locate them.
CREDENTIAL_VARIABLES = (
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4",
)
_SCRIPT = """\
B={busybox}
LOG={log}
say() {{ echo "c2d: $*"; echo "c2d: $*" 2>/dev/null >>"$LOG"; }}
if [ ! -f {ready} ]; then
  say "the algorithm was not run: the job's inputs were not provisioned"
  exit 0
fi
unset {unset}
ENTRY={entrypoint}
LIMIT=${{C2D_MAX_SECONDS:-}}
case $LIMIT in ''|*[!0-9]*) LIMIT={default_limit};; esac
# stop SIGNAL: as PID 1 (the container) every process but this shell and the log's tee, wherever
# the algorithm moved them (setsid, double fork); else (not in a PID namespace of its own) the
# process groups of this shell's children.
stop() {{
  sig=$1
  for p in /proc/[0-9]*; do
    p=${{p#/proc/}}
    case $p in "$$"|"$job") continue;; esac
    read -r stat 2>/dev/null <"/proc/$p/stat" || continue
    set -- ${{stat##*") "}}
    [ "$2" = "$job" ] && continue
    if [ "$$" = 1 ]; then kill -"$sig" "$p" 2>/dev/null
    elif [ "$2" = "$$" ]; then kill -"$sig" -"$p" 2>/dev/null; kill -"$sig" "$p" 2>/dev/null
    fi
  done
}}
# The clock: /proc/uptime and `read -t` on a FIFO only this shell holds (made before the algorithm
# starts, its name removed at once), so keeping the time needs no child the algorithm could kill,
# stop (SIGSTOP) or keep from forking; a child's end (CHLD) wakes the read early.
clock() {{ read -r now _ </proc/uptime; now=${{now%.*}}${{now#*.}}; }}  # hundredths of a second
# Without the FIFO (its name taken by an image ENTRYPOINT that then exec'd us) the clock spins on
# /dev/null rather than wait on a child the algorithm could stop.
FIFO={fifo}-$$-$RANDOM$RANDOM
if "$B" mkfifo -m 600 "$FIFO" 2>/dev/null && exec 3<>"$FIFO" && [ -p /proc/self/fd/3 ]; then
  tick() {{ read -r -t 1 _ <&3; }}
else
  tick() {{ read -r -t 1 _ </dev/null; }}
fi
"$B" rm -f "$FIFO"
# wait_until DEADLINE (on the clock): 0 with $code set once the algorithm's output ended (all its writers closed;
# what is left of it is stopped), 1 at DEADLINE.
wait_until() {{
  while kill -0 "$job" 2>/dev/null; do
    clock
    [ "$now" -ge "$1" ] && return 1
    tick
  done
  stop KILL
  wait "$job"
  code=$?
  return 0
}}
trap 'woke=1' CHLD
set -o pipefail
clock
started=$now
"$B" setsid "$B" sh -c "$ENTRY" </dev/null 3>&- 2>&1 | {{ "$B" tee -a "$LOG"; true; }} 3>&- &
job=$!
if ! wait_until $((started + LIMIT * 100)); then
  stop TERM
  [ "$$" = 1 ] && kill -CONT -1  # what the algorithm stopped (SIGSTOP) takes its TERM, the tee drains
  if ! wait_until $((started + (LIMIT + {grace}) * 100)); then
    stop KILL; stop KILL; stop KILL
    if ! wait_until $((started + (LIMIT + {grace} + 5) * 100)) && [ "$$" = 1 ]; then kill -KILL -1; wait "$job"; fi
  fi
  say "the algorithm ran out of time (maxJobDuration $LIMIT s) and was stopped"
  code={timed_out}
fi
stop KILL
exit "$code"
"""


def algorithm_script(entrypoint: str, data_dir: str = DATA_DIR, default_limit: int = 3600) -> str:
    """The busybox sh script of the algorithm container (C3).

    Without /data/.c2d/ready (configure failed) it runs nothing and exits 0. Otherwise it runs the
    entrypoint (`sh -c`, so `$ALGO` etc. expand) in its own session without the credential
    variables, output appended to logs/algorithm.log and copied to stdout (CloudWatch), and exits
    with the entrypoint's code; at C2D_MAX_SECONDS (the job's maxJobDuration) it sends SIGTERM,
    KILL_GRACE_SECONDS later SIGKILL, and exits 124. Only busybox applets are used, so an image
    without a shell (distroless) works.

    Every process of the container has the algorithm's UID, so the algorithm can kill or stop
    any of them but PID 1 (the kernel drops signals sent to a namespace's init from inside it):
    the script itself keeps the time with builtins only (/proc/uptime, `read -t` on a FIFO it
    alone holds), so there is no watcher to kill or SIGSTOP and no fork to starve, and, as PID 1,
    stops every process of the namespace but the log's tee, wherever the algorithm moved it
    (setsid, double fork), and whatever is left when the algorithm's output ends. Run as anything but PID 1
    (tests; an image ENTRYPOINT that does not exec its arguments) it stops the process groups of
    its children only; Batch's attempt timeout is then the bound.

    configure installs busybox execute-only (0711) and the script starts by exec'ing it again
    as the algorithm's UID: a process that execs a file it cannot read is not dumpable, so the
    algorithm can neither ptrace PID 1 (freeze it, and with it the time limit) nor read its
    /proc files (its environment holds the task role's credential URI)."""
    c2d = f"{data_dir}/.c2d"
    busybox = shlex.quote(f"{c2d}/busybox")
    script = _SCRIPT.format(busybox=busybox, log=shlex.quote(f"{data_dir}/logs/algorithm.log"),
                            ready=shlex.quote(f"{c2d}/ready"), unset=" ".join(CREDENTIAL_VARIABLES),
                            fifo=shlex.quote(f"{data_dir}/outputs/.c2d-clock"),
                            entrypoint=shlex.quote(entrypoint), default_limit=int(default_limit),
                            grace=KILL_GRACE_SECONDS, timed_out=TIMED_OUT)
    # The container runtime may still hold capabilities when it execs PID 1, so the kernel may
    # find the execute-only busybox readable and leave PID 1 dumpable; exec'd again by the
    # algorithm's UID itself, it is not: no ptrace of PID 1, its /proc files root's.
    return f"exec {busybox} sh -c {shlex.quote(script)} c2d-algorithm"


def algorithm_command(entrypoint: str, data_dir: str = DATA_DIR) -> list[str]:
    """The algorithm container's command (C3): the static busybox configure placed in /data/.c2d
    runs `algorithm_script`. An image ENTRYPOINT, if any, still prefixes it (Batch cannot override
    it): whatever it does, it runs as the algorithm's UID under the instance's network rules."""
    return [f"{data_dir}/.c2d/busybox", "sh", "-c", algorithm_script(entrypoint, data_dir)]
