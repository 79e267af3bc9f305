"""The shared job volume layout (Ocean C2D's /data convention), in one place for all stages."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIGURE_LOG = "configure.log"
ALGORITHM_LOG = "algorithm.log"
PUBLISH_LOG = "publish.log"


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

    def create(self) -> None:
        """Create the folders; outputs/ and logs/ are world-writable because the algorithm
        container may run as any user on the shared volume."""
        for folder in (self.inputs, self.transformations, self.outputs, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        for folder in (self.outputs, self.logs):
            folder.chmod(0o777)
