"""The algorithm container's own run, as the ECS agent recorded it (issue 18, point 3).

Publish runs as root in its own container after the algorithm container exited (it depends on
it COMPLETE), and reads the ECS task metadata endpoint v4: `$ECS_CONTAINER_METADATA_URI_V4/task`
lists every container of the task with `StartedAt` and `FinishedAt`, which the agent takes from
Docker's own inspect of the container (amazon-ecs-agent: ecs-agent/tmds/handlers/v2/response.go
ContainerResponse; agent/engine/docker_task_engine.go updateContainerMetadata). The agent sets
that variable in every container of a task (agent/api/task/task.go,
initializeContainersV4MetadataEndpoint); the algorithm's script unsets it, and its UID cannot
reach 169.254.170.2 anyway. Nothing the algorithm's image does changes these times, so publish
reports them in its signed 60 and the provider bills them.

Locally the dispatcher writes the same document to a file and gives its `file://` URI.
"""
from __future__ import annotations

import json
import logging
import urllib.request
from datetime import datetime
from typing import Any, Mapping
from urllib.parse import urlsplit

ALGORITHM_CONTAINER = "algorithm"  # chalicelib.compute.batch_naming.ALGORITHM (not in the runner image)
METADATA_VARIABLE = "ECS_CONTAINER_METADATA_URI_V4"
TIMEOUT_SECONDS = 5
MAX_BYTES = 1024 * 1024

log = logging.getLogger(__name__)


def algorithm_run(metadata_uri: str) -> dict[str, Any] | None:
    """{"startedAt", "finishedAt" (epoch seconds), "exitCode"} of the task's algorithm
    container; None when there is no endpoint, it does not answer, or the container never ran."""
    if not metadata_uri or urlsplit(metadata_uri).scheme not in ("http", "file"):
        return None
    try:
        with urllib.request.urlopen(metadata_uri.rstrip("/") + "/task", timeout=TIMEOUT_SECONDS) as response:
            task = json.loads(response.read(MAX_BYTES))
    except (OSError, ValueError) as exc:
        log.warning("the task metadata could not be read (%s): the provider bills from its own times",
                    type(exc).__name__)
        return None
    return container_run(task, ALGORITHM_CONTAINER)


def container_run(task: Any, name: str) -> dict[str, Any] | None:
    """The named container's run in a v4 task metadata document."""
    containers = task.get("Containers") if isinstance(task, Mapping) else None
    for container in containers if isinstance(containers, list) else []:
        if not isinstance(container, Mapping) or container.get("Name") != name:
            continue
        started, finished = _time(container.get("StartedAt")), _time(container.get("FinishedAt"))
        if started is None or finished is None or finished < started:
            return None
        code = container.get("ExitCode")
        return {"startedAt": round(started, 3), "finishedAt": round(finished, 3),
                "exitCode": code if isinstance(code, int) and not isinstance(code, bool) else None}
    return None


def _time(value: Any) -> float | None:
    """An RFC 3339 time as Go writes it (nanoseconds, "Z") in epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if "." in text:  # Python reads at most microseconds
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6]}{tail[len(digits):]}"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
